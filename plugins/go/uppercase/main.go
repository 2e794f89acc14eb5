// uppercase: emits each record's value ASCII-upper-cased, with the same
// key, to the topic named by the route config `output`.
//
// The linecook package is the canonical-ABI glue (Go has no WIT bindings
// generator): implement Init and Handle, register the handler in an init
// function, read records' fields, use linecook.Get/Set/Delete for state and
// linecook.Emit for outputs. A record's bytes are valid during Handle only:
// copy what must last, and keep durable data in state.
package main

import (
	"errors"

	"linecook.dev/plugins/linecook"
)

type handler struct{ output string }

func (u *handler) Init(config []linecook.Pair) error {
	for _, p := range config {
		if p.Key == "output" {
			u.output = p.Value
			return nil
		}
	}
	return errors.New("uppercase needs route config `output`: the topic to write to")
}

func (u *handler) Handle(batch []linecook.Record) *linecook.Error {
	for _, r := range batch {
		// The value is the arena's copy, ours to change.
		for i, c := range r.Value {
			if 'a' <= c && c <= 'z' {
				r.Value[i] = c - ('a' - 'A')
			}
		}
		linecook.Emit(u.output, r.Key, r.Value)
	}
	return nil
}

func init() { linecook.Register(&handler{}) }

// A c-shared build needs a main; the host never calls it.
func main() {}

// counter, in Go: keeps a per-key count in partition state and, for each
// record, emits "<key>:<count>" (the count after this record; the key as
// UTF-8 with each maximal invalid subpart replaced by U+FFFD, keyless
// records counted under the empty key) with the same key to the topic named
// by route config `output` — byte for byte what the Rust `counter` plugin
// emits. The canonical-ABI glue is ../linecook.
//
// Optional route config `fail_on`: a batch containing a record whose value
// equals it fails with `retry`, after having written state and emitted
// records for the records before it, which the host then discards.
package main

import (
	"errors"
	"strconv"

	"linecook.dev/plugins/linecook"
)

type counter struct {
	output string
	failOn *string
}

func (c *counter) Init(config []linecook.Pair) error {
	found := false
	for _, p := range config {
		switch p.Key {
		case "output":
			c.output, found = p.Value, true
		case "fail_on":
			v := p.Value
			c.failOn = &v
		}
	}
	if !found {
		return errors.New("counter needs route config `output`: the topic to write to")
	}
	return nil
}

func (c *counter) Handle(batch []linecook.Record) *linecook.Error {
	for _, r := range batch {
		if c.failOn != nil && string(r.Value) == *c.failOn {
			return linecook.Retry("record at offset " + strconv.FormatUint(r.Offset, 10) + " matches fail_on")
		}
		key := r.Key
		if key == nil {
			key = []byte{}
		}
		count := stored(key) + 1
		digits := strconv.AppendUint(nil, count, 10)
		linecook.Set(key, digits)
		line := append(linecook.AppendLossy(make([]byte, 0, len(key)+21), key), ':')
		linecook.Emit(c.output, r.Key, append(line, digits...))
	}
	return nil
}

// stored is the count under key, or 0 if absent or not a number.
func stored(key []byte) uint64 {
	v, ok := linecook.Get(key)
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func init() { linecook.Register(&counter{}) }

// A c-shared build needs a main; the host never calls it.
func main() {}

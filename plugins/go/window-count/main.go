// window-count, in Go (contract 0.2.0): byte for byte what the Rust
// `window-count` plugin does. Counts records per key in tumbling event-time
// windows of route config `window_ms` (epoch-aligned); when the watermark
// reaches a window's end, emits "<key>:<window-start-ms>:<count>" keyed by
// the key (none for the empty key) and timestamped with the window's end,
// to the topic named by route config `output`. A record whose window
// already closed is late: `late = "dead-letter"` (default) poisons it,
// `late = "drop"` drops it and counts it under state key `late`.
package main

import (
	"encoding/binary"
	"errors"
	"strconv"

	"linecook.dev/plugins/linecook"
)

type windowCount struct {
	output   string
	windowMs int64
	dropLate bool
}

func (w *windowCount) Init(config []linecook.Pair) error {
	hasOutput, hasWindow := false, false
	for _, p := range config {
		switch p.Key {
		case "output":
			w.output, hasOutput = p.Value, true
		case "window_ms":
			hasWindow = true
			n, err := strconv.ParseInt(p.Value, 10, 64)
			if err != nil || n <= 0 || p.Value[0] == '+' {
				return errors.New("route config `window_ms` must be a positive number of milliseconds")
			}
			w.windowMs = n
		case "late":
			switch p.Value {
			case "drop":
				w.dropLate = true
			case "dead-letter":
			default:
				return errors.New("route config `late` must be `dead-letter` or `drop`")
			}
		}
	}
	if !hasOutput {
		return errors.New("window-count needs route config `output`: the topic to write to")
	}
	if !hasWindow {
		return errors.New("window-count needs route config `window_ms`: the window size")
	}
	return nil
}

// The state key of a window's count: "w" then the window key.
func countKey(windowKey []byte) []byte { return append([]byte("w"), windowKey...) }

func readCount(key []byte) uint64 {
	v, ok := linecook.Get(key)
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || len(v) == 0 || v[0] == '+' {
		return 0
	}
	return n
}

func writeCount(key []byte, n uint64) { linecook.Set(key, strconv.AppendUint(nil, n, 10)) }

func (w *windowCount) Handle(batch []linecook.Record) *linecook.Error {
	mark, hasMark := linecook.Watermark()
	lateness := int64(linecook.AllowedLatenessMs())
	for i, r := range batch {
		if seen := r.TimestampMs - lateness; !hasMark || seen > mark {
			mark, hasMark = seen, true
		}
		rem := r.TimestampMs % w.windowMs
		if rem < 0 {
			rem += w.windowMs
		}
		start := r.TimestampMs - rem
		end := start + w.windowMs
		if mark >= end {
			if w.dropLate {
				late := []byte("late")
				writeCount(late, readCount(late)+1)
				continue
			}
			return linecook.Poison(uint32(i), "late: window "+strconv.FormatInt(start, 10)+".."+
				strconv.FormatInt(end, 10)+" closed at watermark "+strconv.FormatInt(mark, 10))
		}
		// The window key: the record key, then the start as 8 big-endian
		// bytes with the sign bit flipped (ordered like the number).
		windowKey := binary.BigEndian.AppendUint64(append([]byte{}, r.Key...), uint64(start)^(1<<63))
		ck := countKey(windowKey)
		writeCount(ck, readCount(ck)+1)
		linecook.SetTimer(windowKey, linecook.Event, end)
	}
	return nil
}

func (w *windowCount) OnTimers(due []linecook.DueTimer) *linecook.Error {
	for _, t := range due {
		if len(t.Key) < 8 {
			continue
		}
		key := t.Key[:len(t.Key)-8]
		start := int64(binary.BigEndian.Uint64(t.Key[len(t.Key)-8:]) ^ (1 << 63))
		ck := countKey(t.Key)
		count := readCount(ck)
		linecook.Delete(ck)
		line := linecook.AppendLossy(nil, key)
		line = append(line, ':')
		line = strconv.AppendInt(line, start, 10)
		line = append(line, ':')
		line = strconv.AppendInt(line, int64(count), 10)
		var outKey []byte
		if len(key) > 0 {
			outKey = key
		}
		linecook.EmitAt(w.output, outKey, line, start+w.windowMs)
	}
	return nil
}

func init() { linecook.Register(&windowCount{}) }

// A c-shared build needs a main; the host never calls it.
func main() {}

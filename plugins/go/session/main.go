// session, in Go (contract 0.2.0): byte for byte what the Rust `session`
// plugin does. Session windows per key with a processing-time gap of route
// config `gap_ms`: each record joins its key's session (keyless records
// share the empty key) and moves the key's processing-time timer to now +
// `gap_ms`. When a key has had no record for `gap_ms`, its timer fires: the
// plugin emits "<key>:<records>:<first-ts>:<last-ts>" to the topic named by
// route config `output`, keyed by the key (none for the empty key), and
// forgets the session.
package main

import (
	"encoding/binary"
	"errors"
	"strconv"

	"linecook.dev/plugins/linecook"
)

type sessions struct {
	output string
	gapMs  int64
}

func (s *sessions) Init(config []linecook.Pair) error {
	var output, gap *string
	for _, p := range config {
		v := p.Value
		switch p.Key {
		case "output":
			output = &v
		case "gap_ms":
			gap = &v
		}
	}
	if output == nil {
		return errors.New("session needs route config `output`: the topic to write to")
	}
	if gap == nil {
		return errors.New("session needs route config `gap_ms`: the inactivity gap")
	}
	n, err := strconv.ParseInt(*gap, 10, 64)
	if err != nil || n <= 0 {
		return errors.New("route config `gap_ms` must be a positive number of milliseconds")
	}
	s.output, s.gapMs = *output, n
	return nil
}

// A session in state: records, first and last timestamp, 8 bytes each,
// big-endian.
type session struct {
	records     uint64
	first, last int64
}

func load(key []byte) (session, bool) {
	v, ok := linecook.Get(key)
	if !ok || len(v) != 24 {
		return session{}, false
	}
	return session{
		binary.BigEndian.Uint64(v),
		int64(binary.BigEndian.Uint64(v[8:])),
		int64(binary.BigEndian.Uint64(v[16:])),
	}, true
}

func (s session) bytes() []byte {
	out := binary.BigEndian.AppendUint64(nil, s.records)
	out = binary.BigEndian.AppendUint64(out, uint64(s.first))
	return binary.BigEndian.AppendUint64(out, uint64(s.last))
}

func (s *sessions) Handle(batch []linecook.Record) *linecook.Error {
	expires := linecook.NowMs() + s.gapMs
	for _, r := range batch {
		key := r.Key
		if key == nil {
			key = []byte{}
		}
		ts := r.TimestampMs
		cur, ok := load(key)
		if ok {
			cur = session{cur.records + 1, min(cur.first, ts), max(cur.last, ts)}
		} else {
			cur = session{1, ts, ts}
		}
		linecook.Set(key, cur.bytes())
		linecook.SetTimer(key, linecook.Processing, expires)
	}
	return nil
}

func (s *sessions) OnTimers(due []linecook.DueTimer) *linecook.Error {
	for _, t := range due {
		cur, ok := load(t.Key)
		if !ok {
			continue
		}
		linecook.Delete(t.Key)
		line := linecook.AppendLossy(nil, t.Key)
		line = append(line, ':')
		line = strconv.AppendUint(line, cur.records, 10)
		line = append(line, ':')
		line = strconv.AppendInt(line, cur.first, 10)
		line = append(line, ':')
		line = strconv.AppendInt(line, cur.last, 10)
		var key []byte
		if len(t.Key) > 0 {
			key = t.Key
		}
		linecook.Emit(s.output, key, line)
	}
	return nil
}

func init() { linecook.Register(&sessions{}) }

// A c-shared build needs a main; the host never calls it.
func main() {}

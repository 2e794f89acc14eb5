// Package linecook is the canonical-ABI glue between the
// linecook:handler@0.2.0 world (timers, output timestamps, state TTL) and
// Go, written by hand: Go has no WIT bindings generator. A handler is a `main` package that calls Register from
// an `init` function and is built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags=-checklinkname=0
//
// and made a component by `linecook sdk componentize --contract 0.2.0`,
// which attaches the world and the WASI preview1 reactor adapter (Go's
// runtime speaks preview1). The names and layouts below must match
// wit/0.2.0/handler.wit under the canonical ABI (32-bit pointers; Go's own
// pointers are 64 bits wide, so everything the host lays out is read by
// offset, through structs of uint32 fields):
//
//   - The exports are the `guest` interface's functions, named
//     `linecook:handler/guest@0.2.0#init` and so on.
//   - init(context): the context record flattens to 9 i32 parameters
//     (plugin, version, topic as ptr+len; partition; config as ptr+len of
//     16-byte (string, string) tuples). result<_, string> is returned through
//     a 12-byte area: tag u8 @0, message ptr @4, len @8.
//   - handle(batch): a list of 64-byte stream-records — topic @0, partition
//     @8, offset @16, timestamp @24, key option (tag @32, ptr @36, len @40),
//     value @44, headers @52 (16-byte headers). result<_, handler-error> comes
//     back through a 20-byte area: tag @0, error tag @4, payload @8.
//   - on-timers(due): a list of 24-byte due-timers — key @0, domain u8 @8,
//     due-ms @16 — and the same result as handle.
//   - emit.send takes the output record flattened to 10 i32s and an i64
//     (timestamp option: tag, value); option<s64> results come through a
//     16-byte area (tag @0, value @8).
//   - The packed batch path, packed.handle-packed(batch: list<u8>) (layouts
//     v1 of docs/contract-0.2.md): the batch is read into the same Records
//     Handle gets (slices of the buffer, nothing copied), and while Handle
//     runs every Emit is appended to one effects buffer, returned as
//     result<list<u8>, handler-error> (tag @0, list ptr @4, len @8). State
//     and timers stay imports. The host calls it instead of handle whenever
//     a component exports it; componentize embeds the packed-handler world
//     when the module does.
//
// Memory: what the host passes in (the batch, the config, import results)
// lands in an arena that cabi_realloc serves and that is reset after every
// call, so a Record's bytes are valid only during Handle: copy what must
// last. The arena is not Go's heap: a Go allocation may start a collection,
// which reads the WASI clock, and the host forbids imports while it is
// allocating a call's arguments. It grows by taking pages straight from the
// runtime's own page allocator (runtime.sbrk, hence -checklinkname=0), so
// Go's heap and the arena never claim the same memory. Return areas are
// globals: goroutine stacks move.
package linecook

import (
	"structs"
	"unicode/utf8"
	"unsafe"
)

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one input record. Its slices point into the call's arena.
type Record struct {
	Topic       string
	Partition   uint32
	Offset      uint64
	TimestampMs int64
	// Key is nil for a record without a key (an empty key is a non-nil,
	// empty slice).
	Key     []byte
	Value   []byte
	Headers []Header
}

// Pair is one route config entry.
type Pair struct{ Key, Value string }

// Error is how a batch fails: see Retry, Poison and Fatal.
type Error struct {
	kind    uint32
	index   uint32
	message string
}

// Retry fails the batch; the host discards its effects and retries it.
func Retry(message string) *Error { return &Error{kind: 0, message: message} }

// Poison names the record at index as the culprit; the host dead-letters it
// and retries the rest.
func Poison(index uint32, message string) *Error {
	return &Error{kind: 1, index: index, message: message}
}

// Fatal pauses the partition until an operator acts.
func Fatal(message string) *Error { return &Error{kind: 2, message: message} }

// Handler is what a plugin implements.
type Handler interface {
	// Init gets the route's config; an error refuses the module.
	Init(config []Pair) error
	// Handle processes one batch; nil commits it.
	Handle(batch []Record) *Error
}

// TimerHandler is a Handler that also gets its due timers (see SetTimer).
// A handler without OnTimers lets them pass.
type TimerHandler interface {
	Handler
	// OnTimers gets the partition's due timers, in due-time order, between
	// batches; what it does commits together with their removal.
	OnTimers(due []DueTimer) *Error
}

// TimeDomain is the clock a timer follows.
type TimeDomain uint32

const (
	// Processing time: the wall clock.
	Processing TimeDomain = iota
	// Event time: the partition's watermark (the highest record timestamp
	// seen, minus the route's allowed_lateness_ms).
	Event
)

// DueTimer is a timer whose time came. Key is valid during OnTimers only.
type DueTimer struct {
	Key    []byte
	Domain TimeDomain
	DueMs  int64
}

var handler Handler

// Register installs the handler; call it from an init function.
func Register(h Handler) { handler = h }

// ---- text ------------------------------------------------------------------

// AppendLossy appends s decoded as UTF-8 with each maximal invalid subpart
// replaced by U+FFFD — the rule Rust's String::from_utf8_lossy follows.
// Go's own repair (bytes.ToValidUTF8, range over a string) differs: it
// replaces a run of invalid bytes once, or each byte separately.
func AppendLossy(out, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			out = append(out, c)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 2
		case c >= 0xE0 && c <= 0xEF:
			need = 3
			if c == 0xE0 {
				lo = 0xA0
			}
			if c == 0xED {
				hi = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			need = 4
			if c == 0xF0 {
				lo = 0x90
			}
			if c == 0xF4 {
				hi = 0x8F
			}
		default:
			out = utf8.AppendRune(out, utf8.RuneError)
			i++
			continue
		}
		k := 1
		for ; k < need && i+k < len(s); k++ {
			t := s[i+k]
			tlo, thi := byte(0x80), byte(0xBF)
			if k == 1 {
				tlo, thi = lo, hi
			}
			if t < tlo || t > thi {
				break
			}
		}
		if k == need {
			out = append(out, s[i:i+need]...)
		} else {
			out = utf8.AppendRune(out, utf8.RuneError)
		}
		i += k
	}
	return out
}

// ---- memory ----------------------------------------------------------------

//go:linkname sbrk runtime.sbrk
func sbrk(n uintptr) unsafe.Pointer

// The arena: [next, end) is free. Chunks taken from sbrk are never given
// back; when one is too small, a bigger one replaces it, so the memory
// held stays within twice the largest call's need.
var (
	chunk, chunkSize uintptr
	next, end        uintptr
)

func alloc(size, align uintptr) uintptr {
	start := (next + align - 1) &^ (align - 1)
	if next == 0 || start+size > end {
		want := max(2*chunkSize, size+align, 64<<10)
		p := sbrk(want)
		if p == nil {
			// Out of memory or over the host's limit: trap, the host
			// reports it.
			panic("linecook: out of memory for the call arena")
		}
		chunk, chunkSize = uintptr(p), want
		next, end = chunk, chunk+want
		start = (next + align - 1) &^ (align - 1)
	}
	next = start + size
	return start
}

func reset() { next = chunk }

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	p := alloc(uintptr(newSize), uintptr(align))
	if old != 0 {
		copy(bytesAt(uint32(p), min(oldSize, newSize)), bytesAt(old, min(oldSize, newSize)))
	}
	return uint32(p)
}

// The WASI adapter's own allocations (its stack and state) live as long as
// the instance, so they must not come from the arena that is reset after
// every call.
//
//go:wasmexport cabi_realloc_adapter
func cabiReallocAdapter(old, oldSize, align, newSize uint32) uint32 {
	if old != 0 {
		panic("linecook: the adapter reallocates")
	}
	p := uintptr(sbrk(uintptr(newSize) + uintptr(align)))
	if p == 0 {
		panic("linecook: out of memory for the WASI adapter")
	}
	return uint32((p + uintptr(align) - 1) &^ (uintptr(align) - 1))
}

func bytesAt(ptr, n uint32) []byte {
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), n)
}

func stringAt(ptr, n uint32) string {
	if n == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Pointer(uintptr(ptr))), n)
}

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func strAddr(s string) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s)))) }

// ---- imports ---------------------------------------------------------------

//go:wasmimport linecook:handler/state@0.2.0 get
func stateGet(keyPtr, keyLen uint32, ret *optionBytes)

//go:wasmimport linecook:handler/state@0.2.0 set
func stateSet(keyPtr, keyLen, valuePtr, valueLen uint32)

//go:wasmimport linecook:handler/state@0.2.0 set-with-ttl
func stateSetWithTTL(keyPtr, keyLen, valuePtr, valueLen uint32, ttlMs uint64)

//go:wasmimport linecook:handler/state@0.2.0 delete
func stateDelete(keyPtr, keyLen uint32)

//go:wasmimport linecook:handler/emit@0.2.0 send
func emitSend(topicPtr, topicLen, keyTag, keyPtr, keyLen, valuePtr, valueLen, headersPtr, headersLen, timestampTag uint32, timestampMs int64)

//go:wasmimport linecook:handler/timers@0.2.0 set
func timersSet(keyPtr, keyLen, domain uint32, dueMs int64)

//go:wasmimport linecook:handler/timers@0.2.0 cancel
func timersCancel(keyPtr, keyLen, domain uint32)

//go:wasmimport linecook:handler/timers@0.2.0 get
func timersGet(keyPtr, keyLen, domain uint32, ret *optionI64)

//go:wasmimport linecook:handler/timers@0.2.0 watermark
func timersWatermark(ret *optionI64)

//go:wasmimport linecook:handler/timers@0.2.0 allowed-lateness-ms
func timersAllowedLatenessMs() uint64

//go:wasmimport linecook:handler/timers@0.2.0 now-ms
func timersNowMs() int64

//go:wasmimport linecook:handler/log@0.2.0 write
func logWrite(level, messagePtr, messageLen uint32)

type optionBytes struct {
	_        structs.HostLayout
	tag      uint32
	ptr, len uint32
}

type optionI64 struct {
	_     structs.HostLayout
	tag   uint32
	_     uint32
	value int64
}

var (
	getRet optionBytes
	i64Ret optionI64
)

// Get returns the value stored under key, or nil (ok false) if none. The
// bytes are valid during the current call only.
func Get(key []byte) (value []byte, ok bool) {
	stateGet(addr(key), uint32(len(key)), &getRet)
	if getRet.tag&0xff == 0 {
		return nil, false
	}
	return bytesAt(getRet.ptr, getRet.len), true
}

// Set stores value under key, in the batch's checkpoint.
func Set(key, value []byte) { stateSet(addr(key), uint32(len(key)), addr(value), uint32(len(value))) }

// SetWithTTL stores value under key for ttlMs milliseconds from the commit;
// after that Get no longer sees it.
func SetWithTTL(key, value []byte, ttlMs uint64) {
	stateSetWithTTL(addr(key), uint32(len(key)), addr(value), uint32(len(value)), ttlMs)
}

// Delete removes key.
func Delete(key []byte) { stateDelete(addr(key), uint32(len(key))) }

// Emit sends value with key (nil for none) to topic, in the batch's
// checkpoint, timestamped with the commit time.
func Emit(topic string, key, value []byte) { emit(topic, key, value, 0, 0) }

// EmitAt is Emit with the output's timestamp (ms since the Unix epoch).
func EmitAt(topic string, key, value []byte, timestampMs int64) {
	emit(topic, key, value, 1, timestampMs)
}

func emit(topic string, key, value []byte, timestampTag uint32, timestampMs int64) {
	if packing {
		appendOutput(topic, key, value, timestampTag, timestampMs)
		return
	}
	var tag uint32
	if key != nil {
		tag = 1
	}
	emitSend(strAddr(topic), uint32(len(topic)), tag, addr(key), uint32(len(key)), addr(value), uint32(len(value)), 0, 0, timestampTag, timestampMs)
}

// SetTimer asks for an OnTimers call with key once domain's clock reaches
// dueMs; setting key's timer again moves it. It commits with the batch.
func SetTimer(key []byte, domain TimeDomain, dueMs int64) {
	timersSet(addr(key), uint32(len(key)), uint32(domain), dueMs)
}

// CancelTimer removes key's timer in domain, if any.
func CancelTimer(key []byte, domain TimeDomain) {
	timersCancel(addr(key), uint32(len(key)), uint32(domain))
}

// Timer is when key's timer in domain is due, if it is set.
func Timer(key []byte, domain TimeDomain) (dueMs int64, ok bool) {
	timersGet(addr(key), uint32(len(key)), uint32(domain), &i64Ret)
	return i64Ret.value, i64Ret.tag&0xff != 0
}

// Watermark is the partition's event time, if it has seen a record.
func Watermark() (ms int64, ok bool) {
	timersWatermark(&i64Ret)
	return i64Ret.value, i64Ret.tag&0xff != 0
}

// AllowedLatenessMs is the route's allowed_lateness_ms.
func AllowedLatenessMs() uint64 { return timersAllowedLatenessMs() }

// NowMs is the processing time of the call (ms since the Unix epoch).
func NowMs() int64 { return timersNowMs() }

// Log levels.
const (
	LevelTrace uint32 = iota
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
)

// Log writes message to the host's log at level.
func Log(level uint32, message string) { logWrite(level, strAddr(message), uint32(len(message))) }

// ---- exports ---------------------------------------------------------------

type rawPair struct {
	_                  structs.HostLayout
	keyPtr, keyLen     uint32
	valuePtr, valueLen uint32
}

type rawHeader struct {
	_                  structs.HostLayout
	keyPtr, keyLen     uint32
	valuePtr, valueLen uint32
}

type rawRecord struct {
	_                      structs.HostLayout
	topicPtr, topicLen     uint32
	partition, _           uint32
	offset                 uint64
	timestampMs            int64
	keyTag                 uint32
	keyPtr, keyLen         uint32
	valuePtr, valueLen     uint32
	headersPtr, headersLen uint32
	_                      uint32
}

var _ [64 - unsafe.Sizeof(rawRecord{})]byte
var _ [unsafe.Sizeof(rawRecord{}) - 64]byte

type rawDueTimer struct {
	_              structs.HostLayout
	keyPtr, keyLen uint32
	domain         uint32
	_              uint32
	dueMs          int64
}

var _ [24 - unsafe.Sizeof(rawDueTimer{})]byte
var _ [unsafe.Sizeof(rawDueTimer{}) - 24]byte

// Return areas, and the messages they point to (kept reachable until the
// host has read them).
var (
	initRet   [3]uint32
	handleRet [5]uint32
	message   string
)

//go:wasmexport linecook:handler/guest@0.2.0#init
func wasmInit(_, _, _, _, _, _, _ uint32, configPtr, configLen uint32) unsafe.Pointer {
	raw := unsafe.Slice((*rawPair)(unsafe.Pointer(uintptr(configPtr))), configLen)
	config := make([]Pair, len(raw))
	for i, p := range raw {
		// Copied: the arena is reset after init returns.
		config[i] = Pair{
			Key:   string(bytesAt(p.keyPtr, p.keyLen)),
			Value: string(bytesAt(p.valuePtr, p.valueLen)),
		}
	}
	initRet = [3]uint32{}
	if handler == nil {
		message = "no handler: call linecook.Register from an init function"
		initRet = [3]uint32{1, strAddr(message), uint32(len(message))}
	} else if err := handler.Init(config); err != nil {
		message = err.Error()
		initRet = [3]uint32{1, strAddr(message), uint32(len(message))}
	}
	return unsafe.Pointer(&initRet)
}

//go:wasmexport cabi_post_linecook:handler/guest@0.2.0#init
func postInit(uint32) { message = ""; reset() }

//go:wasmexport linecook:handler/guest@0.2.0#handle
func wasmHandle(batchPtr, batchLen uint32) unsafe.Pointer {
	raw := unsafe.Slice((*rawRecord)(unsafe.Pointer(uintptr(batchPtr))), batchLen)
	batch := make([]Record, len(raw))
	for i := range raw {
		r := &raw[i]
		var key []byte
		if r.keyTag&0xff != 0 {
			key = bytesAt(r.keyPtr, r.keyLen)
		}
		var headers []Header
		if r.headersLen > 0 {
			rh := unsafe.Slice((*rawHeader)(unsafe.Pointer(uintptr(r.headersPtr))), r.headersLen)
			headers = make([]Header, len(rh))
			for j, h := range rh {
				headers[j] = Header{stringAt(h.keyPtr, h.keyLen), bytesAt(h.valuePtr, h.valueLen)}
			}
		}
		batch[i] = Record{
			Topic:       stringAt(r.topicPtr, r.topicLen),
			Partition:   r.partition,
			Offset:      r.offset,
			TimestampMs: r.timestampMs,
			Key:         key,
			Value:       bytesAt(r.valuePtr, r.valueLen),
			Headers:     headers,
		}
	}
	return result(handler.Handle(batch))
}

// result lays out a call's result<_, handler-error> for the host.
func result(err *Error) unsafe.Pointer {
	handleRet = [5]uint32{}
	if err != nil {
		message = err.message
		m, n := strAddr(message), uint32(len(message))
		switch err.kind {
		case 1:
			handleRet = [5]uint32{1, 1, err.index, m, n}
		default:
			handleRet = [5]uint32{1, err.kind, m, n, 0}
		}
	}
	return unsafe.Pointer(&handleRet)
}

//go:wasmexport cabi_post_linecook:handler/guest@0.2.0#handle
func postHandle(uint32) { message = ""; reset() }

//go:wasmexport linecook:handler/guest@0.2.0#on-timers
func wasmOnTimers(duePtr, dueLen uint32) unsafe.Pointer {
	h, ok := handler.(TimerHandler)
	if !ok {
		return result(nil)
	}
	raw := unsafe.Slice((*rawDueTimer)(unsafe.Pointer(uintptr(duePtr))), dueLen)
	due := make([]DueTimer, len(raw))
	for i, t := range raw {
		due[i] = DueTimer{bytesAt(t.keyPtr, t.keyLen), TimeDomain(t.domain & 0xff), t.dueMs}
	}
	return result(h.OnTimers(due))
}

//go:wasmexport cabi_post_linecook:handler/guest@0.2.0#on-timers
func postOnTimers(uint32) { message = ""; reset() }

// ---- the packed batch path --------------------------------------------------

// While packing, Emit appends to fx instead of calling the host. fx is a Go
// slice kept in a global: reachable (and Go's heap does not move) until
// the host has read it after the call.
var (
	packing bool
	fx      []byte
)

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

func appendBytes(b, v []byte) []byte { return append(appendU32(b, uint32(len(v))), v...) }

// appendOutput adds entry 1, an output with no headers.
func appendOutput(topic string, key, value []byte, timestampTag uint32, timestampMs int64) {
	fx = append(fx, 1)
	fx = append(appendU32(fx, uint32(len(topic))), topic...)
	if key != nil {
		fx = appendBytes(fx, key)
	} else {
		fx = appendU32(fx, 0xffffffff)
	}
	fx = appendBytes(fx, value)
	fx = append(fx, 0, 0, byte(timestampTag))
	if timestampTag != 0 {
		fx = appendU32(appendU32(fx, uint32(timestampMs)), uint32(uint64(timestampMs)>>32))
	}
}

// batchReader reads batch layout v1; ok turns false at the first byte
// missing.
type batchReader struct {
	rest []byte
	ok   bool
}

func (r *batchReader) take(n int) []byte {
	if !r.ok || n < 0 || len(r.rest) < n {
		r.ok = false
		return nil
	}
	b := r.rest[:n:n]
	r.rest = r.rest[n:]
	return b
}

func (r *batchReader) u16() uint16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return uint16(b[0]) | uint16(b[1])<<8
}

func (r *batchReader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (r *batchReader) u64() uint64 { return uint64(r.u32()) | uint64(r.u32())<<32 }

func readBatch(buf []byte) ([]Record, bool) {
	r := batchReader{rest: buf, ok: true}
	if string(r.take(4)) != "LCB1" {
		return nil, false
	}
	count := r.u32()
	topic := r.take(int(r.u32()))
	partition := r.u32()
	if !r.ok || uint64(count) > uint64(len(buf)) {
		return nil, false
	}
	batch := make([]Record, count)
	for i := range batch {
		offset := r.u64()
		timestamp := int64(r.u64())
		var key []byte
		if keyLen := int32(r.u32()); keyLen >= 0 {
			key = r.take(int(keyLen))
		}
		value := r.take(int(r.u32()))
		var headers []Header
		if n := r.u16(); n > 0 {
			headers = make([]Header, n)
			for j := range headers {
				name := r.take(int(r.u16()))
				headers[j] = Header{string(name), r.take(int(r.u32()))}
			}
		}
		if !r.ok {
			return nil, false
		}
		batch[i] = Record{
			Topic:       unsafe.String(unsafe.SliceData(topic), len(topic)),
			Partition:   partition,
			Offset:      offset,
			TimestampMs: timestamp,
			Key:         key,
			Value:       value,
			Headers:     headers,
		}
	}
	return batch, true
}

//go:wasmexport linecook:handler/packed@0.2.0#handle-packed
func wasmHandlePacked(batchPtr, batchLen uint32) unsafe.Pointer {
	batch, ok := readBatch(bytesAt(batchPtr, batchLen))
	if !ok {
		return result(Fatal("the packed batch is not in layout v1 (LCB1)"))
	}
	fx = append(fx[:0], "LCE1"...)
	packing = true
	err := handler.Handle(batch)
	packing = false
	if err != nil {
		return result(err)
	}
	handleRet = [5]uint32{0, addr(fx), uint32(len(fx)), 0, 0}
	return unsafe.Pointer(&handleRet)
}

//go:wasmexport cabi_post_linecook:handler/packed@0.2.0#handle-packed
func postHandlePacked(uint32) { message = ""; reset() }

// Package linecook is the canonical-ABI glue between the
// linecook:handler@0.1.0 world and Go, written by hand: Go has no WIT
// bindings generator. A handler is a `main` package that calls Register from
// an `init` function and is built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags=-checklinkname=0
//
// and made a component by `linecook sdk componentize`, which attaches the
// world and the WASI preview1 reactor adapter (Go's runtime speaks preview1).
// The names and layouts below must match wit/handler.wit under the canonical
// ABI (32-bit pointers; Go's own pointers are 64 bits wide, so everything the
// host lays out is read by offset, through structs of uint32 fields):
//
//   - init(context): the context record flattens to 9 i32 parameters
//     (plugin, version, topic as ptr+len; partition; config as ptr+len of
//     16-byte (string, string) tuples). result<_, string> is returned through
//     a 12-byte area: tag u8 @0, message ptr @4, len @8.
//   - handle(batch): a list of 64-byte stream-records — topic @0, partition
//     @8, offset @16, timestamp @24, key option (tag @32, ptr @36, len @40),
//     value @44, headers @52 (16-byte headers). result<_, handler-error> comes
//     back through a 20-byte area: tag @0, error tag @4, payload @8.
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

var handler Handler

// Register installs the handler; call it from an init function.
func Register(h Handler) { handler = h }

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

//go:wasmimport linecook:handler/state@0.1.0 get
func stateGet(keyPtr, keyLen uint32, ret *optionBytes)

//go:wasmimport linecook:handler/state@0.1.0 set
func stateSet(keyPtr, keyLen, valuePtr, valueLen uint32)

//go:wasmimport linecook:handler/state@0.1.0 delete
func stateDelete(keyPtr, keyLen uint32)

//go:wasmimport linecook:handler/emit@0.1.0 send
func emitSend(topicPtr, topicLen, keyTag, keyPtr, keyLen, valuePtr, valueLen, headersPtr, headersLen uint32)

//go:wasmimport linecook:handler/log@0.1.0 write
func logWrite(level, messagePtr, messageLen uint32)

type optionBytes struct {
	_        structs.HostLayout
	tag      uint32
	ptr, len uint32
}

var getRet optionBytes

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

// Delete removes key.
func Delete(key []byte) { stateDelete(addr(key), uint32(len(key))) }

// Emit sends value with key (nil for none) to topic, in the batch's
// checkpoint.
func Emit(topic string, key, value []byte) {
	var tag uint32
	if key != nil {
		tag = 1
	}
	emitSend(strAddr(topic), uint32(len(topic)), tag, addr(key), uint32(len(key)), addr(value), uint32(len(value)), 0, 0)
}

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

// Return areas, and the messages they point to (kept reachable until the
// host has read them).
var (
	initRet   [3]uint32
	handleRet [5]uint32
	message   string
)

//go:wasmexport init
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

//go:wasmexport cabi_post_init
func postInit(uint32) { message = ""; reset() }

//go:wasmexport handle
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
	handleRet = [5]uint32{}
	if err := handler.Handle(batch); err != nil {
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

//go:wasmexport cabi_post_handle
func postHandle(uint32) { message = ""; reset() }

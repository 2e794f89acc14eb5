// Canonical-ABI glue between the linecook:handler world and AssemblyScript,
// written by hand: AssemblyScript has no WIT bindings generator.
// `linecook sdk componentize` attaches the world to the core module and
// makes the component; the names and layouts here must match
// wit/handler.wit (linecook:handler@0.1.0) under the canonical ABI — the
// same layouts plugins/zig/glue.zig documents:
//
// - init(context): 9 flat i32 parameters (plugin, version, topic as ptr+len;
//   partition; config as ptr+len of 16-byte (string, string) tuples);
//   result<_, string> through a 12-byte area (tag @0, ptr @4, len @8).
// - handle(batch): ptr+len of 64-byte stream-records (topic @0, partition
//   @8, offset @16, timestamp @24, key tag @32 ptr @36 len @40, value @44,
//   headers @52); result<_, handler-error> through a 20-byte area (tag @0,
//   error tag @4, payload @8).
//
// Nothing here uses AssemblyScript's managed heap (no `new`, no runtime
// strings): bytes live in an arena that `cabi_post_handle` empties after
// every batch, and string literals are only read, never allocated.

// ---- memory ---------------------------------------------------------------

let top: usize = 0;
// Where the per-call arena starts: everything below lives for the instance.
let base: usize = 0;

export function alloc(size: usize, align: usize): usize {
  if (top == 0) {
    top = __heap_base;
    base = top;
  }
  const start = (top + align - 1) & ~(align - 1);
  const end = start + size;
  const have = (<usize>memory.size()) << 16;
  if (end > have) {
    // Out of memory (or over the host's limit): trap, the host reports it.
    if (memory.grow(<i32>((end - have + 0xffff) >> 16)) < 0) unreachable();
  }
  top = end;
  return start;
}

export function cabi_realloc(old: usize, oldSize: usize, align: usize, newSize: usize): usize {
  const p = alloc(newSize, align);
  if (old != 0) memory.copy(p, old, min(oldSize, newSize));
  return p;
}

export function cabi_post_init(_ret: usize): void {
  base = top;
}

export function cabi_post_handle(_ret: usize): void {
  top = base;
}

// Replaces AssemblyScript's `env.abort` import (see build.sh's --use).
export function abort(_message: usize, _file: usize, _line: u32, _column: u32): void {
  unreachable();
}

// ---- imports --------------------------------------------------------------

// @ts-ignore: decorator
@external("linecook:handler/state@0.1.0", "get")
declare function stateGet(keyPtr: usize, keyLen: usize, ret: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/state@0.1.0", "set")
declare function stateSet(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/emit@0.1.0", "send")
declare function emitSend(
  topicPtr: usize, topicLen: usize,
  keyTag: u32, keyPtr: usize, keyLen: usize,
  valuePtr: usize, valueLen: usize,
  headersPtr: usize, headersLen: usize,
): void;

const optionArea = memory.data(12, 4);

/// The value stored under the key, or -1 (as `stateLen`) if none.
export let statePtr: usize = 0;
export let stateLen: isize = -1;
export function stateLoad(keyPtr: usize, keyLen: usize): void {
  stateGet(keyPtr, keyLen, optionArea);
  if (load<u8>(optionArea) == 0) {
    stateLen = -1;
  } else {
    statePtr = load<usize>(optionArea, 4);
    stateLen = <isize>load<usize>(optionArea, 8);
  }
}

export function stateStore(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): void {
  stateSet(keyPtr, keyLen, valuePtr, valueLen);
}

/// Emits `value` with the key of the record at `record` (same option).
export function emitWithKeyOf(
  topicPtr: usize, topicLen: usize, record: usize, valuePtr: usize, valueLen: usize,
): void {
  emitSend(
    topicPtr, topicLen,
    load<u8>(record, 32), load<usize>(record, 36), load<usize>(record, 40),
    valuePtr, valueLen, 0, 0,
  );
}

// ---- records --------------------------------------------------------------

export const RECORD_SIZE: usize = 64;
export function recordOffset(r: usize): u64 { return load<u64>(r, 16); }
export function hasKey(r: usize): bool { return load<u8>(r, 32) != 0; }
export function keyPtr(r: usize): usize { return load<usize>(r, 36); }
export function keyLen(r: usize): usize { return hasKey(r) ? load<usize>(r, 40) : 0; }
export function valuePtr(r: usize): usize { return load<usize>(r, 44); }
export function valueLen(r: usize): usize { return load<usize>(r, 48); }

/// Whether the bytes at ptr..ptr+len equal the ASCII literal `s`.
export function bytesEqualAscii(ptr: usize, len: usize, s: string): bool {
  if (len != <usize>s.length) return false;
  for (let i = 0; i < s.length; i++) {
    if (<i32>load<u8>(ptr + <usize>i) != s.charCodeAt(i)) return false;
  }
  return true;
}

/// Whether two byte ranges are equal.
export function bytesEqual(a: usize, aLen: usize, b: usize, bLen: usize): bool {
  return aLen == bLen && memory.compare(a, b, aLen) == 0;
}

// ---- building bytes -------------------------------------------------------

// One buffer at a time, in the arena.
export let outPtr: usize = 0;
export let outLen: usize = 0;

export function begin(capacity: usize): void {
  outPtr = alloc(capacity, 1);
  outLen = 0;
}

export function pushByte(b: u8): void {
  store<u8>(outPtr + outLen, b);
  outLen++;
}

export function pushBytes(ptr: usize, len: usize): void {
  memory.copy(outPtr + outLen, ptr, len);
  outLen += len;
}

export function pushAscii(s: string): void {
  for (let i = 0; i < s.length; i++) pushByte(<u8>s.charCodeAt(i));
}

export function pushDecimal(n: u64): void {
  let digits: usize = 1;
  for (let rest = n / 10; rest > 0; rest /= 10) digits++;
  for (let i: usize = 0; i < digits; i++) {
    store<u8>(outPtr + outLen + digits - 1 - i, <u8>(0x30 + n % 10));
    n /= 10;
  }
  outLen += digits;
}

// ---- results --------------------------------------------------------------

const initArea = memory.data(12, 4);
const handleArea = memory.data(20, 4);

export function initOk(): usize {
  store<u32>(initArea, 0);
  return initArea;
}

/// init's error: the ASCII literal `message`, copied into kept memory.
export function initErr(message: string): usize {
  begin(<usize>message.length);
  pushAscii(message);
  store<u32>(initArea, 1);
  store<usize>(initArea, outPtr, 4);
  store<usize>(initArea, outLen, 8);
  return initArea;
}

export function handleOk(): usize {
  store<u32>(handleArea, 0);
  return handleArea;
}

/// handle's `retry` error with the bytes of the current buffer.
export function handleRetry(): usize {
  store<u32>(handleArea, 1);
  store<u32>(handleArea, 0, 4);
  store<usize>(handleArea, outPtr, 8);
  store<usize>(handleArea, outLen, 12);
  return handleArea;
}

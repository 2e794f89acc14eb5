// Canonical-ABI glue between the linecook:handler@0.2.0 world (timers,
// output timestamps, state TTL) and AssemblyScript, written by hand:
// AssemblyScript has no WIT bindings generator. `linecook sdk componentize
// --contract 0.2.0` attaches the world to the core module and makes the
// component; the layouts here must match wit/0.2.0/handler.wit under the
// canonical ABI — the same layouts plugins/zig/glue.zig documents.
// AssemblyScript cannot name an export `linecook:handler/guest@0.2.0#handle`,
// so a handler exports `init`, `handle` and `on_timers` (and the glue's
// `cabi_post_*`), and build.sh has componentize rename them (`--export
// handle=linecook:handler/guest@0.2.0#handle`, …).
//
// - init(context): 9 flat i32 parameters (plugin, version, topic as ptr+len;
//   partition; config as ptr+len of 16-byte (string, string) tuples);
//   result<_, string> through a 12-byte area (tag @0, ptr @4, len @8).
// - handle(batch): ptr+len of 64-byte stream-records (topic @0, partition
//   @8, offset @16, timestamp @24, key tag @32 ptr @36 len @40, value @44,
//   headers @52); result<_, handler-error> through a 20-byte area (tag @0,
//   error tag @4, payload @8).
// - on_timers(due): ptr+len of 24-byte due-timers (key ptr @0 len @4,
//   domain @8, due-ms @16); the same result as handle. The glue's on_timers
//   lets timers pass; a handler with timers exports its own.
//
// - handle_packed(buf): the packed batch path (layouts v1,
//   docs/contract-0.2.md): batch layout v1 is read into the same 64-byte
//   records `handle` gets (pointing into the buffer, no copies) and every
//   emit of the call goes into one effects buffer, returned as
//   result<list<u8>, handler-error> (tag @0, list ptr @4, len @8). State and
//   timers stay imports. A handler exports `handle_packed` as
//   `return packed(buf, len, handle)`; build.sh renames it to
//   `linecook:handler/packed@0.2.0#handle-packed`, and componentize embeds
//   the packed-handler world.
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

export function cabi_post_on_timers(_ret: usize): void {
  top = base;
}

/// For a handler without timers: due timers pass.
export function on_timers(_due: usize, _dueLen: usize): usize {
  return handleOk();
}

// Replaces AssemblyScript's `env.abort` import (see build.sh's --use).
export function abort(_message: usize, _file: usize, _line: u32, _column: u32): void {
  unreachable();
}

// ---- imports --------------------------------------------------------------

// @ts-ignore: decorator
@external("linecook:handler/state@0.2.0", "get")
declare function stateGet(keyPtr: usize, keyLen: usize, ret: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/state@0.2.0", "set")
declare function stateSet(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/state@0.2.0", "delete")
export declare function stateDelete(keyPtr: usize, keyLen: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/emit@0.2.0", "send")
declare function emitSend(
  topicPtr: usize, topicLen: usize,
  keyTag: u32, keyPtr: usize, keyLen: usize,
  valuePtr: usize, valueLen: usize,
  headersPtr: usize, headersLen: usize,
  timestampTag: u32, timestampMs: i64,
): void;
// @ts-ignore: decorator
@external("linecook:handler/timers@0.2.0", "set")
declare function timersSet(keyPtr: usize, keyLen: usize, domain: u32, dueMs: i64): void;
// @ts-ignore: decorator
@external("linecook:handler/timers@0.2.0", "watermark")
declare function timersWatermark(ret: usize): void;
// @ts-ignore: decorator
@external("linecook:handler/timers@0.2.0", "allowed-lateness-ms")
export declare function allowedLatenessMs(): u64;
// @ts-ignore: decorator
@external("linecook:handler/timers@0.2.0", "now-ms")
export declare function nowMs(): i64;

const i64Area = memory.data(16, 8);

/// The partition's watermark, if it has seen a record (`hasWatermark`).
export let hasWatermark = false;
export function watermark(): i64 {
  timersWatermark(i64Area);
  hasWatermark = load<u8>(i64Area) != 0;
  return load<i64>(i64Area, 8);
}

export const PROCESSING: u32 = 0;
export const EVENT: u32 = 1;

/// A call of on_timers with the key once `domain`'s clock reaches `dueMs`.
export function setTimer(keyPtr: usize, keyLen: usize, domain: u32, dueMs: i64): void {
  timersSet(keyPtr, keyLen, domain, dueMs);
}

export const DUE_TIMER_SIZE: usize = 24;

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

/// The decimal stored under the key, or 0 if absent or not a number.
export function storedNumber(keyPtr: usize, keyLen: usize): u64 {
  stateLoad(keyPtr, keyLen);
  if (stateLen <= 0) return 0;
  let n: u64 = 0;
  for (let i: usize = 0; i < <usize>stateLen; i++) {
    const d = load<u8>(statePtr + i);
    if (d < 0x30 || d > 0x39) return 0;
    n = n * 10 + <u64>(d - 0x30);
  }
  return n;
}

export function stateStore(keyPtr: usize, keyLen: usize, valuePtr: usize, valueLen: usize): void {
  stateSet(keyPtr, keyLen, valuePtr, valueLen);
}

/// Emits `value` with the key of the record at `record` (same option).
export function emitWithKeyOf(
  topicPtr: usize, topicLen: usize, record: usize, valuePtr: usize, valueLen: usize,
): void {
  send(
    topicPtr, topicLen,
    load<u8>(record, 32), load<usize>(record, 36), load<usize>(record, 40),
    valuePtr, valueLen, 0, 0,
  );
}

/// Emits `value` with the key at keyPtr..keyPtr+keyLen (none if `keyTag`
/// is 0), timestamped with the commit time.
export function emitKeyed(
  topicPtr: usize, topicLen: usize, keyTag: u32, keyPtr: usize, keyLen: usize,
  valuePtr: usize, valueLen: usize,
): void {
  send(topicPtr, topicLen, keyTag, keyPtr, keyLen, valuePtr, valueLen, 0, 0);
}

/// `emitKeyed`, timestamped `timestampMs`.
export function emitAt(
  topicPtr: usize, topicLen: usize, keyTag: u32, keyPtr: usize, keyLen: usize,
  valuePtr: usize, valueLen: usize, timestampMs: i64,
): void {
  send(topicPtr, topicLen, keyTag, keyPtr, keyLen, valuePtr, valueLen, 1, timestampMs);
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

/// `n` in decimal, with a minus sign if negative.
export function pushSigned(n: i64): void {
  if (n < 0) {
    pushByte(0x2d);
    pushDecimal(<u64>(-(n + 1)) + 1);
  } else {
    pushDecimal(<u64>n);
  }
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

/// Appends the bytes decoded as UTF-8, each maximal invalid subpart replaced
/// by U+FFFD — the rule Rust's String::from_utf8_lossy follows.
export function pushLossy(s: usize, n: usize): void {
  let i: usize = 0;
  while (i < n) {
    const c = load<u8>(s + i);
    if (c < 0x80) {
      pushByte(c);
      i++;
      continue;
    }
    let need: usize = 0;
    let lo: u8 = 0x80;
    let hi: u8 = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      pushReplacement();
      i++;
      continue;
    }
    let k: usize = 1;
    while (k < need && i + k < n) {
      const t = load<u8>(s + i + k);
      const tlo: u8 = k == 1 ? lo : 0x80;
      const thi: u8 = k == 1 ? hi : 0xbf;
      if (t < tlo || t > thi) break;
      k++;
    }
    if (k == need) pushBytes(s + i, need);
    else pushReplacement();
    i += k;
  }
}

export function pushReplacement(): void {
  pushByte(0xef);
  pushByte(0xbf);
  pushByte(0xbd);
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

/// handle's `poison` error naming record `index`, with the bytes of the
/// current buffer.
export function handlePoison(index: u32): usize {
  store<u32>(handleArea, 1);
  store<u32>(handleArea, 1, 4);
  store<u32>(handleArea, index, 8);
  store<usize>(handleArea, outPtr, 12);
  store<usize>(handleArea, outLen, 16);
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

// ---- the packed batch path -------------------------------------------------

// The effects buffer of the packed call in progress; while `packing`, every
// emit goes there instead of to the host.
let packing = false;
let fxPtr: usize = 0;
let fxLen: usize = 0;
let fxCap: usize = 0;

function fxReserve(n: usize): void {
  if (fxLen + n <= fxCap) return;
  const cap = (fxLen + n) * 2;
  const grown = alloc(cap, 1);
  memory.copy(grown, fxPtr, fxLen);
  fxPtr = grown;
  fxCap = cap;
}

// Wasm is little-endian and allows unaligned stores: the layout's integers
// are written as they are.
function fxBytes(ptr: usize, len: usize): void {
  store<u32>(fxPtr + fxLen, <u32>len);
  memory.copy(fxPtr + fxLen + 4, ptr, len);
  fxLen += 4 + len;
}

function send(
  topicPtr: usize, topicLen: usize, keyTag: u32, keyPtr: usize, keyLen: usize,
  valuePtr: usize, valueLen: usize, timestampTag: u32, timestampMs: i64,
): void {
  if (!packing) {
    emitSend(topicPtr, topicLen, keyTag, keyPtr, keyLen, valuePtr, valueLen, 0, 0, timestampTag, timestampMs);
    return;
  }
  // Entry 1: an output with no headers.
  fxReserve(32 + topicLen + keyLen + valueLen);
  store<u8>(fxPtr + fxLen, 1);
  fxLen += 1;
  fxBytes(topicPtr, topicLen);
  if (keyTag != 0) {
    fxBytes(keyPtr, keyLen);
  } else {
    store<u32>(fxPtr + fxLen, 0xffffffff);
    fxLen += 4;
  }
  fxBytes(valuePtr, valueLen);
  store<u16>(fxPtr + fxLen, 0);
  store<u8>(fxPtr + fxLen + 2, <u8>timestampTag);
  fxLen += 3;
  if (timestampTag != 0) {
    store<i64>(fxPtr + fxLen, timestampMs);
    fxLen += 8;
  }
}

function malformed(): usize {
  begin(40);
  pushAscii("the packed batch is not in layout v1");
  store<u32>(handleArea, 1);
  store<u32>(handleArea, 2, 4);
  store<usize>(handleArea, outPtr, 8);
  store<usize>(handleArea, outLen, 12);
  return handleArea;
}

/// The packed batch path: reads the batch at buf..buf+len into records and
/// calls `handle` with them, emits collected into the effects buffer.
export function packed(buf: usize, len: usize, handle: (batch: usize, count: usize) => usize): usize {
  const end = buf + len;
  // "LCB1" read as a little-endian u32.
  if (len < 12 || load<u32>(buf) != 0x3142434c) return malformed();
  const count = <usize>load<u32>(buf, 4);
  const topicLen = <usize>load<u32>(buf, 8);
  const topicPtr = buf + 12;
  let p = topicPtr + topicLen;
  if (p + 4 > end) return malformed();
  const partition = load<u32>(p);
  p += 4;
  const records = alloc(count * RECORD_SIZE, 8);
  for (let i: usize = 0; i < count; i++) {
    const r = records + i * RECORD_SIZE;
    if (p + 20 > end) return malformed();
    store<usize>(r, topicPtr);
    store<usize>(r, topicLen, 4);
    store<u32>(r, partition, 8);
    store<u64>(r, load<u64>(p), 16);
    store<i64>(r, load<i64>(p, 8), 24);
    const keyLength = load<i32>(p, 16);
    p += 20;
    if (keyLength < 0) {
      store<u32>(r, 0, 32);
      store<usize>(r, 0, 36);
      store<usize>(r, 0, 40);
    } else {
      if (p + <usize>keyLength > end) return malformed();
      store<u32>(r, 1, 32);
      store<usize>(r, p, 36);
      store<usize>(r, <usize>keyLength, 40);
      p += <usize>keyLength;
    }
    if (p + 4 > end) return malformed();
    const n = <usize>load<u32>(p);
    if (p + 4 + n + 2 > end) return malformed();
    store<usize>(r, p + 4, 44);
    store<usize>(r, n, 48);
    p += 4 + n;
    const headerCount = <usize>load<u16>(p);
    p += 2;
    // Headers in the typed layout: 16 bytes, name then value.
    const headers = alloc(headerCount * 16, 4);
    for (let h: usize = 0; h < headerCount; h++) {
      if (p + 2 > end) return malformed();
      const nameLen = <usize>load<u16>(p);
      if (p + 2 + nameLen + 4 > end) return malformed();
      const valueLength = <usize>load<u32>(p + 2 + nameLen);
      if (p + 6 + nameLen + valueLength > end) return malformed();
      const header = headers + h * 16;
      store<usize>(header, p + 2);
      store<usize>(header, nameLen, 4);
      store<usize>(header, p + 6 + nameLen, 8);
      store<usize>(header, valueLength, 12);
      p += 6 + nameLen + valueLength;
    }
    store<usize>(r, headers, 52);
    store<usize>(r, headerCount, 56);
  }
  fxCap = len + 64;
  fxPtr = alloc(fxCap, 1);
  store<u32>(fxPtr, 0x3145434c); // "LCE1"
  fxLen = 4;
  packing = true;
  const result = handle(records, count);
  packing = false;
  if (load<u8>(result) != 0) return result;
  store<u32>(handleArea, 0);
  store<usize>(handleArea, fxPtr, 4);
  store<usize>(handleArea, fxLen, 8);
  return handleArea;
}

export function cabi_post_handle_packed(_ret: usize): void {
  top = base;
}

// window-count, in AssemblyScript (contract 0.2.0): byte for byte what the
// Rust `window-count` plugin does. Counts records per key in tumbling
// event-time windows of route config `window_ms` (epoch-aligned); when the
// watermark reaches a window's end, emits "<key>:<window-start-ms>:<count>"
// keyed by the key (none for the empty key) and timestamped with the
// window's end, to the topic named by route config `output`. A record whose
// window already closed is late: `late = "dead-letter"` (default) poisons
// it, `late = "drop"` drops it and counts it under state key `late`. The
// canonical-ABI glue is glue.ts.

import {
  DUE_TIMER_SIZE, EVENT, RECORD_SIZE, allowedLatenessMs, begin, bytesEqualAscii, emitAt,
  handleOk, handlePoison, hasWatermark, initErr, initOk, keyLen, keyPtr, outLen, outPtr,
  pushAscii, pushByte, pushBytes, pushDecimal, pushLossy, pushSigned, setTimer, stateDelete,
  stateStore, storedNumber, watermark, packed,
} from "./glue";
export { cabi_realloc, cabi_post_init, cabi_post_handle, cabi_post_handle_packed, cabi_post_on_timers } from "./glue";

let outputPtr: usize = 0;
let outputLen: usize = 0;
let windowMs: i64 = 0;
let dropLate = false;
const LATE = memory.data<u8>([0x6c, 0x61, 0x74, 0x65]);

/// A positive decimal that fits an i64, or -1.
function parsePositive(p: usize, n: usize): i64 {
  if (n == 0) return -1;
  let v: i64 = 0;
  for (let i: usize = 0; i < n; i++) {
    const d = load<u8>(p + i);
    if (d < 0x30 || d > 0x39 || v > (i64.MAX_VALUE - <i64>(d - 0x30)) / 10) return -1;
    v = v * 10 + <i64>(d - 0x30);
  }
  return v > 0 ? v : -1;
}

export function init(
  _plugin: usize, _pluginLen: usize, _version: usize, _versionLen: usize,
  _topic: usize, _topicLen: usize, _partition: u32, config: usize, configLen: usize,
): usize {
  let hasOutput = false;
  let hasWindow = false;
  windowMs = 0;
  dropLate = false;
  for (let i: usize = 0; i < configLen; i++) {
    const pair = config + i * 16;
    const k = load<usize>(pair);
    const kLen = load<usize>(pair, 4);
    const v = load<usize>(pair, 8);
    const vLen = load<usize>(pair, 12);
    // Host-allocated, and kept: cabi_post_init keeps what init received.
    if (bytesEqualAscii(k, kLen, "output")) {
      outputPtr = v;
      outputLen = vLen;
      hasOutput = true;
    } else if (bytesEqualAscii(k, kLen, "window_ms")) {
      hasWindow = true;
      windowMs = parsePositive(v, vLen);
      if (windowMs <= 0) {
        return initErr("route config `window_ms` must be a positive number of milliseconds");
      }
    } else if (bytesEqualAscii(k, kLen, "late")) {
      if (bytesEqualAscii(v, vLen, "drop")) dropLate = true;
      else if (!bytesEqualAscii(v, vLen, "dead-letter")) {
        return initErr("route config `late` must be `dead-letter` or `drop`");
      }
    }
  }
  if (!hasOutput) return initErr("window-count needs route config `output`: the topic to write to");
  if (!hasWindow) return initErr("window-count needs route config `window_ms`: the window size");
  return initOk();
}

function writeCount(k: usize, kLen: usize, n: u64): void {
  begin(20);
  pushDecimal(n);
  stateStore(k, kLen, outPtr, outLen);
}

export function handle(batch: usize, batchLen: usize): usize {
  let mark = watermark();
  let hasMark = hasWatermark;
  const lateness = <i64>allowedLatenessMs();
  for (let i: usize = 0; i < batchLen; i++) {
    const r = batch + i * RECORD_SIZE;
    const ts = load<i64>(r, 24);
    const seen = ts - lateness;
    if (!hasMark || seen > mark) {
      mark = seen;
      hasMark = true;
    }
    let rem = ts % windowMs;
    if (rem < 0) rem += windowMs;
    const start = ts - rem;
    const end = start + windowMs;
    if (mark >= end) {
      if (dropLate) {
        writeCount(LATE, 4, storedNumber(LATE, 4) + 1);
        continue;
      }
      begin(96);
      pushAscii("late: window ");
      pushSigned(start);
      pushAscii("..");
      pushSigned(end);
      pushAscii(" closed at watermark ");
      pushSigned(mark);
      return handlePoison(<u32>i);
    }
    // "w", then the window key: the record key, then the start as 8
    // big-endian bytes with the sign bit flipped (ordered like the number).
    const kLen = keyLen(r);
    begin(kLen + 9);
    pushByte(0x77);
    pushBytes(keyPtr(r), kLen);
    const s = <u64>start ^ (<u64>1 << 63);
    for (let b = 7; b >= 0; b--) pushByte(<u8>(s >> (<u64>(8 * b))));
    const countKey = outPtr;
    const countKeyLen = outLen;
    writeCount(countKey, countKeyLen, storedNumber(countKey, countKeyLen) + 1);
    setTimer(countKey + 1, countKeyLen - 1, EVENT, end);
  }
  return handleOk();
}

export function on_timers(due: usize, dueLen: usize): usize {
  for (let i: usize = 0; i < dueLen; i++) {
    const t = due + i * DUE_TIMER_SIZE;
    const k = load<usize>(t);
    const kLen = load<usize>(t, 4);
    if (kLen < 8) continue;
    const bareLen = kLen - 8;
    let s: u64 = 0;
    for (let b: usize = 0; b < 8; b++) s = (s << 8) | <u64>load<u8>(k + bareLen + b);
    const start = <i64>(s ^ (<u64>1 << 63));
    begin(kLen + 1);
    pushByte(0x77);
    pushBytes(k, kLen);
    const countKey = outPtr;
    const countKeyLen = outLen;
    const count = storedNumber(countKey, countKeyLen);
    stateDelete(countKey, countKeyLen);
    begin(bareLen * 3 + 42);
    pushLossy(k, bareLen);
    pushByte(0x3a);
    pushSigned(start);
    pushByte(0x3a);
    pushDecimal(count);
    emitAt(outputPtr, outputLen, bareLen > 0 ? 1 : 0, k, bareLen, outPtr, outLen, start + windowMs);
  }
  return handleOk();
}

/// The packed batch path: the same `handle`, its batch read from one buffer
/// and its outputs written into one (see glue.ts).
export function handle_packed(buf: usize, len: usize): usize {
  return packed(buf, len, handle);
}

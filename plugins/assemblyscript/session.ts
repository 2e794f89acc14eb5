// session, in AssemblyScript (contract 0.2.0): byte for byte what the Rust
// `session` plugin does. Session windows per key with a processing-time gap
// of route config `gap_ms`: each record joins its key's session (keyless
// records share the empty key) and moves the key's processing-time timer to
// now + `gap_ms`. When a key has had no record for `gap_ms`, its timer
// fires: the plugin emits "<key>:<records>:<first-ts>:<last-ts>" to the
// topic named by route config `output`, keyed by the key (none for the
// empty key), and forgets the session. The canonical-ABI glue is glue.ts.

import {
  DUE_TIMER_SIZE, PROCESSING, RECORD_SIZE, begin, bytesEqualAscii, emitKeyed, handleOk, initErr,
  initOk, keyLen, keyPtr, nowMs, outLen, outPtr, pushByte, pushDecimal, pushLossy, pushSigned,
  setTimer, stateDelete, stateLen, statePtr, stateLoad, stateStore, packed,
} from "./glue";
export { cabi_realloc, cabi_post_init, cabi_post_handle, cabi_post_handle_packed, cabi_post_on_timers } from "./glue";

let outputPtr: usize = 0;
let outputLen: usize = 0;
let gapMs: i64 = 0;

export function init(
  _plugin: usize, _pluginLen: usize, _version: usize, _versionLen: usize,
  _topic: usize, _topicLen: usize, _partition: u32, config: usize, configLen: usize,
): usize {
  let hasOutput = false;
  let gapPtr: usize = 0;
  let gapLen: isize = -1;
  for (let i: usize = 0; i < configLen; i++) {
    const pair = config + i * 16;
    const k = load<usize>(pair);
    const kLen = load<usize>(pair, 4);
    // Host-allocated, and kept: cabi_post_init keeps what init received.
    if (bytesEqualAscii(k, kLen, "output")) {
      outputPtr = load<usize>(pair, 8);
      outputLen = load<usize>(pair, 12);
      hasOutput = true;
    } else if (bytesEqualAscii(k, kLen, "gap_ms")) {
      gapPtr = load<usize>(pair, 8);
      gapLen = <isize>load<usize>(pair, 12);
    }
  }
  if (!hasOutput) return initErr("session needs route config `output`: the topic to write to");
  if (gapLen < 0) return initErr("session needs route config `gap_ms`: the inactivity gap");
  gapMs = 0;
  for (let i: usize = 0; i < <usize>gapLen; i++) {
    const d = load<u8>(gapPtr + i);
    if (d < 0x30 || d > 0x39 || gapMs > (i64.MAX_VALUE - <i64>(d - 0x30)) / 10) {
      gapMs = -1;
      break;
    }
    gapMs = gapMs * 10 + <i64>(d - 0x30);
  }
  if (gapMs <= 0) return initErr("route config `gap_ms` must be a positive number of milliseconds");
  return initOk();
}

// A session in state: records, first and last timestamp, 8 bytes each,
// big-endian; `has` says whether the key had one.
let has = false;
let records: u64 = 0;
let first: i64 = 0;
let last: i64 = 0;

function loadSession(k: usize, kLen: usize): void {
  stateLoad(k, kLen);
  has = stateLen == 24;
  if (!has) return;
  records = bswap<u64>(load<u64>(statePtr));
  first = <i64>bswap<u64>(load<u64>(statePtr, 8));
  last = <i64>bswap<u64>(load<u64>(statePtr, 16));
}

export function handle(batch: usize, batchLen: usize): usize {
  const expires = nowMs() + gapMs;
  for (let i: usize = 0; i < batchLen; i++) {
    const r = batch + i * RECORD_SIZE;
    const k = keyPtr(r);
    const kLen = keyLen(r);
    const ts = load<i64>(r, 24);
    loadSession(k, kLen);
    if (has) {
      records += 1;
      if (ts < first) first = ts;
      if (ts > last) last = ts;
    } else {
      records = 1;
      first = ts;
      last = ts;
    }
    begin(24);
    store<u64>(outPtr, bswap<u64>(records));
    store<u64>(outPtr, bswap<u64>(<u64>first), 8);
    store<u64>(outPtr, bswap<u64>(<u64>last), 16);
    stateStore(k, kLen, outPtr, 24);
    setTimer(k, kLen, PROCESSING, expires);
  }
  return handleOk();
}

export function on_timers(due: usize, dueLen: usize): usize {
  for (let i: usize = 0; i < dueLen; i++) {
    const t = due + i * DUE_TIMER_SIZE;
    const k = load<usize>(t);
    const kLen = load<usize>(t, 4);
    loadSession(k, kLen);
    if (!has) continue;
    stateDelete(k, kLen);
    begin(kLen * 3 + 64);
    pushLossy(k, kLen);
    pushByte(0x3a);
    pushDecimal(records);
    pushByte(0x3a);
    pushSigned(first);
    pushByte(0x3a);
    pushSigned(last);
    emitKeyed(outputPtr, outputLen, kLen > 0 ? 1 : 0, k, kLen, outPtr, outLen);
  }
  return handleOk();
}

/// The packed batch path: the same `handle`, its batch read from one buffer
/// and its outputs written into one (see glue.ts).
export function handle_packed(buf: usize, len: usize): usize {
  return packed(buf, len, handle);
}

// counter, in AssemblyScript: keeps a per-key count in partition state and,
// for each record, emits "<key>:<count>" (the count after this record; the
// key as UTF-8 with each maximal invalid subpart replaced by U+FFFD, keyless
// records counted under the empty key) with the same key to the topic named
// by route config `output` — byte for byte what the Rust `counter` plugin
// emits. The canonical-ABI glue is glue.ts.
//
// Optional route config `fail_on`: a batch containing a record whose value
// equals it fails with `retry`, after having written state and emitted
// records for the records before it, which the host then discards.

import {
  RECORD_SIZE, begin, bytesEqual, bytesEqualAscii, emitWithKeyOf, handleOk, handleRetry,
  initErr, initOk, keyLen, keyPtr, outLen, outPtr, pushAscii, pushByte, pushBytes,
  pushDecimal, pushLossy, recordOffset, stateStore, storedNumber, valueLen, valuePtr, packed,
} from "./glue";
export {
  cabi_realloc, cabi_post_init, cabi_post_handle, cabi_post_handle_packed, cabi_post_on_timers, on_timers,
} from "./glue";

let outputPtr: usize = 0;
let outputLen: usize = 0;
let failOnPtr: usize = 0;
let failOnLen: isize = -1;

export function init(
  _plugin: usize, _pluginLen: usize, _version: usize, _versionLen: usize,
  _topic: usize, _topicLen: usize, _partition: u32, config: usize, configLen: usize,
): usize {
  let found = false;
  for (let i: usize = 0; i < configLen; i++) {
    const pair = config + i * 16;
    // Host-allocated, and kept: cabi_post_init keeps what init received.
    if (bytesEqualAscii(load<usize>(pair), load<usize>(pair, 4), "output")) {
      outputPtr = load<usize>(pair, 8);
      outputLen = load<usize>(pair, 12);
      found = true;
    } else if (bytesEqualAscii(load<usize>(pair), load<usize>(pair, 4), "fail_on")) {
      failOnPtr = load<usize>(pair, 8);
      failOnLen = <isize>load<usize>(pair, 12);
    }
  }
  return found ? initOk() : initErr("counter needs route config `output`: the topic to write to");
}

export function handle(batch: usize, batchLen: usize): usize {
  for (let i: usize = 0; i < batchLen; i++) {
    const r = batch + i * RECORD_SIZE;
    if (failOnLen >= 0 && bytesEqual(valuePtr(r), valueLen(r), failOnPtr, <usize>failOnLen)) {
      begin(64);
      pushAscii("record at offset ");
      pushDecimal(recordOffset(r));
      pushAscii(" matches fail_on");
      return handleRetry();
    }
    const k = keyPtr(r);
    const kLen = keyLen(r);
    const count = storedNumber(k, kLen) + 1;
    begin(20);
    pushDecimal(count);
    const digits = outPtr;
    const digitsLen = outLen;
    stateStore(k, kLen, digits, digitsLen);
    begin(kLen * 3 + 21);
    pushLossy(k, kLen);
    pushByte(0x3a); // ':'
    pushBytes(digits, digitsLen);
    emitWithKeyOf(outputPtr, outputLen, r, outPtr, outLen);
  }
  return handleOk();
}

/// The packed batch path: the same `handle`, its batch read from one buffer
/// and its outputs written into one (see glue.ts).
export function handle_packed(buf: usize, len: usize): usize {
  return packed(buf, len, handle);
}

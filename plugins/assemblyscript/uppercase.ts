// uppercase: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// glue.ts is the canonical-ABI glue (AssemblyScript has no WIT bindings
// generator): records are addresses (see its field accessors), bytes are
// (pointer, length) pairs. Do not use the managed heap (`new`, runtime
// strings): the build uses the stub runtime, and batch memory is an arena
// emptied after every batch.

import {
  RECORD_SIZE, bytesEqualAscii, emitWithKeyOf, handleOk, initErr, initOk, valueLen, valuePtr, packed,
} from "./glue";
export {
  cabi_realloc, cabi_post_init, cabi_post_handle, cabi_post_handle_packed, cabi_post_on_timers, on_timers,
} from "./glue";

let outputPtr: usize = 0;
let outputLen: usize = 0;

export function init(
  _plugin: usize, _pluginLen: usize, _version: usize, _versionLen: usize,
  _topic: usize, _topicLen: usize, _partition: u32, config: usize, configLen: usize,
): usize {
  for (let i: usize = 0; i < configLen; i++) {
    const pair = config + i * 16;
    if (bytesEqualAscii(load<usize>(pair), load<usize>(pair, 4), "output")) {
      outputPtr = load<usize>(pair, 8);
      outputLen = load<usize>(pair, 12);
      return initOk();
    }
  }
  return initErr("uppercase needs route config `output`: the topic to write to");
}

export function handle(batch: usize, batchLen: usize): usize {
  for (let i: usize = 0; i < batchLen; i++) {
    const r = batch + i * RECORD_SIZE;
    const v = valuePtr(r);
    const n = valueLen(r);
    for (let j: usize = 0; j < n; j++) {
      const c = load<u8>(v + j);
      if (c >= 0x61 && c <= 0x7a) store<u8>(v + j, c - 0x20);
    }
    emitWithKeyOf(outputPtr, outputLen, r, v, n);
  }
  return handleOk();
}

/// The packed batch path: the same `handle`, its batch read from one buffer
/// and its outputs written into one (see glue.ts).
export function handle_packed(buf: usize, len: usize): usize {
  return packed(buf, len, handle);
}

// uppercase: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// Contract linecook:handler@0.2.0. componentize-js maps the world: the
// exported `guest` interface is this module's `guest` object (`init`,
// `handle`, `onTimers`); imported interfaces are modules named by their WIT
// path ('linecook:handler/state@0.2.0': get, set, setWithTtl, delete, scan;
// '.../emit@0.2.0': send; '.../timers@0.2.0': set, cancel, watermark, nowMs;
// '.../log@0.2.0': write). list<u8> is a Uint8Array, option<T> is T or
// undefined, s64 and u64 are BigInt, records are objects with camelCase
// fields. Throw a string to fail `init`; throw { tag: 'retry' | 'fatal',
// val: 'why' } or { tag: 'poison', val: { index, message } } to fail a
// batch. Module state is dropped at every swap: keep durable data in
// `state`.

import { send } from 'linecook:handler/emit@0.2.0';

let output;

export const guest = {
  init(context) {
    const entry = context.config.find(([key]) => key === 'output');
    if (entry === undefined) {
      throw 'uppercase needs route config `output`: the topic to write to';
    }
    output = entry[1];
  },

  handle(batch) {
    for (const record of batch) {
      const value = new Uint8Array(record.value);
      for (let i = 0; i < value.length; i++) {
        if (value[i] >= 0x61 && value[i] <= 0x7a) value[i] -= 0x20;
      }
      send({ topic: output, key: record.key, value, headers: [] });
    }
  },

  // Called with the timers set through 'linecook:handler/timers@0.2.0'
  // once they are due; this handler sets none.
  onTimers() {},
};

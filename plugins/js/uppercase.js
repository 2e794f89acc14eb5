// uppercase: emits each record's value ASCII-upper-cased, with the same key,
// to the topic named by the route config `output`.
//
// componentize-js maps the world: exports are this module's `init` and
// `handle`; imported interfaces are modules named by their WIT path
// ('linecook:handler/state@0.1.0': get, set, delete, scan; '.../emit@0.1.0':
// send; '.../log@0.1.0': write). list<u8> is a Uint8Array, option<T> is T or
// undefined, records are objects with camelCase fields. Throw a string to
// fail `init`; throw { tag: 'retry' | 'fatal', val: 'why' } or
// { tag: 'poison', val: { index, message } } to fail a batch. Module state is
// dropped at every swap: keep durable data in `state`.

import { send } from 'linecook:handler/emit@0.1.0';

let output;

export function init(context) {
  const entry = context.config.find(([key]) => key === 'output');
  if (entry === undefined) {
    throw 'uppercase needs route config `output`: the topic to write to';
  }
  output = entry[1];
}

export function handle(batch) {
  for (const record of batch) {
    const value = Uint8Array.from(record.value);
    for (let i = 0; i < value.length; i++) {
      if (value[i] >= 0x61 && value[i] <= 0x7a) value[i] -= 0x20;
    }
    send({ topic: output, key: record.key, value, headers: [] });
  }
}

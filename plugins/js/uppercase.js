// uppercase, in JavaScript: emits each record's value ASCII-upper-cased, with
// the same key, to the topic named by route config `output` — byte for byte
// what the Rust `uppercase` plugin emits.
//
// componentize-js maps the world: exports are this module's `init` and
// `handle`; imported interfaces are modules named by their WIT path; list<u8>
// is a Uint8Array, option<T> is T or undefined, records are objects with
// camelCase fields.

import { send } from 'linecook:handler/emit@0.1.0';

// One instance serves one partition; `init` runs once, before any batch.
let output;

export function init(context) {
  const entry = context.config.find(([key]) => key === 'output');
  if (entry === undefined) {
    // A thrown value becomes the `err` of init's result.
    throw 'uppercase needs route config `output`: the topic to write to';
  }
  output = entry[1];
}

export function handle(batch) {
  for (const record of batch) {
    const value = Uint8Array.from(record.value);
    // ASCII letters only, like Rust's make_ascii_uppercase.
    for (let i = 0; i < value.length; i++) {
      if (value[i] >= 0x61 && value[i] <= 0x7a) value[i] -= 0x20;
    }
    send({ topic: output, key: record.key, value, headers: [] });
  }
}

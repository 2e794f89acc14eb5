// counter, in JavaScript: keeps a per-key count in partition state and, for
// each record, emits "<key>:<count>" (the count after this record; the key
// decoded as UTF-8 with invalid sequences replaced by U+FFFD, keyless records
// counted under the empty key) with the same key to the topic named by route
// config `output` — byte for byte what the Rust `counter` plugin emits.
//
// Optional route config `fail_on`: a batch containing a record whose value
// equals it fails with `retry`, after having written state and emitted
// records for the records before it, which the host then discards.

import { send } from 'linecook:handler/emit@0.1.0';
import { get, set } from 'linecook:handler/state@0.1.0';

let output;
let failOn;

export function init(context) {
  const config = new Map(context.config);
  if (!config.has('output')) {
    throw 'counter needs route config `output`: the topic to write to';
  }
  output = config.get('output');
  failOn = config.has('fail_on') ? new TextEncoder().encode(config.get('fail_on')) : undefined;
}

const equal = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i]);

// TextDecoder replaces each maximal invalid subpart with U+FFFD, as Rust's
// String::from_utf8_lossy does.
const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();

export function handle(batch) {
  for (const record of batch) {
    if (failOn !== undefined && equal(record.value, failOn)) {
      // A thrown handler-error variant becomes the `err` of handle's result.
      throw { tag: 'retry', val: `record at offset ${record.offset} matches fail_on` };
    }
    const key = record.key ?? new Uint8Array();
    const stored = get(key);
    const text = stored === undefined ? '' : decoder.decode(stored);
    const count = (/^[0-9]+$/.test(text) ? Number(text) : 0) + 1;
    set(key, encoder.encode(String(count)));
    const line = `${decoder.decode(key)}:${count}`;
    send({ topic: output, key: record.key, value: encoder.encode(line), headers: [] });
  }
}

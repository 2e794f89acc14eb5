// session, in JavaScript (contract 0.2.0): byte for byte what the Rust
// `session` plugin does. Session windows per key with a processing-time gap
// of route config `gap_ms`: each record joins its key's session (keyless
// records share the empty key) and moves the key's processing-time timer to
// now + `gap_ms`. When a key has had no record for `gap_ms`, its timer
// fires: the plugin emits "<key>:<records>:<first-ts>:<last-ts>" to the
// topic named by route config `output`, keyed by the key (none for the
// empty key), and forgets the session.
//
// s64 and u64 values arrive as BigInt: the arithmetic here stays in BigInt.

import { send } from 'linecook:handler/emit@0.2.0';
import { get, set, delete as remove } from 'linecook:handler/state@0.2.0';
import { set as setTimer, nowMs } from 'linecook:handler/timers@0.2.0';

let output;
let gapMs;

const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();

// A session in state: records, first and last timestamp, 8 bytes each,
// big-endian.
function load(key) {
  const stored = get(key);
  if (stored === undefined || stored.length !== 24) return undefined;
  const view = new DataView(stored.buffer, stored.byteOffset, 24);
  return {
    records: view.getBigUint64(0),
    first: view.getBigInt64(8),
    last: view.getBigInt64(16),
  };
}

function store(key, s) {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, s.records);
  view.setBigInt64(8, s.first);
  view.setBigInt64(16, s.last);
  set(key, bytes);
}

export const guest = {
  init(context) {
    const config = new Map(context.config);
    if (!config.has('output')) {
      throw 'session needs route config `output`: the topic to write to';
    }
    if (!config.has('gap_ms')) {
      throw 'session needs route config `gap_ms`: the inactivity gap';
    }
    const text = config.get('gap_ms');
    if (!/^[0-9]+$/.test(text) || BigInt(text) <= 0n || BigInt(text) >= 1n << 63n) {
      throw 'route config `gap_ms` must be a positive number of milliseconds';
    }
    output = config.get('output');
    gapMs = BigInt(text);
  },

  handle(batch) {
    const expires = nowMs() + gapMs;
    for (const record of batch) {
      const key = record.key ?? new Uint8Array();
      const ts = record.timestampMs;
      const s = load(key);
      store(key, s === undefined
        ? { records: 1n, first: ts, last: ts }
        : {
          records: s.records + 1n,
          first: ts < s.first ? ts : s.first,
          last: ts > s.last ? ts : s.last,
        });
      setTimer(key, 'processing', expires);
    }
  },

  onTimers(due) {
    for (const timer of due) {
      const s = load(timer.key);
      if (s === undefined) continue;
      remove(timer.key);
      const line = `${decoder.decode(timer.key)}:${s.records}:${s.first}:${s.last}`;
      send({
        topic: output,
        key: timer.key.length > 0 ? timer.key : undefined,
        value: encoder.encode(line),
        headers: [],
        timestampMs: undefined,
      });
    }
  },
};

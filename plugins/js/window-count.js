// window-count, in JavaScript (contract 0.2.0): byte for byte what the Rust
// `window-count` plugin does. Counts records per key in tumbling event-time
// windows of route config `window_ms` (epoch-aligned); when the watermark
// reaches a window's end, emits "<key>:<window-start-ms>:<count>" keyed by
// the key (none for the empty key) and timestamped with the window's end,
// to the topic named by route config `output`. A record whose window
// already closed is late: `late = "dead-letter"` (default) poisons it,
// `late = "drop"` drops it and counts it under state key `late`.
//
// s64 and u64 values arrive as BigInt: the arithmetic here stays in BigInt.

import { send } from 'linecook:handler/emit@0.2.0';
import { get, set, delete as remove } from 'linecook:handler/state@0.2.0';
import { set as setTimer, watermark, allowedLatenessMs } from 'linecook:handler/timers@0.2.0';

let output;
let windowMs;
let dropLate = false;

const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();
const SIGN = 1n << 63n;
const U64 = 1n << 64n;

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

// The window's start as 8 bytes ordered like the number (sign bit flipped),
// as the Rust SDK's `Window::key`.
function windowKey(key, start) {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, (start + SIGN) % U64);
  return concat(key, bytes);
}

function readCount(key) {
  const stored = get(key);
  const text = stored === undefined ? '' : decoder.decode(stored);
  return /^[0-9]+$/.test(text) ? Number(text) : 0;
}

const countKey = (wkey) => concat(encoder.encode('w'), wkey);
const LATE = encoder.encode('late');

export const guest = {
  init(context) {
    const config = new Map(context.config);
    if (!config.has('output')) {
      throw 'window-count needs route config `output`: the topic to write to';
    }
    if (!config.has('window_ms')) {
      throw 'window-count needs route config `window_ms`: the window size';
    }
    const text = config.get('window_ms');
    if (!/^[0-9]+$/.test(text) || BigInt(text) <= 0n) {
      throw 'route config `window_ms` must be a positive number of milliseconds';
    }
    const late = config.get('late') ?? 'dead-letter';
    if (late !== 'dead-letter' && late !== 'drop') {
      throw `route config \`late\` is \`${late}\`; use \`dead-letter\` or \`drop\``;
    }
    output = config.get('output');
    windowMs = BigInt(text);
    dropLate = late === 'drop';
  },

  handle(batch) {
    let mark = watermark();
    const lateness = allowedLatenessMs();
    for (let index = 0; index < batch.length; index++) {
      const record = batch[index];
      const ts = record.timestampMs;
      const seen = ts - lateness;
      mark = mark === undefined || seen > mark ? seen : mark;
      const rem = ((ts % windowMs) + windowMs) % windowMs;
      const start = ts - rem;
      const end = start + windowMs;
      if (mark >= end) {
        if (dropLate) {
          set(LATE, encoder.encode(String(readCount(LATE) + 1)));
          continue;
        }
        throw {
          tag: 'poison',
          val: { index, message: `late: window ${start}..${end} closed at watermark ${mark}` },
        };
      }
      const wkey = windowKey(record.key ?? new Uint8Array(), start);
      set(countKey(wkey), encoder.encode(String(readCount(countKey(wkey)) + 1)));
      setTimer(wkey, 'event', end);
    }
  },

  onTimers(due) {
    for (const timer of due) {
      if (timer.key.length < 8) continue;
      const key = timer.key.subarray(0, timer.key.length - 8);
      const raw = new DataView(timer.key.buffer, timer.key.byteOffset + timer.key.length - 8, 8);
      const start = raw.getBigUint64(0) - SIGN;
      const ck = countKey(timer.key);
      const count = readCount(ck);
      remove(ck);
      const line = `${decoder.decode(key)}:${start}:${count}`;
      send({
        topic: output,
        key: key.length ? key : undefined,
        value: encoder.encode(line),
        headers: [],
        timestampMs: start + windowMs,
      });
    }
  },
};

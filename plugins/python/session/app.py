"""session, in Python (contract 0.2.0): byte for byte what the Rust `session`
plugin does. Session windows per key with a processing-time gap of route
config `gap_ms`: each record joins its key's session (keyless records share
the empty key) and moves the key's processing-time timer to now + `gap_ms`.
When a key has had no record for `gap_ms`, its timer fires: the plugin emits
"<key>:<records>:<first-ts>:<last-ts>" to the topic named by route config
`output`, keyed by the key (none for the empty key), and forgets the
session."""

import struct

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import emit, state, timers, types

OUTPUT = None
GAP_MS = None
# A session in state: records, first and last timestamp, big-endian.
SESSION = struct.Struct(">Qqq")


def load(key: bytes):
    value = state.get(key)
    if value is None or len(value) != SESSION.size:
        return None
    return SESSION.unpack(value)


class Guest(exports.Guest):
    def init(self, context: types.Context) -> None:
        global OUTPUT, GAP_MS
        config = dict(context.config)
        if "output" not in config:
            raise Err("session needs route config `output`: the topic to write to")
        if "gap_ms" not in config:
            raise Err("session needs route config `gap_ms`: the inactivity gap")
        try:
            GAP_MS = int(config["gap_ms"])
        except ValueError:
            GAP_MS = 0
        if GAP_MS <= 0:
            raise Err("route config `gap_ms` must be a positive number of milliseconds")
        OUTPUT = config["output"]

    def handle(self, batch: list[types.StreamRecord]) -> None:
        expires = timers.now_ms() + GAP_MS
        for record in batch:
            key = record.key or b""
            ts = record.timestamp_ms
            current = load(key)
            if current is None:
                session = (1, ts, ts)
            else:
                records, first, last = current
                session = (records + 1, min(first, ts), max(last, ts))
            state.set(key, SESSION.pack(*session))
            timers.set(key, types.TimeDomain.PROCESSING, expires)

    def on_timers(self, due: list[types.DueTimer]) -> None:
        for timer in due:
            current = load(timer.key)
            if current is None:
                continue
            state.delete(timer.key)
            records, first, last = current
            line = f"{timer.key.decode('utf-8', errors='replace')}:{records}:{first}:{last}"
            emit.send(types.OutputRecord(OUTPUT, timer.key or None, line.encode(), [], None))

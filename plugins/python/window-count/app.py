"""window-count, in Python (contract 0.2.0): byte for byte what the Rust
`window-count` plugin does. Counts records per key in tumbling event-time
windows of route config `window_ms` (epoch-aligned); when the watermark
reaches a window's end, emits "<key>:<window-start-ms>:<count>" keyed by the
key (none for the empty key) and timestamped with the window's end, to the
topic named by route config `output`. A record whose window already closed
is late: `late = "dead-letter"` (default) poisons it, `late = "drop"` drops
it and counts it under state key `late`."""

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import emit, state, timers, types

OUTPUT = None
WINDOW_MS = None
DROP_LATE = False


def window_key(key: bytes, start: int) -> bytes:
    # The window's start as 8 bytes ordered like the number: the sign bit
    # flipped, as the Rust SDK's `Window::key`.
    return key + ((start + (1 << 63)) % (1 << 64)).to_bytes(8, "big")


def read_count(key: bytes) -> int:
    try:
        return int(state.get(key) or b"")
    except ValueError:
        return 0


class Guest(exports.Guest):
    def init(self, context: types.Context) -> None:
        global OUTPUT, WINDOW_MS, DROP_LATE
        config = dict(context.config)
        if "output" not in config:
            raise Err("window-count needs route config `output`: the topic to write to")
        if "window_ms" not in config:
            raise Err("window-count needs route config `window_ms`: the window size")
        try:
            WINDOW_MS = int(config["window_ms"])
        except ValueError:
            WINDOW_MS = 0
        if WINDOW_MS <= 0:
            raise Err("route config `window_ms` must be a positive number of milliseconds")
        late = config.get("late", "dead-letter")
        if late not in ("dead-letter", "drop"):
            raise Err(f"route config `late` is `{late}`; use `dead-letter` or `drop`")
        OUTPUT = config["output"]
        DROP_LATE = late == "drop"

    def handle(self, batch: list[types.StreamRecord]) -> None:
        watermark = timers.watermark()
        lateness = timers.allowed_lateness_ms()
        for index, record in enumerate(batch):
            ts = record.timestamp_ms
            seen = ts - lateness
            watermark = seen if watermark is None else max(watermark, seen)
            start = ts - ts % WINDOW_MS
            end = start + WINDOW_MS
            if watermark >= end:
                if DROP_LATE:
                    state.set(b"late", str(read_count(b"late") + 1).encode())
                    continue
                raise Err(types.HandlerError_Poison(types.PoisonRecord(
                    index, f"late: window {start}..{end} closed at watermark {watermark}")))
            wkey = window_key(record.key or b"", start)
            state.set(b"w" + wkey, str(read_count(b"w" + wkey) + 1).encode())
            timers.set(wkey, types.TimeDomain.EVENT, end)

    def on_timers(self, due: list[types.DueTimer]) -> None:
        for timer in due:
            if len(timer.key) < 8:
                continue
            key = timer.key[:-8]
            start = int.from_bytes(timer.key[-8:], "big") - (1 << 63)
            count = read_count(b"w" + timer.key)
            state.delete(b"w" + timer.key)
            line = key.decode("utf-8", errors="replace") + ":" + str(start) + ":" + str(count)
            emit.send(types.OutputRecord(
                OUTPUT, key or None, line.encode(), [], start + WINDOW_MS))

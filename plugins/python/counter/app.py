"""counter, in Python: keeps a per-key count in partition state and, for each
record, emits "<key>:<count>" (the count after this record; the key decoded
as UTF-8 with invalid bytes replaced, keyless records counted under the empty
key) with the same key to the topic named by route config `output` — byte for
byte what the Rust `counter` plugin emits.

Optional route config `fail_on`: a batch containing a record whose value
equals it fails with `retry`, after having written state and emitted records
for the records before it, which the host then discards."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, state, types

OUTPUT = None
FAIL_ON = None


class WitWorld(wit_world.WitWorld):
    def init(self, context: types.Context) -> None:
        global OUTPUT, FAIL_ON
        config = dict(context.config)
        if "output" not in config:
            raise Err("counter needs route config `output`: the topic to write to")
        OUTPUT = config["output"]
        FAIL_ON = config.get("fail_on", "").encode() or None

    def handle(self, batch: list[types.StreamRecord]) -> None:
        for record in batch:
            if FAIL_ON is not None and record.value == FAIL_ON:
                raise Err(types.HandlerError_Retry(
                    f"record at offset {record.offset} matches fail_on"))
            key = record.key or b""
            try:
                count = int(state.get(key) or b"")
            except ValueError:
                count = 0
            count += 1
            state.set(key, str(count).encode())
            line = key.decode("utf-8", errors="replace") + ":" + str(count)
            emit.send(types.OutputRecord(OUTPUT, record.key, line.encode(), []))

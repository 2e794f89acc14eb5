"""uppercase, in Python: emits each record's value ASCII-upper-cased, with the
same key, to the topic named by route config `output` — byte for byte what
the Rust `uppercase` plugin emits."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, types

# One instance serves one partition; `init` runs once, before any batch.
OUTPUT = None


class WitWorld(wit_world.WitWorld):
    def init(self, context: types.Context) -> None:
        global OUTPUT
        config = dict(context.config)
        if "output" not in config:
            raise Err("uppercase needs route config `output`: the topic to write to")
        OUTPUT = config["output"]

    def handle(self, batch: list[types.StreamRecord]) -> None:
        for record in batch:
            # bytes.upper() changes ASCII letters only, like Rust's
            # make_ascii_uppercase.
            emit.send(types.OutputRecord(OUTPUT, record.key, record.value.upper(), []))

"""uppercase: emits each record's value ASCII-upper-cased, with the same key,
to the topic named by the route config `output`.

`init` runs once per partition before any batch; `handle` gets consecutive
records of that partition. Keep durable data in `state` (wit_world.imports.state):
module globals are dropped at every swap. Fail a batch by raising
componentize_py_types.Err(types.HandlerError_Retry("why"))."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, types

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
            emit.send(types.OutputRecord(OUTPUT, record.key, record.value.upper(), []))

"""uppercase: emits each record's value ASCII-upper-cased, with the same key,
to the topic named by the route config `output`.

Contract linecook:handler@0.2.0: the `Guest` class implements the exported
`guest` interface. `init` runs once per partition before any batch; `handle`
gets consecutive records of that partition; `on_timers` gets the timers set
with `timers.set(key, types.TimeDomain.PROCESSING | EVENT, due_ms)` once
they are due. Keep durable data in `state` (wit_world.imports.state):
module globals are dropped at every swap. Fail a batch by raising
componentize_py_types.Err(types.HandlerError_Retry("why"))."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import emit, types

OUTPUT = None


class Guest(exports.Guest):
    def init(self, context: types.Context) -> None:
        global OUTPUT
        config = dict(context.config)
        if "output" not in config:
            raise Err("uppercase needs route config `output`: the topic to write to")
        OUTPUT = config["output"]

    def handle(self, batch: list[types.StreamRecord]) -> None:
        for record in batch:
            # The last field is the output's timestamp: None means the
            # time the batch commits.
            emit.send(types.OutputRecord(OUTPUT, record.key, record.value.upper(), [], None))

    def on_timers(self, due: list[types.DueTimer]) -> None:
        pass

//! uppercase: emits each record's value ASCII-upper-cased, with the same key,
//! to the topic named by the route config `output`.
//!
//! glue.zig is the canonical-ABI glue (Zig has no WIT bindings generator):
//! implement `onInit` and `onHandle`; read records with glue.key/glue.value,
//! use glue.state and glue.emit. Memory allocated during a batch
//! (glue.alloc) is dropped after it; keep what must last with glue.keep in
//! onInit, and durable data in state.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    for (config) |*pair| {
        if (glue.eql(glue.pairKey(pair), "output")) {
            output = glue.keep(glue.pairValue(pair));
            return null;
        }
    }
    return "uppercase needs route config `output`: the topic to write to";
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    for (batch) |*record| {
        const value = glue.value(record);
        for (value) |*c| {
            if (c.* >= 'a' and c.* <= 'z') c.* -= 'a' - 'A';
        }
        glue.emit(output, glue.key(record), value);
    }
    return null;
}

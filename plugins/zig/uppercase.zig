//! uppercase, in Zig: emits each record's value ASCII-upper-cased, with the
//! same key, to the topic named by route config `output` — byte for byte what
//! the Rust `uppercase` plugin emits. The canonical-ABI glue is glue.zig.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    for (config) |*pair| {
        if (eql(glue.pairKey(pair), "output")) {
            output = glue.keep(glue.pairValue(pair));
            return null;
        }
    }
    return "uppercase needs route config `output`: the topic to write to";
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    for (batch) |*record| {
        const value = glue.value(record);
        // ASCII letters only, like Rust's make_ascii_uppercase.
        for (value) |*c| {
            if (c.* >= 'a' and c.* <= 'z') c.* -= 'a' - 'A';
        }
        glue.emit(output, glue.key(record), value);
    }
    return null;
}

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}

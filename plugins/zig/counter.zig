//! counter, in Zig: keeps a per-key count in partition state and, for each
//! record, emits "<key>:<count>" (the count after this record; the key as
//! UTF-8 with each maximal invalid subpart replaced by U+FFFD, keyless
//! records counted under the empty key) with the same key to the topic named
//! by route config `output` — byte for byte what the Rust `counter` plugin
//! emits. The canonical-ABI glue is glue.zig.
//!
//! Optional route config `fail_on`: a batch containing a record whose value
//! equals it fails with `retry`, after having written state and emitted
//! records for the records before it, which the host then discards.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";
var fail_on: ?glue.Bytes = null;

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    var found = false;
    for (config) |*pair| {
        if (glue.eql(glue.pairKey(pair), "output")) {
            output = glue.keep(glue.pairValue(pair));
            found = true;
        } else if (glue.eql(glue.pairKey(pair), "fail_on")) {
            fail_on = glue.keep(glue.pairValue(pair));
        }
    }
    return if (found) null else "counter needs route config `output`: the topic to write to";
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    for (batch) |*record| {
        const value = glue.value(record);
        if (fail_on) |f| if (glue.eql(value, f)) {
            var message = glue.Buffer.init(64);
            message.push("record at offset ");
            message.pushDecimal(record.offset);
            message.push(" matches fail_on");
            return .{ .retry = message.bytes() };
        };
        const k = glue.key(record) orelse "";
        const count = glue.state.getNumber(k) + 1;
        var digits = glue.Buffer.init(20);
        digits.pushDecimal(count);
        glue.state.setValue(k, digits.bytes());
        var line = glue.Buffer.init(k.len * 3 + 21);
        line.pushLossy(k);
        line.push(":");
        line.push(digits.bytes());
        glue.emit(output, glue.key(record), line.bytes());
    }
    return null;
}

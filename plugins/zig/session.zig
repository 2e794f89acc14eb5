//! session, in Zig (contract 0.2.0): byte for byte what the Rust `session`
//! plugin does. Session windows per key with a processing-time gap of route
//! config `gap_ms`: each record joins its key's session (keyless records
//! share the empty key) and moves the key's processing-time timer to now +
//! `gap_ms`. When a key has had no record for `gap_ms`, its timer fires: the
//! plugin emits "<key>:<records>:<first-ts>:<last-ts>" to the topic named by
//! route config `output`, keyed by the key (none for the empty key), and
//! forgets the session. The canonical-ABI glue is glue.zig.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";
var gap_ms: i64 = 0;

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    var has_output = false;
    var gap: ?[]const u8 = null;
    for (config) |*pair| {
        const k = glue.pairKey(pair);
        if (glue.eql(k, "output")) {
            output = glue.keep(glue.pairValue(pair));
            has_output = true;
        } else if (glue.eql(k, "gap_ms")) {
            gap = glue.pairValue(pair);
        }
    }
    if (!has_output) return "session needs route config `output`: the topic to write to";
    const g = gap orelse return "session needs route config `gap_ms`: the inactivity gap";
    gap_ms = glue.parsePositive(g) orelse
        return "route config `gap_ms` must be a positive number of milliseconds";
    return null;
}

/// A session in state: records, first and last timestamp, 8 bytes each,
/// big-endian.
const Session = struct {
    records: u64,
    first: i64,
    last: i64,

    fn load(k: []const u8) ?Session {
        const v = glue.state.getValue(k) orelse return null;
        if (v.len != 24) return null;
        return .{
            .records = word(v[0..8]),
            .first = @bitCast(word(v[8..16])),
            .last = @bitCast(word(v[16..24])),
        };
    }

    fn store(self: Session, k: []const u8) void {
        var b = glue.Buffer.init(24);
        for ([_]u64{ self.records, @bitCast(self.first), @bitCast(self.last) }) |w| {
            var be: [8]u8 = undefined;
            for (0..8) |i| be[i] = @truncate(w >> @intCast(8 * (7 - i)));
            b.push(&be);
        }
        glue.state.setValue(k, b.bytes());
    }
};

fn word(b: []const u8) u64 {
    var w: u64 = 0;
    for (b) |byte| w = (w << 8) | byte;
    return w;
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    const expires = glue.timers.nowMs() + gap_ms;
    for (batch) |*record| {
        const k = glue.key(record) orelse "";
        const ts = record.timestamp_ms;
        const s: Session = if (Session.load(k)) |cur|
            .{ .records = cur.records + 1, .first = @min(cur.first, ts), .last = @max(cur.last, ts) }
        else
            .{ .records = 1, .first = ts, .last = ts };
        s.store(k);
        glue.timers.setTimer(k, .processing, expires);
    }
    return null;
}

pub fn onTimers(due: []const glue.DueTimer) ?glue.HandlerError {
    for (due) |*t| {
        const k = glue.timerKey(t);
        const s = Session.load(k) orelse continue;
        glue.state.deleteValue(k);
        var line = glue.Buffer.init(k.len * 3 + 64);
        line.pushLossy(k);
        line.push(":");
        line.pushDecimal(s.records);
        line.push(":");
        line.pushSigned(s.first);
        line.push(":");
        line.pushSigned(s.last);
        glue.emit(output, if (k.len > 0) k else null, line.bytes());
    }
    return null;
}

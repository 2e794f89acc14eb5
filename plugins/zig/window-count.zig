//! window-count, in Zig (contract 0.2.0): byte for byte what the Rust
//! `window-count` plugin does. Counts records per key in tumbling event-time
//! windows of route config `window_ms` (epoch-aligned); when the watermark
//! reaches a window's end, emits "<key>:<window-start-ms>:<count>" keyed by
//! the key (none for the empty key) and timestamped with the window's end,
//! to the topic named by route config `output`. A record whose window
//! already closed is late: `late = "dead-letter"` (default) poisons it,
//! `late = "drop"` drops it and counts it under state key `late`. The
//! canonical-ABI glue is glue.zig.

const glue = @import("glue.zig");

comptime {
    _ = glue;
}

var output: glue.Bytes = "";
var window_ms: i64 = 0;
var drop_late = false;

pub fn onInit(config: []const glue.Pair) ?[]const u8 {
    var has_output = false;
    var has_window = false;
    window_ms = 0;
    drop_late = false;
    for (config) |*pair| {
        const k = glue.pairKey(pair);
        const v = glue.pairValue(pair);
        if (glue.eql(k, "output")) {
            output = glue.keep(v);
            has_output = true;
        } else if (glue.eql(k, "window_ms")) {
            has_window = true;
            window_ms = glue.parsePositive(v) orelse
                return "route config `window_ms` must be a positive number of milliseconds";
        } else if (glue.eql(k, "late")) {
            if (glue.eql(v, "drop")) {
                drop_late = true;
            } else if (!glue.eql(v, "dead-letter")) {
                return "route config `late` must be `dead-letter` or `drop`";
            }
        }
    }
    if (!has_output) return "window-count needs route config `output`: the topic to write to";
    if (!has_window) return "window-count needs route config `window_ms`: the window size";
    return null;
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    var mark = glue.timers.currentWatermark();
    const lateness: i64 = @intCast(glue.timers.allowedLatenessMs());
    for (batch, 0..) |*record, i| {
        const ts = record.timestamp_ms;
        const seen = ts - lateness;
        if (mark == null or seen > mark.?) mark = seen;
        const start = ts - @mod(ts, window_ms);
        const end = start + window_ms;
        if (mark.? >= end) {
            if (drop_late) {
                writeCount("late", glue.state.getNumber("late") + 1);
                continue;
            }
            var message = glue.Buffer.init(96);
            message.push("late: window ");
            message.pushSigned(start);
            message.push("..");
            message.pushSigned(end);
            message.push(" closed at watermark ");
            message.pushSigned(mark.?);
            return .{ .poison = .{ .index = @intCast(i), .message = message.bytes() } };
        }
        // The window key: the record key, then the start as 8 big-endian
        // bytes with the sign bit flipped (ordered like the number).
        const k = glue.key(record) orelse "";
        var window_key = glue.Buffer.init(k.len + 8);
        window_key.push(k);
        var be: [8]u8 = undefined;
        const s: u64 = @as(u64, @bitCast(start)) ^ (@as(u64, 1) << 63);
        for (0..8) |b| be[b] = @truncate(s >> @intCast(8 * (7 - b)));
        window_key.push(&be);
        const ck = countKey(window_key.bytes());
        writeCount(ck, glue.state.getNumber(ck) + 1);
        glue.timers.setTimer(window_key.bytes(), .event, end);
    }
    return null;
}

pub fn onTimers(due: []const glue.DueTimer) ?glue.HandlerError {
    for (due) |*t| {
        const tk = glue.timerKey(t);
        if (tk.len < 8) continue;
        const k = tk[0 .. tk.len - 8];
        var s: u64 = 0;
        for (tk[tk.len - 8 ..]) |b| s = (s << 8) | b;
        const start: i64 = @bitCast(s ^ (@as(u64, 1) << 63));
        const ck = countKey(tk);
        const count = glue.state.getNumber(ck);
        glue.state.deleteValue(ck);
        var line = glue.Buffer.init(k.len * 3 + 42);
        line.pushLossy(k);
        line.push(":");
        line.pushSigned(start);
        line.push(":");
        line.pushDecimal(count);
        glue.emitAt(output, if (k.len > 0) k else null, line.bytes(), start + window_ms);
    }
    return null;
}

/// The state key of a window's count: "w" then the window key.
fn countKey(window_key: []const u8) []const u8 {
    var b = glue.Buffer.init(window_key.len + 1);
    b.push("w");
    b.push(window_key);
    return b.bytes();
}

fn writeCount(k: []const u8, n: u64) void {
    var digits = glue.Buffer.init(20);
    digits.pushDecimal(n);
    glue.state.setValue(k, digits.bytes());
}

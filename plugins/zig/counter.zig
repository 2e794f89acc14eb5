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
        if (eql(glue.pairKey(pair), "output")) {
            output = glue.keep(glue.pairValue(pair));
            found = true;
        } else if (eql(glue.pairKey(pair), "fail_on")) {
            fail_on = glue.keep(glue.pairValue(pair));
        }
    }
    return if (found) null else "counter needs route config `output`: the topic to write to";
}

pub fn onHandle(batch: []const glue.Record) ?glue.HandlerError {
    for (batch) |*record| {
        const value = glue.value(record);
        if (fail_on) |f| if (eql(value, f)) {
            var message = Buffer.init(64);
            message.push("record at offset ");
            message.pushDecimal(record.offset);
            message.push(" matches fail_on");
            return .{ .retry = message.bytes() };
        };
        const k = glue.key(record) orelse "";
        const count = storedCount(k) + 1;
        var digits = Buffer.init(20);
        digits.pushDecimal(count);
        glue.state.setValue(k, digits.bytes());
        var line = Buffer.init(k.len * 3 + 21);
        line.pushLossy(k);
        line.push(":");
        line.push(digits.bytes());
        glue.emit(output, glue.key(record), line.bytes());
    }
    return null;
}

/// The stored count, or 0 if absent or not a number.
fn storedCount(k: []const u8) u64 {
    const stored = glue.state.getValue(k) orelse return 0;
    if (stored.len == 0) return 0;
    var n: u64 = 0;
    for (stored) |d| {
        if (d < '0' or d > '9') return 0;
        n = n * 10 + (d - '0');
    }
    return n;
}

/// Bytes in the call's arena, with room for `capacity`.
const Buffer = struct {
    ptr: [*]u8,
    len: usize,

    fn init(capacity: usize) Buffer {
        return .{ .ptr = glue.alloc(capacity, 1), .len = 0 };
    }

    fn push(self: *Buffer, b: []const u8) void {
        @memcpy(self.ptr[self.len .. self.len + b.len], b);
        self.len += b.len;
    }

    fn pushDecimal(self: *Buffer, n: u64) void {
        var tmp: [20]u8 = undefined;
        var i: usize = tmp.len;
        var rest = n;
        while (true) {
            i -= 1;
            tmp[i] = @intCast('0' + rest % 10);
            rest /= 10;
            if (rest == 0) break;
        }
        self.push(tmp[i..]);
    }

    /// `s` decoded as UTF-8, each maximal invalid subpart replaced by U+FFFD
    /// — the rule Rust's String::from_utf8_lossy follows. At most 3 bytes
    /// out per byte in.
    fn pushLossy(self: *Buffer, s: []const u8) void {
        const replacement = "\xef\xbf\xbd";
        var i: usize = 0;
        while (i < s.len) {
            const c = s[i];
            if (c < 0x80) {
                self.push(s[i .. i + 1]);
                i += 1;
                continue;
            }
            var need: usize = 0;
            var lo: u8 = 0x80;
            var hi: u8 = 0xBF;
            if (c >= 0xC2 and c <= 0xDF) {
                need = 2;
            } else if (c >= 0xE0 and c <= 0xEF) {
                need = 3;
                if (c == 0xE0) lo = 0xA0;
                if (c == 0xED) hi = 0x9F;
            } else if (c >= 0xF0 and c <= 0xF4) {
                need = 4;
                if (c == 0xF0) lo = 0x90;
                if (c == 0xF4) hi = 0x8F;
            } else {
                self.push(replacement);
                i += 1;
                continue;
            }
            var k: usize = 1;
            while (k < need and i + k < s.len) : (k += 1) {
                const t = s[i + k];
                const tlo: u8 = if (k == 1) lo else 0x80;
                const thi: u8 = if (k == 1) hi else 0xBF;
                if (t < tlo or t > thi) break;
            }
            if (k == need) self.push(s[i .. i + need]) else self.push(replacement);
            i += k;
        }
    }

    fn bytes(self: *const Buffer) []const u8 {
        return self.ptr[0..self.len];
    }
};

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}

//! Canonical-ABI glue between the linecook:handler@0.2.0 world (timers,
//! output timestamps, state TTL) and Zig, written by hand: Zig has no WIT
//! bindings generator. `linecook sdk componentize --contract 0.2.0`
//! attaches the world to the core module this builds and makes the
//! component; the names and layouts below must match wit/0.2.0/handler.wit
//! under the canonical ABI:
//!
//! - The exports are the `guest` interface's functions, named
//!   `linecook:handler/guest@0.2.0#init` and so on.
//! - `init(context)`: the context record flattens to 9 i32 parameters
//!   (plugin, version, topic as ptr+len; partition; config as ptr+len of
//!   16-byte (string, string) tuples). `result<_, string>` is returned through
//!   a 12-byte area: tag u8 @0, message ptr @4, len @8.
//! - `handle(batch)`: a list of 64-byte stream-records — topic @0, partition
//!   @8, offset @16, timestamp @24, key option (tag @32, ptr @36, len @40),
//!   value @44, headers @52 (16-byte headers). `result<_, handler-error>`
//!   comes back through a 20-byte area: tag @0, error tag @4, payload @8.
//! - `on-timers(due)`: a list of 24-byte due-timers — key @0, domain u8 @8,
//!   due-ms @16 — and the same result as `handle`.
//! - `emit.send` takes the output record flattened to 10 i32s and an i64
//!   (the timestamp option's tag and value); option<s64> results come
//!   through a 16-byte area (tag @0, value @8).
//! - Memory is an arena: everything the host passes in and every import
//!   result is allocated by `cabi_realloc` and dropped in the post-return
//!   function after `handle`; what `init` allocates stays.
//! - The packed batch path (`linecook:handler/packed@0.2.0#handle-packed`,
//!   layouts v1 of docs/contract-0.2.md): the batch comes in as one byte
//!   list, read into the same `Record`s `onHandle` gets (pointing into the
//!   buffer, no copies), and every `emit` of the call goes into one effects
//!   buffer returned as a `result<list<u8>, handler-error>` (20-byte area:
//!   tag @0, list ptr @4 and len @8, or the error as for `handle`). State
//!   and timers stay imports. The host calls it instead of `handle`
//!   whenever a component exports it; `linecook sdk componentize` embeds
//!   the `packed-handler` world when the module does.
//!
//! The handler (the root file) provides
//!   `pub fn onInit(config: []const Pair) ?[]const u8` (an error message or null) and
//!   `pub fn onHandle(batch: []const Record) ?HandlerError`, and may provide
//!   `pub fn onTimers(due: []const DueTimer) ?HandlerError` (without it,
//!   due timers pass).

const root = @import("root");

pub const Bytes = []const u8;

/// A config entry.
pub const Pair = extern struct { key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize };

pub fn pairKey(p: *const Pair) Bytes {
    return p.key_ptr[0..p.key_len];
}
pub fn pairValue(p: *const Pair) Bytes {
    return p.value_ptr[0..p.value_len];
}

/// A stream record as the host lays it out (64 bytes, align 8).
pub const Record = extern struct {
    topic_ptr: [*]const u8,
    topic_len: usize,
    partition: u32,
    _pad: u32,
    offset: u64,
    timestamp_ms: i64,
    key_tag: u8,
    key_ptr: [*]const u8,
    key_len: usize,
    value_ptr: [*]u8,
    value_len: usize,
    headers_ptr: usize,
    headers_len: usize,
};

comptime {
    if (@sizeOf(Record) != 64 or @offsetOf(Record, "key_tag") != 32 or
        @offsetOf(Record, "value_ptr") != 44 or @offsetOf(Record, "headers_ptr") != 52)
        @compileError("stream-record layout does not match the canonical ABI");
}

pub fn key(r: *const Record) ?Bytes {
    return if (r.key_tag == 0) null else r.key_ptr[0..r.key_len];
}
pub fn value(r: *const Record) []u8 {
    return r.value_ptr[0..r.value_len];
}

pub const HandlerError = union(enum) {
    retry: Bytes,
    poison: struct { index: u32, message: Bytes },
    fatal: Bytes,
};

// ---- memory ---------------------------------------------------------------

extern var __heap_base: u8;
var top: usize = 0;
/// Where the per-call arena starts: everything below lives for the instance.
var base: usize = 0;

pub fn alloc(size: usize, alignment: usize) [*]u8 {
    if (top == 0) {
        top = @intFromPtr(&__heap_base);
        base = top;
    }
    const start = (top + alignment - 1) & ~(alignment - 1);
    const end = start + size;
    const have = @wasmMemorySize(0) * 65536;
    if (end > have) {
        const pages = (end - have + 65535) / 65536;
        // Out of memory (or over the host's limit): trap, the host reports it.
        if (@wasmMemoryGrow(0, pages) < 0) @trap();
    }
    top = end;
    return @ptrFromInt(start);
}

export fn cabi_realloc(old: usize, old_size: usize, alignment: usize, new_size: usize) usize {
    const p = alloc(new_size, alignment);
    if (old != 0) {
        const n = @min(old_size, new_size);
        const from: [*]const u8 = @ptrFromInt(old);
        @memcpy(p[0..n], from[0..n]);
    }
    return @intFromPtr(p);
}

/// Copies `bytes` into memory that outlives the current call.
pub fn keep(bytes: Bytes) Bytes {
    const p = alloc(bytes.len, 1);
    @memcpy(p[0..bytes.len], bytes);
    return p[0..bytes.len];
}

// ---- text ------------------------------------------------------------------

/// Bytes in the call's arena, with room for `capacity`.
pub const Buffer = struct {
    ptr: [*]u8,
    len: usize,

    pub fn init(capacity: usize) Buffer {
        return .{ .ptr = alloc(capacity, 1), .len = 0 };
    }

    pub fn push(self: *Buffer, b: []const u8) void {
        @memcpy(self.ptr[self.len .. self.len + b.len], b);
        self.len += b.len;
    }

    pub fn pushDecimal(self: *Buffer, n: u64) void {
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
    pub fn pushLossy(self: *Buffer, s: []const u8) void {
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

    /// `n` in decimal, with a minus sign if negative.
    pub fn pushSigned(self: *Buffer, n: i64) void {
        if (n < 0) self.push("-");
        self.pushDecimal(@abs(n));
    }

    pub fn bytes(self: *const Buffer) []const u8 {
        return self.ptr[0..self.len];
    }
};

/// Whether `a` and `b` hold the same bytes.
pub fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}

/// A positive decimal that fits an i64 (a route config number), or null.
pub fn parsePositive(s: []const u8) ?i64 {
    if (s.len == 0) return null;
    var n: i64 = 0;
    for (s) |d| {
        if (d < '0' or d > '9') return null;
        const times = @mulWithOverflow(n, 10);
        if (times[1] != 0) return null;
        const sum = @addWithOverflow(times[0], @as(i64, d - '0'));
        if (sum[1] != 0) return null;
        n = sum[0];
    }
    return if (n > 0) n else null;
}

// ---- imports --------------------------------------------------------------

extern "linecook:handler/state@0.2.0" fn get(key_ptr: [*]const u8, key_len: usize, ret: *OptionBytes) void;
extern "linecook:handler/state@0.2.0" fn set(key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) void;
extern "linecook:handler/state@0.2.0" fn @"set-with-ttl"(key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize, ttl_ms: u64) void;
extern "linecook:handler/state@0.2.0" fn delete(key_ptr: [*]const u8, key_len: usize) void;
extern "linecook:handler/emit@0.2.0" fn send(
    topic_ptr: [*]const u8,
    topic_len: usize,
    key_tag: u32,
    key_ptr: [*]const u8,
    key_len: usize,
    value_ptr: [*]const u8,
    value_len: usize,
    headers_ptr: usize,
    headers_len: usize,
    timestamp_tag: u32,
    timestamp_ms: i64,
) void;
// `set` is also state's: an import named like another needs @extern.
const timerSet = @extern(*const fn ([*]const u8, usize, u32, i64) callconv(.c) void, .{
    .name = "set",
    .library_name = "linecook:handler/timers@0.2.0",
});
extern "linecook:handler/timers@0.2.0" fn cancel(key_ptr: [*]const u8, key_len: usize, domain: u32) void;
extern "linecook:handler/timers@0.2.0" fn watermark(ret: *OptionI64) void;
extern "linecook:handler/timers@0.2.0" fn @"allowed-lateness-ms"() u64;
extern "linecook:handler/timers@0.2.0" fn @"now-ms"() i64;

const OptionBytes = extern struct { tag: u8, ptr: [*]const u8, len: usize };
const OptionI64 = extern struct { tag: u8, value: i64 };

pub const state = struct {
    pub fn getValue(k: Bytes) ?Bytes {
        var ret: OptionBytes = undefined;
        get(k.ptr, k.len, &ret);
        return if (ret.tag == 0) null else ret.ptr[0..ret.len];
    }
    /// The decimal stored under `k`, or 0 if absent or not a number.
    pub fn getNumber(k: Bytes) u64 {
        const stored = getValue(k) orelse return 0;
        if (stored.len == 0) return 0;
        var n: u64 = 0;
        for (stored) |d| {
            if (d < '0' or d > '9') return 0;
            n = n * 10 + (d - '0');
        }
        return n;
    }
    pub fn setValue(k: Bytes, v: Bytes) void {
        set(k.ptr, k.len, v.ptr, v.len);
    }
    /// `v` under `k` for `ttl_ms` from the commit; then `getValue` no
    /// longer sees it.
    pub fn setValueWithTtl(k: Bytes, v: Bytes, ttl_ms: u64) void {
        @"set-with-ttl"(k.ptr, k.len, v.ptr, v.len, ttl_ms);
    }
    pub fn deleteValue(k: Bytes) void {
        delete(k.ptr, k.len);
    }
};

pub fn emit(topic: Bytes, k: ?Bytes, v: Bytes) void {
    if (effects) |*fx| return fx.output(topic, k, v, null);
    sendOne(topic, k, v, 0, 0);
}

/// `emit` with the output's timestamp (ms since the Unix epoch).
pub fn emitAt(topic: Bytes, k: ?Bytes, v: Bytes, timestamp_ms: i64) void {
    if (effects) |*fx| return fx.output(topic, k, v, timestamp_ms);
    sendOne(topic, k, v, 1, timestamp_ms);
}

fn sendOne(topic: Bytes, k: ?Bytes, v: Bytes, ts_tag: u32, ts: i64) void {
    const empty: Bytes = "";
    const kk = k orelse empty;
    send(topic.ptr, topic.len, @intFromBool(k != null), kk.ptr, kk.len, v.ptr, v.len, 0, 0, ts_tag, ts);
}

pub const TimeDomain = enum(u32) { processing = 0, event = 1 };

/// A timer whose time came; `key` lives for the call.
pub const DueTimer = extern struct {
    key_ptr: [*]const u8,
    key_len: usize,
    domain: u8,
    due_ms: i64,
};

comptime {
    if (@sizeOf(DueTimer) != 24 or @offsetOf(DueTimer, "domain") != 8 or @offsetOf(DueTimer, "due_ms") != 16)
        @compileError("due-timer layout does not match the canonical ABI");
}

pub fn timerKey(t: *const DueTimer) Bytes {
    return t.key_ptr[0..t.key_len];
}

pub const timers = struct {
    /// A call of onTimers with `k` once `domain`'s clock reaches `due_ms`;
    /// setting `k`'s timer again moves it.
    pub fn setTimer(k: Bytes, domain: TimeDomain, due_ms: i64) void {
        timerSet(k.ptr, k.len, @intFromEnum(domain), due_ms);
    }
    pub fn cancelTimer(k: Bytes, domain: TimeDomain) void {
        cancel(k.ptr, k.len, @intFromEnum(domain));
    }
    /// The partition's event time, if it has seen a record.
    pub fn currentWatermark() ?i64 {
        var ret: OptionI64 = undefined;
        watermark(&ret);
        return if (ret.tag == 0) null else ret.value;
    }
    pub fn allowedLatenessMs() u64 {
        return @"allowed-lateness-ms"();
    }
    pub fn nowMs() i64 {
        return @"now-ms"();
    }
};

// ---- exports --------------------------------------------------------------

// Return areas. Tags are u8 in the ABI; written as u32 (little endian) they
// land in the right byte with the padding zeroed.
var init_ret: extern struct { tag: u32, ptr: usize, len: usize } = undefined;
var handle_ret: extern struct { tag: u32, err_tag: u32, a: usize, b: usize, c: usize } = undefined;

export fn @"linecook:handler/guest@0.2.0#init"(
    _: usize, // plugin
    _: usize,
    _: usize, // version
    _: usize,
    _: usize, // topic
    _: usize,
    _: u32, // partition
    config_ptr: [*]const Pair,
    config_len: usize,
) *const anyopaque {
    if (root.onInit(config_ptr[0..config_len])) |message| {
        init_ret = .{ .tag = 1, .ptr = @intFromPtr(message.ptr), .len = message.len };
    } else {
        init_ret = .{ .tag = 0, .ptr = 0, .len = 0 };
    }
    return &init_ret;
}

export fn @"cabi_post_linecook:handler/guest@0.2.0#init"(_: usize) void {
    // What init kept stays for the instance's life.
    base = top;
}

export fn @"linecook:handler/guest@0.2.0#handle"(batch_ptr: [*]const Record, batch_len: usize) *const anyopaque {
    return result(root.onHandle(batch_ptr[0..batch_len]));
}

export fn @"linecook:handler/guest@0.2.0#on-timers"(due_ptr: [*]const DueTimer, due_len: usize) *const anyopaque {
    if (!@hasDecl(root, "onTimers")) return result(null);
    return result(root.onTimers(due_ptr[0..due_len]));
}

export fn @"cabi_post_linecook:handler/guest@0.2.0#on-timers"(_: usize) void {
    top = base;
}

/// A call's result<_, handler-error>, laid out for the host.
fn result(outcome: ?HandlerError) *const anyopaque {
    handle_ret = .{ .tag = 0, .err_tag = 0, .a = 0, .b = 0, .c = 0 };
    if (outcome) |err| {
        switch (err) {
            .retry => |m| handle_ret = .{ .tag = 1, .err_tag = 0, .a = @intFromPtr(m.ptr), .b = m.len, .c = 0 },
            .poison => |p| handle_ret = .{ .tag = 1, .err_tag = 1, .a = p.index, .b = @intFromPtr(p.message.ptr), .c = p.message.len },
            .fatal => |m| handle_ret = .{ .tag = 1, .err_tag = 2, .a = @intFromPtr(m.ptr), .b = m.len, .c = 0 },
        }
    }
    return &handle_ret;
}

export fn @"cabi_post_linecook:handler/guest@0.2.0#handle"(_: usize) void {
    top = base;
}

// ---- the packed batch path -------------------------------------------------

/// A header as the typed interface lays it out (16 bytes), for the
/// `headers_ptr` of records read from a packed batch.
const Header = extern struct { name_ptr: [*]const u8, name_len: usize, value_ptr: [*]const u8, value_len: usize };

/// The effects buffer of the packed call in progress: while it is set,
/// `emit` writes there instead of calling the host.
var effects: ?Effects = null;

const Effects = struct {
    buf: Buffer,
    cap: usize,

    fn reserve(self: *Effects, n: usize) void {
        if (self.buf.len + n <= self.cap) return;
        const cap = (self.buf.len + n) * 2;
        const grown = alloc(cap, 1);
        @memcpy(grown[0..self.buf.len], self.buf.ptr[0..self.buf.len]);
        self.buf.ptr = grown;
        self.cap = cap;
    }

    fn int(self: *Effects, comptime T: type, v: T) void {
        var le: [@sizeOf(T)]u8 = undefined;
        std.mem.writeInt(T, &le, v, .little);
        self.buf.push(&le);
    }

    fn bytes(self: *Effects, b: Bytes) void {
        self.int(u32, @intCast(b.len));
        self.buf.push(b);
    }

    /// Entry 1: an output with no headers; `timestamp_ms` null for the
    /// commit time.
    fn output(self: *Effects, topic: Bytes, k: ?Bytes, v: Bytes, timestamp_ms: ?i64) void {
        self.reserve(32 + topic.len + (if (k) |kk| kk.len else 0) + v.len);
        self.buf.push(&[_]u8{1});
        self.bytes(topic);
        if (k) |kk| self.bytes(kk) else self.int(u32, 0xffff_ffff);
        self.bytes(v);
        self.int(u16, 0);
        if (timestamp_ms) |ts| {
            self.buf.push(&[_]u8{1});
            self.int(i64, ts);
        } else self.buf.push(&[_]u8{0});
    }
};

const std = @import("std");

/// Reads batch layout v1; null when the buffer is not one (the host then
/// gets a `fatal` naming it).
const Reader = struct {
    rest: []u8,

    fn take(self: *Reader, n: usize) ?[]u8 {
        if (self.rest.len < n) return null;
        const got = self.rest[0..n];
        self.rest = self.rest[n..];
        return got;
    }

    fn int(self: *Reader, comptime T: type) ?T {
        const b = self.take(@sizeOf(T)) orelse return null;
        return std.mem.readInt(T, b[0..@sizeOf(T)], .little);
    }

    fn bytes(self: *Reader) ?[]u8 {
        const n = self.int(u32) orelse return null;
        return self.take(n);
    }
};

fn readBatch(buf: []u8) ?[]Record {
    var r = Reader{ .rest = buf };
    const magic = r.take(4) orelse return null;
    if (!eql(magic, "LCB1")) return null;
    const count = r.int(u32) orelse return null;
    const topic = r.bytes() orelse return null;
    const partition = r.int(u32) orelse return null;
    const records: [*]Record = @ptrCast(@alignCast(alloc(count * @sizeOf(Record), 8)));
    for (0..count) |i| {
        const offset = r.int(u64) orelse return null;
        const timestamp = r.int(i64) orelse return null;
        const key_len = r.int(i32) orelse return null;
        const k: ?[]u8 = if (key_len < 0) null else (r.take(@intCast(key_len)) orelse return null);
        const v = r.bytes() orelse return null;
        const header_count = r.int(u16) orelse return null;
        const headers: [*]Header = @ptrCast(@alignCast(alloc(@as(usize, header_count) * @sizeOf(Header), 4)));
        for (0..header_count) |h| {
            const name_len = r.int(u16) orelse return null;
            const name = r.take(name_len) orelse return null;
            const hv = r.bytes() orelse return null;
            headers[h] = .{ .name_ptr = name.ptr, .name_len = name.len, .value_ptr = hv.ptr, .value_len = hv.len };
        }
        records[i] = .{
            .topic_ptr = topic.ptr,
            .topic_len = topic.len,
            .partition = partition,
            ._pad = 0,
            .offset = offset,
            .timestamp_ms = timestamp,
            .key_tag = @intFromBool(k != null),
            .key_ptr = if (k) |kk| kk.ptr else topic.ptr,
            .key_len = if (k) |kk| kk.len else 0,
            .value_ptr = v.ptr,
            .value_len = v.len,
            .headers_ptr = @intFromPtr(headers),
            .headers_len = header_count,
        };
    }
    return records[0..count];
}

export fn @"linecook:handler/packed@0.2.0#handle-packed"(batch_ptr: [*]u8, batch_len: usize) *const anyopaque {
    const batch = readBatch(batch_ptr[0..batch_len]) orelse
        return result(.{ .fatal = "the packed batch is not in layout v1 (LCB1)" });
    const cap = batch_len + 64;
    effects = .{ .buf = .{ .ptr = alloc(cap, 1), .len = 0 }, .cap = cap };
    effects.?.buf.push("LCE1");
    const outcome = root.onHandle(batch);
    const fx = effects.?;
    effects = null;
    if (outcome != null) return result(outcome);
    handle_ret = .{ .tag = 0, .err_tag = @intFromPtr(fx.buf.ptr), .a = fx.buf.len, .b = 0, .c = 0 };
    return &handle_ret;
}

export fn @"cabi_post_linecook:handler/packed@0.2.0#handle-packed"(_: usize) void {
    top = base;
}

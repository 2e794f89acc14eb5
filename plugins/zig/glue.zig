//! Canonical-ABI glue between the linecook:handler world and Zig, written by
//! hand: Zig has no WIT bindings generator. `linecook sdk componentize`
//! attaches the world to the core module this builds and makes the
//! component; the names and layouts below must match wit/handler.wit
//! (linecook:handler@0.1.0) under the canonical ABI:
//!
//! - `init(context)`: the context record flattens to 9 i32 parameters
//!   (plugin, version, topic as ptr+len; partition; config as ptr+len of
//!   16-byte (string, string) tuples). `result<_, string>` is returned through
//!   a 12-byte area: tag u8 @0, message ptr @4, len @8.
//! - `handle(batch)`: a list of 64-byte stream-records — topic @0, partition
//!   @8, offset @16, timestamp @24, key option (tag @32, ptr @36, len @40),
//!   value @44, headers @52 (16-byte headers). `result<_, handler-error>`
//!   comes back through a 20-byte area: tag @0, error tag @4, payload @8.
//! - Memory is an arena: everything the host passes in and every import
//!   result is allocated by `cabi_realloc` and dropped in the post-return
//!   function after `handle`; what `init` allocates stays.
//!
//! The handler (the root file) provides
//!   `pub fn onInit(config: []const Pair) ?[]const u8` (an error message or null) and
//!   `pub fn onHandle(batch: []const Record) ?HandlerError`.

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

// ---- imports --------------------------------------------------------------

extern "linecook:handler/state@0.1.0" fn get(key_ptr: [*]const u8, key_len: usize, ret: *OptionBytes) void;
extern "linecook:handler/state@0.1.0" fn set(key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) void;
extern "linecook:handler/state@0.1.0" fn delete(key_ptr: [*]const u8, key_len: usize) void;
extern "linecook:handler/emit@0.1.0" fn send(
    topic_ptr: [*]const u8,
    topic_len: usize,
    key_tag: u32,
    key_ptr: [*]const u8,
    key_len: usize,
    value_ptr: [*]const u8,
    value_len: usize,
    headers_ptr: usize,
    headers_len: usize,
) void;

const OptionBytes = extern struct { tag: u8, ptr: [*]const u8, len: usize };

pub const state = struct {
    pub fn getValue(k: Bytes) ?Bytes {
        var ret: OptionBytes = undefined;
        get(k.ptr, k.len, &ret);
        return if (ret.tag == 0) null else ret.ptr[0..ret.len];
    }
    pub fn setValue(k: Bytes, v: Bytes) void {
        set(k.ptr, k.len, v.ptr, v.len);
    }
    pub fn deleteValue(k: Bytes) void {
        delete(k.ptr, k.len);
    }
};

pub fn emit(topic: Bytes, k: ?Bytes, v: Bytes) void {
    const empty: Bytes = "";
    const kk = k orelse empty;
    send(topic.ptr, topic.len, @intFromBool(k != null), kk.ptr, kk.len, v.ptr, v.len, 0, 0);
}

// ---- exports --------------------------------------------------------------

// Return areas. Tags are u8 in the ABI; written as u32 (little endian) they
// land in the right byte with the padding zeroed.
var init_ret: extern struct { tag: u32, ptr: usize, len: usize } = undefined;
var handle_ret: extern struct { tag: u32, err_tag: u32, a: usize, b: usize, c: usize } = undefined;

export fn init(
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

export fn cabi_post_init(_: usize) void {
    // What init kept stays for the instance's life.
    base = top;
}

export fn handle(batch_ptr: [*]const Record, batch_len: usize) *const anyopaque {
    handle_ret = .{ .tag = 0, .err_tag = 0, .a = 0, .b = 0, .c = 0 };
    if (root.onHandle(batch_ptr[0..batch_len])) |err| {
        switch (err) {
            .retry => |m| handle_ret = .{ .tag = 1, .err_tag = 0, .a = @intFromPtr(m.ptr), .b = m.len, .c = 0 },
            .poison => |p| handle_ret = .{ .tag = 1, .err_tag = 1, .a = p.index, .b = @intFromPtr(p.message.ptr), .c = p.message.len },
            .fatal => |m| handle_ret = .{ .tag = 1, .err_tag = 2, .a = @intFromPtr(m.ptr), .b = m.len, .c = 0 },
        }
    }
    return &handle_ret;
}

export fn cabi_post_handle(_: usize) void {
    top = base;
}

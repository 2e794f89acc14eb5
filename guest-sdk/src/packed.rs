//! The packed batch path's guest side (layouts v1, `docs/contract-0.2.md`):
//! records are read in place from the one buffer the host passes, and
//! outputs and state writes collect in one buffer returned at the end, so a
//! batch crosses the component boundary once each way.
//!
//! State reads stay host calls, cached for the call; writes stay in the
//! guest until the call ends (or a scan needs the host to see them).

use std::cell::RefCell;
use std::hash::Hasher;

use hashbrown::HashTable;

use crate::wit::linecook::handler::state as wit_state;
use crate::wit::linecook::handler::types::StateWrite;
use crate::{Headers, HeadersOf, Record};

/// Records of a batch buffer, parsed as they are iterated.
#[derive(Debug, Clone)]
pub(crate) struct Records<'a> {
    topic: &'a str,
    partition: u32,
    remaining: u32,
    rest: &'a [u8],
}

// The host writes these buffers; a malformed one is a host bug, and the
// trap (with this message) fails the batch without committing anything.
fn malformed(what: &str) -> ! {
    panic!("linecook: malformed packed batch from the host: {what}")
}

fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> &'a [u8] {
    if bytes.len() < n {
        malformed(what)
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    head
}

fn array<const N: usize>(bytes: &mut &[u8], what: &str) -> [u8; N] {
    take(bytes, N, what).try_into().expect("took N bytes")
}

fn len32<'a>(bytes: &mut &'a [u8], what: &str) -> &'a [u8] {
    let n = u32::from_le_bytes(array(bytes, what)) as usize;
    take(bytes, n, what)
}

impl<'a> Records<'a> {
    /// The records of `buf`, a batch in layout v1.
    pub(crate) fn new(buf: &'a [u8]) -> Records<'a> {
        let mut rest = buf;
        if take(&mut rest, 4, "magic") != b"LCB1" {
            malformed("not batch layout v1")
        }
        let remaining = u32::from_le_bytes(array(&mut rest, "count"));
        let topic = std::str::from_utf8(len32(&mut rest, "topic"))
            .unwrap_or_else(|_| malformed("topic is not UTF-8"));
        let partition = u32::from_le_bytes(array(&mut rest, "partition"));
        Records {
            topic,
            partition,
            remaining,
            rest,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.remaining as usize
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let b = &mut self.rest;
        let offset = u64::from_le_bytes(array(b, "offset"));
        let timestamp_ms = i64::from_le_bytes(array(b, "timestamp"));
        let key_len = i32::from_le_bytes(array(b, "key length"));
        let key = (key_len >= 0).then(|| take(b, key_len as usize, "key"));
        let value = len32(b, "value");
        let header_count = u16::from_le_bytes(array(b, "header count"));
        let start = *b;
        for _ in 0..header_count {
            let name_len = u16::from_le_bytes(array(b, "header name length"));
            take(b, name_len as usize, "header name");
            len32(b, "header value");
        }
        let bytes = &start[..start.len() - b.len()];
        Some(Record {
            topic: self.topic,
            partition: self.partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers: Headers(HeadersOf::Packed {
                count: header_count,
                bytes,
            }),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

/// Headers of a packed record: `count` entries in `bytes`.
#[derive(Debug, Clone)]
pub(crate) struct HeaderIter<'a> {
    pub count: u16,
    pub bytes: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        let b = &mut self.bytes;
        let name_len = u16::from_le_bytes(array(b, "header name length"));
        let name = std::str::from_utf8(take(b, name_len as usize, "header name"))
            .unwrap_or_else(|_| malformed("header name is not UTF-8"));
        Some((name, len32(b, "header value")))
    }
}

/// What the current packed call has done so far.
struct Pending {
    /// The effects buffer: magic, then the outputs in emit order.
    out: Vec<u8>,
    /// State writes (entries of kinds 2, 3 and 4) not yet handed to the
    /// host, in call order: the host applies them in order, so the last
    /// write of a key wins there as it does here.
    writes: Vec<u8>,
    /// The latest value of each key this call read from the host or wrote.
    known: Known,
}

/// The per-call cache of state: key → latest value (`None`: absent). Its
/// keys and values live in one buffer, so caching a key costs a copy, not
/// an allocation (and later a free) of its own — two per record for a
/// handler that reads and writes a key per record.
#[derive(Default)]
struct Known {
    table: HashTable<Entry>,
    bytes: Vec<u8>,
}

struct Entry {
    hash: u64,
    key: Span,
    value: Option<Span>,
}

/// A range of `Known::bytes`.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

fn hash(key: &[u8]) -> u64 {
    let mut h = Fx::default();
    h.write(key);
    h.finish()
}

fn slice(bytes: &[u8], span: Span) -> &[u8] {
    &bytes[span.start as usize..][..span.len as usize]
}

fn push(bytes: &mut Vec<u8>, data: &[u8]) -> Span {
    let start = bytes.len() as u32;
    bytes.extend_from_slice(data);
    Span {
        start,
        len: data.len() as u32,
    }
}

impl Known {
    /// `None` when the call has not seen `key`; `Some(None)` when it is
    /// absent.
    fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let bytes = &self.bytes;
        let entry = self.table.find(hash(key), |e| slice(bytes, e.key) == key)?;
        Some(entry.value.map(|v| slice(bytes, v)))
    }

    /// Records `key`'s latest value.
    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        let value = value.map(|v| push(&mut self.bytes, v));
        self.entry(key).0.value = value;
    }

    /// Adds `key` as absent unless the call has seen it; `true` if added.
    fn add_unseen(&mut self, key: &[u8]) -> bool {
        self.entry(key).1
    }

    /// `key`'s entry, added as absent if the call has not seen it (`true`).
    fn entry(&mut self, key: &[u8]) -> (&mut Entry, bool) {
        use hashbrown::hash_table::Entry::{Occupied, Vacant};
        let Known { table, bytes } = self;
        let hash = hash(key);
        match table.entry(hash, |e| slice(bytes, e.key) == key, |e| e.hash) {
            Occupied(e) => (e.into_mut(), false),
            Vacant(e) => {
                let key = push(bytes, key);
                let entry = Entry {
                    hash,
                    key,
                    value: None,
                };
                (e.insert(entry).into_mut(), true)
            }
        }
    }
}

/// A fast hash for the per-call cache (FxHash's mixing, eight bytes at a
/// time, with a finalizer). Keys come from records, so a crafted batch could collide them;
/// that costs only the call's own CPU time, which the host limits.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(last) ^ rest.len() as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits depending on the low input bits
        // only ("key-0", "key-1" … share them); hashbrown picks buckets by
        // the low bits, so fold the high half down (murmur3's fmix64).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

impl Fx {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

thread_local! {
    // `Some` while a packed call runs: emits and state writes collect here
    // instead of crossing the boundary one by one.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
    // The last call's write buffer and cache, emptied, for the next call:
    // they grow to a batch's size once per instance, not once per batch
    // (linear memory never shrinks, so keeping them costs no memory).
    static SPARE: RefCell<Option<(Vec<u8>, Known)>> = const { RefCell::new(None) };
}

/// Starts a call whose batch buffer is `batch_len` bytes long. The outputs
/// buffer starts that large: a handler that emits about what it reads (a
/// transform) then fills it without growing it again and again — each
/// growth a copy, and new pages for a fresh instance's first batch — and
/// one that emits little leaves the pages it does not write untouched.
/// (It cannot be kept between calls as the others are: it is returned.)
pub(crate) fn begin(batch_len: usize) {
    let mut out = Vec::with_capacity(batch_len.max(4096));
    out.extend_from_slice(b"LCE1");
    let (writes, known) = SPARE.with(|s| s.borrow_mut().take()).unwrap_or_default();
    PENDING.with(|p| *p.borrow_mut() = Some(Pending { out, writes, known }));
}

/// Ends the call: its effects buffer, state writes after the outputs.
/// `None` when no packed call was running.
pub(crate) fn finish() -> Option<Vec<u8>> {
    let pending = PENDING.with(|p| p.borrow_mut().take())?;
    let mut out = pending.out;
    out.extend_from_slice(&pending.writes);
    keep(pending.writes, pending.known);
    Some(out)
}

/// Drops a failed call's effects: the host discards them anyway.
pub(crate) fn abandon() {
    if let Some(pending) = PENDING.with(|p| p.borrow_mut().take()) {
        keep(pending.writes, pending.known);
    }
}

fn keep(mut writes: Vec<u8>, mut known: Known) {
    writes.clear();
    known.table.clear();
    known.bytes.clear();
    SPARE.with(|s| *s.borrow_mut() = Some((writes, known)));
}

fn put32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn with<R>(f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
    PENDING.with(|p| p.borrow_mut().as_mut().map(f))
}

/// Appends an output; `false` when no packed call is running.
pub(crate) fn emit(
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
    timestamp_ms: Option<i64>,
) -> bool {
    with(|p| {
        let out = &mut p.out;
        out.push(1);
        put32(out, topic.as_bytes());
        match key {
            Some(key) => put32(out, key),
            None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        }
        put32(out, value);
        out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            put32(out, value);
        }
        match timestamp_ms {
            Some(ts) => {
                out.push(1);
                out.extend_from_slice(&ts.to_le_bytes());
            }
            None => out.push(0),
        }
    })
    .is_some()
}

/// Reads `key` through the call's cache, asking the host once per key;
/// `None` when no packed call is running.
pub(crate) fn get(key: &[u8]) -> Option<Option<Vec<u8>>> {
    if let Some(value) = with(|p| p.known.get(key).map(|v| v.map(<[u8]>::to_vec)))? {
        return Some(value);
    }
    let value = wit_state::get(key);
    with(|p| p.known.set(key, value.as_deref()));
    Some(value)
}

/// Reads the values of `keys` not read yet in one host call; `false` when
/// no packed call is running.
pub(crate) fn prefetch<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> bool {
    let Some(missing) = with(|p| {
        let keys = keys.into_iter();
        // Sized up front: growing a table rehashes every key in it, and
        // growing from empty to a batch's keys was (with two tables then) a
        // fifth of a counting handler's own time.
        p.known.table.reserve(keys.size_hint().0, |e| e.hash);
        // A key is cached as absent until the host says otherwise, which
        // also asks for each key once.
        keys.filter(|k| p.known.add_unseen(k))
            .collect::<Vec<&[u8]>>()
    }) else {
        return false;
    };
    if missing.is_empty() {
        return true;
    }
    let values = wit_state::get_many(&missing);
    with(|p| {
        for (key, value) in missing.into_iter().zip(values) {
            if let Some(value) = value {
                p.known.set(key, Some(&value));
            }
        }
    });
    true
}

/// Records a write (`value: None` deletes); `false` when no packed call is
/// running.
pub(crate) fn write(key: &[u8], value: Option<&[u8]>, ttl_ms: Option<u64>) -> bool {
    with(|p| {
        let w = &mut p.writes;
        match (value, ttl_ms) {
            (Some(value), None) => {
                w.push(2);
                put32(w, key);
                put32(w, value);
            }
            (Some(value), Some(ttl)) => {
                w.push(3);
                put32(w, key);
                put32(w, value);
                w.extend_from_slice(&ttl.to_le_bytes());
            }
            (None, _) => {
                w.push(4);
                put32(w, key);
            }
        }
        p.known.set(key, value);
    })
    .is_some()
}

/// Hands the call's pending writes to the host, so a host-side read (a
/// scan) sees them.
pub(crate) fn flush_writes() {
    let writes = with(|p| std::mem::take(&mut p.writes)).unwrap_or_default();
    if writes.is_empty() {
        return;
    }
    let mut list = Vec::new();
    let mut b = &writes[..];
    while let Some((&kind, rest)) = b.split_first() {
        b = rest;
        let key = len32(&mut b, "key");
        list.push(match kind {
            2 => StateWrite::Set((key, len32(&mut b, "value"))),
            3 => {
                let value = len32(&mut b, "value");
                StateWrite::SetWithTtl((key, value, u64::from_le_bytes(array(&mut b, "ttl"))))
            }
            _ => StateWrite::Delete(key),
        });
    }
    wit_state::write_many(&list);
}

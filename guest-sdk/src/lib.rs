//! Write [linecook](https://example.invalid/linecook) stream handlers in Rust.
//!
//! A handler is a type that implements [`Handler`]. The host creates one
//! instance per partition it owns: it calls [`Handler::init`] once, then
//! [`Handler::handle`] with consecutive batches of that partition's records, in
//! offset order, and [`Handler::on_timers`] between batches with the
//! [`timers`] that came due. Build the crate as a `cdylib` for
//! `wasm32-wasip2` and drop the `.wasm` file into the host's plugins
//! directory. The component implements contract `linecook:handler@0.2.0`.
//!
//! ```no_run
//! use linecook_guest::{emit, export_handler, state, Batch, Context, Error, Handler};
//!
//! /// Counts records per key and emits `"<key>:<count>"` to the route's `output` topic.
//! struct Counter {
//!     output: String,
//! }
//!
//! impl Handler for Counter {
//!     fn init(ctx: &Context) -> Result<Self, String> {
//!         let output = ctx.config("output").ok_or("route config needs `output`")?;
//!         Ok(Counter { output: output.to_owned() })
//!     }
//!
//!     fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
//!         for record in batch {
//!             let key = record.key.unwrap_or_default();
//!             let count = state::get(key)
//!                 .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
//!                 .unwrap_or(0)
//!                 + 1;
//!             state::set(key, count.to_string().as_bytes());
//!             let line = format!("{}:{count}", String::from_utf8_lossy(key));
//!             emit::send(&self.output, Some(key), line.as_bytes());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_handler!(Counter);
//! ```
//!
//! # Speed
//! The component exports the packed batch path too: the host passes a whole
//! batch as one buffer and your handler gets [`Record`]s borrowed from it,
//! with no allocation per record. [`emit`]s and [`state`] writes collect in
//! the guest and go back to the host in one buffer when `handle` returns;
//! [`state::get`] asks the host once per key per batch. Nothing changes in
//! what a handler may rely on.
//!
//! # What the host guarantees
//! - Everything one `handle` (or `on_timers`) call does — [`state`] writes,
//!   [`emit`]ted records, [`timers`] set or cancelled — becomes durable
//!   together with the partition's offset, or not at all. Returning an
//!   [`Error`] (or panicking) discards all of it.
//! - A timer fires exactly once: its removal commits with what `on_timers`
//!   did.
//! - [`state`] reads see the call's own earlier writes.
//! - Your instance's memory may be dropped between any two batches (a new
//!   version, a trap, a restart): keep anything that must survive in [`state`].

#![deny(missing_docs)]

// The generated bindings name this crate by its absolute path, which must also
// resolve from inside it.
extern crate self as linecook_guest;

use std::cell::RefCell;
use std::collections::BTreeMap;

#[doc(hidden)]
// Generated code: its shape is wit-bindgen's, not ours to lint.
#[allow(clippy::too_many_arguments)]
pub mod wit {
    wit_bindgen::generate!({
        world: "packed-handler",
        path: "../wit/0.2.0",
        pub_export_macro: true,
        export_macro_name: "__linecook_export_world",
        default_bindings_module: "::linecook_guest::wit",
        runtime_path: "::linecook_guest::__wit_bindgen::rt",
        // Imports take borrowed arguments: `emit::send` passes the caller's
        // bytes straight to the host instead of copying them first.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use wit::exports::linecook::handler::guest as wit_guest;
use wit::exports::linecook::handler::packed as wit_packed;
use wit::linecook::handler::{log as wit_log, types as wit_types};

mod packed;

/// A record read from the partition this instance serves, borrowed from the
/// batch: copy what must outlive the `handle` call.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The source topic.
    pub topic: &'a str,
    /// The source partition.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
    /// When the record was appended, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key; `None` for keyless records.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Headers, in order.
    pub headers: Headers<'a>,
}

/// A record's headers: (name, value) pairs, in order.
#[derive(Clone, Copy)]
pub struct Headers<'a>(HeadersOf<'a>);

#[derive(Clone, Copy)]
enum HeadersOf<'a> {
    Typed(&'a [wit_types::HeaderResult]),
    Packed { count: u16, bytes: &'a [u8] },
}

impl<'a> Headers<'a> {
    /// The (name, value) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let (typed, packed) = match self.0 {
            HeadersOf::Typed(list) => (list, None),
            HeadersOf::Packed { count, bytes } => {
                (&[][..], Some(packed::HeaderIter { count, bytes }))
            }
        };
        typed
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .chain(packed.into_iter().flatten())
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        match self.0 {
            HeadersOf::Typed(list) => list.len(),
            HeadersOf::Packed { count, .. } => count as usize,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One batch: consecutive records of the partition, in offset order. An
/// iterator of [`Record`]s borrowed from the host's buffer; clone it (cheap)
/// to go over the records again.
#[derive(Debug, Clone)]
pub struct Batch<'a>(BatchOf<'a>);

#[derive(Debug, Clone)]
enum BatchOf<'a> {
    Typed(std::slice::Iter<'a, wit_types::StreamRecord>),
    Packed(packed::Records<'a>),
}

impl<'a> Batch<'a> {
    /// The records not yet iterated, as a new iterator.
    pub fn iter(&self) -> Batch<'a> {
        self.clone()
    }

    /// The first record not yet iterated.
    pub fn first(&self) -> Option<Record<'a>> {
        self.clone().next()
    }

    /// Whether no records remain.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Iterator for Batch<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        match &mut self.0 {
            BatchOf::Typed(records) => records.next().map(|r| Record {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key.as_deref(),
                value: &r.value,
                headers: Headers(HeadersOf::Typed(&r.headers)),
            }),
            BatchOf::Packed(records) => records.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            BatchOf::Typed(records) => records.len(),
            BatchOf::Packed(records) => records.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batch<'_> {}

/// What an instance is told once, before its first batch.
#[derive(Debug, Clone)]
pub struct Context {
    /// The plugin's name (its file stem in the plugins directory).
    pub plugin: String,
    /// The plugin's version: the hex SHA-256 digest of its bytes.
    pub version: String,
    /// The route's source topic.
    pub topic: String,
    /// The partition this instance serves.
    pub partition: u32,
    /// The route's `config` table.
    pub config: BTreeMap<String, String>,
}

impl Context {
    /// The route config value for `key`, if set.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }
}

/// Why a batch failed. Whatever the variant, nothing the batch did is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A transient failure: the host retries the same batch with backoff.
    Retry(String),
    /// The record at `index` in the batch can never be processed: the host
    /// dead-letters it and processes the others.
    Poison {
        /// Index of the record within the batch.
        index: u32,
        /// Why it cannot be processed.
        message: String,
    },
    /// The handler cannot go on: the host pauses the partition.
    Fatal(String),
}

/// A stream handler: one value of this type serves one partition.
pub trait Handler: Sized + 'static {
    /// Creates the instance for a partition. An `Err` rejects this version of
    /// the plugin for the partition; the host keeps the version it had.
    fn init(ctx: &Context) -> Result<Self, String>;

    /// Processes one batch of consecutive records of the partition.
    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error>;

    /// Processes timers that came due (see [`timers`]), between batches,
    /// earliest first. `Error::Poison { index }` names a timer of `due`.
    /// The default does nothing: a handler that sets no timers needs none.
    fn on_timers(&mut self, due: Vec<DueTimer>) -> Result<(), Error> {
        let _ = due;
        Ok(())
    }
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// The host's wall clock: fires once the clock reaches the due time,
    /// whether or not records arrive.
    Processing,
    /// The partition's watermark ([`timers::watermark`]): fires once records
    /// have moved it to the due time.
    Event,
}

/// A timer whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The key it was set for.
    pub key: Vec<u8>,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it was due, ms since the Unix epoch.
    pub due_ms: i64,
}

/// Timers: ask the host to call [`Handler::on_timers`] when a time comes.
///
/// A key has at most one timer per domain; setting it again moves it.
/// Timers are partition state: they exist once the call that set them
/// commits, survive restarts and new versions, and fire exactly once.
pub mod timers {
    use crate::TimeDomain;
    use crate::wit::linecook::handler::{timers as wit_timers, types::TimeDomain as D};

    fn domain(d: TimeDomain) -> D {
        match d {
            TimeDomain::Processing => D::Processing,
            TimeDomain::Event => D::Event,
        }
    }

    /// Sets (or moves) the timer of `key` in `domain` to `due_ms`.
    pub fn set(key: &[u8], d: TimeDomain, due_ms: i64) {
        wit_timers::set(key, domain(d), due_ms)
    }

    /// Removes the timer of `key` in `domain`, if any.
    pub fn cancel(key: &[u8], d: TimeDomain) {
        wit_timers::cancel(key, domain(d))
    }

    /// When the timer of `key` in `domain` is due, if set.
    pub fn get(key: &[u8], d: TimeDomain) -> Option<i64> {
        wit_timers::get(key, domain(d))
    }

    /// The partition's watermark as committed before this call: the
    /// highest record timestamp handled minus the route's allowed lateness.
    /// Use [`crate::window::Watermark`] to follow it record by record.
    pub fn watermark() -> Option<i64> {
        wit_timers::watermark()
    }

    /// The route's `allowed_lateness_ms`.
    pub fn allowed_lateness_ms() -> u64 {
        wit_timers::allowed_lateness_ms()
    }

    /// The host's clock for this call (the same for the whole call), ms
    /// since the Unix epoch.
    pub fn now_ms() -> i64 {
        wit_timers::now_ms()
    }
}

pub mod window;

#[cfg(feature = "http")]
pub mod http;

/// Durable key-value state of the partition this instance serves.
pub mod state {
    use crate::wit::linecook::handler::state as wit_state;

    /// Most entries one [`scan`] page asks the host for.
    const SCAN_PAGE: u32 = 256;

    /// The value stored under `key`, if any (including this batch's writes).
    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        crate::packed::get(key).unwrap_or_else(|| wit_state::get(key))
    }

    /// Reads the values of `keys` in one host call, so the [`get`]s that
    /// follow in this batch cost no boundary crossing. Worth it when a
    /// handler reads state by something it knows up front, such as the
    /// records' keys:
    ///
    /// ```no_run
    /// # use linecook_guest::{state, Batch};
    /// # fn handle(batch: Batch<'_>) {
    /// state::prefetch(batch.iter().map(|r| r.key.unwrap_or_default()));
    /// # }
    /// ```
    ///
    /// Values are cached for the current packed call only; through the
    /// typed interface this does nothing.
    pub fn prefetch<'k>(keys: impl IntoIterator<Item = &'k [u8]>) {
        crate::packed::prefetch(keys);
    }

    /// Stores `value` under `key`; durable with the batch's checkpoint.
    pub fn set(key: &[u8], value: &[u8]) {
        if !crate::packed::write(key, Some(value), None) {
            wit_state::set(key, value)
        }
    }

    /// Stores `value` under `key` until `ttl_ms` milliseconds after the
    /// batch's checkpoint; then it is gone. Setting the key again restarts
    /// the time.
    pub fn set_with_ttl(key: &[u8], value: &[u8], ttl_ms: u64) {
        if !crate::packed::write(key, Some(value), Some(ttl_ms)) {
            wit_state::set_with_ttl(key, value, ttl_ms)
        }
    }

    /// Removes `key`; durable with the batch's checkpoint.
    pub fn delete(key: &[u8]) {
        if !crate::packed::write(key, None, None) {
            wit_state::delete(key)
        }
    }

    /// All entries whose key starts with `prefix`, in key order, fetched from
    /// the host a page at a time as the iterator advances.
    pub fn scan(prefix: &[u8]) -> Scan {
        // The host merges its committed entries with the writes it knows.
        crate::packed::flush_writes();
        Scan {
            prefix: prefix.to_vec(),
            last: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Iterator returned by [`scan`].
    #[derive(Debug)]
    pub struct Scan {
        prefix: Vec<u8>,
        last: Option<Vec<u8>>,
        page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
        done: bool,
    }

    impl Iterator for Scan {
        type Item = (Vec<u8>, Vec<u8>);

        fn next(&mut self) -> Option<Self::Item> {
            loop {
                if let Some(entry) = self.page.next() {
                    self.last = Some(entry.0.clone());
                    return Some(entry);
                }
                if self.done {
                    return None;
                }
                crate::packed::flush_writes();
                let page = wit_state::scan(&self.prefix, self.last.as_deref(), SCAN_PAGE);
                self.done = page.is_empty();
                self.page = page.into_iter();
            }
        }
    }
}

/// Sending records to topics.
pub mod emit {
    use crate::wit::linecook::handler::emit as wit_emit;
    use crate::wit::linecook::handler::types::{HeaderParam, OutputRecord};

    /// Sends `value` with `key` to `topic`. The record is written with the
    /// batch's checkpoint, exactly once, and never if the batch fails.
    pub fn send(topic: &str, key: Option<&[u8]>, value: &[u8]) {
        if crate::packed::emit(topic, key, value, &[], None) {
            return;
        }
        wit_emit::send(OutputRecord {
            topic,
            key,
            value,
            headers: &[],
            timestamp_ms: None,
        })
    }

    /// Like [`send`], with the output's timestamp (a window's end, say)
    /// instead of the commit time.
    pub fn send_at(topic: &str, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        if crate::packed::emit(topic, key, value, &[], Some(timestamp_ms)) {
            return;
        }
        wit_emit::send(OutputRecord {
            topic,
            key,
            value,
            headers: &[],
            timestamp_ms: Some(timestamp_ms),
        })
    }

    /// Like [`send`], with headers.
    pub fn send_with_headers(
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        if crate::packed::emit(topic, key, value, headers, None) {
            return;
        }
        let headers: Vec<HeaderParam<'_>> = headers
            .iter()
            .map(|&(key, value)| HeaderParam { key, value })
            .collect();
        wit_emit::send(OutputRecord {
            topic,
            key,
            value,
            headers: &headers,
            timestamp_ms: None,
        })
    }
}

/// Diagnostics, written to the host's log with plugin, topic and partition.
pub mod log {
    use crate::wit_log::{Level, write};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        write(Level::Trace, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

trait ErasedHandler {
    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error>;
    fn on_timers(&mut self, due: Vec<DueTimer>) -> Result<(), Error>;
}

impl<H: Handler> ErasedHandler for H {
    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        Handler::handle(self, batch)
    }

    fn on_timers(&mut self, due: Vec<DueTimer>) -> Result<(), Error> {
        Handler::on_timers(self, due)
    }
}

thread_local! {
    // A component instance is single-threaded and serves one partition, so
    // one slot holds the one handler value.
    static INSTANCE: RefCell<Option<Box<dyn ErasedHandler>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __init<H: Handler>(ctx: wit_types::Context) -> Result<(), String> {
    let ctx = Context {
        plugin: ctx.plugin,
        version: ctx.version,
        topic: ctx.topic,
        partition: ctx.partition,
        config: ctx.config.into_iter().collect(),
    };
    let handler = H::init(&ctx)?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(handler)));
    Ok(())
}

fn wit_error(e: Error) -> wit_types::HandlerError {
    match e {
        Error::Retry(m) => wit_types::HandlerError::Retry(m),
        Error::Poison { index, message } => {
            wit_types::HandlerError::Poison(wit_types::PoisonRecord { index, message })
        }
        Error::Fatal(m) => wit_types::HandlerError::Fatal(m),
    }
}

fn with_instance(
    call: &str,
    f: impl FnOnce(&mut dyn ErasedHandler) -> Result<(), Error>,
) -> Result<(), wit_types::HandlerError> {
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let handler = slot
            .as_mut()
            .ok_or_else(|| wit_types::HandlerError::Fatal(format!("{call} called before init")))?;
        f(handler.as_mut()).map_err(wit_error)
    })
}

#[doc(hidden)]
pub fn __handle(batch: Vec<wit_types::StreamRecord>) -> Result<(), wit_types::HandlerError> {
    with_instance("handle", |h| h.handle(Batch(BatchOf::Typed(batch.iter()))))
}

#[doc(hidden)]
pub fn __handle_packed(batch: Vec<u8>) -> Result<Vec<u8>, wit_types::HandlerError> {
    packed::begin(batch.len());
    let records = Batch(BatchOf::Packed(packed::Records::new(&batch)));
    match with_instance("handle-packed", |h| h.handle(records)) {
        Ok(()) => Ok(packed::finish().expect("begun above")),
        Err(e) => {
            packed::abandon();
            Err(e)
        }
    }
}

#[doc(hidden)]
pub fn __on_timers(due: Vec<wit_types::DueTimer>) -> Result<(), wit_types::HandlerError> {
    let due = due
        .into_iter()
        .map(|t| DueTimer {
            key: t.key,
            domain: match t.domain {
                wit_types::TimeDomain::Processing => TimeDomain::Processing,
                wit_types::TimeDomain::Event => TimeDomain::Event,
            },
            due_ms: t.due_ms,
        })
        .collect();
    with_instance("on-timers", |h| h.on_timers(due))
}

#[doc(hidden)]
pub use wit_guest::Guest as __Guest;
#[doc(hidden)]
pub use wit_packed::Guest as __PackedGuest;

/// Exports a [`Handler`] type as the component's `packed-handler` world
/// (`linecook:handler@0.2.0`): `guest` and the packed batch path.
///
/// Call it once, at the top level of the crate.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            struct __LinecookHandler;

            impl $crate::__Guest for __LinecookHandler {
                fn init(
                    context: $crate::wit::linecook::handler::types::Context,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__init::<$handler>(context)
                }

                fn handle(
                    batch: ::std::vec::Vec<$crate::wit::linecook::handler::types::StreamRecord>,
                ) -> ::core::result::Result<(), $crate::wit::linecook::handler::types::HandlerError>
                {
                    $crate::__handle(batch)
                }

                fn on_timers(
                    due: ::std::vec::Vec<$crate::wit::linecook::handler::types::DueTimer>,
                ) -> ::core::result::Result<(), $crate::wit::linecook::handler::types::HandlerError>
                {
                    $crate::__on_timers(due)
                }
            }

            impl $crate::__PackedGuest for __LinecookHandler {
                fn handle_packed(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<u8>,
                    $crate::wit::linecook::handler::types::HandlerError,
                > {
                    $crate::__handle_packed(batch)
                }
            }

    $crate::wit::__linecook_export_world!(__LinecookHandler with_types_in $crate::wit);
        };
    };
}

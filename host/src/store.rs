//! The one redb file of a data directory: embedded log, handler state and
//! checkpoints live together so that one write transaction can commit a
//! batch's effects everywhere at once.
//!
//! Every table is defined here; `log`, `checkpoint` and `outbox` read and
//! write them, each through its own `impl Store`.
//!
//! **Architecture invariant:** this module and its siblings `log`,
//! `checkpoint` and `outbox` know nothing about WebAssembly or Kafka. They
//! store bytes at positions.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "linecook.redb";

/// Topic name → (topic id, partition count). Ids keep the hot tables' keys
/// fixed-width.
pub(crate) const TOPICS: TableDefinition<&str, (u32, u32)> = TableDefinition::new("topics");
/// (topic id, partition, offset) → encoded record (`record::StoredRecord`):
/// the records linecook stored a row each before the log moved to blocks.
/// Read before the blocks of the same partition, removed by retention,
/// never written.
pub(crate) const RECORDS: TableDefinition<(u32, u32, u64), &[u8]> = TableDefinition::new("records");
/// (topic id, partition, offset of its first record) → consecutive records
/// of the partition (`log::Block`): one B-tree row for up to
/// `log::BLOCK_RECORDS` records.
pub(crate) const LOG_BLOCKS: TableDefinition<(u32, u32, u64), &[u8]> =
    TableDefinition::new("log_blocks");
/// (topic id, partition) → next offset to append.
pub(crate) const LOG_ENDS: TableDefinition<(u32, u32), u64> = TableDefinition::new("log_ends");
/// (topic id, partition) → first offset still stored; absent: 0. Moves only
/// forward, when retention removes records (`retention`).
pub(crate) const LOG_STARTS: TableDefinition<(u32, u32), u64> = TableDefinition::new("log_starts");
/// (topic id, partition) → bytes of the records stored, as encoded: what
/// `retention_bytes` limits.
pub(crate) const LOG_BYTES: TableDefinition<(u32, u32), u64> = TableDefinition::new("log_bytes");
/// (topic id, partition) → (next offset to handle, plugin version that handled
/// the batch before it).
pub(crate) const CHECKPOINTS: TableDefinition<(u32, u32), (u64, &str)> =
    TableDefinition::new("checkpoints");
/// (topic id, partition, first offset) → plugin version that handled records
/// from that offset on. One row per version change.
pub(crate) const VERSION_HISTORY: TableDefinition<(u32, u32, u64), &str> =
    TableDefinition::new("version_history");
/// State key = topic id (BE) ++ partition (BE) ++ handler key → value. The
/// prefix keeps each partition's state contiguous and separate.
pub(crate) const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Store-wide facts, e.g. the group the data directory belongs to.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Kafka source: what checkpoints committed for delivery to the cluster, by
/// `OutboxKey`, until the cluster acknowledged it (see `outbox`).
pub(crate) const OUTBOX: TableDefinition<OutboxKey, &[u8]> = TableDefinition::new("outbox");

/// (source topic id, source partition, batch first offset, index). Timer
/// firings at a batch boundary N (Kafka mode) are keyed at N too: the
/// entries of each commit at N take the indexes after those already there.
pub type OutboxKey = (u32, u32, u64, u32);
/// Kafka source: (topic id, partition) → (offset, next firing sequence
/// number there): timer firings at a batch boundary, numbered so each has
/// its own origin headers, also across owners (`outbox::Firing`).
pub(crate) const FIRINGS: TableDefinition<(u32, u32), (u64, u32)> = TableDefinition::new("firings");
/// (dead-letter topic id, partition, offset) → (topic id, partition, offset)
/// it was replayed to: a letter is replayed at most once (`dlq`).
pub(crate) const REPLAYED: TableDefinition<(u32, u32, u64), (u32, u32, u64)> =
    TableDefinition::new("replayed");

/// Pending timers in firing order: (topic id, partition, domain tag, due ms,
/// key) → (). See `record::TimeDomain::tag`.
pub(crate) const TIMERS: TableDefinition<(u32, u32, u8, i64, &[u8]), ()> =
    TableDefinition::new("timers");
/// The same timers by key: (topic id, partition, domain tag, key) → due ms.
/// A key has one timer per domain; setting it again moves it.
pub(crate) const TIMER_KEYS: TableDefinition<(u32, u32, u8, &[u8]), i64> =
    TableDefinition::new("timer_keys");
/// (topic id, partition) → how many timers the partition has pending: kept
/// by the checkpoints that change them, so status never counts a million.
pub(crate) const TIMER_COUNTS: TableDefinition<(u32, u32), u64> =
    TableDefinition::new("timer_counts");
/// (topic id, partition) → the partition's event-time watermark, ms. Only
/// moves forward.
pub(crate) const WATERMARKS: TableDefinition<(u32, u32), i64> = TableDefinition::new("watermarks");
/// `STATE` key → when the entry expires, ms since the Unix epoch. Only keys
/// written with a time to live have a row.
pub(crate) const EXPIRY: TableDefinition<&[u8], i64> = TableDefinition::new("state_expiry");
/// The same expiries in time order, for the sweep: (topic id, partition,
/// expires ms, handler key) → ().
pub(crate) const EXPIRY_ORDER: TableDefinition<(u32, u32, i64, &[u8]), ()> =
    TableDefinition::new("state_expiry_order");

/// The `STATE` key prefix of a partition.
pub(crate) fn state_prefix(topic_id: u32, partition: u32) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix[..4].copy_from_slice(&topic_id.to_be_bytes());
    prefix[4..].copy_from_slice(&partition.to_be_bytes());
    prefix
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (a running `linecook run`) holds the store.
    #[error(
        "the data directory {0} is in use by another linecook process; stop it, or talk to it through its admin API"
    )]
    InUse(PathBuf),
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}: {error}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An argument is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The named topic does not exist.
    #[error("topic `{0}` does not exist; create it with `linecook topics create`")]
    UnknownTopic(String),
    /// A topic of that name exists with a different partition count.
    #[error("topic `{name}` already exists with {partitions} partitions")]
    TopicExists {
        /// Topic name.
        name: String,
        /// Its partition count.
        partitions: u32,
    },
    /// A partition number past the topic's partition count.
    #[error("topic `{topic}` has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        /// Topic name.
        topic: String,
        /// Its partition count.
        partitions: u32,
        /// The partition asked for.
        partition: u32,
    },
    /// The data directory was created for another consumer group.
    #[error("the data directory belongs to group `{found}`, not `{expected}`")]
    WrongGroup {
        /// Group in the config.
        expected: String,
        /// Group recorded in the store.
        found: String,
    },
    /// A checkpoint did not start where the partition's last one ended: two
    /// writers for one partition. Nothing was written.
    #[error(
        "checkpoint conflict on {topic}/{partition}: batch starts at {batch_start} but the committed offset is {committed}"
    )]
    CheckpointConflict {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset the batch started at.
        batch_start: u64,
        /// Offset the store has committed.
        committed: u64,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record at {topic_id}/{partition}@{offset}: {message}")]
    Corrupt {
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// Decoder message.
        message: String,
    },
    /// Retention removed records a reader asked for: the partition now
    /// starts at `start`.
    #[error(
        "{topic}/{partition}: retention removed offsets {from}..{start} before they were read; the log starts at {start}"
    )]
    Truncated {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The offset asked for.
        from: u64,
        /// The partition's log start.
        start: u64,
    },
    /// redb failed: I/O error, full disk, or a failed commit (nothing of the
    /// transaction is visible).
    #[error("storage error: {0}")]
    Storage(redb::Error),
    /// The group commit a batch was part of failed in storage: nothing of
    /// the group was written.
    #[error("storage error (group commit): {0}")]
    GroupFailed(String),
}

impl StoreError {
    /// Whether the error refuses one batch of a group commit and leaves the
    /// others to commit: it is found before the batch writes anything.
    pub fn refuses_batch_only(&self) -> bool {
        matches!(
            self,
            StoreError::CheckpointConflict { .. } | StoreError::UnknownTopic(_)
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Fills `LOG_BYTES` once for a store written before it existed: one pass
/// over the log, at the first open by a version that keeps the count.
fn count_log_bytes(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    const COUNTED: &str = "log_bytes_counted";
    let mut meta = txn.open_table(META)?;
    if meta.get(COUNTED)?.is_some() {
        return Ok(());
    }
    let mut sizes = std::collections::BTreeMap::<(u32, u32), u64>::new();
    for entry in txn.open_table(RECORDS)?.iter()? {
        let (key, value) = entry?;
        let (topic, partition, _) = key.value();
        *sizes.entry((topic, partition)).or_default() += value.value().len() as u64;
    }
    let mut bytes = txn.open_table(LOG_BYTES)?;
    for (key, size) in sizes {
        bytes.insert(key, size)?;
    }
    meta.insert(COUNTED, "1")?;
    Ok(())
}

/// The open store of a data directory. Only one process may hold it.
pub struct Store {
    pub(crate) db: Database,
    path: PathBuf,
    /// Per (topic id, partition), created by the first subscriber: a
    /// commit wakes the workers of the partitions it appended to, not
    /// every idle worker (a thousand of them woke for every group commit).
    appended: std::sync::Mutex<std::collections::HashMap<(u32, u32), watch::Sender<u64>>>,
    outboxed: watch::Sender<u64>,
    /// Next partition for keyless records produced through `produce`.
    pub(crate) round_robin: AtomicU32,
    /// Batches of several partitions waiting to commit together.
    pub(crate) group: crate::checkpoint::GroupCommit,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The memory redb may keep of the file by default (`store_cache_mb`).
///
/// redb's own default is 1 GiB, and it fills it: a host's resident memory
/// grew by ~60 MB per 200,000 records handled until it reached it. The
/// pages a host reads again (the log's tail, state, checkpoints) are few
/// and recent; the kernel's page cache holds the rest. A 1M-record run
/// was no slower with 64 MiB (README, Performance).
pub const DEFAULT_CACHE_MB: u64 = 64;

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, with the default
    /// cache.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_MB)
    }

    /// Opens (creating if needed) the store in `data_dir`; redb keeps at
    /// most `cache_mb` MiB of the file in memory.
    pub fn open_with_cache(data_dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::Io {
            path: data_dir.to_owned(),
            error,
        })?;
        let path = data_dir.join(STORE_FILE);
        let mut builder = Database::builder();
        builder.set_cache_size(
            usize::try_from(cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        );
        let db = match builder.create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(data_dir.to_owned()));
            }
            Err(e) => return Err(StoreError::Storage(e.into())),
        };
        Store::init(db, path)
    }

    /// Opens (creating if needed) a store on another redb storage backend,
    /// named `name` in messages: the crash tests' power-loss simulation.
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        name: PathBuf,
    ) -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| StoreError::Storage(e.into()))?;
        Store::init(db, name)
    }

    fn init(db: Database, path: PathBuf) -> Result<Store, StoreError> {
        let txn = db.begin_write()?;
        {
            // Create every table up front so readers never meet a missing one.
            txn.open_table(TOPICS)?;
            txn.open_table(RECORDS)?;
            txn.open_table(LOG_BLOCKS)?;
            txn.open_table(LOG_ENDS)?;
            txn.open_table(LOG_STARTS)?;
            count_log_bytes(&txn)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(VERSION_HISTORY)?;
            txn.open_table(STATE)?;
            txn.open_table(META)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(FIRINGS)?;
            txn.open_table(REPLAYED)?;
            txn.open_table(TIMERS)?;
            txn.open_table(TIMER_KEYS)?;
            txn.open_table(TIMER_COUNTS)?;
            txn.open_table(WATERMARKS)?;
            txn.open_table(EXPIRY)?;
            txn.open_table(EXPIRY_ORDER)?;
        }
        txn.commit()?;
        Ok(Store {
            db,
            path,
            appended: Default::default(),
            outboxed: watch::Sender::new(0),
            round_robin: AtomicU32::new(0),
            group: Default::default(),
        })
    }

    /// Binds the store to `group` on first use; fails if it belongs to another.
    pub fn claim_group(&self, group: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("group")?.map(|v| v.value().to_owned());
            match found {
                Some(found) if found != group => {
                    return Err(StoreError::WrongGroup {
                        expected: group.to_owned(),
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("group", group)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The group recorded in the store, if any.
    pub fn group(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("group")?.map(|v| v.value().to_owned()))
    }

    /// A receiver that changes whenever this process appended records to
    /// `topic`/`partition`.
    pub fn subscribe_appends(
        &self,
        topic: &crate::log::TopicInfo,
        partition: u32,
    ) -> watch::Receiver<u64> {
        let mut senders = self.appended.lock().expect("append signals");
        senders
            .entry((topic.id, partition))
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// Wakes the subscribers of the partitions in `touched`, (topic id,
    /// partition) pairs.
    pub(crate) fn notify_appended(&self, touched: &[(u32, u32)]) {
        if touched.is_empty() {
            return;
        }
        let senders = self.appended.lock().expect("append signals");
        for key in touched {
            if let Some(sender) = senders.get(key) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// A receiver that changes whenever a checkpoint added outbox entries.
    pub fn subscribe_outbox(&self) -> watch::Receiver<u64> {
        self.outboxed.subscribe()
    }

    pub(crate) fn notify_outboxed(&self) {
        self.outboxed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

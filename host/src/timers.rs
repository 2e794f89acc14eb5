//! Time in a partition: its pending timers, its event-time watermark and
//! the sweep of state entries whose time to live ran out.
//!
//! Timers and the watermark are written only by checkpoints
//! (`checkpoint::commit_batch`), so they move with the partition's offset:
//! set by a batch that committed, removed by the firing that committed. This
//! module reads them, decides what is due, and deletes expired state — a
//! write that changes nothing a handler can see, since expired entries are
//! already invisible to `get` and `scan`.

use redb::{ReadableDatabase, ReadableTable};

use crate::log::TopicInfo;
use crate::record::{TimeDomain, Timer};
use crate::store::{
    EXPIRY, EXPIRY_ORDER, STATE, Store, StoreError, TIMER_COUNTS, TIMERS, WATERMARKS, state_prefix,
};

/// The watermark after records with `timestamps`: the highest timestamp
/// minus `lateness_ms`, never below `current`. `None` while the partition
/// has seen no record.
pub fn advance_watermark(
    current: Option<i64>,
    timestamps: impl IntoIterator<Item = i64>,
    lateness_ms: u64,
) -> Option<i64> {
    let lateness = i64::try_from(lateness_ms).unwrap_or(i64::MAX);
    let seen = timestamps
        .into_iter()
        .max()
        .map(|t| t.saturating_sub(lateness));
    match (current, seen) {
        (Some(c), Some(s)) => Some(c.max(s)),
        (c, s) => c.or(s),
    }
}

/// Merges the due timers of both domains into firing order (due time, then
/// processing before event, then key), at most `limit` of them.
pub fn firing_order(mut processing: Vec<Timer>, event: Vec<Timer>, limit: usize) -> Vec<Timer> {
    processing.extend(event);
    processing.sort_by(|a, b| (a.due_ms, a.domain, &a.key).cmp(&(b.due_ms, b.domain, &b.key)));
    processing.truncate(limit);
    processing
}

/// What is pending in a partition, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Timers set and not fired.
    pub timers: u64,
    /// The earliest processing-time timer.
    pub next_processing: Option<i64>,
    /// The earliest event-time timer.
    pub next_event: Option<i64>,
}

/// What [`Store::sweep_expired`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Entries removed.
    pub removed: usize,
    /// The earliest expiry the partition still has (at or before `now`
    /// when the sweep stopped at its limit); `None` when it has none.
    pub next: Option<i64>,
}

/// [`Store::pending_timers`] in tables already open, so a caller reading
/// every partition (status) does it in one transaction.
pub(crate) fn pending_in(
    timers: &impl ReadableTable<(u32, u32, u8, i64, &'static [u8]), ()>,
    counts: &impl ReadableTable<(u32, u32), u64>,
    topic: &TopicInfo,
    partition: u32,
) -> Result<Pending, StoreError> {
    let first = |domain: TimeDomain| -> Result<Option<i64>, StoreError> {
        let tag = domain.tag();
        Ok(timers
            .range((topic.id, partition, tag, i64::MIN, &[][..])..)?
            .next()
            .transpose()?
            .and_then(|(k, _)| {
                let (t, p, d, due, _) = k.value();
                ((t, p, d) == (topic.id, partition, tag)).then_some(due)
            }))
    };
    Ok(Pending {
        timers: counts.get((topic.id, partition))?.map_or(0, |c| c.value()),
        next_processing: first(TimeDomain::Processing)?,
        next_event: first(TimeDomain::Event)?,
    })
}

impl Store {
    /// The partition's watermark, if it has seen a record with a timestamp.
    pub fn watermark(&self, topic: &TopicInfo, partition: u32) -> Result<Option<i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WATERMARKS)?;
        Ok(table.get((topic.id, partition))?.map(|w| w.value()))
    }

    /// Timers of `domain` due at or before `until`, earliest first, at most
    /// `limit`.
    pub fn due_timers(
        &self,
        topic: &TopicInfo,
        partition: u32,
        domain: TimeDomain,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TIMERS)?;
        let tag = domain.tag();
        let mut out = Vec::new();
        for entry in table.range((topic.id, partition, tag, i64::MIN, &[][..])..)? {
            let (key, _) = entry?;
            let (t, p, d, due, key) = key.value();
            if (t, p, d) != (topic.id, partition, tag) || due > until || out.len() >= limit {
                break;
            }
            out.push(Timer {
                key: key.to_vec(),
                domain,
                due_ms: due,
            });
        }
        Ok(out)
    }

    /// How many timers the partition has pending, and the earliest of each
    /// domain.
    pub fn pending_timers(&self, topic: &TopicInfo, partition: u32) -> Result<Pending, StoreError> {
        let txn = self.db.begin_read()?;
        pending_in(
            &txn.open_table(TIMERS)?,
            &txn.open_table(TIMER_COUNTS)?,
            topic,
            partition,
        )
    }

    /// Deletes up to `limit` state entries of the partition that expired by
    /// `now`, in one transaction. Bounded so a sweep never holds the write
    /// lock long.
    pub fn sweep_expired(
        &self,
        topic: &TopicInfo,
        partition: u32,
        now: i64,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        let (expired, next) = {
            let txn = self.db.begin_read()?;
            let order = txn.open_table(EXPIRY_ORDER)?;
            let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut next = None;
            for entry in order.range((topic.id, partition, i64::MIN, &[][..])..)? {
                let (key, _) = entry?;
                let (t, p, at, key) = key.value();
                if (t, p) != (topic.id, partition) {
                    break;
                }
                if at > now || out.len() >= limit {
                    next = Some(at);
                    break;
                }
                out.push((at, key.to_vec()));
            }
            (out, next)
        };
        if expired.is_empty() {
            return Ok(Swept { removed: 0, next });
        }
        let prefix = state_prefix(topic.id, partition);
        let txn = self.db.begin_write()?;
        {
            let mut order = txn.open_table(EXPIRY_ORDER)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            let mut state = txn.open_table(STATE)?;
            for (at, key) in &expired {
                let mut full = prefix.to_vec();
                full.extend_from_slice(key);
                // A batch may have set the key again since the read above:
                // only an expiry still in place deletes.
                let current = expiry.get(full.as_slice())?.map(|a| a.value());
                if current == Some(*at) {
                    expiry.remove(full.as_slice())?;
                    state.remove(full.as_slice())?;
                }
                order.remove((topic.id, partition, *at, key.as_slice()))?;
            }
        }
        txn.commit()?;
        Ok(Swept {
            removed: expired.len(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_trails_the_highest_timestamp_and_never_goes_back() {
        assert_eq!(advance_watermark(None, [], 0), None);
        assert_eq!(advance_watermark(None, [5, 9, 7], 2), Some(7));
        // An older record does not move it back.
        assert_eq!(advance_watermark(Some(7), [3], 2), Some(7));
        assert_eq!(advance_watermark(Some(7), [], 2), Some(7));
        assert_eq!(advance_watermark(Some(7), [20], 2), Some(18));
        assert_eq!(advance_watermark(None, [i64::MIN], 5), Some(i64::MIN));
    }

    #[test]
    fn due_timers_fire_in_due_time_order_across_domains() {
        let t = |d, due, key: &str| Timer {
            key: key.as_bytes().to_vec(),
            domain: d,
            due_ms: due,
        };
        use TimeDomain::{Event, Processing};
        let order = firing_order(
            vec![t(Processing, 5, "b"), t(Processing, 9, "a")],
            vec![t(Event, 5, "a"), t(Event, 1, "z")],
            3,
        );
        assert_eq!(
            order,
            vec![t(Event, 1, "z"), t(Processing, 5, "b"), t(Event, 5, "a")]
        );
    }

    fn commit(store: &Store, topic: &TopicInfo, from: u64, effects: &crate::record::BatchEffects) {
        store
            .commit_batch(crate::checkpoint::BatchCommit {
                topic,
                partition: 0,
                first_offset: from,
                next_offset: from + 1,
                version: "v",
                effects,
                changelog: None,
                firing_seq: None,
            })
            .unwrap();
    }

    fn store() -> (tempfile::TempDir, Store, TopicInfo) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_topic("in", 2).unwrap();
        let topic = store.topic("in").unwrap();
        (dir, store, topic)
    }

    #[test]
    fn expired_state_is_hidden_at_once_and_swept_later() {
        use crate::checkpoint::StateReader;
        let (_dir, store, topic) = store();
        let mut effects = crate::record::BatchEffects::default();
        effects.state.insert(b"short".to_vec(), Some(b"1".to_vec()));
        effects.ttl.insert(b"short".to_vec(), 50);
        effects
            .state
            .insert(b"forever".to_vec(), Some(b"2".to_vec()));
        commit(&store, &topic, 0, &effects);
        let now = crate::record::now_ms();
        let fresh = store.partition_state_at(&topic, 0, now).unwrap();
        assert_eq!(fresh.get(b"short").unwrap(), Some(b"1".to_vec()));
        let later = store.partition_state_at(&topic, 0, now + 1000).unwrap();
        assert_eq!(later.get(b"short").unwrap(), None);
        assert_eq!(
            later.scan(b"", None, 10).unwrap(),
            vec![(b"forever".to_vec(), b"2".to_vec())]
        );
        // Another partition is untouched, and nothing is swept early.
        let swept = |p, at| store.sweep_expired(&topic, p, at, 10).unwrap();
        assert_eq!(
            swept(1, now + 1000),
            Swept {
                removed: 0,
                next: None
            }
        );
        // Not yet: the next expiry is 50 ms after the commit.
        let early = swept(0, now - 1000);
        assert_eq!(early.removed, 0);
        assert!(
            early
                .next
                .is_some_and(|at| at > now - 1000 && at <= now + 1000)
        );
        assert_eq!(
            swept(0, now + 1000),
            Swept {
                removed: 1,
                next: None
            }
        );
        assert_eq!(store.state_entries(&topic, 0).unwrap().len(), 1);

        // Set again without a time to live, a key no longer expires.
        let mut effects = crate::record::BatchEffects::default();
        effects.state.insert(b"k".to_vec(), Some(b"1".to_vec()));
        effects.ttl.insert(b"k".to_vec(), 50);
        commit(&store, &topic, 1, &effects);
        let mut effects = crate::record::BatchEffects::default();
        effects.state.insert(b"k".to_vec(), Some(b"2".to_vec()));
        commit(&store, &topic, 2, &effects);
        let much_later = store
            .partition_state_at(&topic, 0, now + 1_000_000)
            .unwrap();
        assert_eq!(much_later.get(b"k").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            store.sweep_expired(&topic, 0, now + 1_000_000, 10).unwrap(),
            Swept {
                removed: 0,
                next: None
            }
        );
    }

    #[test]
    fn a_sweep_at_its_limit_says_more_is_due_and_the_last_says_none_is_left() {
        let (_dir, store, topic) = store();
        let mut effects = crate::record::BatchEffects::default();
        for key in [b"a", b"b", b"c"] {
            effects.state.insert(key.to_vec(), Some(b"1".to_vec()));
            effects.ttl.insert(key.to_vec(), 50);
        }
        commit(&store, &topic, 0, &effects);
        let later = crate::record::now_ms() + 1000;
        let first = store.sweep_expired(&topic, 0, later, 2).unwrap();
        assert_eq!(first.removed, 2);
        assert!(first.next.is_some_and(|at| at <= later), "{first:?}");
        let second = store.sweep_expired(&topic, 0, later, 2).unwrap();
        assert_eq!(
            second,
            Swept {
                removed: 1,
                next: None
            }
        );
        assert!(store.state_entries(&topic, 0).unwrap().is_empty());
    }

    #[test]
    fn timers_move_fire_once_and_are_counted() {
        use TimeDomain::{Event, Processing};
        let (_dir, store, topic) = store();
        let key = |k: &str| k.as_bytes().to_vec();
        let mut effects = crate::record::BatchEffects::default();
        effects.timers.insert((Processing, key("a")), Some(30));
        effects.timers.insert((Processing, key("b")), Some(10));
        effects.timers.insert((Event, key("a")), Some(5));
        commit(&store, &topic, 0, &effects);
        // Moving a timer leaves one; cancelling removes it.
        let mut effects = crate::record::BatchEffects::default();
        effects.timers.insert((Processing, key("a")), Some(20));
        effects.timers.insert((Event, key("a")), None);
        commit(&store, &topic, 1, &effects);
        let pending = store.pending_timers(&topic, 0).unwrap();
        assert_eq!(
            pending,
            Pending {
                timers: 2,
                next_processing: Some(10),
                next_event: None
            }
        );
        let due = store
            .due_timers(&topic, 0, Processing, 25, 10)
            .unwrap()
            .into_iter()
            .map(|t| (String::from_utf8(t.key).unwrap(), t.due_ms))
            .collect::<Vec<_>>();
        assert_eq!(due, [("b".to_owned(), 10), ("a".to_owned(), 20)]);

        // Firing both while setting `a` again: `b` is gone, `a` stays at its
        // new time.
        let mut effects = crate::record::BatchEffects {
            fired: store.due_timers(&topic, 0, Processing, 25, 10).unwrap(),
            ..Default::default()
        };
        effects.timers.insert((Processing, key("a")), Some(100));
        commit(&store, &topic, 2, &effects);
        assert!(
            store
                .due_timers(&topic, 0, Processing, 99, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.pending_timers(&topic, 0).unwrap(),
            Pending {
                timers: 1,
                next_processing: Some(100),
                next_event: None
            }
        );
        assert_eq!(store.pending_timers(&topic, 1).unwrap(), Pending::default());
    }

    #[test]
    fn a_reset_that_clears_state_forgets_timers_expiries_and_the_watermark() {
        use crate::checkpoint::ResetState;
        let (_dir, store, topic) = store();
        store
            .produce(
                "in",
                &[crate::record::NewRecord {
                    timestamp_ms: None,
                    key: None,
                    value: b"x".to_vec(),
                    headers: vec![],
                    partition: Some(0),
                }],
            )
            .unwrap();
        let mut effects = crate::record::BatchEffects::default();
        effects.state.insert(b"k".to_vec(), Some(b"v".to_vec()));
        effects.ttl.insert(b"k".to_vec(), 60_000);
        effects
            .timers
            .insert((TimeDomain::Event, b"t".to_vec()), Some(5));
        effects.watermark = Some(7);
        commit(&store, &topic, 0, &effects);
        // Keep leaves everything; clear leaves nothing.
        assert_eq!(
            store
                .reset_partition(&topic, 0, 0, ResetState::Keep)
                .unwrap(),
            1
        );
        assert_eq!(store.pending_timers(&topic, 0).unwrap().timers, 1);
        assert_eq!(
            store
                .reset_partition(&topic, 0, 1, ResetState::Clear)
                .unwrap(),
            0
        );
        assert_eq!(store.pending_timers(&topic, 0).unwrap(), Pending::default());
        assert_eq!(store.watermark(&topic, 0).unwrap(), None);
        assert!(store.state_entries(&topic, 0).unwrap().is_empty());
        assert_eq!(
            store.sweep_expired(&topic, 0, i64::MAX, 10).unwrap(),
            Swept {
                removed: 0,
                next: None
            }
        );
        assert_eq!(store.checkpoint(&topic, 0).unwrap().unwrap().next_offset, 1);
        assert!(
            store
                .reset_partition(&topic, 0, 2, ResetState::Keep)
                .is_err()
        );
    }
}

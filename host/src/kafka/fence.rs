//! Ownership epochs: what keeps a member that lost a partition from
//! delivering stale work.
//!
//! Two kinds of stale member exist: one restarted on an old data directory
//! whose outbox still holds batches the group has since redone, and a zombie
//! that lost its session (a long pause, a partition from the coordinator)
//! but still runs. Neither may deliver an outbox entry of a batch the group
//! has committed past under another owner (ARCHITECTURE.md, "Kafka").
//!
//! - **At assignment** (`start_from`): a partition's local state and outbox
//!   are trusted only when they are exactly the group's position — local
//!   checkpoint equal to the committed offset and nothing undelivered.
//!   Otherwise the outbox entries of the partition are dropped and the state
//!   is restored from the changelog to the committed offset, in one
//!   transaction: whatever this member did past that offset is redone.
//! - **A lease per owned partition** (`Leases`): the deliverer delivers only
//!   partitions this member holds a lease for, and a lease exists only
//!   after the member claimed the partition in its changelog — a record
//!   with its epoch (the group generation that gave it the partition),
//!   written before it reads the changelog.
//! - **Read-back before outputs** (`deliver`): after a round's changelog
//!   records are acknowledged, the deliverer reads the changelog from where
//!   it last checked up to its newest record. A claim with a newer epoch
//!   there means another member took the partition before those records
//!   landed: the lease is fenced and the batch's outputs never leave. With
//!   no newer claim, its records precede any newer claim, so a new owner
//!   reads their batch markers and re-forms those batches exactly: every
//!   output that leaves has either a unique origin or byte-identical
//!   copies.
//! - A late changelog write of a fenced owner can still land; restore
//!   resolves each key by (epoch, batch end), not by log order
//!   (`restore::Fold`), and the owner that sees such a write re-writes the
//!   key's current value so compaction cannot keep the stale one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::OffsetReset;

/// Where an assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The local state is the group's: start at the local checkpoint and
    /// re-form any batch another owner handled past it.
    Local(u64),
    /// Drop the partition's outbox, restore its state from the changelog up
    /// to the committed offset, start there.
    Restore(u64),
    /// Nothing committed and nothing local: `auto_offset_reset`.
    Reset(OffsetReset),
}

/// The start of an assigned partition, from its local checkpoint, the
/// group's committed offset, and whether its outbox still holds entries.
pub fn start_from(
    local: Option<u64>,
    committed: Option<u64>,
    undelivered: bool,
    reset: OffsetReset,
) -> StartFrom {
    match (local, committed) {
        (Some(l), Some(c)) if l == c && !undelivered => StartFrom::Local(l),
        (_, Some(c)) => StartFrom::Restore(c),
        // The group never committed: no other owner got past anything, so
        // what is local (delivered or not) is still the only history.
        (Some(l), None) => StartFrom::Local(l),
        (None, None) => StartFrom::Reset(reset),
    }
}

/// The right to deliver one partition's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The epoch claimed.
    pub epoch: u64,
    /// The next changelog offset the read-back has not checked yet.
    pub checked: u64,
    /// Set when a newer owner's claim was found: nothing more is delivered.
    pub fenced: Option<String>,
}

/// Leases by (source topic id, partition), shared by the workers (which
/// take them after claiming), the consumer (which drops them on release)
/// and the deliverer (which reads and fences them).
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<HashMap<(u32, u32), Lease>>,
}

impl Leases {
    /// Holds `partition` of topic `topic_id` from the claim at changelog
    /// offset `claimed` on. A lease of the same epoch already held (a
    /// worker replaced for a route change claims again) stays as it is: its
    /// read-back must still cover what came between the two claims, and a
    /// fence stays a fence.
    pub fn take(&self, topic_id: u32, partition: u32, epoch: u64, claimed: u64) {
        let mut leases = self.inner.lock().expect("leases lock");
        if leases
            .get(&(topic_id, partition))
            .is_some_and(|l| l.epoch == epoch)
        {
            return;
        }
        leases.insert(
            (topic_id, partition),
            Lease {
                epoch,
                checked: claimed + 1,
                fenced: None,
            },
        );
    }

    /// Gives `partition` of topic `topic_id` up.
    pub fn release(&self, topic_id: u32, partition: u32) {
        self.inner
            .lock()
            .expect("leases lock")
            .remove(&(topic_id, partition));
    }

    /// The lease of a partition, if held.
    pub fn get(&self, topic_id: u32, partition: u32) -> Option<Lease> {
        self.inner
            .lock()
            .expect("leases lock")
            .get(&(topic_id, partition))
            .cloned()
    }

    /// Records that the changelog up to `next` (exclusive) holds no newer
    /// claim, if the lease of `epoch` is still held.
    pub fn checked(&self, topic_id: u32, partition: u32, epoch: u64, next: u64) {
        self.update(topic_id, partition, epoch, |l| {
            l.checked = l.checked.max(next)
        });
    }

    /// Fences the lease of `epoch`: a newer owner exists.
    pub fn fence(&self, topic_id: u32, partition: u32, epoch: u64, why: String) {
        self.update(topic_id, partition, epoch, |l| l.fenced = Some(why));
    }

    /// Applies `f` to the lease of `epoch`, if it is still the one held: a
    /// verdict about an older lease must not touch a newer one.
    fn update(&self, topic_id: u32, partition: u32, epoch: u64, f: impl FnOnce(&mut Lease)) {
        if let Some(lease) = self
            .inner
            .lock()
            .expect("leases lock")
            .get_mut(&(topic_id, partition))
            .filter(|l| l.epoch == epoch)
        {
            f(lease);
        }
    }

    /// The epoch of every lease that may deliver (held and not fenced).
    pub fn deliverable_all(&self) -> std::collections::BTreeMap<(u32, u32), u64> {
        self.inner
            .lock()
            .expect("leases lock")
            .iter()
            .filter(|(_, l)| l.fenced.is_none())
            .map(|(tp, l)| (*tp, l.epoch))
            .collect()
    }

    /// Runs `f` with no lease taken or released meanwhile; `f` gets a test
    /// of whether (topic id, partition, epoch) is held and not fenced.
    pub fn while_held<R>(&self, f: impl FnOnce(&dyn Fn(u32, u32, u64) -> bool) -> R) -> R {
        let leases = self.inner.lock().expect("leases lock");
        f(&|t, p, epoch| {
            leases
                .get(&(t, p))
                .is_some_and(|l| l.epoch == epoch && l.fenced.is_none())
        })
    }

    /// Whether the partition may deliver: held and not fenced.
    pub fn deliverable(&self, topic_id: u32, partition: u32) -> Option<u64> {
        self.get(topic_id, partition)
            .filter(|l| l.fenced.is_none())
            .map(|l| l.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: OffsetReset = OffsetReset::Earliest;

    #[test]
    fn local_state_is_trusted_only_when_it_is_exactly_the_groups() {
        assert_eq!(
            start_from(Some(10), Some(10), false, E),
            StartFrom::Local(10)
        );
    }

    #[test]
    fn undelivered_work_or_a_different_position_restores_from_the_changelog() {
        // Undelivered batches at the committed offset: someone else
        // committed them, ours are stale.
        assert_eq!(
            start_from(Some(10), Some(10), true, E),
            StartFrom::Restore(10)
        );
        // Ahead of the group (a crash before the commit): another owner may
        // have redone those batches since.
        assert_eq!(
            start_from(Some(30), Some(10), false, E),
            StartFrom::Restore(10)
        );
        assert_eq!(
            start_from(Some(30), Some(10), true, E),
            StartFrom::Restore(10)
        );
        // Behind the group: another owner went further.
        assert_eq!(
            start_from(Some(5), Some(10), true, E),
            StartFrom::Restore(10)
        );
        assert_eq!(start_from(None, Some(10), false, E), StartFrom::Restore(10));
    }

    #[test]
    fn without_a_group_commit_local_history_is_the_only_one() {
        assert_eq!(start_from(Some(7), None, true, E), StartFrom::Local(7));
        assert_eq!(
            start_from(None, None, false, OffsetReset::Latest),
            StartFrom::Reset(OffsetReset::Latest)
        );
    }

    #[test]
    fn a_fenced_or_released_lease_delivers_nothing() {
        let leases = Leases::default();
        assert_eq!(leases.deliverable(1, 0), None, "never claimed");
        leases.take(1, 0, 5, 99);
        assert_eq!(leases.get(1, 0).unwrap().checked, 100);
        assert_eq!(leases.deliverable(1, 0), Some(5));
        leases.checked(1, 0, 5, 120);
        assert_eq!(leases.get(1, 0).unwrap().checked, 120);
        // A stale epoch's verdict does not touch a newer lease.
        leases.fence(1, 0, 4, "old".into());
        assert_eq!(leases.deliverable(1, 0), Some(5));
        leases.fence(1, 0, 5, "claimed by epoch 6".into());
        assert_eq!(leases.deliverable(1, 0), None);
        leases.take(1, 0, 7, 130);
        assert_eq!(leases.deliverable(1, 0), Some(7));
        // Claimed again in the same epoch: the read-back position and a
        // fence are kept.
        leases.take(1, 0, 7, 150);
        assert_eq!(leases.get(1, 0).unwrap().checked, 131);
        leases.fence(1, 0, 7, "claimed by epoch 8".into());
        leases.take(1, 0, 7, 160);
        assert_eq!(leases.deliverable(1, 0), None);
        leases.take(1, 0, 9, 170);
        assert_eq!(leases.deliverable_all(), [((1, 0), 9)].into());
        assert!(leases.while_held(|held| held(1, 0, 9) && !held(1, 0, 7) && !held(2, 0, 9)));
        leases.release(1, 0);
        assert_eq!(leases.deliverable(1, 0), None);
        assert!(leases.deliverable_all().is_empty());
    }
}

//! Between batches: the worker adopts its target version — a fresh
//! instance of it, `init` first — and replaces the running one only when
//! that succeeded.
//!
//! A swap costs the partition almost nothing: while the running version
//! goes on with its batches, the next one is instantiated on the host's
//! background thread (memory, tables, data segments; see `background`) and
//! its `init` called there, and the boundary after it is ready swaps. An
//! `init` that reads the partition's state may have read what the running
//! version's batches change before the boundary: such an instance is not
//! kept, and a fresh one gets its `init` at the boundary, as the contract
//! promises. With no version running there is nothing to keep serving, and
//! the instance is made on the spot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, oneshot};
use tracing::{debug, error};

use super::report::Event;
use super::{Worker, background};
use crate::checkpoint::{Entries, StateReader};
use crate::config::Limits;
use crate::egress::Egress;
use crate::log::TopicInfo;
use crate::plugins::{PluginVersion, short};
use crate::record::TimeDomain;
use crate::runtime::bindings::Context;
use crate::runtime::{Instance, Labels};
use crate::status::PartitionState;
use crate::store::{Store, StoreError};

/// The next version, being instantiated off the partition's path.
pub(super) struct Next {
    digest: String,
    instance: oneshot::Receiver<Result<Made, String>>,
    /// Notified when `instance` is ready, so an idle worker wakes for it.
    pub(super) ready: Arc<Notify>,
}

/// A new instance, and whether its `init` has run.
pub(super) struct Made {
    instance: Instance,
    initialized: bool,
}

impl Worker {
    /// Swaps in the target version if it differs from the running one:
    /// instantiate + `init` first, replace only on success. Returns whether a
    /// new instance was started.
    pub(super) fn adopt_newest(&mut self) -> bool {
        // A fresh target (even of a digest refused before) deserves a try.
        let fresh = self.spec.versions.has_changed().unwrap_or(false);
        let newest = self.spec.versions.borrow_and_update().clone();
        if fresh {
            self.refused = None;
        }
        let running = self.instance.as_ref().map(|(_, v)| v.digest.clone());
        if running.as_deref() == Some(newest.digest.as_str()) {
            // Retargeted back before the next version was ready.
            self.next = None;
            if fresh {
                self.report.emit(Event::Kept {
                    digest: &newest.digest,
                });
            }
            return false;
        }
        if self.refused.as_deref() == Some(newest.digest.as_str()) {
            return false;
        }
        let made = if running.is_some() {
            match self.made_off_path(&newest) {
                Some(made) => made,
                None => return false,
            }
        } else {
            self.report
                .emit(Event::State(PartitionState::Starting, None));
            Instance::instantiate(
                &newest.prepared,
                self.labels(&newest),
                self.spec.limits,
                self.spec.egress.clone(),
            )
            .map(|instance| Made {
                instance,
                initialized: false,
            })
            .map_err(|e| e.to_string())
        };
        match made.and_then(|made| {
            if made.initialized {
                Ok(made.instance)
            } else {
                self.init_instance(made.instance, &newest)
            }
        }) {
            Ok(instance) => {
                let previous = self.last_started.replace(newest.digest.clone());
                let swapped_from = previous.filter(|p| *p != newest.digest);
                match &swapped_from {
                    // Logged with its pause, at the next batch: a log write
                    // here would lengthen the pause it reports.
                    Some(old) => {
                        self.swap_pending = true;
                        self.swap_log = Some(format!(
                            "swapped {} {} -> {}",
                            newest.name,
                            short(old),
                            newest.short_digest()
                        ));
                    }
                    // A line per partition would be a thousand lines at a
                    // large host's start; `partitions assigned` and the
                    // plugin's `loaded` line say it, refusals are errors.
                    None => debug!("running {} {}", newest.name, newest.short_digest()),
                }
                let contract = instance.contract();
                let old = self.instance.replace((instance, newest.clone()));
                let count_timers = timers_to_count(old.is_some(), self.pending_timers);
                if let Some(old) = old {
                    // Unmapping a retired instance's memory costs more than
                    // the rest of the swap: not on the partition's path.
                    background::run(move || drop(old));
                }
                self.commit_failures = 0;
                self.timer_failures = 0;
                self.report.emit(Event::Started {
                    digest: &newest.digest,
                    contract,
                    swapped: swapped_from.is_some(),
                });
                if count_timers {
                    self.report_timers();
                }
                true
            }
            Err(reason) => {
                error!(
                    "version {} of {} refused: {reason}",
                    newest.short_digest(),
                    newest.name
                );
                self.refused = Some(newest.digest.clone());
                self.report.emit(Event::Refused {
                    digest: &newest.digest,
                    reason: &reason,
                    paused: self.instance.is_none(),
                });
                false
            }
        }
    }

    /// The instance of `version` made on a blocking thread, once it is
    /// ready; until then `None`, and the running version goes on. Starts
    /// making it on first call (and again for a newer target).
    fn made_off_path(&mut self, version: &Arc<PluginVersion>) -> Option<Result<Made, String>> {
        if let Some(next) = &mut self.next
            && next.digest == version.digest
        {
            return match next.instance.try_recv() {
                Ok(result) => {
                    self.next = None;
                    Some(result)
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.next = None;
                    Some(Err("the thread instantiating it stopped".into()))
                }
            };
        }
        let (tell, instance) = oneshot::channel();
        let ready = Arc::new(Notify::new());
        let spec = &self.spec;
        let ahead = Ahead {
            version: version.clone(),
            labels: self.labels(version),
            limits: spec.limits,
            egress: spec.egress.clone(),
            store: spec.store.clone(),
            topic: spec.topic.clone(),
            partition: spec.partition,
            context: self.context(version),
        };
        let ready_ = ready.clone();
        background::run(move || {
            let _ = tell.send(ahead.make());
            ready_.notify_one();
        });
        self.next = Some(Next {
            digest: version.digest.clone(),
            instance,
            ready,
        });
        None
    }

    pub(super) fn labels(&self, version: &PluginVersion) -> Labels {
        Labels {
            plugin: self.spec.plugin.clone(),
            version: version.short_digest().to_owned(),
            topic: self.spec.topic.name.clone(),
            partition: self.spec.partition,
        }
    }

    /// Calls `init` of a fresh instance of `version`.
    pub(super) fn init_instance(
        &self,
        mut instance: Instance,
        version: &PluginVersion,
    ) -> Result<Instance, String> {
        let spec = &self.spec;
        let reader = spec
            .store
            .partition_state(&spec.topic, spec.partition)
            .map_err(|e| e.to_string())?;
        instance
            .init(&self.context(version), Box::new(reader))
            .map_err(|e| e.to_string())?;
        Ok(instance)
    }

    fn context(&self, version: &PluginVersion) -> Context {
        let spec = &self.spec;
        Context {
            plugin: spec.plugin.clone(),
            version: version.digest.clone(),
            topic: spec.topic.name.clone(),
            partition: spec.partition,
            config: spec.config.clone(),
        }
    }
}

/// Whether starting an instance counts the partition's pending timers (two
/// reads of the store). A swap changes no timer — `init` cannot set one —
/// so a count known from before it still holds; the reads, which wait on
/// the committer's locks, took up to 0.4 ms of swap pauses.
fn timers_to_count(replaces_an_instance: bool, known: Option<u64>) -> bool {
    !replaces_an_instance || known.is_none()
}

/// What a blocking thread needs to make the next version's instance ahead
/// of the boundary.
struct Ahead {
    version: Arc<PluginVersion>,
    labels: Labels,
    limits: Limits,
    egress: Option<Arc<Egress>>,
    store: Arc<Store>,
    topic: TopicInfo,
    partition: u32,
    context: Context,
}

impl Ahead {
    /// A fresh instance with `init` called, unless `init` read the
    /// partition's state: what it read may change before the boundary, so
    /// then a second fresh instance, for `init` at the boundary.
    fn make(self) -> Result<Made, String> {
        let mut instance = self.instantiate()?;
        let read = Arc::new(AtomicBool::new(false));
        let state = self
            .store
            .partition_state(&self.topic, self.partition)
            .map_err(|e| e.to_string())?;
        let reader = Watched {
            state,
            read: read.clone(),
        };
        let result = instance.init(&self.context, Box::new(reader));
        if read.load(Ordering::Relaxed) {
            return Ok(Made {
                instance: self.instantiate()?,
                initialized: false,
            });
        }
        result.map_err(|e| e.to_string())?;
        Ok(Made {
            instance,
            initialized: true,
        })
    }

    fn instantiate(&self) -> Result<Instance, String> {
        Instance::instantiate(
            &self.version.prepared,
            self.labels.clone(),
            self.limits,
            self.egress.clone(),
        )
        .map_err(|e| e.to_string())
    }
}

/// The partition's state as an `init` off the partition's path sees it,
/// noting whether it read anything. Every method forwards and notes: one
/// left to its default would let an `init` read without it being noted.
struct Watched<S> {
    state: S,
    read: Arc<AtomicBool>,
}

impl<S: StateReader> StateReader for Watched<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read.store(true, Ordering::Relaxed);
        self.state.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.read.store(true, Ordering::Relaxed);
        self.state.scan(prefix, start_after, limit)
    }

    fn timer(&self, domain: TimeDomain, key: &[u8]) -> Result<Option<i64>, StoreError> {
        self.read.store(true, Ordering::Relaxed);
        self.state.timer(domain, key)
    }
}

#[cfg(test)]
mod tests {
    use super::timers_to_count;

    #[test]
    fn timers_are_counted_at_a_start_and_after_a_failed_count_not_at_a_swap() {
        assert!(
            timers_to_count(false, None),
            "the first instance counts them"
        );
        assert!(
            timers_to_count(false, Some(3)),
            "a restart after a pause counts again"
        );
        assert!(
            !timers_to_count(true, Some(0)),
            "a swap keeps the known count"
        );
        assert!(
            !timers_to_count(true, Some(5)),
            "a swap keeps the known count"
        );
        assert!(
            timers_to_count(true, None),
            "a count that failed is tried again"
        );
    }
}

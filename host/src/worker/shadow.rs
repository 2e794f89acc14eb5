//! A candidate version in shadow: it handles each batch after the serving
//! version, with the same records and the same pre-batch state, and its
//! effects are compared (`crate::shadow::compare`) and thrown away — never
//! committed, never visible. Its timers are not fired, and its `init` runs
//! at a batch boundary on the partition's thread.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Worker, background};
use crate::plugins::PluginVersion;
use crate::record::{BatchEffects, LogRecord};
use crate::rollout::WorkerEvent;
use crate::runtime::{Batch, CallTime, Instance};

/// A candidate running in shadow, and what it cost so far.
pub(super) struct Shadow {
    instance: Instance,
    version: Arc<PluginVersion>,
    /// Time the serving version spent on the batches shadowed, and the
    /// candidate on the same ones: the budget compares them.
    active_time: Duration,
    shadow_time: Duration,
}

/// Whether the candidate may handle the next batch: only while it has used
/// at most `max_slowdown_percent` of the time the serving version used, so
/// a slow candidate slows the partition by at most that much and skips
/// batches instead.
pub fn within_budget(active: Duration, shadow: Duration, max_slowdown_percent: u32) -> bool {
    shadow.as_secs_f64() <= active.as_secs_f64() * f64::from(max_slowdown_percent) / 100.0
}

impl Worker {
    /// Follows the shadow target at a batch boundary: starts the
    /// candidate's instance (its `init` against committed state) or drops it.
    pub(super) fn adopt_shadow(&mut self) {
        if !self.spec.shadow.has_changed().unwrap_or(false) {
            return;
        }
        let target = self.spec.shadow.borrow_and_update().clone();
        let running = self.shadow.as_ref().map(|s| s.version.digest.clone());
        if target.as_ref().map(|v| &v.digest) == running.as_ref() {
            return;
        }
        if let Some(old) = self.shadow.take() {
            info!(
                "{} {} no longer in shadow",
                old.version.name,
                old.version.short_digest()
            );
            background::run(move || drop(old));
        }
        let Some(version) = target else { return };
        let started = Instance::instantiate(
            &version.prepared,
            self.labels(&version),
            self.spec.limits,
            self.spec.egress.clone(),
        )
        .map_err(|e| e.to_string())
        .and_then(|instance| self.init_instance(instance, &version));
        match started {
            Ok(instance) => {
                info!(
                    "running {} {} in shadow",
                    version.name,
                    version.short_digest()
                );
                self.shadow = Some(Shadow {
                    instance,
                    version,
                    active_time: Duration::ZERO,
                    shadow_time: Duration::ZERO,
                });
            }
            Err(reason) => self.shadow_failed(&version, format!("init failed: {reason}")),
        }
    }

    fn shadow_failed(&mut self, version: &PluginVersion, reason: String) {
        warn!(
            "{} {} failed in shadow: {reason}",
            version.name,
            version.short_digest()
        );
        self.spec.events.send(WorkerEvent::ShadowFailed {
            partition: self.spec.partition,
            digest: version.digest.clone(),
            reason,
        });
    }

    /// Runs the candidate on `records` from the state the serving version
    /// started from, compares its effects with `active`'s and reports.
    pub(super) fn run_shadow(
        &mut self,
        records: Vec<LogRecord>,
        active: &BatchEffects,
        active_took: Duration,
        now: i64,
        time: CallTime,
    ) {
        let max_slowdown = self.spec.max_shadow_slowdown_percent;
        let Some(shadow) = self.shadow.as_mut() else {
            return;
        };
        let partition = self.spec.partition;
        let offsets = [
            records.first().map_or(0, |r| r.offset),
            records.last().map_or(0, |r| r.offset),
        ];
        shadow.active_time += active_took;
        let digest = shadow.version.digest.clone();
        if !within_budget(shadow.active_time, shadow.shadow_time, max_slowdown) {
            let batch = crate::shadow::Summary {
                skipped: 1,
                ..Default::default()
            };
            self.spec.events.send(WorkerEvent::Shadowed {
                partition,
                digest,
                batch,
            });
            return;
        }
        let reader = match self
            .spec
            .store
            .partition_state_at(&self.spec.topic, partition, now)
        {
            Ok(reader) => reader,
            Err(e) => {
                warn!("shadow skipped a batch: reading state failed: {e}");
                return;
            }
        };
        let batch = Batch::new(shadow.instance.shape(), &self.spec.topic.name, records);
        let started = std::time::Instant::now();
        let handled = shadow.instance.handle(&batch, Box::new(reader), time);
        shadow.shadow_time += started.elapsed();
        match handled {
            Ok((candidate, _)) => {
                let batch = crate::shadow::compare(
                    partition,
                    offsets,
                    active,
                    &candidate,
                    &self.spec.shadow_compare,
                );
                self.spec.events.send(WorkerEvent::Shadowed {
                    partition,
                    digest,
                    batch,
                });
            }
            Err(failure) => {
                let version = shadow.version.clone();
                if let Some(old) = self.shadow.take() {
                    background::run(move || drop(old));
                }
                self.shadow_failed(
                    &version,
                    format!(
                        "batch at offsets {}..={}: {failure}",
                        offsets[0], offsets[1]
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_slower_than_its_budget_skips_batches() {
        let ms = Duration::from_millis;
        assert!(within_budget(ms(100), ms(100), 100));
        assert!(!within_budget(ms(100), ms(101), 100));
        assert!(within_budget(ms(100), ms(150), 200));
        assert!(within_budget(ms(0), ms(0), 100));
    }
}

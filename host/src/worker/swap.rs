//! Between batches: the worker adopts its target version — a fresh
//! instance of it, `init` first — and replaces the running one only when
//! that succeeded.

use tracing::{error, info};

use super::Worker;
use super::report::Event;
use crate::plugins::{PluginVersion, short};
use crate::runtime::bindings::Context;
use crate::runtime::{Instance, Labels};
use crate::status::PartitionState;

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
        if running.is_none() {
            self.report
                .emit(Event::State(PartitionState::Starting, None));
        }
        match self.start_instance(&newest) {
            Ok(instance) => {
                let previous = self.last_started.replace(newest.digest.clone());
                let swapped_from = previous.filter(|p| *p != newest.digest);
                match &swapped_from {
                    Some(old) => {
                        info!(
                            "swapped {} {} -> {}",
                            newest.name,
                            short(old),
                            newest.short_digest()
                        );
                        self.swap_pending = true;
                    }
                    None => info!("running {} {}", newest.name, newest.short_digest()),
                }
                let contract = instance.contract();
                self.instance = Some((instance, newest.clone()));
                self.commit_failures = 0;
                self.timer_failures = 0;
                self.report.emit(Event::Started {
                    digest: &newest.digest,
                    contract,
                    swapped: swapped_from.is_some(),
                });
                self.report_timers();
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

    fn start_instance(&self, version: &PluginVersion) -> Result<Instance, String> {
        let spec = &self.spec;
        let reader = spec
            .store
            .partition_state(&spec.topic, spec.partition)
            .map_err(|e| e.to_string())?;
        let labels = Labels {
            plugin: spec.plugin.clone(),
            version: version.short_digest().to_owned(),
            topic: spec.topic.name.clone(),
            partition: spec.partition,
        };
        let context = Context {
            plugin: spec.plugin.clone(),
            version: version.digest.clone(),
            topic: spec.topic.name.clone(),
            partition: spec.partition,
            config: spec.config.clone(),
        };
        Instance::start(
            &version.prepared,
            labels,
            spec.limits,
            &context,
            Box::new(reader),
        )
        .map_err(|e| e.to_string())
    }
}

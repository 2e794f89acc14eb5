//! What the host has seen of each plugin: every version with its state and
//! why, as `plugins list`, `status` and `/metrics` show it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Source;

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// Accepted; its route's rollout has not started it yet.
    Pending,
    /// Serving (or being adopted by) every partition of its routes.
    Active,
    /// Serving the canary partitions, waiting to be promoted.
    Canary,
    /// Running in shadow beside the serving version, its effects compared
    /// and discarded.
    Shadow,
    /// Never handled a batch: not a usable component, or its `init` failed.
    Rejected,
    /// Handled batches and failed: on a canary partition, or its batches
    /// could not be committed while it was rolled out. The previous version
    /// was restored.
    RolledBack,
    /// Was active, replaced by a newer version.
    Retired,
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VersionState::Pending => "pending",
            VersionState::Active => "active",
            VersionState::Canary => "canary",
            VersionState::Shadow => "shadow",
            VersionState::Rejected => "rejected",
            VersionState::RolledBack => "rolled-back",
            VersionState::Retired => "retired",
        })
    }
}

/// One version of a plugin as the host has seen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReport {
    /// Full hex digest.
    pub digest: String,
    /// Where it stands.
    pub state: VersionState,
    /// Why it was rejected or rolled back.
    pub reason: Option<String>,
    /// When the host first saw it, ms since the Unix epoch.
    pub seen_at_ms: i64,
    /// Module size in bytes.
    pub size: u64,
    /// Compiled now or loaded from cache (absent for rejected modules).
    pub source: Option<Source>,
    /// Time to compile or load and check, in milliseconds.
    pub prepare_ms: Option<u64>,
    /// The contract it implements (`0.1.0`, `0.2.0`); absent for rejected
    /// modules.
    #[serde(default)]
    pub contract: Option<String>,
    /// Whether it exports 0.2.0's packed batch path.
    #[serde(default)]
    pub packed: bool,
    /// Whether it imports `wasi:http/outgoing-handler` (outbound requests).
    #[serde(default)]
    pub http: bool,
    /// Its shadow phase's comparison with the serving version, if it had
    /// one.
    #[serde(default)]
    pub shadow: Option<crate::shadow::Summary>,
}

/// A plugin and every version the host has seen of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    /// Plugin name.
    pub name: String,
    /// Whether `<name>.wasm` is currently in the plugins directory.
    pub file_present: bool,
    /// Versions, oldest first.
    pub versions: Vec<VersionReport>,
    /// Versions rejected so far (metric-ready counter).
    pub rejected_total: u64,
    /// Versions rolled back so far (metric-ready counter).
    pub rolled_back_total: u64,
    /// Set while the host serves an earlier version because the file could
    /// not be used at start: which version, and why.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// The history of a plugin's versions, as `plugins list` and `status` show it.
impl PluginReport {
    /// A plugin with no version seen yet, its file present.
    pub(super) fn new(name: &str) -> PluginReport {
        PluginReport {
            name: name.to_owned(),
            file_present: true,
            versions: Vec::new(),
            rejected_total: 0,
            rolled_back_total: 0,
            fallback: None,
        }
    }

    pub(super) fn version_mut(&mut self, digest: &str) -> Option<&mut VersionReport> {
        self.versions.iter_mut().find(|v| v.digest == digest)
    }

    /// What an accepted version implements.
    pub(super) fn implements(&mut self, digest: &str, prepared: &crate::runtime::Prepared) {
        if let Some(v) = self.version_mut(digest) {
            v.contract = Some(prepared.contract().version().to_owned());
            v.packed = prepared.packed();
            v.http = prepared.http();
        }
    }

    /// `version` was accepted. The first version a host loads is active from
    /// the start; later ones are pending until their rollout moves them.
    pub(super) fn accepted(
        &mut self,
        digest: &str,
        size: u64,
        source: Source,
        prepare_time: Duration,
        first: bool,
        now_ms: i64,
    ) {
        match self.version_mut(digest) {
            Some(v) => {
                if !first {
                    v.state = VersionState::Pending;
                }
                v.reason = None;
                v.source = Some(source);
            }
            None => self.versions.push(VersionReport {
                digest: digest.to_owned(),
                state: if first {
                    VersionState::Active
                } else {
                    VersionState::Pending
                },
                reason: None,
                seen_at_ms: now_ms,
                size,
                source: Some(source),
                prepare_ms: Some(prepare_time.as_millis() as u64),
                contract: None,
                packed: false,
                http: false,
                shadow: None,
            }),
        }
    }

    /// The bytes with `digest` are not a usable handler.
    pub(super) fn refused(&mut self, digest: &str, size: u64, reason: &str, now_ms: i64) {
        self.rejected_total += 1;
        match self.version_mut(digest) {
            Some(v) => {
                v.state = VersionState::Rejected;
                v.reason = Some(reason.to_owned());
            }
            None => self.versions.push(VersionReport {
                digest: digest.to_owned(),
                state: VersionState::Rejected,
                reason: Some(reason.to_owned()),
                seen_at_ms: now_ms,
                size,
                source: None,
                prepare_ms: None,
                contract: None,
                packed: false,
                http: false,
                shadow: None,
            }),
        }
    }

    /// A rollout moved `digest` to `state`.
    pub(super) fn moved(&mut self, digest: &str, state: VersionState, reason: Option<String>) {
        match state {
            VersionState::Rejected => self.rejected_total += 1,
            VersionState::RolledBack => self.rolled_back_total += 1,
            _ => {}
        }
        if let Some(v) = self.version_mut(digest) {
            v.state = state;
            v.reason = reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(report: &PluginReport) -> Vec<(&str, VersionState, Option<&str>)> {
        report
            .versions
            .iter()
            .map(|v| (v.digest.as_str(), v.state, v.reason.as_deref()))
            .collect()
    }

    #[test]
    fn a_plugins_versions_move_through_their_states() {
        use VersionState::*;
        let mut report = PluginReport::new("p");
        let accept = |r: &mut PluginReport, digest, first| {
            r.accepted(digest, 10, Source::Compiled, Duration::ZERO, first, 1)
        };
        accept(&mut report, "a", true);
        assert_eq!(
            states(&report),
            [("a", Active, None)],
            "the first is active at once"
        );
        accept(&mut report, "b", false);
        assert_eq!(states(&report)[1], ("b", Pending, None));
        report.moved("b", RolledBack, Some("trap".into()));
        report.refused("c", 3, "not a component", 2);
        assert_eq!(
            states(&report),
            [
                ("a", Active, None),
                ("b", RolledBack, Some("trap")),
                ("c", Rejected, Some("not a component")),
            ]
        );
        assert_eq!((report.rejected_total, report.rolled_back_total), (1, 1));
        // Deployed again, a rolled-back version is pending once more, its
        // reason gone; the counters keep the history.
        accept(&mut report, "b", false);
        assert_eq!(states(&report)[1], ("b", Pending, None));
        assert_eq!(report.versions.len(), 3, "one entry per digest");
        report.moved("b", Rejected, Some("init failed".into()));
        assert_eq!((report.rejected_total, report.rolled_back_total), (2, 1));
    }
}

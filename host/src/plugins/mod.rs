//! The plugin registry: reads `<plugins_dir>/<name>.wasm`, names each version
//! by the SHA-256 digest of its bytes, compiles (or loads from the artifact
//! cache) and type-checks it, keeps the history of every version it saw with
//! its state, and publishes accepted versions on a `watch` channel per plugin.
//! Route rollouts (`rollout`) follow those channels and decide which partition
//! runs which version.
//!
//! **Architecture invariant:** only a version that compiled and matched the
//! world is ever published, so a worker can only be offered a module that can
//! run; `init` is each worker's last check before it swaps.

mod cache;
mod files;
mod report;
pub mod trust;
pub mod watcher;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use cache::ArtifactCache;
pub use report::{PluginReport, VersionReport, VersionState};

use files::{newest_file, prune, read_stable};

use crate::record::now_ms;
use crate::runtime::{PrepareError, Prepared, Runtime};

/// One accepted version of a plugin.
#[derive(Debug)]
pub struct PluginVersion {
    /// Plugin name (file stem).
    pub name: String,
    /// Hex SHA-256 of the module bytes: the version's identity.
    pub digest: String,
    /// Size of the module in bytes.
    pub size: u64,
    /// When this host accepted the version.
    pub loaded_at: SystemTime,
    /// Whether it was compiled now or loaded from the artifact cache.
    pub source: Source,
    /// How long compiling (or loading) and checking took.
    pub prepare_time: Duration,
    /// The compiled, linked component.
    pub prepared: Prepared,
}

impl PluginVersion {
    /// The first 12 hex digits of the digest, for humans.
    pub fn short_digest(&self) -> &str {
        short(&self.digest)
    }
}

/// Where a version's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Compiled by Cranelift in this process.
    Compiled,
    /// Loaded from the on-disk artifact cache.
    Cache,
}

/// The first 12 hex digits of a digest.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a plugin file was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No file for the plugin.
    #[error("plugin `{name}` not found: {path} does not exist")]
    NotFound {
        /// Plugin name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a usable handler component.
    #[error("{path} rejected: {error}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// Digest of its bytes.
        digest: String,
        /// Its size.
        size: u64,
        /// Why.
        error: PrepareError,
    },
}

struct Plugin {
    newest: Option<watch::Sender<Arc<PluginVersion>>>,
    /// Accepted versions by digest: a re-deploy of a known version neither
    /// compiles nor loads again.
    accepted: HashMap<String, Arc<PluginVersion>>,
    report: PluginReport,
}

impl Plugin {
    fn new(name: &str) -> Plugin {
        Plugin {
            newest: None,
            accepted: HashMap::new(),
            report: PluginReport::new(name),
        }
    }
}

/// What [`Registry::consider`] made of a plugin file.
#[derive(Debug)]
pub enum Considered {
    /// A new version was accepted and published.
    Published(Arc<PluginVersion>),
    /// The file holds the version already published.
    Unchanged,
    /// The file is gone; partitions keep the version they run.
    Deleted,
    /// The file changed while being read: still being written.
    Unstable,
    /// The bytes are not a usable handler. Not recorded yet: the caller
    /// decides whether the file was complete (see [`Registry::reject`]).
    Rejected {
        /// Digest of the refused bytes.
        digest: String,
        /// Module size.
        size: u64,
        /// Why.
        reason: String,
    },
}

/// Accepted plugin versions and the history of every version seen, by name.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    cache: Option<ArtifactCache>,
    /// Where the bytes of every accepted version are kept, by plugin name:
    /// what a start falls back to when the plugins directory holds an
    /// unusable file.
    kept: Option<PathBuf>,
    /// Whose signatures a version needs, if anyone's.
    trust: Option<trust::Trust>,
    plugins: Mutex<HashMap<String, Plugin>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.dir).finish()
    }
}

impl Registry {
    /// A registry over the plugins in `dir`, caching compiled artifacts in
    /// `cache_dir` and keeping accepted versions' bytes in `kept_dir`, if
    /// given.
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        cache_dir: Option<PathBuf>,
        kept_dir: Option<PathBuf>,
    ) -> Registry {
        let cache = cache_dir.map(|d| ArtifactCache::new(d, runtime.engine()));
        Registry {
            runtime,
            dir,
            cache,
            kept: kept_dir,
            trust: None,
            plugins: Mutex::new(HashMap::new()),
        }
    }

    /// The registry, accepting only versions signed by `trust`'s keys.
    pub fn with_trust(mut self, trust: Option<trust::Trust>) -> Registry {
        self.trust = trust;
        self
    }

    /// The signature file beside a module, if there is one.
    fn signature_of(module: &Path) -> Option<String> {
        let mut sig = module.as_os_str().to_owned();
        sig.push(".sig");
        std::fs::read_to_string(PathBuf::from(sig)).ok()
    }

    /// The plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// Reads, digests, compiles (or loads from cache) and checks
    /// `<dir>/<name>.wasm`, at start. Blocking and slow: run it on a blocking
    /// thread.
    pub fn load(&self, name: &str) -> Result<PluginVersion, PluginError> {
        let path = self.path_of(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(error) => return Err(PluginError::Read { path, error }),
        };
        let digest = digest(&bytes);
        let signature = Self::signature_of(&path);
        match self.prepare(name, &bytes, digest.clone(), signature.as_deref()) {
            Ok(version) => {
                self.keep(name, &digest, &bytes, signature.as_deref());
                Ok(version)
            }
            Err(error) => Err(PluginError::Rejected {
                path,
                digest,
                size: bytes.len() as u64,
                error,
            }),
        }
    }

    /// Loads a version this host accepted before from its kept bytes: the
    /// one with `digest` if it was kept, else the newest kept one. At start,
    /// when the plugins directory's file cannot be used.
    pub fn load_kept(&self, name: &str, digest: Option<&str>) -> Option<PluginVersion> {
        let dir = self.kept.as_ref()?.join(name);
        let wanted = digest.map(|d| dir.join(format!("{d}.wasm")));
        let path = match wanted.filter(|p| p.exists()) {
            Some(path) => path,
            None => newest_file(&dir)?,
        };
        let bytes = std::fs::read(&path).ok()?;
        let digest = self::digest(&bytes);
        let signature = Self::signature_of(&path);
        match self.prepare(name, &bytes, digest, signature.as_deref()) {
            Ok(version) => Some(version),
            Err(e) => {
                tracing::warn!(path = %path.display(), "a kept version no longer loads: {e}");
                None
            }
        }
    }

    /// Keeps the bytes of an accepted version (write, then rename), and only
    /// the newest few per plugin. Failing only costs the fallback, so it is
    /// logged.
    fn keep(&self, name: &str, digest: &str, bytes: &[u8], signature: Option<&str>) {
        let Some(kept) = &self.kept else { return };
        let dir = kept.join(name);
        let path = dir.join(format!("{digest}.wasm"));
        // The signature goes first: a kept version is checked again when a
        // start falls back to it.
        if let Some(signature) = signature
            && let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(format!("{digest}.wasm.sig")), signature))
        {
            tracing::warn!(dir = %dir.display(), "cannot keep the signature of the accepted version: {e}");
            return;
        }
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            if path.exists() {
                // Touched, so pruning sees it as recent.
                return std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
            }
            let tmp = dir.join(format!(".{digest}.tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), "cannot keep a copy of the accepted version: {e}");
            return;
        }
        prune(&dir, KEPT_VERSIONS);
    }

    /// Records whether `<dir>/<name>.wasm` exists.
    pub fn set_file_present(&self, name: &str, present: bool) {
        self.with_plugin(name, |p| p.report.file_present = present);
    }

    /// Records that `name` is served by an earlier version at start, and
    /// why; `None` once a usable file was accepted again.
    pub fn set_fallback(&self, name: &str, fallback: Option<String>) {
        self.with_plugin(name, |p| p.report.fallback = fallback);
    }

    fn prepare(
        &self,
        name: &str,
        bytes: &[u8],
        digest: String,
        signature: Option<&str>,
    ) -> Result<PluginVersion, PrepareError> {
        let started = Instant::now();
        // Before anything is compiled: an untrusted module is never run.
        if let Some(trust) = &self.trust {
            trust
                .verify(bytes, signature)
                .map_err(PrepareError::Untrusted)?;
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(self.runtime.engine(), &digest));
        let (component, source) = match cached {
            Some(component) => (component, Source::Cache),
            None => {
                let component = self.runtime.compile(bytes)?;
                (component, Source::Compiled)
            }
        };
        let prepared = self.runtime.link(&component)?;
        // Cache only what linked: a component of another world is refused
        // again, quickly, by validation rather than kept.
        if let (Source::Compiled, Some(cache)) = (source, &self.cache) {
            cache.store(&digest, &component);
        }
        Ok(PluginVersion {
            name: name.to_owned(),
            digest,
            size: bytes.len() as u64,
            loaded_at: SystemTime::now(),
            source,
            prepare_time: started.elapsed(),
            prepared,
        })
    }

    /// Looks at `<dir>/<name>.wasm` after it changed, and publishes it if it
    /// is a new, usable version. Blocking and slow: run it on a blocking
    /// thread. Partitions keep running what they run meanwhile.
    pub fn consider(&self, name: &str) -> Considered {
        let path = self.path_of(name);
        let Some((bytes, stable)) = read_stable(&path) else {
            self.with_plugin(name, |p| p.report.file_present = false);
            return Considered::Deleted;
        };
        if !stable {
            return Considered::Unstable;
        }
        let digest = digest(&bytes);
        self.with_plugin(name, |p| p.report.file_present = true);
        let known = {
            let plugins = self.plugins.lock().expect("registry lock");
            plugins.get(name).map(|p| {
                let newest = p.newest.as_ref().map(|tx| tx.borrow().digest.clone());
                (newest, p.accepted.get(&digest).cloned())
            })
        };
        // Rejected and rolled-back versions leave `accepted`, so writing the
        // same bytes again is a fresh attempt.
        if let Some((Some(newest), Some(_))) = &known
            && *newest == digest
        {
            // The file is usable again: it holds the version being served.
            self.set_fallback(name, None);
            return Considered::Unchanged;
        }
        let version = match known.and_then(|(_, accepted)| accepted) {
            Some(version) => version,
            None => match self.prepare(
                name,
                &bytes,
                digest.clone(),
                Self::signature_of(&path).as_deref(),
            ) {
                Ok(version) => {
                    self.keep(name, &digest, &bytes, Self::signature_of(&path).as_deref());
                    Arc::new(version)
                }
                Err(e) => {
                    return Considered::Rejected {
                        digest,
                        size: bytes.len() as u64,
                        reason: e.to_string(),
                    };
                }
            },
        };
        self.set_fallback(name, None);
        Considered::Published(self.publish_arc(version))
    }

    /// Makes `version` the newest version of its plugin.
    pub fn publish(&self, version: PluginVersion) -> Arc<PluginVersion> {
        self.publish_arc(Arc::new(version))
    }

    fn publish_arc(&self, version: Arc<PluginVersion>) -> Arc<PluginVersion> {
        let mut plugins = self.plugins.lock().expect("registry lock");
        let plugin = plugins
            .entry(version.name.clone())
            .or_insert_with(|| Plugin::new(&version.name));
        plugin
            .accepted
            .insert(version.digest.clone(), version.clone());
        let first = plugin.newest.is_none();
        plugin.report.accepted(
            &version.digest,
            version.size,
            version.source,
            version.prepare_time,
            first,
            now_ms(),
        );
        plugin.report.implements(&version.digest, &version.prepared);
        match &plugin.newest {
            Some(tx) => {
                tx.send_replace(version.clone());
            }
            None => plugin.newest = Some(watch::Sender::new(version.clone())),
        }
        version
    }

    /// Records that the bytes with `digest` were refused as a plugin.
    pub fn reject(&self, name: &str, digest: &str, size: u64, reason: &str) {
        self.with_plugin(name, |p| p.report.refused(digest, size, reason, now_ms()));
    }

    /// Records where a version stands, as decided by a route's rollout.
    pub fn set_state(&self, name: &str, digest: &str, state: VersionState, reason: Option<String>) {
        self.with_plugin(name, |p| {
            if matches!(state, VersionState::Rejected | VersionState::RolledBack) {
                // Never offered again until its file is written again.
                p.accepted.remove(digest);
            }
            p.report.moved(digest, state, reason);
        });
    }

    /// Records how `digest`'s shadow phase compares so far.
    pub fn set_shadow(&self, name: &str, digest: &str, summary: crate::shadow::Summary) {
        self.with_plugin(name, |p| {
            if let Some(v) = p.report.version_mut(digest) {
                v.shadow = Some(summary);
            }
        });
    }

    fn with_plugin(&self, name: &str, f: impl FnOnce(&mut Plugin)) {
        let mut plugins = self.plugins.lock().expect("registry lock");
        f(plugins
            .entry(name.to_owned())
            .or_insert_with(|| Plugin::new(name)));
    }

    /// Follows the newest version of `name`, if one was ever published.
    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Arc<PluginVersion>>> {
        let plugins = self.plugins.lock().expect("registry lock");
        plugins
            .get(name)
            .and_then(|p| p.newest.as_ref())
            .map(watch::Sender::subscribe)
    }

    /// Every plugin with its version history, by name.
    pub fn report(&self) -> Vec<PluginReport> {
        let plugins = self.plugins.lock().expect("registry lock");
        let mut out: Vec<PluginReport> = plugins.values().map(|p| p.report.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Accepted versions kept per plugin for a start to fall back to.
const KEPT_VERSIONS: usize = 8;

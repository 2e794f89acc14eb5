//! The plugin registry: reads `<plugins_dir>/<name>.wasm`, names each version
//! by the SHA-256 digest of its bytes, compiles and type-checks it, and
//! publishes accepted versions on a `watch` channel per plugin that partition
//! workers follow.
//!
//! **Architecture invariant:** only a version that compiled and matched the
//! world is ever published, so a worker can only be offered a module that can
//! run; `init` is the worker's last check before it swaps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

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
    /// How long compiling and checking took.
    pub compile_time: std::time::Duration,
    /// The compiled, linked component.
    pub prepared: Prepared,
}

impl PluginVersion {
    /// The first 12 hex digits of the digest, for humans.
    pub fn short_digest(&self) -> &str {
        short(&self.digest)
    }
}

/// The first 12 hex digits of a digest.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
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
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a usable handler component.
    #[error("{path} rejected: {source}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PrepareError,
    },
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepted plugin versions, by plugin name.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    channels: Mutex<HashMap<String, watch::Sender<Arc<PluginVersion>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.dir).finish()
    }
}

impl Registry {
    /// A registry over the plugins in `dir`.
    pub fn new(runtime: Arc<Runtime>, dir: PathBuf) -> Registry {
        Registry {
            runtime,
            dir,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads, digests, compiles and checks `<dir>/<name>.wasm`. Blocking and
    /// slow: run it on a blocking thread.
    pub fn load(&self, name: &str) -> Result<PluginVersion, PluginError> {
        let path = self.dir.join(format!("{name}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(source) => return Err(PluginError::Read { path, source }),
        };
        let started = Instant::now();
        let prepared = self
            .runtime
            .prepare(&bytes)
            .map_err(|source| PluginError::Rejected {
                path: path.clone(),
                source,
            })?;
        Ok(PluginVersion {
            name: name.to_owned(),
            digest: digest(&bytes),
            size: bytes.len() as u64,
            loaded_at: SystemTime::now(),
            compile_time: started.elapsed(),
            prepared,
        })
    }

    /// Makes `version` the newest version of its plugin. Workers adopt it at
    /// their next batch boundary. Publishing the digest that is already
    /// current changes nothing.
    pub fn publish(&self, version: PluginVersion) -> Arc<PluginVersion> {
        let mut channels = self.channels.lock().expect("registry lock");
        match channels.get(&version.name) {
            Some(tx) if tx.borrow().digest == version.digest => tx.borrow().clone(),
            Some(tx) => {
                let version = Arc::new(version);
                tx.send_replace(version.clone());
                version
            }
            None => {
                let version = Arc::new(version);
                channels.insert(version.name.clone(), watch::Sender::new(version.clone()));
                version
            }
        }
    }

    /// Follows the newest version of `name`, if one was ever published.
    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Arc<PluginVersion>>> {
        let channels = self.channels.lock().expect("registry lock");
        channels.get(name).map(watch::Sender::subscribe)
    }

    /// The newest version of `name`.
    pub fn current(&self, name: &str) -> Option<Arc<PluginVersion>> {
        let channels = self.channels.lock().expect("registry lock");
        channels.get(name).map(|tx| tx.borrow().clone())
    }
}

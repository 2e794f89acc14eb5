//! Compiled components cached on disk by module digest and engine settings,
//! so a restart or a re-deploy of a known version does not run Cranelift again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of `<digest>-<engine>.cwasm` files written by this host.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_tag: String,
}

impl ArtifactCache {
    /// A cache in `dir` for artifacts of `engine`'s settings.
    pub fn new(dir: PathBuf, engine: &Engine) -> ArtifactCache {
        // Artifacts from other wasmtime versions or settings are never
        // offered to this engine: they get another name.
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    /// Where the artifact of `digest` lives.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    /// The cached component for `digest`, if a usable one is there.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is named by the digest of the module it was
        // compiled from and by this engine's settings, and only this host
        // writes into the cache directory (inside its own data directory);
        // wasmtime additionally checks the artifact's header and engine
        // compatibility before using it.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` as the artifact of `digest`. Failures only cost a
    /// recompile later, so they are logged, not returned.
    pub fn store(&self, digest: &str, component: &Component) {
        if let Err(e) = self.try_store(digest, component) {
            tracing::warn!(dir = %self.dir.display(), "cannot cache compiled plugin: {e:#}");
        }
    }

    fn try_store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component.serialize()?;
        let path = self.path(digest);
        // Write then rename, so a crash never leaves a half-written artifact
        // under the final name.
        let tmp = tmp_path(&path);
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            // A full disk must not also keep the partial file.
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

//! Watches the plugins directory and feeds changed `*.wasm` files to the
//! registry, off every partition's path.
//!
//! Any event on `<name>.wasm` (create, write, rename to or from it, delete)
//! marks `name` dirty; a name is looked at once it has been quiet for
//! [`DEBOUNCE`], so an editor's save sequence or a `cp` in progress is one
//! look, not many. A file that changes while it is read is looked at again; a
//! file that fails to load is given one more look after [`SETTLE`] before it
//! is rejected, because a writer may have paused mid-file. A later write
//! always brings a fresh look: nothing is rejected forever.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Considered, Registry, short};

/// Quiet time before a changed file is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Delay before a second look at a file that failed to load or was changing.
pub const SETTLE: Duration = Duration::from_millis(500);
/// Looks at a file that keeps changing before giving up until its next event.
const MAX_UNSTABLE_LOOKS: u32 = 240;

/// Starts watching the registry's directory for the plugins in `names`.
pub fn spawn(
    registry: Arc<Registry>,
    names: Arc<std::sync::Mutex<HashSet<String>>>,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let dir = registry.dir().to_owned();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = {
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                for name in event.paths.iter().filter_map(|p| plugin_name(p)) {
                    let _ = tx.send(name);
                }
            }
            Ok(_) => {}
            Err(e) => warn!("plugins directory watcher: {e}"),
        })
        .context("starting the plugins directory watcher")?
    };
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    info!(dir = %dir.display(), "watching for new plugin versions");
    Ok(tokio::spawn(run(registry, names, rx, watcher, cancel)))
}

/// Whether an event can mean new content under a name. Opens and reads —
/// including the registry's own — do not, or every look would cause another.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// `<name>` for `<name>.wasm` and its signature `<name>.wasm.sig` (a
/// signature that arrives after its module makes the module worth another
/// look). The watch is not recursive, so every path it reports is at the
/// top level of the directory.
fn plugin_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let module = file.strip_suffix(".sig").unwrap_or(file);
    module.strip_suffix(".wasm").map(str::to_owned)
}

struct Due {
    at: Instant,
    looks: u32,
}

async fn run(
    registry: Arc<Registry>,
    names: Arc<std::sync::Mutex<HashSet<String>>>,
    mut events: mpsc::UnboundedReceiver<String>,
    // Dropping the watcher stops the events; it lives as long as this task.
    _watcher: RecommendedWatcher,
    cancel: CancellationToken,
) {
    let mut due: HashMap<String, Due> = HashMap::new();
    loop {
        let next = due.values().map(|d| d.at).min();
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.recv() => match event {
                Some(name) if names.lock().expect("names lock").contains(&name) => {
                    due.insert(name, Due { at: Instant::now() + DEBOUNCE, looks: 0 });
                }
                Some(name) => debug!(plugin = %name, "ignoring a plugin no route uses"),
                None => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let ready: Vec<String> = due
                    .iter()
                    .filter(|(_, d)| d.at <= now)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in ready {
                    let looks = due.remove(&name).map_or(0, |d| d.looks) + 1;
                    if let Some(again) = look(&registry, &name, looks).await {
                        due.insert(name, Due { at: Instant::now() + again, looks });
                    }
                }
            }
        }
    }
}

/// Looks at one plugin file; returns when to look again, if at all.
async fn look(registry: &Arc<Registry>, name: &str, looks: u32) -> Option<Duration> {
    let reg = registry.clone();
    let owned = name.to_owned();
    let considered = match tokio::task::spawn_blocking(move || reg.consider(&owned)).await {
        Ok(considered) => considered,
        Err(e) => {
            error!(plugin = name, "loading the plugin panicked: {e}");
            return None;
        }
    };
    match considered {
        Considered::Published(version) => {
            info!(
                plugin = name,
                version = version.short_digest(),
                source = ?version.source,
                prepare_ms = version.prepare_time.as_millis() as u64,
                "new version accepted"
            );
            None
        }
        Considered::Unchanged => {
            debug!(
                plugin = name,
                "file rewritten with the same bytes: not a new version"
            );
            None
        }
        Considered::Deleted => {
            warn!(
                plugin = name,
                path = %plugin_path(registry, name).display(),
                "plugin file deleted; partitions keep running the version they have"
            );
            None
        }
        Considered::Unstable if looks < MAX_UNSTABLE_LOOKS => {
            debug!(plugin = name, "file is still being written; looking again");
            Some(SETTLE)
        }
        Considered::Unstable => {
            warn!(
                plugin = name,
                "file keeps changing; waiting for its next write"
            );
            None
        }
        Considered::Rejected { .. } if looks == 1 => {
            // A writer may have paused mid-file: one more look before saying no.
            Some(SETTLE)
        }
        Considered::Rejected {
            digest,
            size,
            reason,
        } => {
            error!(
                plugin = name,
                version = short(&digest),
                "new version rejected, the previous version keeps serving: {reason}"
            );
            registry.reject(name, &digest, size, &reason);
            None
        }
    }
}

fn plugin_path(registry: &Registry, name: &str) -> PathBuf {
    registry.dir().join(format!("{name}.wasm"))
}

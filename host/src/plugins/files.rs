//! The plugins directory and the kept copies of accepted versions, as files.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The most recently modified `.wasm` file in `dir`.
pub(super) fn newest_file(dir: &Path) -> Option<PathBuf> {
    wasm_files(dir)
        .into_iter()
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

fn wasm_files(dir: &Path) -> Vec<(SystemTime, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let modified = path.metadata().ok()?.modified().ok()?;
            (path.extension()? == "wasm").then_some((modified, path))
        })
        .collect()
}

/// Removes all but the `keep` most recently modified `.wasm` files of `dir`,
/// with their signatures.
pub(super) fn prune(dir: &Path, keep: usize) {
    let mut files = wasm_files(dir);
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(keep) {
        let mut sig = path.as_os_str().to_owned();
        sig.push(".sig");
        let _ = std::fs::remove_file(PathBuf::from(sig));
        let _ = std::fs::remove_file(path);
    }
}

/// Reads `path` and tells whether it held still while being read (same
/// length and modification time before and after). `None` if it is gone.
pub(super) fn read_stable(path: &Path) -> Option<(Vec<u8>, bool)> {
    let stamp = |m: &std::fs::Metadata| (m.len(), m.modified().ok());
    let before = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let after = std::fs::metadata(path).ok()?;
    let stable = stamp(&before) == stamp(&after) && after.len() == bytes.len() as u64;
    Some((bytes, stable))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn prune_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = SystemTime::now() - Duration::from_secs(100);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&path, name).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(base + Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "kept: not a module").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["c.wasm", "d.wasm", "notes.txt"]);
        assert_eq!(newest_file(dir.path()), Some(dir.path().join("d.wasm")));
    }
}

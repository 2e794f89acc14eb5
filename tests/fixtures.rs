//! `linecook test`: the example plugins' fixtures pass; a wrong expectation
//! fails with a readable diff and exit status 1; `--update` rewrites the
//! expectation (and nothing else of the file) so the fixture passes.

mod support;

use std::process::Command;

fn linecook_test(args: &[&str]) -> (bool, String) {
    let out = Command::new(support::BIN)
        .arg("test")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_example_fixtures_pass() {
    support::plugins();
    let dir = support::workspace_root().join("plugins/fixtures");
    let mut fixtures: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 4, "{fixtures:?}");
    let args: Vec<&str> = fixtures.iter().map(String::as_str).collect();
    let (ok, said) = linecook_test(&args);
    assert!(ok, "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("ok    ")).count(),
        fixtures.len(),
        "{said}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_and_update_fixes_it() {
    support::plugins();
    let dir = tempfile::tempdir().unwrap();
    let wasm = support::plugins().join("counter.wasm");
    let fixture = dir.path().join("counter.toml");
    let original = format!(
        r#"# kept by --update
plugin = "{}"
config = {{ output = "out" }}

[[batch]]
records = [{{ key = "a", value = "x" }}, {{ key = "a", value = "y" }}]

[expect]
outputs = [
  {{ topic = "out", key = "a", value = "a:1" }},
  {{ topic = "out", key = "a", value = "a:3" }},
]
state = [{{ key = "a", value = "2" }}]
"#,
        wasm.display()
    );
    std::fs::write(&fixture, &original).unwrap();
    let path = fixture.display().to_string();
    let (ok, said) = linecook_test(&[&path]);
    assert!(!ok, "{said}");
    assert!(said.contains("FAIL  "), "{said}");
    // The diff names the line expected and the line the run produced; the
    // state section, which matched, is not shown.
    assert!(said.contains("outputs: (- expected, + actual)"), "{said}");
    assert!(said.contains("    out key=\"a\" value=\"a:1\""), "{said}");
    assert!(said.contains("- out key=\"a\" value=\"a:3\""), "{said}");
    assert!(said.contains("+ out key=\"a\" value=\"a:2\""), "{said}");
    assert!(!said.contains("state:"), "{said}");
    assert!(said.contains("not every fixture passed"), "{said}");

    let (ok, said) = linecook_test(&["--update", &path]);
    assert!(ok, "{said}");
    let updated = std::fs::read_to_string(&fixture).unwrap();
    assert!(updated.starts_with("# kept by --update\n"), "{updated}");
    assert!(updated.contains("a:2"), "{updated}");
    let (ok, said) = linecook_test(&[&path]);
    assert!(ok && said.starts_with("ok    "), "{said}");
}

/// The cache's entries: every compiled component under `dir` (not
/// wasmtime's usage statistics and clean-up markers), with its contents.
fn cache_entries(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut entries = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.join("modules")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_none_or(|e| e != "stats") {
                entries.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    entries
}

/// With LINECOOK_COMPILE_CACHE, `linecook test` keeps the compiled
/// component in that directory and the next run reuses it (same result,
/// nothing written again); a damaged entry is compiled again, not used.
#[test]
fn a_compile_cache_is_filled_once_reused_and_repaired() {
    support::plugins();
    let cache = tempfile::tempdir().unwrap();
    let fixture = support::workspace_root().join("plugins/fixtures/uppercase.toml");
    let run = || {
        let out = Command::new(support::BIN)
            .arg("test")
            .arg(&fixture)
            .env("LINECOOK_COMPILE_CACHE", cache.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    };
    let first = run();
    let filled = cache_entries(cache.path());
    assert_eq!(
        filled.len(),
        1,
        "one compiled component: {:?}",
        filled.keys()
    );

    assert_eq!(run(), first);
    assert_eq!(cache_entries(cache.path()), filled, "reused as it was");

    let (path, _) = filled.iter().next().unwrap();
    std::fs::write(path, b"not a compiled component").unwrap();
    assert_eq!(run(), first);
    assert_eq!(
        cache_entries(cache.path()),
        filled,
        "the damaged entry was compiled and written again"
    );
}

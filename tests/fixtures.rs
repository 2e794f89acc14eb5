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

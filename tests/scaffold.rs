//! `linecook new`: every scaffolded language builds, with its one command,
//! to a component the host accepts, and handles records in a running host.

mod support;

use std::process::Command;

use support::{Setup, build_plugins, read_all, wait_until, workspace_root};

fn new_project(lang: &str, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_linecook"))
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "linecook new --lang {lang}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(name)
}

#[test]
fn scaffolded_handlers_build_with_one_command_and_run() {
    // Shares compiled dependencies with the example plugins.
    build_plugins(None);
    // The templates install what they miss on their own, without taking
    // turns with other test processes (scripts/test.sh runs binaries side
    // by side); installed here first, through the shared lock, they find
    // everything in place.
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/toolchains.sh"))
        .args(["c", "zig", "go", "python"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/toolchains.sh failed");
    let work = tempfile::tempdir().unwrap();
    for (lang, name, contract) in [
        ("rust", "hello-rs", "0.2.0"),
        ("c", "hello-c", "0.2.0"),
        ("js", "hello-js", "0.2.0"),
        ("zig", "hello-zig", "0.2.0"),
        ("assemblyscript", "hello-as", "0.2.0"),
        ("go", "hello-go", "0.2.0"),
        ("python", "hello-py", "0.2.0"),
    ] {
        let project = new_project(lang, work.path(), name);
        let started = std::time::Instant::now();
        let status = Command::new(project.join("build.sh"))
            .env("CARGO_TARGET_DIR", workspace_root().join("plugins/target"))
            .status()
            .unwrap();
        assert!(status.success(), "{lang}: build.sh failed");
        eprintln!(
            "{lang}: scaffold built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let wasm = project.join(format!("{name}.wasm"));
        let check = Command::new(env!("CARGO_BIN_EXE_linecook"))
            .args(["plugins", "check"])
            .arg(&wasm)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{lang}: plugins check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            said.contains(&format!("a linecook:handler@{contract} component")),
            "{lang}: {said}"
        );
        // The project's own fixture passes as written.
        let test = Command::new(env!("CARGO_BIN_EXE_linecook"))
            .args(["test", "test.toml"])
            .current_dir(&project)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&test.stdout);
        assert!(
            test.status.success() && said.starts_with("ok    test.toml"),
            "{lang}: linecook test: {said}{}",
            String::from_utf8_lossy(&test.stderr)
        );

        let setup = Setup::new(
            &format!(
                "[[topic]]\nname = \"in\"\npartitions = 1\n[[topic]]\nname = \"out\"\npartitions = 1\n[[route]]\ntopic = \"in\"\nplugin = \"{name}\"\nconfig = {{ output = \"out\" }}\n"
            ),
            &[],
        );
        std::fs::copy(&wasm, setup.dir.path().join(format!("plugins/{name}.wasm"))).unwrap();
        {
            let store = setup.store();
            store.create_topic("in", 1).unwrap();
            store.create_topic("out", 1).unwrap();
        }
        setup.produce("in", &[(Some("k"), "hello"), (None, "World")]);
        let mut host = setup.start();
        host.wait_ready();
        wait_until(std::time::Duration::from_secs(60), "the records", || {
            setup.status().partitions.iter().all(|p| p.lag == 0)
        });
        host.stop();
        let values: Vec<Vec<u8>> = read_all(&setup.store(), "out")
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(values, vec![b"HELLO".to_vec(), b"WORLD".to_vec()], "{lang}");
    }
}

#[test]
fn a_project_is_never_written_over() {
    let work = tempfile::tempdir().unwrap();
    new_project("rust", work.path(), "taken");
    let out = Command::new(env!("CARGO_BIN_EXE_linecook"))
        .args(["new", "taken", "--lang", "c", "--dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(work.path().join("taken/Cargo.toml").exists());
    assert!(!work.path().join("taken/app.c").exists());
}

#[test]
fn an_unknown_language_is_refused_with_the_supported_ones() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_linecook"))
        .args(["new", "x", "--lang", "cobol", "--dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for lang in ["rust", "python", "c", "js", "zig", "assemblyscript", "go"] {
        assert!(err.contains(lang), "{err}");
    }
    assert!(!work.path().join("x").exists());
}

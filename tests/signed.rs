//! Signed plugins: under `trusted_keys`, unsigned, tampered and wrong-key
//! modules are rejected with the reason while the signed version keeps
//! serving; a version signed by a trusted key is swapped in.

mod support;

use std::path::Path;
use std::time::Duration;

use linecook::plugins::{VersionState, digest};
use linecook::status::StatusReport;
use support::{Setup, wait_until};

fn keygen(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new(support::BIN)
        .args(["plugins", "keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn sign(file: &Path, key: &Path) {
    let out = std::process::Command::new(support::BIN)
        .args(["plugins", "sign"])
        .arg(file)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn version_state(status: &StatusReport, digest: &str) -> Option<(VersionState, Option<String>)> {
    status
        .plugins
        .iter()
        .flat_map(|p| &p.versions)
        .find(|v| v.digest == digest)
        .map(|v| (v.state, v.reason.clone()))
}

#[test]
fn only_versions_signed_by_a_trusted_key_are_accepted() {
    let keys = tempfile::tempdir().unwrap();
    let trusted = keygen(keys.path(), "trusted.key");
    let _other = keygen(keys.path(), "other.key");
    let setup = Setup::new(
        &format!(
            "trusted_keys = [\"{trusted}\"]\nmax_batch = 10\n[[topic]]\nname = \"in\"\npartitions = 1\n[[topic]]\nname = \"out\"\npartitions = 1\n[[route]]\ntopic = \"in\"\nplugin = \"uppercase\"\nconfig = {{ output = \"out\" }}\n"
        ),
        &[],
    );
    let plugins = setup.dir.path().join("plugins");
    let module = plugins.join("uppercase.wasm");
    let original = std::fs::read(support::plugins().join("uppercase.wasm")).unwrap();
    std::fs::write(&module, &original).unwrap();
    sign(&module, &keys.path().join("trusted.key"));
    let mut host = setup.start();
    host.wait_ready();
    let serving = digest(&original);
    let produce = |value: &str| {
        let out = setup.cli_with_stdin(&["produce", "--topic", "in"], &format!("{value}\n"));
        assert!(out.status.success());
    };

    // Each bad deploy: the signature first, then the module by rename.
    let deploy = |bytes: &[u8], signature: Option<&Path>| {
        let sig = plugins.join("uppercase.wasm.sig");
        match signature {
            Some(key) => {
                let staged = plugins.join("staged.wasm");
                std::fs::write(&staged, bytes).unwrap();
                sign(&staged, key);
                std::fs::rename(plugins.join("staged.wasm.sig"), &sig).unwrap();
                std::fs::remove_file(staged).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&sig);
            }
        }
        let tmp = plugins.join("uppercase.wasm.partial");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &module).unwrap();
    };
    let cases: [(&str, Vec<u8>, Option<std::path::PathBuf>, &str); 3] = [
        (
            "unsigned",
            support::with_custom_section(&original, 1),
            None,
            "refused by trusted_keys: unsigned",
        ),
        (
            "signed by another key",
            support::with_custom_section(&original, 2),
            Some(keys.path().join("other.key")),
            "does not verify with any trusted key",
        ),
        (
            "tampered after signing",
            support::with_custom_section(&original, 3),
            None,
            "does not verify with any trusted key",
        ),
    ];
    for (i, (kind, bytes, key, reason)) in cases.iter().enumerate() {
        if *kind == "tampered after signing" {
            // A valid signature, by the trusted key, of other bytes.
            let signed = support::with_custom_section(&original, 99);
            let staged = plugins.join("staged.wasm");
            std::fs::write(&staged, &signed).unwrap();
            sign(&staged, &keys.path().join("trusted.key"));
            std::fs::rename(
                plugins.join("staged.wasm.sig"),
                plugins.join("uppercase.wasm.sig"),
            )
            .unwrap();
            std::fs::remove_file(staged).unwrap();
            let tmp = plugins.join("uppercase.wasm.partial");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &module).unwrap();
        } else {
            deploy(bytes, key.as_deref());
        }
        let bad = digest(bytes);
        wait_until(
            Duration::from_secs(30),
            &format!("{kind} to be rejected"),
            || {
                matches!(
                    version_state(&setup.status(), &bad),
                    Some((VersionState::Rejected, _))
                )
            },
        );
        let (_, why) = version_state(&setup.status(), &bad).unwrap();
        let why = why.unwrap_or_default();
        assert!(why.contains(reason), "{kind}: {why}");
        // The signed version keeps serving.
        produce(&format!("v{i}"));
        wait_until(Duration::from_secs(30), "the record", || {
            let out = setup.cli(&["tail", "--topic", "out", "--from-beginning"]);
            String::from_utf8_lossy(&out.stdout).lines().count() == i + 1
        });
        let status = setup.status();
        assert_eq!(
            status.partitions[0].version.as_deref(),
            Some(serving.as_str())
        );
    }

    // Signed by the trusted key: swapped in.
    let good = support::with_custom_section(&original, 4);
    deploy(&good, Some(&keys.path().join("trusted.key")));
    let good = digest(&good);
    wait_until(Duration::from_secs(30), "the signed version to run", || {
        setup.status().partitions[0].version.as_deref() == Some(good.as_str())
    });
    host.stop();
}

//! A running host re-reads its config: a route added starts, a route removed
//! drains and stops, a bad edit is rejected while everything keeps running —
//! and the other routes lose and repeat nothing meanwhile.

mod support;

use std::time::Duration;

use support::{Setup, tail_values, wait_until};

const BASE: &str = r#"
[[topic]]
name = "words"
partitions = 2
[[topic]]
name = "shouted"
partitions = 1
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "shouted" }
"#;

const COUNTING: &str = r#"
[[topic]]
name = "clicks"
partitions = 2
[[topic]]
name = "counts"
partitions = 1
[[route]]
topic = "clicks"
plugin = "counter"
config = { output = "counts" }
"#;

fn write_config(setup: &Setup, body: &str) {
    let text = format!("group = \"test\"\nadmin = \"127.0.0.1:0\"\n{body}");
    // Write and rename, as editors do.
    let tmp = setup.dir.path().join("linecook.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &setup.config).unwrap();
}

fn produce(setup: &Setup, topic: &str, lines: &[String]) {
    let out = setup.cli_with_stdin(&["produce", "--topic", topic], &(lines.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn routed(setup: &Setup) -> Vec<String> {
    let mut topics: Vec<String> = setup
        .status()
        .partitions
        .iter()
        .map(|p| p.topic.clone())
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

#[test]
fn routes_are_added_and_removed_without_a_restart_and_a_bad_edit_changes_nothing() {
    let setup = Setup::new(BASE, &["uppercase", "counter"]);
    let mut host = setup.start();
    host.wait_ready();
    let pid = host.pid();
    let mut words = Vec::new();
    let mut round = 0;
    let mut feed = |setup: &Setup| {
        let lines: Vec<String> = (0..20).map(|i| format!("w{round}-{i}")).collect();
        round += 1;
        produce(setup, "words", &lines);
        words.extend(lines);
    };
    feed(&setup);

    // Added: the new route starts while `words` keeps flowing.
    write_config(&setup, &format!("{BASE}{COUNTING}"));
    wait_until(Duration::from_secs(30), "the added route to run", || {
        feed(&setup);
        routed(&setup) == ["clicks", "words"]
            && setup
                .status()
                .partitions
                .iter()
                .filter(|p| p.topic == "clicks")
                .all(|p| p.state.is_some())
    });
    produce(
        &setup,
        "clicks",
        &["a:1".into(), "a:2".into(), "b:1".into()],
    );
    wait_until(Duration::from_secs(30), "the counts", || {
        tail_values(&setup, "counts").len() == 3
    });

    // A bad edit is rejected: everything runs on as it was.
    write_config(
        &setup,
        &format!("{BASE}{COUNTING}[[route]]\ntopic = \"words\""),
    );
    wait_until(Duration::from_secs(30), "the rejection in the log", || {
        setup
            .host_log()
            .contains("config reload (file changed) rejected")
    });
    // (The CLI reads the same broken file, so ask the host directly.)
    let status: linecook::status::StatusReport =
        serde_json::from_str(&setup.admin_get("/status")).unwrap();
    let mut topics: Vec<&str> = status.partitions.iter().map(|p| p.topic.as_str()).collect();
    topics.dedup();
    assert_eq!(topics, ["words", "clicks"]);
    assert!(status.partitions.iter().all(|p| p.state.is_some()));

    // Removed: `clicks` drains and stops; `words` goes on.
    write_config(&setup, BASE);
    wait_until(Duration::from_secs(30), "the removed route to stop", || {
        feed(&setup);
        routed(&setup) == ["words"]
    });
    produce(&setup, "clicks", &["c:1".into()]);
    feed(&setup);
    wait_until(Duration::from_secs(60), "`words` to drain", || {
        setup.status().partitions.iter().all(|p| p.lag == 0)
            && tail_values(&setup, "shouted").len() >= words.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tail_values(&setup, "counts").len(),
        3,
        "a stopped route handles nothing"
    );
    let mut shouted = tail_values(&setup, "shouted");
    shouted.sort();
    let mut expected: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    expected.sort();
    assert_eq!(
        shouted, expected,
        "nothing lost or repeated on the route that stayed"
    );
    assert_eq!(host.pid(), pid);
    host.stop();
}

#[test]
fn sighup_reloads_a_config_the_watch_cannot_see() {
    // The config is a symlink to a file in another directory: editing that
    // file makes no event where the host watches, so only SIGHUP reloads.
    let setup = Setup::new("", &["uppercase", "counter"]);
    let real_dir = setup.dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("linecook.toml");
    // Paths resolve against the directory of the path given (the link's).
    let body = |routes: &str| format!("group = \"test\"\nadmin = \"127.0.0.1:0\"\n{routes}");
    std::fs::write(&real, body(BASE)).unwrap();
    std::fs::remove_file(&setup.config).unwrap();
    std::os::unix::fs::symlink(&real, &setup.config).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    assert_eq!(routed(&setup), ["words"]);
    std::fs::write(&real, body(&format!("{BASE}{COUNTING}"))).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(routed(&setup), ["words"], "no reload without the signal");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(Duration::from_secs(30), "the reload on SIGHUP", || {
        routed(&setup) == ["clicks", "words"]
    });
    assert!(setup.host_log().contains("config reloaded"));
    host.stop();
}

//! The live status page at `GET /`, read by a real browser: Debian's
//! Chromium, headless, installed by `scripts/toolchains.sh chromium`.

mod support;

use std::path::Path;
use std::time::Duration;

use linecook::plugins::digest;
use support::browser::{attribute, browse, chromium, row_text};
use support::{Setup, wait_drained, wait_until};

const CONFIG: &str = r#"
max_batch = 5
[[topic]]
name = "words"
partitions = 2
[[topic]]
name = "shouted"
partitions = 2
[[topic]]
name = "stuck"
partitions = 1
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "shouted" }
[[route]]
topic = "stuck"
plugin = "fatal"
errors = { on_error = "pause" }
"#;

fn deploy(setup: &Setup, name: &str, bytes: &[u8]) {
    let tmp = setup
        .dir
        .path()
        .join(format!("plugins/{name}.wasm.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join(format!("plugins/{name}.wasm"))).unwrap();
}

fn produce(setup: &Setup, topic: &str, lines: &str) {
    let out = setup.cli_with_stdin(&["produce", "--topic", topic], lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_status_page_shows_live_values_in_a_browser() {
    let chromium = chromium();
    let setup = Setup::new(CONFIG, &["uppercase", "fatal"]);
    let mut host = setup.start();
    host.wait_ready();
    let addr = std::fs::read_to_string(setup.data_dir().join("admin.addr")).unwrap();
    let url = format!("http://{}/", addr.trim());

    // Traffic, and a hot swap of `uppercase` to a rebuild (another digest)
    // so the page has a swap to show.
    let lines = |n: usize, from: usize| -> String {
        (from..from + n).map(|i| format!("word {i}\n")).collect()
    };
    produce(&setup, "words", &lines(20, 0));
    wait_drained(&setup, "shouted", 20);
    let old = digest(&std::fs::read(support::plugins().join("uppercase.wasm")).unwrap());
    let rebuilt = support::with_custom_section(
        &std::fs::read(support::plugins().join("uppercase.wasm")).unwrap(),
        1,
    );
    let new = digest(&rebuilt);
    deploy(&setup, "uppercase", &rebuilt);
    wait_until(Duration::from_secs(60), "the rebuild to serve", || {
        setup
            .status()
            .partitions
            .iter()
            .filter(|p| p.topic == "words")
            .all(|p| p.version.as_deref() == Some(new.as_str()))
    });
    produce(&setup, "words", &lines(20, 20));
    wait_drained(&setup, "shouted", 40);
    wait_until(Duration::from_secs(30), "a swap's pause", || {
        !setup.status().recent_swaps.is_empty()
    });

    // `fatal` refuses every batch: its partition pauses, and its lag is
    // exactly what was produced to it.
    produce(&setup, "stuck", &lines(3, 0));
    wait_until(Duration::from_secs(30), "stuck/0 to pause", || {
        setup.status().partitions.iter().any(|p| {
            p.topic == "stuck" && p.state == Some(linecook::status::PartitionState::Paused)
        })
    });

    let dom = browse(&chromium, &url, 3000, &["--dump-dom".to_owned()]);
    assert!(
        attribute(&dom, "<body", "data-loaded")
            .parse::<u32>()
            .unwrap()
            >= 1,
        "the page loaded /status"
    );
    let stuck = "data-partition=\"stuck/0\"";
    assert_eq!(attribute(&dom, stuck, "data-lag"), "3");
    assert_eq!(attribute(&dom, stuck, "data-state"), "paused");
    assert!(
        row_text(&dom, stuck).contains("fatal refuses every batch"),
        "the pause's reason is shown: {}",
        row_text(&dom, stuck)
    );
    let records: u64 = ["words/0", "words/1"]
        .iter()
        .map(|p| {
            let marker = format!("data-partition=\"{p}\"");
            assert_eq!(attribute(&dom, &marker, "data-lag"), "0");
            assert_eq!(attribute(&dom, &marker, "data-state"), "running");
            assert_eq!(attribute(&dom, &marker, "data-version"), new);
            attribute(&dom, &marker, "data-records")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(records, 40, "records handled, as the page shows them");
    assert_eq!(
        attribute(&dom, &format!("data-digest=\"{new}\""), "data-stage"),
        "active"
    );
    assert_eq!(
        attribute(&dom, &format!("data-digest=\"{old}\""), "data-stage"),
        "retired"
    );
    let swap = row_text(&dom, "data-swap=\"words/");
    assert!(
        swap.contains(&format!("{} → {}", &old[..12], &new[..12])) && swap.contains(" ms"),
        "the swap and its pause: {swap}"
    );

    // The page follows the host: more records to the paused partition, and
    // the next load shows the larger lag.
    produce(&setup, "stuck", &lines(4, 3));
    wait_until(Duration::from_secs(30), "the status to show lag 7", || {
        setup
            .status()
            .partitions
            .iter()
            .any(|p| p.topic == "stuck" && p.lag == 7)
    });
    let dom = browse(&chromium, &url, 3000, &["--dump-dom".to_owned()]);
    assert_eq!(attribute(&dom, stuck, "data-lag"), "7");

    // A screenshot taken the same way; `docs/status-page.png` is one, made
    // with LINECOOK_STATUS_SCREENSHOT=docs/status-page.png.
    let target = std::env::var("LINECOOK_STATUS_SCREENSHOT")
        .map(|p| support::workspace_root().join(p))
        .unwrap_or_else(|_| setup.dir.path().join("status-page.png"));
    browse(
        &chromium,
        &url,
        3000,
        &[
            format!("--screenshot={}", target.display()),
            "--window-size=1280,1000".to_owned(),
            "--hide-scrollbars".to_owned(),
        ],
    );
    let png = std::fs::read(&target).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    assert!(Path::new(&target).exists());
    host.stop();
}

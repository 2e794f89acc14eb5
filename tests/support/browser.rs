//! A real browser for the status page: Debian's Chromium, headless,
//! installed by `scripts/toolchains.sh chromium`, and a few readers of the
//! DOM it dumps.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The path of Chromium, installed if needed.
pub fn chromium() -> String {
    let out = Command::new("bash")
        .arg(super::workspace_root().join("scripts/toolchains.sh"))
        .arg("chromium")
        .output()
        .expect("running scripts/toolchains.sh chromium");
    assert!(
        out.status.success(),
        "installing chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`,
/// `--screenshot=…`), letting the page's scripts run for `budget_ms` of
/// virtual time (its fetches complete within it), and returns stdout.
pub fn browse(chromium: &str, url: &str, budget_ms: u32, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // This machine's network is closed: without these Chromium keeps
            // trying to reach its update and sync services.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The attributes of the first tag in `dom` whose opening contains `marker`
/// (e.g. `data-partition="stuck/0"`), as `(name, value)` pairs.
pub fn tag_attributes(dom: &str, marker: &str) -> Vec<(String, String)> {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("the page shows no element with {marker}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    let mut attrs = Vec::new();
    let mut rest = &dom[start..end];
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(' ').next().unwrap().to_owned();
        let value_end = rest[eq + 2..].find('"').unwrap();
        attrs.push((name, rest[eq + 2..eq + 2 + value_end].to_owned()));
        rest = &rest[eq + 2 + value_end + 1..];
    }
    attrs
}

pub fn attribute(dom: &str, marker: &str, name: &str) -> String {
    tag_attributes(dom, marker)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{marker} has no {name}"))
        .1
}

/// The text of the element (and its children) that starts at the first tag
/// containing `marker`, up to its closing `</tr>`.
pub fn row_text(dom: &str, marker: &str) -> String {
    let at = dom.find(marker).unwrap();
    let end = at + dom[at..].find("</tr>").unwrap();
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom[at..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

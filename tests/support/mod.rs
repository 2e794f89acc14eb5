//! Shared pieces of the end-to-end tests: real plugins built from `plugins/`,
//! a real `linecook` binary in a child process, real redb files in temp dirs.

#![allow(dead_code)]

pub mod browser;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use linecook::log::TopicInfo;
use linecook::record::{LogRecord, NewRecord};
use linecook::status::StatusReport;
use linecook::store::Store;

pub const BIN: &str = env!("CARGO_BIN_EXE_linecook");

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// Builds `plugins/` once per test binary and returns the directory holding
/// `<name>.wasm` for every example plugin.
pub fn plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_plugins(None))
}

/// Builds the example plugins with `LINECOOK_TAG=tag` into a target dir of
/// their own, and returns the directory of the `.wasm` files.
pub fn build_plugins(tag: Option<&str>) -> PathBuf {
    let root = workspace_root();
    let target = match tag {
        None => root.join("plugins/target"),
        Some(tag) => root.join(format!("plugins/target/tag-{tag}")),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(&target)
    .current_dir(root.join("plugins"))
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("LINECOOK_TAG");
    if let Some(tag) = tag {
        cmd.env("LINECOOK_TAG", tag);
    }
    let status = cmd.status().expect("running cargo to build plugins/");
    assert!(status.success(), "building plugins/ failed");
    target.join("wasm32-wasip2/release")
}

/// A data directory, a plugins directory and a config file in a temp dir.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Writes `linecook.toml` with `body` after the common header, and copies
    /// `plugins` into the plugins directory.
    pub fn new(body: &str, plugins: &[&str]) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        for name in plugins {
            std::fs::copy(
                self::plugins().join(format!("{name}.wasm")),
                dir.path().join(format!("plugins/{name}.wasm")),
            )
            .unwrap_or_else(|e| panic!("copying plugin {name}: {e}"));
        }
        let config = dir.path().join("linecook.toml");
        std::fs::write(
            &config,
            format!("group = \"test\"\nadmin = \"127.0.0.1:0\"\n{body}"),
        )
        .unwrap();
        Setup { dir, config }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a CLI command against this setup's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, "")
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning linecook");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `linecook run` in a child process.
    pub fn start(&self) -> Host {
        // Readiness is the host writing this file; a killed host's stale one
        // must not count.
        let _ = std::fs::remove_file(self.data_dir().join("admin.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("host.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("LINECOOK_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning linecook run");
        Host {
            child,
            data_dir: self.data_dir(),
            log: self.dir.path().join("host.log"),
        }
    }

    /// Opens the store directly (the host must not be running).
    pub fn store(&self) -> Store {
        Store::open(&self.data_dir()).expect("opening the store")
    }

    /// Creates topics and appends records while no host runs.
    pub fn produce(&self, topic: &str, records: &[(Option<&str>, &str)]) {
        let store = self.store();
        let records: Vec<NewRecord> = records
            .iter()
            .map(|(k, v)| NewRecord {
                timestamp_ms: None,
                key: k.map(|k| k.as_bytes().to_vec()),
                value: v.as_bytes().to_vec(),
                headers: vec![],
                partition: None,
            })
            .collect();
        store.produce(topic, &records).unwrap();
    }

    /// Status through the CLI (direct or via the running host).
    pub fn status(&self) -> StatusReport {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// GET `path` from the running host's admin API, as text.
    pub fn admin_get(&self, path: &str) -> String {
        let addr = std::fs::read_to_string(self.data_dir().join("admin.addr")).unwrap();
        ureq::get(format!("http://{}{path}", addr.trim()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    pub fn host_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }
}

/// A running `linecook run`.
pub struct Host {
    child: Child,
    data_dir: PathBuf,
    pub log: PathBuf,
}

impl Host {
    /// Waits until the admin API is up (the host holds the store and has
    /// loaded its plugins).
    pub fn wait_ready(&mut self) {
        let addr_file = self.data_dir.join("admin.addr");
        // A start compiles the plugins first: an 18 MB Python component takes
        // ~15 s alone, and several times that while other test binaries run.
        wait_until(Duration::from_secs(180), "host to start", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "linecook run exited early with {status}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            addr_file.exists()
        });
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        signal(&self.child, "TERM");
        let status = self.wait_exit(Duration::from_secs(60));
        assert!(
            status.success(),
            "linecook run exited with {status} after SIGTERM:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process freezes with everything it holds, as a host
    /// stuck in a long GC-like pause or a frozen VM would.
    pub fn freeze(&self) {
        signal(&self.child, "STOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        signal(&self.child, "CONT");
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("linecook run did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // A failure that shows once in many runs needs its whole directory
        // (host logs, redb files) to be diagnosed afterwards.
        if std::thread::panicking()
            && let Some(to) = std::env::var_os("LINECOOK_KEEP_FAILED")
        {
            let to = PathBuf::from(to).join(format!(
                "{}-{}",
                std::process::id(),
                self.dir.path().file_name().unwrap().to_string_lossy()
            ));
            let status = Command::new("cp")
                .arg("-r")
                .arg(self.dir.path())
                .arg(&to)
                .status();
            eprintln!(
                "kept the failed test's directory in {} ({status:?})",
                to.display()
            );
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the host log ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Produces keyed records ("k<i % 16>", "<prefix><i>") through the running
/// host's admin API until stopped; returns every `i` it produced.
pub struct Producer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Producer {
    pub fn start(setup: &Setup, prefix: &str) -> Producer {
        use std::sync::atomic::Ordering;
        let config = linecook::config::Config::load(&setup.config).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let prefix = prefix.to_owned();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let access = linecook::client::Access::connect(&config).unwrap();
                let mut next = 0u64;
                let mut produced = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let records: Vec<NewRecord> = (next..next + 16)
                        .map(|i| NewRecord {
                            timestamp_ms: None,
                            key: Some(format!("k{}", i % 16).into_bytes()),
                            value: format!("{prefix}{i}").into_bytes(),
                            headers: vec![],
                            partition: None,
                        })
                        .collect();
                    access.produce("in", records).unwrap();
                    produced.extend(next..next + 16);
                    next += 16;
                    std::thread::sleep(Duration::from_millis(10));
                }
                produced
            }
        });
        Producer { stop, thread }
    }

    pub fn finish(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Builds `plugins/python/uppercase` with componentize-py (installed by its
/// build script if missing) once per test binary; returns the `.wasm` path.
pub fn python_uppercase() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_python("uppercase"))
}

/// Builds `plugins/python/counter`, like `python_uppercase`.
pub fn python_counter() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_python("counter"))
}

/// Builds `plugins/python/window-count` (contract 0.2.0), like
/// `python_uppercase`.
pub fn python_window_count() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_python("window-count"))
}

/// Builds `plugins/python/enrich` (contract 0.2.0 with wasi:http), like
/// `python_uppercase`.
pub fn python_enrich() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_python("enrich"))
}

/// Builds `plugins/python/session` (contract 0.2.0), like
/// `python_uppercase`.
pub fn python_session() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_python("session"))
}

/// Builds `plugins/c` (installing its toolchain if missing) once per test
/// binary; returns the directory holding `uppercase.wasm` and `counter.wasm`.
pub fn c_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_language("c"))
}

/// Builds `plugins/zig`, like `c_plugins`.
pub fn zig_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_language("zig"))
}

/// Builds `plugins/go`, like `c_plugins`.
pub fn go_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_language("go"))
}

/// Builds `plugins/assemblyscript`, like `c_plugins`.
pub fn assemblyscript_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_language("assemblyscript"))
}

/// Runs `plugins/<lang>/build.sh` (which installs its toolchain if missing)
/// with this build's binary for its `linecook sdk` steps.
fn build_language(lang: &str) -> PathBuf {
    let dir = workspace_root().join("plugins").join(lang);
    let _turn = build_turn(lang);
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(dir.join("build.sh"))
        .env("LINECOOK", BIN)
        .status()
        .unwrap_or_else(|e| panic!("running plugins/{lang}/build.sh: {e}"));
    assert!(status.success(), "building the {lang} plugins failed");
    eprintln!(
        "built plugins/{lang} (toolchain included) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    snapshot(&dir, lang)
}

/// Holds the build of `what` against other test processes:
/// `scripts/test.sh` runs test binaries side by side, and two builds of one
/// directory would write the same files.
fn build_turn(what: &str) -> std::fs::File {
    let locks = std::env::temp_dir().join("linecook-test-builds");
    std::fs::create_dir_all(&locks).unwrap();
    let lock =
        std::fs::File::create(locks.join(format!("{}.lock", what.replace('/', "-")))).unwrap();
    lock.lock().unwrap();
    lock
}

/// Copies the `.wasm` files of `dir` into a directory of this process and
/// returns it: another test process may build `dir` again while this one
/// still reads them.
fn snapshot(dir: &Path, what: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    // Copies of test processes that have ended are not needed by anyone.
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("linecook-test-plugins-"));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let copy = tmp
        .join(format!("linecook-test-plugins-{}", std::process::id()))
        .join(what.replace('/', "-"));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    copy
}

/// Builds `plugins/js` (npm-installing componentize-js if missing), like
/// `c_plugins`.
pub fn js_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_language("js"))
}

fn build_python(name: &str) -> PathBuf {
    let dir = workspace_root().join("plugins/python").join(name);
    let _turn = build_turn(&format!("python/{name}"));
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(dir.join("build.sh"))
        .status()
        .unwrap_or_else(|e| panic!("running plugins/python/{name}/build.sh: {e}"));
    assert!(status.success(), "building the Python {name} plugin failed");
    eprintln!(
        "built plugins/python/{name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    snapshot(&dir, &format!("python/{name}")).join(format!("{name}.wasm"))
}

/// `component` with a custom section appended: the same code under a new
/// digest, i.e. a new version that behaves exactly like the old one.
pub fn with_custom_section(component: &[u8], n: u32) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"linecook-test";
    let data = n.to_le_bytes();
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(&data);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Polls `cond` every 50 ms until it holds, or panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every routed partition has lag 0 and `topic` holds at least
/// `count` records. More than `count` is left for the caller's assertions to
/// report as duplicates.
pub fn wait_drained(setup: &Setup, topic: &str, count: u64) {
    wait_until(Duration::from_secs(120), "the pipeline to drain", || {
        let status = setup.status();
        let produced: u64 = topic_total(setup, topic);
        produced >= count && status.partitions.iter().all(|p| p.lag == 0)
    });
}

fn topic_total(setup: &Setup, topic: &str) -> u64 {
    let out = setup.cli(&["topics", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // The last column: every record ever appended.
            (cols.first() == Some(&topic)).then(|| cols.last().unwrap().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Every record of `topic`, by partition then offset.
pub fn read_all(store: &Store, topic: &str) -> Vec<LogRecord> {
    let info: TopicInfo = store.topic(topic).unwrap();
    let mut out = Vec::new();
    for p in 0..info.partitions {
        out.extend(store.read(&info, p, 0, usize::MAX).unwrap());
    }
    out
}

/// Values of `records` grouped by key, each group in log order.
pub fn values_by_key(records: &[LogRecord]) -> BTreeMap<Option<String>, Vec<String>> {
    let mut map: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for r in records {
        map.entry(
            r.key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        )
        .or_default()
        .push(String::from_utf8_lossy(&r.value).into_owned());
    }
    map
}

/// The values of `topic`, read through the CLI while a host holds the
/// store.
pub fn tail_values(setup: &Setup, topic: &str) -> Vec<String> {
    let out = setup.cli(&["tail", "--topic", topic, "--from-beginning"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

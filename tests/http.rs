//! Outbound HTTP from handlers, against real HTTP servers on loopback: the
//! `enrich` example's exact outputs, calls repeated only for uncommitted
//! batches after a SIGKILL, each kind of refusal failing inside the guest
//! with no request reaching anything, and credentials the guest never sees.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linecook::record::dead_letter_headers;
use support::{Setup, read_all, wait_drained, wait_until};

/// What the test server does for a path.
enum Answer {
    /// 200 with this body, after a pause.
    Ok(String, Duration),
    /// 302 to this URL.
    Redirect(String),
    /// 200 with a body of this many bytes.
    Big(usize),
    /// Reads the request and never answers.
    Hang,
}

/// A request the server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 server on a loopback port, a thread per connection, that
/// remembers every request.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Server {
        Server::serving(None, answer)
    }

    /// The same over TLS with `identity` (certificate PEM, key PEM).
    fn start_tls(
        identity: (&str, &str),
        answer: impl Fn(&str) -> Answer + Send + Sync + 'static,
    ) -> Server {
        use rustls_pki_types::pem::PemObject as _;
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(identity.0.as_bytes()).unwrap()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Server::serving(Some(Arc::new(config)), answer)
    }

    fn serving(
        tls: Option<Arc<rustls::ServerConfig>>,
        answer: impl Fn(&str) -> Answer + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(answer);
        let (seen_, stop_) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (seen, answer, tls) = (seen_.clone(), answer.clone(), tls.clone());
                        std::thread::spawn(move || {
                            stream.set_nonblocking(false).unwrap();
                            match tls {
                                None => serve(stream, &seen, &*answer),
                                Some(config) => {
                                    let Ok(connection) = rustls::ServerConnection::new(config)
                                    else {
                                        return;
                                    };
                                    let tls = rustls::StreamOwned::new(connection, stream);
                                    serve(tls, &seen, &*answer)
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { addr, seen, stop }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: impl std::io::Read + Write,
    seen: &Mutex<Vec<Seen>>,
    answer: &dyn Fn(&str) -> Answer,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
    });
    let (status, extra, body) = match answer(&path) {
        Answer::Ok(body, pause) => {
            std::thread::sleep(pause);
            ("200 OK", String::new(), body.into_bytes())
        }
        Answer::Redirect(to) => ("302 Found", format!("Location: {to}\r\n"), Vec::new()),
        Answer::Big(n) => ("200 OK", String::new(), vec![b'x'; n]),
        Answer::Hang => {
            std::thread::sleep(Duration::from_secs(20));
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let stream = reader.get_mut();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

/// The key a request asked for: the last path segment.
fn key_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("k{i:03}")).collect()
}

fn produce_keyed(setup: &Setup, topic: &str, keys: &[String]) {
    let records: Vec<(Option<&str>, String)> = keys
        .iter()
        .map(|k| (Some(k.as_str()), format!("v-{k}")))
        .collect();
    let borrowed: Vec<(Option<&str>, &str)> =
        records.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The host creates the config's topics when it starts; these come first.
    let store = setup.store();
    if store.topic(topic).is_err() {
        store.create_topic(topic, 1).unwrap();
    }
    drop(store);
    setup.produce(topic, &borrowed);
}

fn values(setup: &Setup, topic: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in read_all(&setup.store(), topic) {
        out.entry(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .or_default()
            .push(String::from_utf8_lossy(&r.value).into_owned());
    }
    out
}

/// Which build of `enrich` a test runs.
#[derive(Clone, Copy)]
enum Lang {
    Rust,
    Python,
}

/// A setup whose plugins directory holds `enrich` built in `lang`.
fn enrich_setup(body: &str, lang: Lang) -> Setup {
    match lang {
        Lang::Rust => Setup::new(body, &["enrich"]),
        Lang::Python => {
            let setup = Setup::new(body, &[]);
            std::fs::copy(
                support::python_enrich(),
                setup.dir.path().join("plugins/enrich.wasm"),
            )
            .unwrap();
            setup
        }
    }
}

fn enrich_config(port: u16, max_batch: u32) -> String {
    format!(
        r#"
max_batch = {max_batch}
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "enrich"
config = {{ base_url = "http://127.0.0.1:{port}/prices", output = "out" }}
http = {{ allow = ["127.0.0.1:{port}"] }}
"#
    )
}

#[test]
fn enrich_asks_once_per_key_and_emits_exactly_the_answers() {
    enrich_asks_once_per_key(Lang::Rust);
}

#[test]
fn enrich_in_python_asks_once_per_key_and_emits_exactly_the_answers() {
    enrich_asks_once_per_key(Lang::Python);
}

fn enrich_asks_once_per_key(lang: Lang) {
    let server = Server::start(|path| Answer::Ok(format!("p-{}", key_of(path)), Duration::ZERO));
    let setup = enrich_setup(&enrich_config(server.port(), 7), lang);
    let mut input = keys(40);
    // Every key twice: the second time the answer comes from state.
    input.extend(keys(40));
    produce_keyed(&setup, "in", &input);
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 80);
    let metrics = setup.admin_get("/metrics");
    host.stop();

    let out = values(&setup, "out");
    assert_eq!(out.len(), 40);
    for k in keys(40) {
        assert_eq!(
            out[&k],
            vec![format!("v-{k}|p-{k}"), format!("v-{k}|p-{k}")],
            "outputs of {k}"
        );
    }
    let mut asked: BTreeMap<String, usize> = BTreeMap::new();
    for s in server.seen() {
        assert!(s.path.starts_with("/prices/"), "{s:?}");
        *asked.entry(key_of(&s.path)).or_default() += 1;
    }
    assert_eq!(asked.len(), 40);
    assert!(
        asked.values().all(|n| *n == 1),
        "each key asked once: {asked:?}"
    );
    let requests = format!(
        "linecook_http_requests_total{{route=\"in\",host=\"127.0.0.1:{}\",status=\"2xx\"}} 40",
        server.port()
    );
    assert!(metrics.contains(&requests), "{requests} in:\n{metrics}");
    // The series exist at zero from the start: the count must be the 40.
    let timed = format!(
        "linecook_http_request_duration_seconds_count{{route=\"in\",host=\"127.0.0.1:{}\"}} 40",
        server.port()
    );
    assert!(metrics.contains(&timed), "{timed} in:\n{metrics}");
}

#[test]
fn a_killed_host_repeats_calls_only_for_the_batch_it_had_not_committed() {
    repeats_only_uncommitted_calls(Lang::Rust);
}

#[test]
fn a_killed_host_running_python_enrich_repeats_only_uncommitted_calls() {
    repeats_only_uncommitted_calls(Lang::Python);
}

fn repeats_only_uncommitted_calls(lang: Lang) {
    const MAX_BATCH: u32 = 10;
    let server =
        Server::start(|path| Answer::Ok(format!("p-{}", key_of(path)), Duration::from_millis(4)));
    let setup = enrich_setup(&enrich_config(server.port(), MAX_BATCH), lang);
    let input = keys(300);
    produce_keyed(&setup, "in", &input);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "100 requests", || {
        server.seen().len() >= 100
    });
    host.kill();
    let before = server.seen().len();
    let store = setup.store();
    let topic = store.topic("in").unwrap();
    let committed = store
        .checkpoint(&topic, 0)
        .unwrap()
        .map_or(0, |c| c.next_offset);
    drop(store);
    assert!(committed > 0 && committed < 300, "committed {committed}");

    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 300);
    host.stop();

    let out = values(&setup, "out");
    for k in &input {
        assert_eq!(out[k], vec![format!("v-{k}|p-{k}")], "outputs of {k}");
    }
    let mut asked: BTreeMap<String, usize> = BTreeMap::new();
    for s in server.seen() {
        *asked.entry(key_of(&s.path)).or_default() += 1;
    }
    // Offsets are the keys' positions: k000 is offset 0.
    for (i, k) in input.iter().enumerate() {
        let n = asked.get(k).copied().unwrap_or(0);
        let uncommitted = (committed..committed + u64::from(MAX_BATCH)).contains(&(i as u64));
        if uncommitted {
            assert!((1..=2).contains(&n), "{k} (offset {i}) asked {n} times");
        } else {
            assert_eq!(
                n, 1,
                "{k} (offset {i}, committed up to {committed}) asked {n} times"
            );
        }
    }
    let repeated = asked.values().filter(|n| **n == 2).count();
    assert!(
        repeated > 0 || before == committed as usize,
        "the kill fell between batches, so nothing was asked twice"
    );
}

#[test]
fn refused_requests_fail_inside_the_guest_and_reach_nothing() {
    refusals(Lang::Rust);
}

#[test]
fn refused_requests_fail_inside_python_enrich_and_reach_nothing() {
    refusals(Lang::Python);
}

fn refusals(lang: Lang) {
    let outsider = Server::start(|_| Answer::Ok("outsider".into(), Duration::ZERO));
    let o = outsider.port();
    let server = Server::start(move |path| match path.split('/').nth(1) {
        Some("redirect") => Answer::Redirect(format!("http://127.0.0.1:{o}/x/{}", key_of(path))),
        Some("big") => Answer::Big(5000),
        Some("hang") => Answer::Hang,
        Some("slow") => Answer::Ok("late".into(), Duration::from_millis(400)),
        _ => Answer::Ok("fine".into(), Duration::ZERO),
    });
    let p = server.port();
    let route = |topic: &str, base: &str, http: &str| {
        format!(
            r#"
[[topic]]
name = "{topic}"
partitions = 1
[[route]]
topic = "{topic}"
plugin = "enrich"
config = {{ base_url = "{base}", output = "out" }}
http = {http}
errors = {{ retries = 1, backoff_base_ms = 10, backoff_max_ms = 10 }}
"#
        )
    };
    let allow = format!(r#"{{ allow = ["127.0.0.1:{p}"] }}"#);
    let body = [
        "[[topic]]\nname = \"out\"\npartitions = 1\n".to_owned(),
        route("unlisted", &format!("http://127.0.0.1:{o}/x"), &allow),
        route(
            "by-name",
            &format!("http://localhost:{p}/fine"),
            &format!(r#"{{ allow = ["localhost:{p}"] }}"#),
        ),
        route(
            "redirect",
            &format!("http://127.0.0.1:{p}/redirect"),
            &allow,
        ),
        route(
            "big",
            &format!("http://127.0.0.1:{p}/big"),
            &format!(r#"{{ allow = ["127.0.0.1:{p}"], max_response_bytes = 1000 }}"#),
        ),
        route(
            "hang",
            &format!("http://127.0.0.1:{p}/hang"),
            &format!(r#"{{ allow = ["127.0.0.1:{p}"], timeout_ms = 300 }}"#),
        ),
        route(
            "over-budget",
            &format!("http://127.0.0.1:{p}/slow"),
            &format!(r#"{{ allow = ["127.0.0.1:{p}"], call_budget_ms = 100 }}"#),
        ),
    ]
    .concat();
    let setup = enrich_setup(&body, lang);
    let cases = [
        "unlisted",
        "by-name",
        "redirect",
        "big",
        "hang",
        "over-budget",
    ];
    for topic in cases {
        produce_keyed(&setup, topic, &keys(2));
    }
    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "every record dead-lettered",
        || {
            cases.iter().all(|t| {
                setup
                    .status()
                    .partitions
                    .iter()
                    .any(|s| s.topic == *t && s.lag == 0)
            })
        },
    );
    let metrics = setup.admin_get("/metrics");
    host.stop();

    let expected = [
        ("unlisted", "refused by the host (its log says why"),
        (
            "by-name",
            "resolves to a loopback, private or link-local address",
        ),
        ("redirect", "refused by the host (its log says why"),
        ("big", "larger than the route's http.max_response_bytes"),
        ("hang", "timed out"),
        ("over-budget", "timed out"),
    ];
    let store = setup.store();
    for (topic, message) in expected {
        let letters = read_all(&store, &format!("{topic}.dlq"));
        assert_eq!(letters.len(), 2, "{topic}: both records dead-lettered");
        for letter in letters {
            let why = reason(&letter);
            assert!(why.contains(message), "{topic}: {why:?} names {message:?}");
        }
    }
    assert!(
        read_all(&store, "out").is_empty(),
        "a refused request emits nothing"
    );
    assert!(outsider.seen().is_empty(), "{:?}", outsider.seen());
    let reached: Vec<String> = server.seen().iter().map(|s| s.path.clone()).collect();
    assert!(
        reached.iter().all(|p| !p.starts_with("/fine")),
        "a name resolving to loopback reached the server: {reached:?}"
    );
    for (reason, topic) in [
        ("not_allowed", "unlisted"),
        ("address", "by-name"),
        ("not_allowed", "redirect"),
        ("too_large", "big"),
    ] {
        let series =
            format!("linecook_http_denied_total{{route=\"{topic}\",reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(count >= 2, "{series}{count}: both records were refused");
    }
}

#[test]
fn the_guest_never_sees_the_credentials_the_host_adds() {
    let server = Server::start(|_| Answer::Ok("answered".into(), Duration::ZERO));
    let p = server.port();
    let setup = Setup::new(
        &format!(
            r#"
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "snoop"
config = {{ base_url = "http://127.0.0.1:{p}/q", output = "out" }}
[route.http]
allow = ["127.0.0.1:{p}"]
headers."127.0.0.1:{p}" = {{ Authorization = {{ env = "LINECOOK_TEST_TOKEN" }}, X-Api-Key = {{ file = "key.txt" }} }}
"#
        ),
        &["snoop"],
    );
    std::fs::write(setup.dir.path().join("key.txt"), "key-from-file\n").unwrap();
    produce_keyed(&setup, "in", &keys(3));
    // SAFETY: set before any thread of this test reads the environment; the
    // host inherits it.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("LINECOOK_TEST_TOKEN", "Bearer s3cret");
    }
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 3);
    host.stop();

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("authorization"), vec!["Bearer s3cret"], "{s:?}");
        assert_eq!(s.header("x-api-key"), vec!["key-from-file"], "{s:?}");
    }
    for (k, outputs) in values(&setup, "out") {
        assert_eq!(outputs.len(), 1);
        let line = &outputs[0];
        assert!(
            line.starts_with("env=|"),
            "{k}: the guest's environment is empty: {line}"
        );
        assert!(line.ends_with("|status=200|body=answered"), "{line}");
        assert!(
            !line.contains("s3cret") && !line.contains("key-from-file"),
            "{line}"
        );
    }
}

#[test]
fn waiting_on_http_does_not_use_up_the_cpu_limit() {
    // Each answer takes 80 ms and a batch asks five times: 400 ms of
    // waiting per call, against a CPU limit of 100 ms.
    let server =
        Server::start(|path| Answer::Ok(format!("p-{}", key_of(path)), Duration::from_millis(80)));
    let p = server.port();
    let setup = Setup::new(
        &format!(
            r#"
max_batch = 5
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "enrich"
config = {{ base_url = "http://127.0.0.1:{p}/prices", output = "out" }}
http = {{ allow = ["127.0.0.1:{p}"] }}
limits = {{ cpu_ms = 100 }}
errors = {{ on_error = "pause" }}
"#
        ),
        &["enrich"],
    );
    produce_keyed(&setup, "in", &keys(10));
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 10);
    host.stop();
    let out = values(&setup, "out");
    for k in keys(10) {
        assert_eq!(out[&k], vec![format!("v-{k}|p-{k}")]);
    }
    assert!(
        !setup.host_log().contains("limit exceeded"),
        "{}",
        setup.host_log()
    );
}

#[test]
fn a_handler_that_spins_on_a_route_with_http_still_meets_its_cpu_limit() {
    let setup = Setup::new(
        r#"
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "hostile"
config = { output = "out" }
http = { allow = ["127.0.0.1:9"] }
limits = { cpu_ms = 200 }
errors = { retries = 0 }
"#,
        &["hostile"],
    );
    produce_values(&setup, &["one", "loop", "two"]);
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 2);
    host.stop();
    let store = setup.store();
    let out: Vec<String> = read_all(&store, "out")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(out, ["ok:one", "ok:two"]);
    let letters = read_all(&store, "in.dlq");
    assert_eq!(letters.len(), 1);
    let why = reason(&letters[0]);
    assert!(
        why.contains("CPU time limit exceeded") && why.contains("of CPU, over the limit of 200 ms"),
        "{why}"
    );
}

fn produce_values(setup: &Setup, values: &[&str]) {
    let store = setup.store();
    store.create_topic("in", 1).unwrap();
    drop(store);
    let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (Some("k"), *v)).collect();
    setup.produce("in", &records);
}

#[test]
fn https_trusts_the_routes_ca_file_and_refuses_an_unknown_certificate() {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key_pair.serialize_pem());
    let server = Server::start_tls((&cert_pem, &key_pem), |path| {
        Answer::Ok(format!("p-{}", key_of(path)), Duration::ZERO)
    });
    let p = server.port();
    let route = |topic: &str, ca: &str| {
        format!(
            r#"
[[topic]]
name = "{topic}"
partitions = 1
[[route]]
topic = "{topic}"
plugin = "enrich"
config = {{ base_url = "https://127.0.0.1:{p}/prices", output = "{topic}.out" }}
http = {{ allow = ["127.0.0.1:{p}"]{ca} }}
errors = {{ retries = 0 }}
"#
        )
    };
    let body = [
        "[[topic]]\nname = \"trusted.out\"\npartitions = 1\n".to_owned(),
        route("trusted", r#", ca_file = "ca.pem""#),
        route("untrusted", ""),
    ]
    .concat();
    let setup = Setup::new(&body, &["enrich"]);
    std::fs::write(setup.dir.path().join("ca.pem"), &cert_pem).unwrap();
    for topic in ["trusted", "untrusted"] {
        produce_keyed(&setup, topic, &keys(3));
    }
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "both routes to finish", || {
        setup.status().partitions.iter().all(|s| s.lag == 0)
    });
    host.stop();

    let out = values(&setup, "trusted.out");
    for k in keys(3) {
        assert_eq!(out[&k], vec![format!("v-{k}|p-{k}")]);
    }
    assert_eq!(
        server.seen().len(),
        3,
        "only the trusted route's requests got through"
    );
    let letters = read_all(&setup.store(), "untrusted.dlq");
    assert_eq!(letters.len(), 3);
    for letter in letters {
        let why = reason(&letter);
        assert!(why.contains("TLS certificate is not trusted"), "{why}");
    }
}

/// Why a dead letter failed: its `linecook.error.message` header.
fn reason(letter: &linecook::record::LogRecord) -> String {
    letter
        .headers
        .iter()
        .find(|(n, _)| n == dead_letter_headers::ERROR_MESSAGE)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Runs `enrich` over 48 keys in 4 partitions on 4 worker threads, each
/// answer taking 40 ms, with the route's `max_in_flight`; returns the most
/// requests the server had in progress at once.
fn most_in_flight(max_in_flight: u32) -> usize {
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let server = Server::start({
        let (active, most) = (active.clone(), most.clone());
        move |path| {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(40));
            active.fetch_sub(1, Ordering::SeqCst);
            Answer::Ok(format!("p-{}", key_of(path)), Duration::ZERO)
        }
    });
    let p = server.port();
    let setup = Setup::new(
        &format!(
            r#"
max_batch = 4
worker_threads = 4
[[topic]]
name = "in"
partitions = 4
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "enrich"
config = {{ base_url = "http://127.0.0.1:{p}/prices", output = "out" }}
http = {{ allow = ["127.0.0.1:{p}"], max_in_flight = {max_in_flight} }}
"#
        ),
        &["enrich"],
    );
    setup.store().create_topic("in", 4).unwrap();
    produce_keyed(&setup, "in", &keys(48));
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", 48);
    host.stop();
    let out = values(&setup, "out");
    for k in keys(48) {
        assert_eq!(out[&k], vec![format!("v-{k}|p-{k}")]);
    }
    most.load(Ordering::SeqCst)
}

#[test]
fn max_in_flight_bounds_a_routes_requests_across_its_partitions() {
    // Four partitions on four threads do ask at once when allowed to...
    let free = most_in_flight(8);
    assert!(free >= 2, "with max_in_flight = 8, at most {free} at once");
    // ...and one at a time when the route says so.
    assert_eq!(most_in_flight(1), 1);
}

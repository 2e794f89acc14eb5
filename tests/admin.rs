//! The admin API lets no one in: off loopback it needs a token, with a
//! token every write and read of data needs it (401 and nothing changed
//! otherwise), the CLI sends it, and `/metrics` can be served alone on
//! another listener.

mod support;

use std::time::Duration;

use support::{Setup, wait_until};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_admin_api_off_loopback_without_a_token_refuses_to_start() {
    let setup = Setup::new("", &[]);
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("admin = \"127.0.0.1:0\"", "admin = \"0.0.0.0:0\"");
    std::fs::write(&setup.config, config).unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`admin_token_file` is not set"), "{stderr}");
    assert!(!setup.data_dir().exists(), "nothing was created");
}

#[test]
fn without_the_token_nothing_is_written_and_the_cli_sends_it() {
    let metrics_port = free_port();
    let setup = Setup::new(
        &format!(
            "admin_token_file = \"admin.token\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n[[topic]]\nname = \"in\"\npartitions = 1\n"
        ),
        &[],
    );
    std::fs::write(setup.dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    let admin = std::fs::read_to_string(setup.data_dir().join("admin.addr")).unwrap();
    let agent = agent();
    let body = serde_json::json!({ "records": [{ "key": null, "value": "eA==" }] });
    let produce = format!("http://{admin}/topics/in/records");
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong!"),
        Some(TOKEN),
    ] {
        let mut request = agent.post(&produce);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send_json(&body).unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
    }
    let response = agent
        .post(format!("http://{admin}/topics"))
        .send_json(serde_json::json!({ "name": "sneaky", "partitions": 1 }))
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = agent
        .get(format!(
            "http://{admin}/topics/in/partitions/0/records?from=0&max=10"
        ))
        .call()
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "reading records needs the token too"
    );
    // The status page, health, status and metrics stay open, on both
    // listeners.
    for base in [admin.clone(), format!("127.0.0.1:{metrics_port}")] {
        for path in ["/", "/healthz", "/status", "/metrics"] {
            let response = agent.get(format!("http://{base}{path}")).call().unwrap();
            assert_eq!(response.status(), 200, "{base}{path}");
        }
    }
    // The metrics listener serves nothing else.
    let response = agent
        .post(format!("http://127.0.0.1:{metrics_port}/topics/in/records"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_json(&body)
        .unwrap();
    assert_eq!(response.status(), 404);

    // Nothing of the above was written; the CLI, which sends the token, is
    // let in.
    let topics = setup.cli(&["topics", "list"]);
    let listed = String::from_utf8_lossy(&topics.stdout);
    assert!(
        topics.status.success(),
        "{}",
        String::from_utf8_lossy(&topics.stderr)
    );
    assert!(!listed.contains("sneaky"), "{listed}");
    let out = setup.cli_with_stdin(&["produce", "--topic", "in"], "hello\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "the one record", || {
        let out = setup.cli(&["tail", "--topic", "in", "--from-beginning"]);
        String::from_utf8_lossy(&out.stdout).lines().count() == 1
    });
    host.stop();
}

#[test]
fn with_admin_tls_the_api_speaks_only_https_and_the_cli_trusts_its_certificate() {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let setup = Setup::new(
        "admin_tls = { cert_file = \"admin.crt\", key_file = \"admin.key\" }\n[[topic]]\nname = \"in\"\npartitions = 1\n",
        &[],
    );
    std::fs::write(setup.dir.path().join("admin.crt"), cert.pem()).unwrap();
    std::fs::write(setup.dir.path().join("admin.key"), key_pair.serialize_pem()).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    let port = std::fs::read_to_string(setup.data_dir().join("admin.addr"))
        .unwrap()
        .trim()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();

    // The CLI goes through the host over TLS.
    let out = setup.cli_with_stdin(&["produce", "--topic", "in"], "hello\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = setup.cli(&["tail", "--topic", "in", "--from-beginning"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));

    // Plain HTTP gets no answer; HTTPS trusting the certificate does.
    let plain = agent()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .call();
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let response = trusting(&cert)
        .get(format!("https://localhost:{port}/healthz"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    host.stop();
}

/// An HTTPS client that trusts exactly `cert`.
fn trusting(cert: &rcgen::Certificate) -> ureq::Agent {
    let roots = vec![ureq::tls::Certificate::from_der(cert.der()).to_owned()];
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

#[test]
fn with_metrics_tls_the_metrics_listener_speaks_only_https() {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let port = free_port();
    let setup = Setup::new(
        &format!(
            "metrics = \"127.0.0.1:{port}\"\nmetrics_tls = {{ cert_file = \"metrics.crt\", key_file = \"metrics.key\" }}\n"
        ),
        &[],
    );
    std::fs::write(setup.dir.path().join("metrics.crt"), cert.pem()).unwrap();
    std::fs::write(
        setup.dir.path().join("metrics.key"),
        key_pair.serialize_pem(),
    )
    .unwrap();
    let mut host = setup.start();
    host.wait_ready();
    let plain = agent()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .call();
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let body = trusting(&cert)
        .get(format!("https://localhost:{port}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(body.contains("linecook_"), "{body}");
    // The admin API, without admin_tls, stays plain HTTP.
    assert!(setup.admin_get("/healthz").contains("ok"));
    host.stop();

    // Without a metrics listener there is nothing to serve it on.
    std::fs::write(
        &setup.config,
        "group = \"test\"\nadmin = \"127.0.0.1:0\"\nmetrics_tls = { cert_file = \"metrics.crt\", key_file = \"metrics.key\" }\n",
    )
    .unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`metrics` is not"), "{stderr}");
}

#[test]
fn a_bad_admin_certificate_refuses_to_start_and_says_which_file() {
    let setup = Setup::new(
        "admin_tls = { cert_file = \"admin.crt\", key_file = \"admin.key\" }\n",
        &[],
    );
    std::fs::write(setup.dir.path().join("admin.crt"), "not a certificate\n").unwrap();
    std::fs::write(setup.dir.path().join("admin.key"), "not a key\n").unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.crt"), "{stderr}");
    assert!(!setup.data_dir().join("admin.addr").exists());
}

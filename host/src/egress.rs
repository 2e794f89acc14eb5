//! Outbound HTTP for handlers (`wasi:http/outgoing-handler`): refused unless
//! the route's `http.allow` names the destination.
//!
//! The host, not the guest, makes every connection: it matches the request's
//! `host:port` against the allow list, resolves the name itself and connects
//! to an address it checked (so a name that resolves to loopback, or is
//! rebound to it later, reaches nothing an entry did not name), adds the
//! entry's credentials after the guest built its request (so the guest never
//! holds them), and caps the response's size and time. Redirects are never
//! followed here: a guest that follows one makes a new request, checked like
//! any other.
//!
//! Decisions (`parse_entry`, `matching`, `special`, `permitted`) are pure;
//! `Egress::send` does the I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::warn;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpHooks};

use crate::config::{HttpAccess, Secret};

/// Where an allow entry lets requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Any name ending in `.` + this (`*.internal.example`).
    Subdomains(String),
    /// Exactly this address: the only way to reach a special one.
    Ip(IpAddr),
}

/// One parsed `http.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// As written in the config: the metrics' `host` label.
    pub text: String,
    host: Host,
    port: u16,
}

/// Parses `name:port`, `*.suffix:port`, `1.2.3.4:port` or `[v6]:port`.
pub fn parse_entry(text: &str) -> Result<AllowEntry, String> {
    let bad = |why: &str| {
        format!(
            "allow entry `{text}` {why}: write host:port, e.g. \"api.example.com:443\", \"*.internal.example:8443\", \"127.0.0.1:8080\" or \"[::1]:8080\""
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("has no valid port"))?;
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Host::Ip(IpAddr::V6(
            v6.parse::<Ipv6Addr>()
                .map_err(|_| bad("has an invalid IPv6 address"))?,
        ))
    } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(v4))
    } else {
        let (wild, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(bad("has an invalid host name"));
        }
        if wild {
            Host::Subdomains(name)
        } else {
            Host::Name(name)
        }
    };
    Ok(AllowEntry {
        text: text.to_owned(),
        host,
        port,
    })
}

/// The first entry that lets a request to `host:port` through, by name:
/// `host` as a URI has it (an IPv6 address in brackets).
pub fn matching(entries: &[AllowEntry], host: &str, port: u16) -> Option<usize> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<IpAddr>().ok();
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    entries.iter().position(|e| {
        e.port == port
            && match (&e.host, ip) {
                (Host::Ip(allowed), Some(ip)) => *allowed == ip,
                (_, Some(_)) | (Host::Ip(_), None) => false,
                (Host::Name(n), None) => *n == name,
                (Host::Subdomains(s), None) => name
                    .strip_suffix(s.as_str())
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            }
    })
}

/// What kind of special address `ip` is, if it is one: anything but a
/// public unicast address.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64: the IPv4 address it embeds decides.
                let o = v6.octets();
                special_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                None
            }
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// Whether a request let through by `entry` may connect to `ip`: a special
/// address only when the entry is that address.
pub fn permitted(entry: &AllowEntry, ip: IpAddr) -> Result<(), String> {
    match special(ip) {
        Some(_) if entry.host == Host::Ip(ip) => Ok(()),
        Some(kind) => Err(format!(
            "{} resolves to {ip}, a {kind} address; only an allow entry naming that address reaches it",
            entry.text
        )),
        None => Ok(()),
    }
}

/// The status class a response is counted under.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Checks a route's `http` table, credentials included (an unset variable
/// or unreadable file is an error now, not at the first request).
pub fn validate(access: &HttpAccess) -> Result<(), String> {
    Egress::new("check", access, None).map(|_| ())
}

/// Labels of the requests counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RequestLabels {
    /// Source topic of the route.
    pub route: String,
    /// The allow entry the request matched, as written.
    pub host: String,
    /// `2xx` … `5xx`, or `error` (no response: timeout, refused, reset).
    pub status: String,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct HostLabels {
    /// Source topic of the route.
    pub route: String,
    /// The allow entry the request matched, as written.
    pub host: String,
}

/// Labels of the denials counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DenialLabels {
    /// Source topic of the route.
    pub route: String,
    /// `not_allowed`, `address`, `no_http`, `budget` or `too_large`.
    pub reason: String,
}

/// The metric families requests are counted in (shared with `Metrics`).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests answered or failed, by status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response's headers.
    pub seconds: Family<HostLabels, Histogram, fn() -> Histogram>,
    /// Requests refused by the host.
    pub denied: Family<DenialLabels, Counter>,
}

/// A canned answer for `linecook test`: no network is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canned {
    /// `GET`, `POST`, …
    pub method: String,
    /// The full URL requested.
    pub url: String,
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// One route's outbound HTTP policy, shared by all its instances.
#[derive(Debug)]
pub struct Egress {
    route: String,
    entries: Vec<AllowEntry>,
    headers: Vec<Vec<(HeaderName, HeaderValue)>>,
    timeout: Duration,
    max_response_bytes: u64,
    call_budget: Duration,
    slots: Arc<tokio::sync::Semaphore>,
    tls: Arc<rustls::ClientConfig>,
    metrics: Option<HttpMetrics>,
    canned: Option<Vec<Canned>>,
}

impl Egress {
    /// The policy of `access` for the route on `route` (its source topic),
    /// reading its credentials now.
    pub fn new(
        route: &str,
        access: &HttpAccess,
        metrics: Option<HttpMetrics>,
    ) -> Result<Egress, String> {
        let entries = access
            .allow
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err(
                "`allow` is empty: name the host:port entries handlers may call, or remove `http`"
                    .into(),
            );
        }
        for (field, value) in [
            ("timeout_ms", access.timeout_ms),
            ("max_response_bytes", access.max_response_bytes),
            ("max_in_flight", u64::from(access.max_in_flight)),
            ("call_budget_ms", access.call_budget_ms),
        ] {
            if value == 0 {
                return Err(format!("`{field}` is 0; it must be at least 1"));
            }
        }
        let mut headers = vec![Vec::new(); entries.len()];
        for (entry, named) in &access.headers {
            let index = entries
                .iter()
                .position(|e| e.text == *entry)
                .ok_or_else(|| format!("headers for `{entry}`, which is not an `allow` entry"))?;
            for (name, secret) in named {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("headers for `{entry}`: `{name}` is not a header name"))?;
                let value = read_secret(secret)
                    .map_err(|e| format!("headers for `{entry}`: `{name}`: {e}"))?;
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    format!(
                        "headers for `{entry}`: `{name}`: the value is not a valid header value"
                    )
                })?;
                headers[index].push((header, value));
            }
        }
        if let Some(m) = &metrics {
            // At zero from the start, so rate() and increase() see a zero
            // rather than no data.
            for entry in &entries {
                drop(m.seconds.get_or_create(&HostLabels {
                    route: route.to_owned(),
                    host: entry.text.clone(),
                }));
                for status in ["2xx", "3xx", "4xx", "5xx", "error"] {
                    drop(m.requests.get_or_create(&RequestLabels {
                        route: route.to_owned(),
                        host: entry.text.clone(),
                        status: status.to_owned(),
                    }));
                }
            }
            for reason in ["not_allowed", "address", "no_http", "budget", "too_large"] {
                drop(m.denied.get_or_create(&DenialLabels {
                    route: route.to_owned(),
                    reason: reason.to_owned(),
                }));
            }
        }
        Ok(Egress {
            route: route.to_owned(),
            entries,
            headers,
            timeout: Duration::from_millis(access.timeout_ms),
            max_response_bytes: access.max_response_bytes,
            call_budget: Duration::from_millis(access.call_budget_ms),
            slots: Arc::new(tokio::sync::Semaphore::new(access.max_in_flight as usize)),
            tls: tls_config(access.ca_file.as_deref())?,
            metrics,
            canned: None,
        })
    }

    /// The policy of a route without an `http` table: every request is
    /// refused (and counted).
    pub fn none(route: &str, metrics: Option<HttpMetrics>) -> Egress {
        Egress {
            route: route.to_owned(),
            entries: Vec::new(),
            headers: Vec::new(),
            timeout: Duration::ZERO,
            max_response_bytes: 0,
            call_budget: Duration::MAX,
            slots: Arc::new(tokio::sync::Semaphore::new(0)),
            tls: default_tls(),
            metrics,
            canned: None,
        }
    }

    /// Whether the route allows any request: only then does waiting on HTTP
    /// need to be kept out of `limits.cpu_ms`.
    pub fn allows_any(&self) -> bool {
        !self.entries.is_empty() || self.canned.is_some()
    }

    /// A policy that answers every request from `canned`, touching no
    /// network (`linecook test`): a request with no canned answer is
    /// refused.
    pub fn canned(canned: Vec<Canned>) -> Egress {
        Egress {
            canned: Some(canned),
            ..Egress::none("fixture", None)
        }
    }

    /// Wall-clock time one call may spend.
    pub fn call_budget(&self) -> Duration {
        self.call_budget
    }

    fn deny(&self, reason: &str, message: &str) {
        warn!(route = %self.route, reason, "outbound HTTP refused: {message}");
        if let Some(m) = &self.metrics {
            m.denied
                .get_or_create(&DenialLabels {
                    route: self.route.clone(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    fn count(&self, entry: usize, status: &str, took: Option<Duration>) {
        let Some(m) = &self.metrics else { return };
        let host = self.entries[entry].text.clone();
        m.requests
            .get_or_create(&RequestLabels {
                route: self.route.clone(),
                host: host.clone(),
                status: status.to_owned(),
            })
            .inc();
        if let Some(took) = took {
            m.seconds
                .get_or_create(&HostLabels {
                    route: self.route.clone(),
                    host,
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Sends `request` if the policy allows it, by `call_ends` at the latest.
    pub async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        call_ends: Instant,
    ) -> Result<Response, Error> {
        let uri = request.uri().clone();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if let Some(canned) = &self.canned {
            let method = request.method().as_str();
            let url = uri.to_string();
            let Some(answer) = canned.iter().find(|c| c.method == method && c.url == url) else {
                self.deny(
                    "not_allowed",
                    &format!("the fixture has no canned response for {method} {url}"),
                );
                return Err(Error::HttpRequestDenied);
            };
            let body = http_body_util::Full::new(Bytes::from(answer.body.clone()))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut response = http::Response::builder().status(answer.status);
            for (name, value) in &answer.headers {
                response = response.header(name, value);
            }
            let response = response
                .body(body)
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
            return Ok((response, Box::new(async { Ok(()) })));
        }
        if !self.allows_any() {
            self.deny(
                "no_http",
                &format!(
                    "{host}:{port}: the route has no `http` table, so its handlers reach nothing"
                ),
            );
            return Err(Error::HttpRequestDenied);
        }
        let Some(entry) = matching(&self.entries, &host, port) else {
            self.deny(
                "not_allowed",
                &format!("{host}:{port} is not in the route's http.allow"),
            );
            return Err(Error::HttpRequestDenied);
        };
        let now = Instant::now();
        let ends = call_ends.min(now + self.timeout);
        if ends <= now {
            self.deny(
                "budget",
                &format!(
                    "the call has spent its http.call_budget_ms ({} ms)",
                    self.call_budget.as_millis()
                ),
            );
            return Err(Error::HttpRequestDenied);
        }
        for (name, value) in &self.headers[entry] {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let started = Instant::now();
        let result = self
            .clone()
            .exchange(request, entry, &host, port, https, ends)
            .await;
        match &result {
            Ok((response, _)) => self.count(
                entry,
                status_class(response.status().as_u16()),
                Some(started.elapsed()),
            ),
            Err(Error::HttpRequestDenied | Error::DestinationIpProhibited) => {}
            Err(Error::HttpResponseBodySize(_)) => self.count(entry, "error", None),
            Err(e) => {
                warn!(route = %self.route, host = %self.entries[entry].text, "outbound HTTP failed: {e}");
                self.count(entry, "error", None)
            }
        }
        result
    }

    async fn exchange(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        entry: usize,
        host: &str,
        port: u16,
        https: bool,
        ends: Instant,
    ) -> Result<Response, Error> {
        let within = |e: Error| move |_: tokio::time::error::Elapsed| e;
        let deadline = tokio::time::Instant::from_std(ends);
        let name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addresses: Vec<SocketAddr> =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host((name.as_str(), port)))
                .await
                .map_err(within(Error::DnsTimeout))?
                .map_err(|e| Error::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                })?
                .collect();
        let mut refusal = None;
        let address =
            addresses
                .iter()
                .copied()
                .find(|a| match permitted(&self.entries[entry], a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                });
        let Some(address) = address else {
            let why = refusal.unwrap_or_else(|| format!("{name} resolved to no address"));
            self.deny("address", &why);
            return Err(if addresses.is_empty() {
                Error::DestinationNotFound
            } else {
                Error::DestinationIpProhibited
            });
        };
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(within(Error::ConnectionTimeout))?
            .map_err(|_| Error::ConnectionLimitReached)?;
        let tcp = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(address))
            .await
            .map_err(within(Error::ConnectionTimeout))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                _ => Error::Connect(e),
            })?;
        let stream: Box<dyn Io> = if https {
            let server = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let tls = tokio::time::timeout_at(deadline, connector.connect(server, tcp))
                .await
                .map_err(within(Error::ConnectionTimeout))?
                .map_err(|e| {
                    warn!(route = %self.route, host = %self.entries[entry].text, "TLS handshake failed: {e}");
                    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
                        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
                            alert_id: Some(u8::from(*alert)),
                            alert_message: Some(format!("{alert:?}")),
                        },
                        _ => Error::TlsProtocolError,
                    }
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(within(Error::ConnectionTimeout))??;
        // The connection drives the request and the response body; it ends
        // with them, or a little after the deadline, so that a request that
        // runs out of time fails as a timeout, not as a closed connection.
        let io = tokio::spawn(async move {
            let _permit = permit;
            tokio::time::timeout_at(deadline + Duration::from_secs(1), connection).await
        });
        *request.uri_mut() = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let response = tokio::time::timeout_at(deadline, sender.send_request(request))
            .await
            .map_err(within(Error::HttpResponseTimeout))?
            .map_err(|e| match Instant::now() >= ends {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            })?;
        let cap = self.max_response_bytes;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(length) = declared.filter(|l| *l > cap) {
            io.abort();
            self.deny(
                "too_large",
                &format!(
                    "{}: the response declares {length} bytes, over http.max_response_bytes ({cap})",
                    self.entries[entry].text
                ),
            );
            return Err(Error::HttpResponseBodySize(Some(length)));
        }
        let (parts, body) = response.into_parts();
        let capped = Capped {
            inner: body,
            left: cap,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            egress: self.clone(),
            entry,
        };
        let io = async move {
            match io.await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(Error::from(e)),
                Ok(Err(_)) => Err(Error::HttpResponseTimeout),
                Err(_) => Err(Error::ConnectionTerminated),
            }
        };
        Ok((
            http::Response::from_parts(parts, capped.boxed_unsync()),
            Box::new(io),
        ))
    }
}

/// A response body that ends in an error past `http.max_response_bytes` or
/// the request's deadline.
struct Capped {
    inner: hyper::body::Incoming,
    left: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    egress: Arc<Egress>,
    entry: usize,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.left {
                    let cap = this.egress.max_response_bytes;
                    this.egress.deny(
                        "too_large",
                        &format!(
                            "{}: the response body passed http.max_response_bytes ({cap})",
                            this.egress.entries[this.entry].text
                        ),
                    );
                    this.left = 0;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(cap)))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::HttpResponseTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// The `wasi:http` hooks of one instance: every request goes through its
/// route's `Egress`, or is refused when the route has none.
#[derive(Debug, Default)]
pub struct Hooks {
    /// The route's policy.
    pub egress: Option<Arc<Egress>>,
    /// When the current call started: its budget counts from here.
    pub call_started: Option<Instant>,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Response, Error>> + Send> {
        let egress = self.egress.clone();
        let started = self.call_started.unwrap_or_else(Instant::now);
        Box::new(async move {
            match egress {
                Some(egress) => {
                    let ends = started
                        .checked_add(egress.call_budget)
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                    egress.send(request, ends).await
                }
                None => {
                    warn!(
                        "outbound HTTP refused: {} — the route has no `http` table, so its handlers reach nothing",
                        request.uri()
                    );
                    Err(Error::HttpRequestDenied)
                }
            }
        })
    }
}

/// A response as `WasiHttpHooks::send_request` returns it: the response and
/// the future that drives its connection.
pub type Response = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// [`tls_config`] without a `ca_file`, built once: every partition of a
/// route without `http` holds one, and building it parses ~150 roots.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| tls_config(None).expect("the built-in roots make a TLS config"))
        .clone()
}

/// HTTPS trusts the Mozilla roots built in (webpki-roots), and the
/// certificates in `ca_file` if set.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    if let Some(file) = ca_file {
        let certs = crate::tls::certificates(file).map_err(|e| format!("ca_file: {e:#}"))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_secret(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Env { env } => std::env::var(env).map_err(|_| {
            format!(
                "environment variable `{env}` is not set (or not UTF-8) in the host's environment"
            )
        }),
        Secret::File { file } => std::fs::read_to_string(file)
            .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_owned())
            .map_err(|e| format!("cannot read `{}`: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<AllowEntry> {
        list.iter().map(|e| parse_entry(e).unwrap()).collect()
    }

    #[test]
    fn entries_parse_names_wildcards_and_addresses() {
        assert_eq!(
            parse_entry("API.Example.com:443").unwrap().host,
            Host::Name("api.example.com".into())
        );
        assert_eq!(
            parse_entry("*.internal.example:8443").unwrap().host,
            Host::Subdomains("internal.example".into())
        );
        assert_eq!(
            parse_entry("127.0.0.1:8080").unwrap().host,
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_entry("[::1]:8080").unwrap().host,
            Host::Ip("::1".parse().unwrap())
        );
        for bad in [
            "api.example.com",
            "api.example.com:0",
            "api.example.com:http",
            ":443",
            "*.:443",
            "bad_name.example:443",
            "[::zz]:80",
            "http://api.example.com:443",
        ] {
            let e = parse_entry(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_request_matches_by_name_or_address_and_port() {
        let list = entries(&[
            "api.example.com:443",
            "*.internal.example:8443",
            "127.0.0.1:8080",
            "[::1]:9090",
        ]);
        assert_eq!(matching(&list, "api.example.com", 443), Some(0));
        assert_eq!(matching(&list, "API.example.com.", 443), Some(0));
        assert_eq!(matching(&list, "api.example.com", 80), None);
        assert_eq!(matching(&list, "evil-api.example.com", 443), None);
        assert_eq!(matching(&list, "a.internal.example", 8443), Some(1));
        assert_eq!(matching(&list, "a.b.internal.example", 8443), Some(1));
        // A wildcard covers subdomains, not the name itself or look-alikes.
        assert_eq!(matching(&list, "internal.example", 8443), None);
        assert_eq!(matching(&list, "xinternal.example", 8443), None);
        assert_eq!(matching(&list, "127.0.0.1", 8080), Some(2));
        assert_eq!(matching(&list, "127.0.0.2", 8080), None);
        assert_eq!(matching(&list, "[::1]", 9090), Some(3));
        // An address never matches a name entry, nor a name an address entry.
        assert_eq!(matching(&entries(&["localhost:80"]), "127.0.0.1", 80), None);
        assert_eq!(matching(&entries(&["127.0.0.1:80"]), "localhost", 80), None);
    }

    #[test]
    fn special_addresses_are_reached_only_through_an_entry_naming_them() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(special(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for public in [
            "93.184.216.34",
            "172.32.0.1",
            "2606:2800:220:1::1",
            "8.8.8.8",
        ] {
            assert_eq!(special(public.parse().unwrap()), None, "{public}");
        }
        let by_name = parse_entry("metadata.example:80").unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let refused = permitted(&by_name, metadata).unwrap_err();
        assert!(
            refused.contains("169.254.169.254, a link-local address"),
            "{refused}"
        );
        assert_eq!(
            permitted(&by_name, "93.184.216.34".parse().unwrap()),
            Ok(())
        );
        let by_address = parse_entry("169.254.169.254:80").unwrap();
        assert_eq!(permitted(&by_address, metadata), Ok(()));
        assert!(permitted(&by_address, "169.254.169.253".parse().unwrap()).is_err());
    }

    #[test]
    fn statuses_fall_in_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(302), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    fn access(toml: &str) -> HttpAccess {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_bad_table_or_missing_credential_is_refused_with_its_reason() {
        let cases = [
            ("allow = []", "`allow` is empty"),
            (
                "allow = [\"a.example:443\"]\ntimeout_ms = 0",
                "`timeout_ms` is 0",
            ),
            (
                "allow = [\"a.example:443\"]\n[headers.\"b.example:443\"]\nAuthorization = { env = \"X\" }",
                "headers for `b.example:443`, which is not an `allow` entry",
            ),
            (
                "allow = [\"a.example:443\"]\n[headers.\"a.example:443\"]\nAuthorization = { env = \"LINECOOK_SURELY_UNSET_VARIABLE\" }",
                "environment variable `LINECOOK_SURELY_UNSET_VARIABLE` is not set",
            ),
            (
                "allow = [\"a.example:443\"]\n[headers.\"a.example:443\"]\nAuthorization = { file = \"/nonexistent/token\" }",
                "cannot read `/nonexistent/token`",
            ),
            (
                "allow = [\"a.example:443\"]\n[headers.\"a.example:443\"]\n\"bad header\" = { file = \"/nonexistent\" }",
                "`bad header` is not a header name",
            ),
        ];
        for (toml, reason) in cases {
            let e = validate(&access(toml)).unwrap_err();
            assert!(e.contains(reason), "{toml}: {e}");
        }
        assert_eq!(validate(&access("allow = [\"a.example:443\"]")), Ok(()));
    }
}

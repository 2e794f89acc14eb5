//! Outbound HTTP through `wasi:http/outgoing-handler` (feature `http`).
//!
//! The host refuses every request unless the route's `http.allow` names its
//! `host:port`; it adds the route's credentials itself, caps the response's
//! size and time, and never follows redirects (a handler that follows one
//! makes a new request, checked like any other). Calls are blocking: a
//! batch waits for its answers, and the host does not count that wait
//! against the route's CPU limit.
//!
//! Calls are **at least once**: a batch that fails, or whose host crashes
//! before its checkpoint, is handled again and makes its calls again. Make
//! them idempotent, or remember answers in [`crate::state`].

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// A response, its body read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Where a 3xx response points, if it does.
    pub fn location(&self) -> Option<&str> {
        if !(300..400).contains(&self.status) {
            return None;
        }
        std::str::from_utf8(self.header("location")?).ok()
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    request("GET", url, &[], None)
}

/// Sends one request and reads the whole response. `url` is
/// `http[s]://host[:port]/path?query`. The error says what failed, in words
/// (a refusal by the host says so).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    send(method, url, headers, body).map_err(|e| format!("{method} {url}: {e}"))
}

fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not an absolute URL (http://host/path)")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("scheme `{other}` is not http or https")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| format!("header `{name}`: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| format!("invalid {what}");
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let outgoing = request
        .body()
        .map_err(|()| "request body taken".to_owned())?;
    if let Some(bytes) = body {
        let stream = outgoing
            .write()
            .map_err(|()| "request body stream taken".to_owned())?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request body: {e:?}"))?;
        }
        drop(stream);
    }
    let pending = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| describe(&e))?;
    let response = loop {
        match pending.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(e))) => return Err(describe(&e)),
            Some(Err(())) => return Err("the response was already taken".into()),
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| "response body taken".to_owned())?;
    let stream = incoming
        .stream()
        .map_err(|()| "response body stream taken".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => format!("reading the response: {}", describe(&code)),
                    None => format!("reading the response: {}", e.to_debug_string()),
                });
            }
        }
    }
    drop(stream);
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// An error code in words.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => {
            "refused by the host (its log says why: not in the route's http.allow, no http table, the call's budget spent, or no canned answer in a linecook test fixture)".into()
        }
        ErrorCode::DestinationIpProhibited => {
            "refused by the host: the name resolves to a loopback, private or link-local address that no http.allow entry names".into()
        }
        ErrorCode::HttpResponseBodySize(_) => {
            "the response is larger than the route's http.max_response_bytes".into()
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::HttpResponseTimeout => {
            "timed out (the route's http.timeout_ms, or the call's budget)".into()
        }
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::TlsCertificateError => {
            "the server's TLS certificate is not trusted (a private CA goes in the route's http.ca_file)".into()
        }
        ErrorCode::DnsError(e) => format!(
            "name lookup failed: {}",
            e.rcode.as_deref().unwrap_or("unknown error")
        ),
        other => format!("{other:?}"),
    }
}

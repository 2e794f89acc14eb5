//! Enriches each record with an answer from an HTTP service: for a record
//! with key `k` and value `v`, GETs `<base_url>/<k>` (route config
//! `base_url`) and emits `"<v>|<answer>"` to the topic named by route config
//! `output`, keyed by `k`. Answers are kept in `state` per key — for route
//! config `cache_ttl_ms` if set, else for good — so a key is asked once.
//! Redirects are followed (at most three); the host checks each hop
//! against the route's `http.allow`. Anything but a 2xx answer, and any
//! failed or refused request, fails the batch with `retry`: the route's
//! error policy decides what happens next.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler, http, state};

const MAX_REDIRECTS: usize = 3;

struct Enrich {
    base_url: String,
    output: String,
    cache_ttl_ms: Option<u64>,
}

impl Handler for Enrich {
    fn init(ctx: &Context) -> Result<Self, String> {
        let base_url = ctx
            .config("base_url")
            .ok_or("enrich needs route config `base_url`: the service to ask, e.g. http://127.0.0.1:8080/prices")?;
        let output = ctx
            .config("output")
            .ok_or("enrich needs route config `output`: the topic to write to")?;
        let cache_ttl_ms =
            match ctx.config("cache_ttl_ms") {
                Some(v) => Some(v.parse::<u64>().ok().filter(|t| *t > 0).ok_or(
                    "route config `cache_ttl_ms` must be a positive number of milliseconds",
                )?),
                None => None,
            };
        Ok(Enrich {
            base_url: base_url.trim_end_matches('/').to_owned(),
            output: output.to_owned(),
            cache_ttl_ms,
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for record in batch {
            let key = record.key.unwrap_or_default();
            let answer = match state::get(key) {
                Some(cached) => cached,
                None => {
                    let answer = self.ask(&String::from_utf8_lossy(key))?;
                    match self.cache_ttl_ms {
                        Some(ttl) => state::set_with_ttl(key, &answer, ttl),
                        None => state::set(key, &answer),
                    }
                    answer
                }
            };
            let mut line = record.value.to_vec();
            line.push(b'|');
            line.extend_from_slice(&answer);
            emit::send(&self.output, Some(key), &line);
        }
        Ok(())
    }
}

impl Enrich {
    /// The service's answer for `key`, following redirects.
    fn ask(&self, key: &str) -> Result<Vec<u8>, Error> {
        let mut url = format!("{}/{key}", self.base_url);
        for _ in 0..=MAX_REDIRECTS {
            let response = http::get(&url).map_err(Error::Retry)?;
            if let Some(next) = response.location() {
                url = absolute(&url, next);
                continue;
            }
            if !response.is_success() {
                return Err(Error::Retry(format!(
                    "GET {url}: status {}",
                    response.status
                )));
            }
            return Ok(response.body);
        }
        Err(Error::Retry(format!(
            "GET {}/{key}: more than {MAX_REDIRECTS} redirects",
            self.base_url
        )))
    }
}

/// `location` made absolute against `url` (a path keeps the origin).
fn absolute(url: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = url
        .find("://")
        .and_then(|s| url[s + 3..].find('/').map(|p| s + 3 + p))
        .unwrap_or(url.len());
    format!(
        "{}/{}",
        &url[..origin_end],
        location.trim_start_matches('/')
    )
}

export_handler!(Enrich);

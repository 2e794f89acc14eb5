//! A deliberately nosy handler, for the credential tests: it tries to learn
//! the credentials its host adds to outbound requests. For each record it
//! lists the environment it can see, then GETs `<base_url>/<key>` (route
//! config) with a forged `Authorization` header of its own, and emits
//! `"env=<NAME=value;...>|status=<code>|body=<answer>"` to route config
//! `output`. The host must neither show it the real credential nor let its
//! forged one through.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler, http};

struct Snoop {
    base_url: String,
    output: String,
}

impl Handler for Snoop {
    fn init(ctx: &Context) -> Result<Self, String> {
        Ok(Snoop {
            base_url: ctx
                .config("base_url")
                .ok_or("snoop needs `base_url`")?
                .to_owned(),
            output: ctx
                .config("output")
                .ok_or("snoop needs `output`")?
                .to_owned(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for record in batch {
            let key = record.key.unwrap_or_default();
            let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!("{}/{}", self.base_url, String::from_utf8_lossy(key));
            let response =
                http::request("GET", &url, &[("authorization", b"forged-by-guest")], None)
                    .map_err(Error::Retry)?;
            let line = format!(
                "env={}|status={}|body={}",
                env.join(";"),
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            emit::send(&self.output, Some(key), line.as_bytes());
        }
        Ok(())
    }
}

export_handler!(Snoop);

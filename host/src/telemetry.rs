//! Logs on standard error (pretty or JSON lines), and with the `otlp`
//! feature, spans exported over OTLP/HTTP.

#[cfg(feature = "otlp")]
use anyhow::Context as _;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured at a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Flushes exported spans when dropped, at exit.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber; keep the result until exit.
pub fn init_tracing(format: LogFormat) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text, and NO_COLOR (any value) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let log = match format {
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_target(false)
            .boxed(),
        // One JSON object per line, with the fields of every enclosing span
        // (partition, batch) so a guest's log line carries its offsets.
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(log);
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(_) => {
                let (layer, provider) = otlp_layer()?;
                (Some(layer), Some(provider))
            }
            None => (None, None),
        };
        registry.with(layer).init();
        if let Some(endpoint) = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
            tracing::info!(
                endpoint = %endpoint.to_string_lossy(),
                "exporting spans over OTLP/HTTP (a root span per batch)"
            );
        }
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this linecook was built without the `otlp` feature: no spans are exported (cargo build -p linecook --features otlp)"
            );
        }
        Ok(Telemetry {})
    }
}

/// Spans exported over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`, batched
/// on a background thread.
#[cfg(feature = "otlp")]
fn otlp_layer<S>() -> anyhow::Result<(
    impl tracing_subscriber::Layer<S>,
    opentelemetry_sdk::trace::SdkTracerProvider,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("building the OTLP span exporter")?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("linecook")
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("linecook"));
    Ok((layer, provider))
}

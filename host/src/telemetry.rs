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

/// When pretty logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// At a terminal, unless NO_COLOR is set.
    Auto,
    /// Always, even into a file or a pipe.
    Always,
    /// Never.
    Never,
}

/// Whether to colour: `auto` means a person at a terminal, and `NO_COLOR`
/// (any value) turns it off.
fn colour(choice: Color, terminal: bool, no_color: bool) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => terminal && !no_color,
    }
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
pub fn init_tracing(format: LogFormat, color: Color) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = colour(
        color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").is_some(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_a_terminal_unless_asked() {
        assert!(colour(Color::Auto, true, false));
        assert!(!colour(Color::Auto, false, false), "a file or a pipe");
        assert!(!colour(Color::Auto, true, true), "NO_COLOR");
        assert!(colour(Color::Always, false, true));
        assert!(!colour(Color::Never, true, false));
    }
}

//! Logging and metrics setup: one call each at the start of every process.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), text
/// for terminals, JSON lines for log pipelines. Logs go to stderr so stdout
/// stays for a command's output.
pub fn init(format: LogFormat) {
    // An unset RUST_LOG is `info`; one that does not parse is too, said once
    // the subscriber is up (it used to be dropped without a word).
    let (filter, refused) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("info"), Some((text, error))),
        },
        _ => (EnvFilter::new("info"), None),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests, `dev` running several components) keeps the first.
    if result.is_ok() {
        if let Some((text, error)) = refused {
            tracing::warn!(rust_log = %text, %error, "RUST_LOG does not parse; logging at info");
        }
    }
}

/// The process-wide Prometheus recorder that `/metrics` renders (every
/// process serves one), installed by the first call; later calls (tests,
/// `dev` running several components in one process) share it. Durations
/// (`*_seconds`) and batch sizes (`consumer_batch_events`) are histograms
/// with buckets, so alert rules and dashboards can take quantiles across
/// replicas. None only if some other
/// recorder was installed first.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    use std::sync::OnceLock;
    const SECONDS: [f64; 14] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("consumer_batch_events".to_owned()),
                    &[
                        1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

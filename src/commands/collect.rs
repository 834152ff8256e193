//! `activity collect`: the HTTP collector.

use std::net::IpAddr;
use std::time::Duration;

use activity_collector::limits::Limits;
use activity_collector::{Application, CollectorConfig};
use activity_core::config::Settings;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to serve on.
    #[arg(long, env = "COLLECT_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    #[command(flatten)]
    options: Options,
}

/// Everything but the address (`activity dev` serves a collector too).
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Redis shared by every collector replica for rate limits.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Requests per second per key, for keys that set none (default:
    /// collector.requests_per_second of the profile).
    #[arg(long, env = "COLLECT_REQUESTS_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    requests_per_second: Option<u32>,
    /// Events per second per key, for keys that set none (default:
    /// collector.events_per_second of the profile).
    #[arg(long, env = "COLLECT_EVENTS_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    events_per_second: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed, comma separated.
    #[arg(long, env = "COLLECT_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<IpAddr>,
    /// How long Kafka may take to acknowledge a request's events before the
    /// answer is 503, in milliseconds (below the clients' HTTP timeout).
    #[arg(long, env = "COLLECT_DELIVERY_TIMEOUT_MS", default_value_t = 5_000)]
    delivery_timeout_ms: u64,
    /// How long the producer waits to fill a Kafka batch, in milliseconds;
    /// every request waits for its events' acknowledgement, so keep it short.
    #[arg(long, env = "COLLECT_LINGER_MS", default_value_t = 1)]
    linger_ms: u64,
    /// Identical events (same user, type, entity) past this many within the
    /// spam window are rejected as spam (default: collector.spam_threshold).
    #[arg(long, env = "COLLECT_SPAM_THRESHOLD")]
    spam_threshold: Option<u32>,
    /// The spam window, in milliseconds (default: collector.spam_window_ms).
    #[arg(long, env = "COLLECT_SPAM_WINDOW_MS")]
    spam_window_ms: Option<u64>,
}

impl Options {
    pub(crate) fn config(&self, listen: &str, settings: &Settings) -> CollectorConfig {
        let profile = &settings.collector;
        CollectorConfig {
            listen: listen.to_owned(),
            database_url: settings.database_url.expose().to_owned(),
            redis_url: self.redis_url.clone(),
            default_limits: Limits {
                requests_per_second: self
                    .requests_per_second
                    .unwrap_or(profile.requests_per_second)
                    .max(1),
                events_per_second: self
                    .events_per_second
                    .unwrap_or(profile.events_per_second)
                    .max(1),
            },
            trusted_proxies: self.trusted_proxies.clone(),
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms.max(1)),
            linger: Duration::from_millis(self.linger_ms),
            spam_threshold: self.spam_threshold.unwrap_or(profile.spam_threshold),
            spam_window: Duration::from_millis(
                self.spam_window_ms.unwrap_or(profile.spam_window_ms).max(1),
            ),
        }
    }
}

pub(crate) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let app = Application::build(&settings, args.options.config(&args.listen, &settings)).await?;
    tracing::info!(address = %app.local_addr()?, "collector listening");
    let shutdown = CancellationToken::new();
    activity_core::shutdown::cancel_on_signal(shutdown.clone());
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

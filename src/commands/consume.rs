//! `activity consume`.

use activity_consumer::{Consumer, Store};
use activity_core::config::Settings;
use tokio_util::sync::CancellationToken;

/// `activity consume`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// Address serving /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9091")]
    metrics_listen: String,
}

/// Consumer flags; each overrides the profile's `[consumer]` section.
#[derive(clap::Args, Default)]
pub(crate) struct ConsumerArgs {
    /// Consumer group id.
    #[arg(long, env = "CONSUMER_GROUP_ID")]
    group_id: Option<String>,
    /// Events per database transaction (at least 1).
    #[arg(long, env = "CONSUMER_BATCH_SIZE", value_parser = at_least_one())]
    batch_size: Option<usize>,
    /// How long a partial batch waits for more events, in milliseconds.
    #[arg(long, env = "CONSUMER_BATCH_LINGER_MS")]
    batch_linger_ms: Option<u64>,
    /// Batches written to the database at once, at least 1 (offsets still
    /// commit in order); the connection pool grows to match it.
    #[arg(long, env = "CONSUMER_MAX_IN_FLIGHT", value_parser = at_least_one())]
    max_in_flight: Option<usize>,
    /// How often the rollup compactor looks for days to compact, in milliseconds.
    #[arg(long, env = "CONSUMER_COMPACT_INTERVAL_MS")]
    compact_interval_ms: Option<u64>,
    /// librdkafka's max.poll.interval.ms; the consumer pauses its partitions
    /// after a third of it while the database is down, and keeps polling.
    #[arg(long, env = "CONSUMER_MAX_POLL_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(1..))]
    max_poll_interval_ms: Option<u64>,
}

/// A count that must be at least 1: 0 is refused with clap's message, not
/// silently read as "the default".
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

impl ConsumerArgs {
    pub(crate) fn apply(&self, settings: &mut Settings) {
        if let Some(group) = &self.group_id {
            settings.consumer.group_id = group.clone();
        }
        if let Some(size) = self.batch_size {
            settings.consumer.batch_size = size;
        }
        if let Some(linger) = self.batch_linger_ms {
            settings.consumer.batch_linger_ms = linger;
        }
        if let Some(depth) = self.max_in_flight {
            settings.consumer.max_in_flight = depth;
            // Each batch in flight holds a connection (the profile's own
            // pool_size is checked against its max_in_flight).
            settings.consumer.pool_size = settings.consumer.pool_size.max(depth);
        }
        if let Some(every) = self.compact_interval_ms {
            settings.consumer.compact_interval_ms = every;
        }
        if let Some(interval) = self.max_poll_interval_ms {
            settings.consumer.max_poll_interval_ms = interval;
        }
    }
}

pub(crate) async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    args.consumer.apply(&mut settings);
    let metrics_listen = args.metrics_listen.as_str();
    let shutdown = CancellationToken::new();
    activity_core::shutdown::cancel_on_signal(shutdown.clone());
    let store = Store::connect(settings.database_url.expose(), settings.consumer.pool_size)?;
    let compacting = tokio::spawn(
        store
            .clone()
            .keep_compacted(settings.consumer.compact_interval(), shutdown.clone()),
    );
    let partitioning = tokio::spawn(
        store
            .clone()
            .keep_partitions_ahead(settings.partitions.ahead, shutdown.clone()),
    );
    let consumer = Consumer::build(&settings, store)?;
    // Served until the consumer has left its group: /readyz says
    // "shutting down" meanwhile.
    let stop_serving = CancellationToken::new();
    let (address, serving) = activity_consumer::health::serve(
        metrics_listen,
        consumer.health(),
        activity_core::telemetry::install_metrics(),
        stop_serving.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_listen}: {e}"))?;
    tracing::info!(%address, "health endpoints listening");
    let totals = consumer.run_until_stopped(shutdown.clone()).await;
    shutdown.cancel();
    let _ = compacting.await;
    let _ = partitioning.await;
    stop_serving.cancel();
    let _ = serving.await;
    let totals = totals?;
    tracing::info!(?totals, "done");
    Ok(())
}

//! `activity retention run`, `activity archive`, `activity restore`.

use std::time::Instant;

use activity_core::config::Settings;
use chrono::{DateTime, Utc};

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Partitions ahead, tiers, then archive and drop the cold partitions.
    /// Safe to re-run; meant for a CronJob. Prints a JSON summary, and pushes
    /// its metrics to PUSHGATEWAY_URL when that is set.
    Run {
        /// Prometheus Pushgateway base URL (http://host:9091).
        #[arg(long, env = "PUSHGATEWAY_URL")]
        pushgateway_url: Option<String>,
    },
}

#[derive(clap::Args)]
pub(crate) struct ArchiveArgs {
    /// Archive and drop every partition wholly before this date
    /// (YYYY-MM-DD or RFC 3339); at most the start of the current month.
    #[arg(long, value_parser = super::parse_date)]
    before: DateTime<Utc>,
    /// Also archive months a restore holds back (`retention.restore_hold_days`).
    #[arg(long)]
    include_held: bool,
}

#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// First instant restored (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_parser = super::parse_date)]
    from: DateTime<Utc>,
    /// End of the range, exclusive (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_parser = super::parse_date)]
    to: DateTime<Utc>,
}

pub(crate) async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { pushgateway_url } => {
            let started = Instant::now();
            let result = activity_retention::run(&settings, Utc::now()).await;
            let seconds = started.elapsed().as_secs_f64();
            if let Some(url) = pushgateway_url {
                if let Err(error) = push_metrics(&url, &result, seconds).await {
                    tracing::warn!(%error, "could not push the run's metrics");
                }
            }
            let summary = result?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
    }
}

pub(crate) async fn archive(settings: Settings, args: ArchiveArgs) -> anyhow::Result<()> {
    let archived = activity_retention::archive(&settings, args.before, args.include_held).await?;
    println!("{}", serde_json::to_string_pretty(&archived)?);
    Ok(())
}

pub(crate) async fn restore(settings: Settings, args: RestoreArgs) -> anyhow::Result<()> {
    let restored = activity_retention::restore(&settings, args.from, args.to).await?;
    println!("{}", serde_json::to_string_pretty(&restored)?);
    Ok(())
}

/// The run's outcome as Prometheus metrics, PUT to the Pushgateway (a
/// CronJob lives too briefly to be scraped).
async fn push_metrics(
    url: &str,
    result: &Result<activity_retention::RunSummary, activity_retention::RetentionError>,
    seconds: f64,
) -> anyhow::Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::gauge!("retention_last_run_timestamp_seconds").set(Utc::now().timestamp() as f64);
        metrics::gauge!("retention_last_run_success").set(if result.is_ok() { 1.0 } else { 0.0 });
        metrics::gauge!("retention_last_run_duration_seconds").set(seconds);
        if let Ok(summary) = result {
            let rows: u64 = summary.archived.iter().map(|a| a.rows).sum();
            let bytes: u64 = summary.archived.iter().map(|a| a.bytes).sum();
            metrics::gauge!("retention_last_run_archived_partitions")
                .set(summary.archived.len() as f64);
            metrics::gauge!("retention_last_run_archived_rows").set(rows as f64);
            metrics::gauge!("retention_last_run_archived_bytes").set(bytes as f64);
            metrics::gauge!("retention_last_run_tier_changes")
                .set(summary.tier_changes.len() as f64);
        }
    });
    let endpoint = format!(
        "{}/metrics/job/activity_retention",
        url.trim_end_matches('/')
    );
    reqwest::Client::new()
        .put(&endpoint)
        .body(handle.render())
        .send()
        .await?
        .error_for_status()?;
    tracing::info!(%endpoint, "metrics pushed");
    Ok(())
}

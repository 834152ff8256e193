//! Disk per tier and archive/restore speed (run it with `bench/retention`).
//!
//! Loads `--events` (default 1,000,000) events of the analytics benchmark's
//! shape (`sql/bench/`) into one month two years ago, then measures, on
//! that partition: its size hot (every index) and warm (hot-only indexes
//! dropped), the Parquet bytes `activity archive` writes for it, and the
//! time of `activity archive` (read, encode, upload, read back, verify,
//! drop) against a plain `COPY (SELECT …) TO STDOUT` of the same rows, and
//! of `activity restore` against a plain `COPY … FROM STDIN` of those rows
//! into a table with the same indexes. Prints one JSON line.

use std::time::Instant;

use activity_bench::{connect, drop_databases, load_events, round3, run_id};
use anyhow::Context;
use chrono::{Datelike, Months, Utc};
use clap::Parser;
use futures::{SinkExt, TryStreamExt};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Events to load into the month.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The `activity` binary (the release build, as deployed).
    #[arg(long, default_value = "target/release/activity")]
    activity_bin: std::path::PathBuf,
    #[arg(
        long,
        env = "BENCH_DATABASE_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    server: String,
}

/// Table, TOAST and index bytes of a relation.
async fn sizes(client: &tokio_postgres::Client, table: &str) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT pg_table_size($1::text::regclass), pg_indexes_size($1::text::regclass)",
            &[&table],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

fn per_million(bytes: i64, events: u64) -> f64 {
    round3(bytes as f64 / 1e6 / (events as f64 / 1e6))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = format!("bench_retention_{}", run_id());
    let result = run(&args, &db).await;
    drop_databases(&args.server, &[&db]).await?;
    let archive_dir = std::env::temp_dir().join(&db);
    let _ = std::fs::remove_dir_all(&archive_dir);
    let figures = result?;
    println!("{figures}");
    Ok(())
}

async fn run(args: &Args, db: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/{db}", args.server);
    activity_consumer::store::migrate::migrate(&url, 1).await?;
    let client = connect(&url).await?;
    let now = Utc::now();
    let month = activity_consumer::store::month_start(now)
        .checked_sub_months(Months::new(24))
        .context("date")?;
    let next = month.checked_add_months(Months::new(1)).context("date")?;
    let partition = format!("activities_p{:04}_{:02}", month.year(), month.month());
    client
        .execute("SELECT activity_ensure_partition($1)", &[&month])
        .await?;

    eprintln!("loading {} events into {partition} of {db}", args.events);
    let end = next - chrono::TimeDelta::microseconds(1);
    load_events(&client, args.events, end, next - month).await?;
    client
        .batch_execute(&format!("VACUUM ANALYZE {partition}"))
        .await?;
    let hot = sizes(&client, &partition).await?;
    client
        .execute("SELECT activity_warm_indexes($1)", &[&partition])
        .await?;
    let warm = sizes(&client, &partition).await?;

    // Baseline for archiving: the same rows out through a plain COPY.
    let started = Instant::now();
    let copy_out = client
        .copy_out(&format!(
            "COPY (SELECT id, event_id, user_id, community_id, event_type, entity_type, entity_id,
                          metadata, ip_address, user_agent, created_at
                   FROM {partition} ORDER BY id, created_at) TO STDOUT"
        ))
        .await?;
    let exported: Vec<bytes::Bytes> = copy_out.try_collect().await?;
    let copy_out_seconds = started.elapsed().as_secs_f64();
    let export_bytes: usize = exported.iter().map(|b| b.len()).sum();

    let archive_dir = std::env::temp_dir().join(db);
    let archive_url = format!("file://{}", archive_dir.display());
    // Runs the activity binary; its stdout as JSON, and the seconds it took.
    let activity = |words: &[&str]| -> anyhow::Result<(serde_json::Value, f64)> {
        let started = Instant::now();
        let output = std::process::Command::new(&args.activity_bin)
            .args(words)
            .env("DATABASE_URL", &url)
            .env("ARCHIVE_URL", &archive_url)
            .env("RUST_LOG", "warn")
            .output()?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            output.status.success(),
            "activity {words:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((serde_json::from_slice(&output.stdout)?, seconds))
    };
    let before = next.format("%Y-%m-%d").to_string();
    let (archived, archive_seconds) = activity(&["archive", "--before", &before])?;
    let parquet_bytes: i64 = archived
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["partition"] == partition.as_str())
        .filter_map(|a| a["bytes"].as_i64())
        .sum();

    // Baseline for restoring: the exported rows into a table with the
    // indexes a restored (hot) partition has, through a plain COPY.
    client
        .batch_execute(
            "CREATE TABLE restore_baseline (LIKE activities INCLUDING DEFAULTS INCLUDING INDEXES);
             CREATE INDEX ON restore_baseline (community_id, event_type, created_at);
             CREATE INDEX ON restore_baseline (event_type, created_at);
             CREATE INDEX ON restore_baseline USING gin (metadata jsonb_path_ops);",
        )
        .await?;
    let started = Instant::now();
    let sink = client
        .copy_in("COPY restore_baseline (id, event_id, user_id, community_id, event_type, entity_type, entity_id, metadata, ip_address, user_agent, created_at) FROM STDIN")
        .await?;
    futures::pin_mut!(sink);
    for chunk in exported {
        sink.send(chunk).await?;
    }
    sink.close().await?;
    let copy_in_seconds = started.elapsed().as_secs_f64();

    let from = month.format("%Y-%m-%d").to_string();
    let (restored, restore_seconds) = activity(&["restore", "--from", &from, "--to", &before])?;
    anyhow::ensure!(
        restored["inserted"].as_u64() == Some(args.events),
        "restored {restored}, loaded {}",
        args.events
    );

    let events = args.events;
    let rate = |seconds: f64| round3(events as f64 / seconds);
    Ok(json!({
        "events": events,
        "mb_per_million_events": {
            "hot": {"table": per_million(hot.0, events), "indexes": per_million(hot.1, events),
                    "total": per_million(hot.0 + hot.1, events)},
            "warm": {"table": per_million(warm.0, events), "indexes": per_million(warm.1, events),
                     "total": per_million(warm.0 + warm.1, events)},
            "cold_parquet": per_million(parquet_bytes, events),
            "copy_text_export": per_million(export_bytes as i64, events),
        },
        "warm_saves_percent": round3(100.0 * (1.0 - (warm.0 + warm.1) as f64 / (hot.0 + hot.1) as f64)),
        "archive": {"seconds": round3(archive_seconds), "events_per_s": rate(archive_seconds)},
        "baseline_copy_to": {"seconds": round3(copy_out_seconds), "events_per_s": rate(copy_out_seconds)},
        "restore": {"seconds": round3(restore_seconds), "events_per_s": rate(restore_seconds)},
        "baseline_copy_from": {"seconds": round3(copy_in_seconds), "events_per_s": rate(copy_in_seconds)},
    }))
}

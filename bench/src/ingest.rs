//! The ingestion benchmark (run it with `bench/ingest`).
//!
//! 1. Produces N synthetic events into a fresh topic through [`Tracker`],
//!    timing every `track_event` call.
//! 2. Starts `activity consume` (the release binary, as deployed) on a fresh
//!    database and measures it draining that backlog: events/s from the
//!    first stored row until every row is committed, and its peak RSS.
//! 3. In the same run, the baseline: a plain binary `COPY` of the same rows
//!    into a second fresh database with the same schema and indexes, then
//!    the rollups built from them the bulk way (one set-based pass, as
//!    `activity rollups rebuild` does), so both databases end up with the
//!    same tables.
//!
//! Prints one JSON line. Drops its databases and topics when done.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use activity_bench::{
    connect, delete_topic, drop_databases, round3, run_id, spawn_consumer, vm_hwm_kb, Target,
};
use activity_consumer::Store;
use activity_core::config::{AppEnv, GlobalArgs, Secret, Settings};
use activity_core::kafka::ensure_topics;
use activity_core::ActivityEvent;
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use anyhow::{bail, Context};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use futures::pin_mut;
use serde_json::{json, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Consumer drain rate against a plain COPY of the same rows")]
struct Args {
    /// Events to produce and drain.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[command(flatten)]
    target: Target,
    /// Batches the consumer writes at once (default: the dev profile's).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Most events per consumer transaction (default: the dev profile's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = run_id();
    let names = Names {
        topic: format!("bench.ingest.{run}"),
        consumer_db: format!("bench_consume_{run}"),
        copy_db: format!("bench_copy_{run}"),
    };
    let outcome = bench(&args, &names, &run).await;
    let cleaned = cleanup(&args, &names).await;
    let figures = outcome?;
    cleaned?;
    println!("{figures}");
    Ok(())
}

struct Names {
    topic: String,
    consumer_db: String,
    copy_db: String,
}

async fn bench(args: &Args, names: &Names, run: &str) -> anyhow::Result<Value> {
    let n = args.events;
    let consumer_url = format!("{}/{}", args.target.server, names.consumer_db);
    let copy_url = format!("{}/{}", args.target.server, names.copy_db);
    let mut settings = Settings::load(&GlobalArgs {
        app_env: AppEnv::Dev,
        config_dir: None,
        database_url: Some(Secret::new(consumer_url.clone())),
        kafka_brokers: Some(args.target.brokers.clone()),
        kafka_topic: Some(names.topic.clone()),
        archive_url: None,
    })?;
    if let Some(depth) = args.max_in_flight {
        settings.consumer.max_in_flight = depth;
    }
    if let Some(size) = args.batch_size {
        settings.consumer.batch_size = size;
    }
    for url in [&consumer_url, &copy_url] {
        activity_consumer::store::migrate::migrate(url, settings.partitions.ahead).await?;
    }
    ensure_topics(&settings.kafka).await?;
    let shape = Shape {
        seed: args.seed,
        ..Shape::default()
    };

    // 1. Produce the backlog.
    eprintln!("producing {n} events into {}", names.topic);
    let tracker = Tracker::new(&settings)?;
    let mut generator = Generator::new(shape.clone());
    let mut costs = Vec::with_capacity(n as usize);
    let mut queue_full = 0u64;
    let started = Instant::now();
    for _ in 0..n {
        let event = generator.next_event();
        loop {
            let attempt = event.clone();
            let call = Instant::now();
            match tracker.track_event(attempt) {
                Ok(_) => {
                    costs.push(call.elapsed().as_nanos() as u64);
                    break;
                }
                Err(TrackError::QueueFull { .. }) => {
                    queue_full += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    let stats = tracker.flush(Duration::from_secs(300)).await?;
    let produce_seconds = started.elapsed().as_secs_f64();
    if stats.delivered != n || stats.failed != 0 {
        bail!(
            "the broker acknowledged {} of {n} events ({} failed)",
            stats.delivered,
            stats.failed
        );
    }
    drop(tracker);

    // 2. Drain it with the consumer.
    eprintln!("draining with {}", args.target.activity_bin.display());
    let drain = drain(args, &settings, &consumer_url, names, run).await?;

    // 3. The baseline: COPY of the same rows.
    eprintln!("copying the same rows");
    let rows = materialize(shape, n)?;
    let copy = copy_baseline(&copy_url, &rows).await?;
    drop(rows);

    costs.sort_unstable();
    let percentile = |p: f64| costs[((costs.len() - 1) as f64 * p) as usize];
    let mean = costs.iter().sum::<u64>() as f64 / costs.len().max(1) as f64;
    let copy_seconds: f64 = copy.values().sum();
    let consumer_rate = n as f64 / drain.seconds;
    let copy_rate = n as f64 / copy_seconds;
    let copy_activities_rate = n as f64 / copy.get("activities").copied().unwrap_or(f64::NAN);
    let copy_raw_tables_rate =
        n as f64 / (copy_seconds - copy.get("rollups").copied().unwrap_or(0.0));
    Ok(json!({
        "events": n,
        "kafka_partitions": settings.kafka.partitions,
        "batch_size": settings.consumer.batch_size,
        "max_in_flight": settings.consumer.max_in_flight,
        "consumer_rate": consumer_rate.round(),
        "copy_rate": copy_rate.round(),
        "ratio": round3(consumer_rate / copy_rate),
        "consumer_peak_rss_mb": round3(drain.peak_rss_kb as f64 / 1024.0),
        "consumer_seconds": round3(drain.seconds),
        "consumer_seconds_including_group_join": round3(drain.wall_seconds),
        "copy_seconds": round3(copy_seconds),
        "copy_seconds_by_table": copy,
        "copy_raw_tables_rate": copy_raw_tables_rate.round(),
        "ratio_vs_raw_tables": round3(consumer_rate / copy_raw_tables_rate),
        "copy_activities_only_rate": copy_activities_rate.round(),
        "ratio_vs_activities_only": round3(consumer_rate / copy_activities_rate),
        "produce_seconds": round3(produce_seconds),
        "produce_rate": (n as f64 / produce_seconds).round(),
        "track_event_ns": {"p50": percentile(0.5), "p99": percentile(0.99), "mean": mean.round()},
        "queue_full_retries": queue_full,
    }))
}

struct Drain {
    seconds: f64,
    wall_seconds: f64,
    peak_rss_kb: u64,
}

/// Runs `activity consume` until every event is committed, then stops it with
/// SIGTERM. Progress is read from the identity sequence (cheap), completion
/// from an exact count.
async fn drain(
    args: &Args,
    settings: &Settings,
    url: &str,
    names: &Names,
    run: &str,
) -> anyhow::Result<Drain> {
    let n = args.events as i64;
    let db = connect(url).await?;
    let sequence: String = db
        .query_one("SELECT pg_get_serial_sequence('activities', 'id')", &[])
        .await?
        .try_get(0)?;
    let progress_sql =
        format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}");

    let spawned = Instant::now();
    let mut child = spawn_consumer(
        &args.target.activity_bin,
        url,
        &settings.kafka.brokers,
        &names.topic,
        &format!("bench-{run}"),
        &settings.consumer,
    )?;
    let pid = child.id().context("the consumer exited at once")?;

    let mut peak_rss_kb = 0;
    let mut first_row: Option<Instant> = None;
    let mut last_progress = (0i64, Instant::now());
    let finished = loop {
        peak_rss_kb = peak_rss_kb.max(vm_hwm_kb(pid));
        if let Some(status) = child.try_wait()? {
            bail!("the consumer exited early: {status}");
        }
        // The sequence also counts ids of rolled-back attempts: near the end,
        // count exactly.
        let mut stored: i64 = db.query_one(progress_sql.as_str(), &[]).await?.try_get(0)?;
        if stored > 0 && first_row.is_none() {
            first_row = Some(Instant::now());
        }
        if stored >= n {
            stored = db
                .query_one("SELECT count(*) FROM activities", &[])
                .await?
                .try_get(0)?;
            if stored >= n {
                break Instant::now();
            }
        }
        if stored > last_progress.0 {
            last_progress = (stored, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(120) {
            bail!("the consumer made no progress for 120 s at {stored} of {n} rows");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    peak_rss_kb = peak_rss_kb.max(vm_hwm_kb(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .context("the consumer did not stop within 40 s of SIGTERM")??;
    if !status.success() {
        bail!("the consumer exited with {status} after SIGTERM");
    }
    let stored: i64 = db
        .query_one("SELECT count(*) FROM activity_event_ids", &[])
        .await?
        .try_get(0)?;
    if stored != n {
        bail!("{stored} distinct events stored, {n} produced");
    }
    let first_row = first_row.unwrap_or(spawned);
    Ok(Drain {
        seconds: finished.duration_since(first_row).as_secs_f64(),
        wall_seconds: finished.duration_since(spawned).as_secs_f64(),
        peak_rss_kb,
    })
}

/// The same events the producer sent, validated exactly as the consumer
/// validates them, held in memory so that generating them is not timed.
fn materialize(shape: Shape, n: u64) -> anyhow::Result<Vec<ActivityEvent>> {
    let mut generator = Generator::new(shape);
    let now = Utc::now();
    (0..n)
        .map(|_| Ok(generator.next_event().validate(now)?))
        .collect()
}

/// COPYs the users, communities, event ids and events into their tables,
/// one transaction each, and returns the seconds each took.
async fn copy_baseline(
    url: &str,
    events: &[ActivityEvent],
) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut db = connect(url).await?;
    let mut users: HashMap<Uuid, (Option<String>, DateTime<Utc>)> = HashMap::new();
    let mut communities: HashMap<Uuid, (Option<String>, DateTime<Utc>)> = HashMap::new();
    for event in events {
        if let Some(user) = event.user_id() {
            let entry = users
                .entry(user.as_uuid())
                .or_insert((None, event.created_at()));
            entry.1 = entry.1.min(event.created_at());
            if entry.0.is_none() {
                entry.0 = event.signup_email().map(str::to_owned);
            }
        }
        if let Some(community) = event.community_id() {
            let entry = communities
                .entry(community.as_uuid())
                .or_insert((None, event.created_at()));
            entry.1 = entry.1.min(event.created_at());
            if entry.0.is_none() {
                entry.0 = event.community_name().map(str::to_owned);
            }
        }
    }
    let metadata: Vec<Option<Value>> = events
        .iter()
        .map(|e| e.metadata().map(|m| Value::Object(m.as_map().clone())))
        .collect();
    let ips: Vec<Option<String>> = events
        .iter()
        .map(|e| e.ip_address().map(|ip| ip.to_string()))
        .collect();

    let mut seconds = BTreeMap::new();
    let profile_types = [Type::UUID, Type::TEXT, Type::TIMESTAMPTZ];
    let timed = Instant::now();
    copy(
        &mut db,
        "COPY users (id, email, created_at) FROM STDIN BINARY",
        &profile_types,
        users.iter(),
        |(id, (email, at))| vec![*id as &(dyn ToSql + Sync), email, at],
    )
    .await?;
    seconds.insert("users", round3(timed.elapsed().as_secs_f64()));

    let timed = Instant::now();
    copy(
        &mut db,
        "COPY communities (id, name, created_at) FROM STDIN BINARY",
        &profile_types,
        communities.iter(),
        |(id, (name, at))| vec![*id as &(dyn ToSql + Sync), name, at],
    )
    .await?;
    seconds.insert("communities", round3(timed.elapsed().as_secs_f64()));

    let id_rows: Vec<(Uuid, DateTime<Utc>)> = events
        .iter()
        .map(|e| (e.event_id().as_uuid(), e.created_at()))
        .collect();
    let timed = Instant::now();
    copy(
        &mut db,
        "COPY activity_event_ids (event_id, created_at) FROM STDIN BINARY",
        &[Type::UUID, Type::TIMESTAMPTZ],
        id_rows.iter(),
        |(id, at)| vec![id as &(dyn ToSql + Sync), at],
    )
    .await?;
    seconds.insert("activity_event_ids", round3(timed.elapsed().as_secs_f64()));

    let rows: Vec<ActivityRow<'_>> = events
        .iter()
        .zip(metadata.iter().zip(&ips))
        .map(|(e, (metadata, ip))| ActivityRow {
            event_id: e.event_id().as_uuid(),
            user_id: e.user_id().map(|id| id.as_uuid()),
            community_id: e.community_id().map(|id| id.as_uuid()),
            event_type: e.event_type().as_str(),
            entity_type: e.entity_type(),
            entity_id: e.entity_id(),
            metadata: metadata.as_ref(),
            ip_address: ip.as_deref(),
            user_agent: e.user_agent(),
            created_at: e.created_at(),
        })
        .collect();
    let timed = Instant::now();
    copy(
        &mut db,
        "COPY activities (event_id, user_id, community_id, event_type, entity_type, entity_id, \
         metadata, ip_address, user_agent, created_at) FROM STDIN BINARY",
        &[
            Type::UUID,
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
        rows.iter(),
        |r| {
            vec![
                &r.event_id as &(dyn ToSql + Sync),
                &r.user_id,
                &r.community_id,
                &r.event_type,
                &r.entity_type,
                &r.entity_id,
                &r.metadata,
                &r.ip_address,
                &r.user_agent,
                &r.created_at,
            ]
        },
    )
    .await?;
    seconds.insert("activities", round3(timed.elapsed().as_secs_f64()));

    // The rollups the consumer keeps in the same transaction, built here the
    // bulk way: one set-based pass over the copied rows (`activity rollups
    // rebuild`), which yields the same rows (tests/e2e/analytics.rs).
    let (first, last) = events.iter().fold((None, None), |(lo, hi), e| {
        let at = e.created_at();
        (
            Some(lo.map_or(at, |lo: DateTime<Utc>| lo.min(at))),
            Some(hi.map_or(at, |hi: DateTime<Utc>| hi.max(at))),
        )
    });
    let timed = Instant::now();
    if let (Some(first), Some(last)) = (first, last) {
        let store = Store::connect(url, 1)?;
        store
            .rebuild_rollups(first, last + TimeDelta::microseconds(1))
            .await?;
    }
    seconds.insert("rollups", round3(timed.elapsed().as_secs_f64()));
    let copied: i64 = db
        .query_one("SELECT count(*) FROM activities", &[])
        .await?
        .try_get(0)?;
    if copied != events.len() as i64 {
        bail!("COPY stored {copied} of {} rows", events.len());
    }
    Ok(seconds)
}

struct ActivityRow<'a> {
    event_id: Uuid,
    user_id: Option<Uuid>,
    community_id: Option<Uuid>,
    event_type: &'a str,
    entity_type: Option<&'a str>,
    entity_id: Option<&'a str>,
    metadata: Option<&'a Value>,
    ip_address: Option<&'a str>,
    user_agent: Option<&'a str>,
    created_at: DateTime<Utc>,
}

/// One `COPY ... FROM STDIN BINARY` in its own transaction.
async fn copy<'r, T: 'r>(
    db: &mut Client,
    statement: &str,
    types: &[Type],
    rows: impl Iterator<Item = T>,
    values: impl Fn(&T) -> Vec<&(dyn ToSql + Sync)>,
) -> anyhow::Result<()> {
    let tx = db.transaction().await?;
    let sink = tx.copy_in(statement).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    pin_mut!(writer);
    for row in rows {
        writer.as_mut().write(&values(&row)).await?;
    }
    writer.finish().await?;
    tx.commit().await?;
    Ok(())
}

/// Drops the run's databases and topics.
async fn cleanup(args: &Args, names: &Names) -> anyhow::Result<()> {
    drop_databases(&args.target.server, &[&names.consumer_db, &names.copy_db]).await?;
    delete_topic(&args.target.brokers, &names.topic).await
}

//! The collector benchmark (run it with `bench/collector`).
//!
//! 1. Direct: N synthetic events through the producer library (`Tracker`),
//!    until the broker acknowledged them all.
//! 2. HTTP: the same N events through `activity collect` (the release
//!    binary), in batches of `--batch`, from `--clients` concurrent clients,
//!    each request answered 202 only once the broker acknowledged it.
//! 3. Latency at a fixed rate (`--rate` events/s, open loop: requests are
//!    sent on schedule whether or not earlier ones were answered) for
//!    `--seconds`: p50/p99 per request.
//!
//! Prints one JSON line. Drops its database and topic when done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_bench::{delete_topic, drop_databases, round3, run_id, serve, vm_hwm_kb, Target};
use activity_collector::keys::{self, NewKey};
use activity_core::config::{AppEnv, GlobalArgs, Secret, Settings};
use activity_core::kafka::ensure_topics;
use activity_core::NewEvent;
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use anyhow::bail;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Events/s through the HTTP collector against the producer library")]
struct Args {
    /// Events sent each way.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Events per second of the fixed-rate latency run.
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
    /// Length of the fixed-rate run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(flatten)]
    target: Target,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = run_id();
    let topic = format!("bench.collect.{run}");
    let database = format!("bench_collect_{run}");
    let outcome = bench(&args, &topic, &database).await;
    let dropped = drop_databases(&args.target.server, &[&database]).await;
    let deleted = delete_topic(&args.target.brokers, &topic).await;
    let figures = outcome?;
    dropped?;
    deleted?;
    println!("{figures}");
    Ok(())
}

fn to_json(event: &NewEvent) -> Value {
    json!({
        "event_id": event.event_id,
        "user_id": event.user_id,
        "community_id": event.community_id,
        "event_type": event.event_type,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "metadata": event.metadata,
        "user_agent": event.user_agent,
        "created_at": event.created_at.map(|at| at.to_rfc3339()),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

async fn bench(args: &Args, topic: &str, database: &str) -> anyhow::Result<Value> {
    let url = format!("{}/{database}", args.target.server);
    let settings = Settings::load(&GlobalArgs {
        app_env: AppEnv::Dev,
        config_dir: None,
        database_url: Some(Secret::new(url.clone())),
        kafka_brokers: Some(args.target.brokers.clone()),
        kafka_topic: Some(topic.to_owned()),
        archive_url: None,
    })?;
    activity_consumer::store::migrate::migrate(&url, settings.partitions.ahead).await?;
    ensure_topics(&settings.kafka).await?;
    let pool = activity_core::database::pool(&url, 1).map_err(anyhow::Error::msg)?;
    let key = keys::create(
        &pool,
        &NewKey {
            name: "bench".into(),
            communities: None,
            events_per_second: Some(100_000_000),
            requests_per_second: Some(10_000_000),
        },
    )
    .await?
    .secret;

    let mut generator = Generator::new(Shape::default());
    let events: Vec<NewEvent> = (0..args.events).map(|_| generator.next_event()).collect();

    // 1. Direct, through the library.
    eprintln!("direct: {} events through the Tracker", args.events);
    let tracker = Tracker::new(&settings)?;
    let started = Instant::now();
    for event in &events {
        loop {
            match tracker.track_event(event.clone()) {
                Err(TrackError::QueueFull { .. }) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                other => {
                    other?;
                    break;
                }
            }
        }
    }
    let stats = tracker.flush(Duration::from_secs(300)).await?;
    let direct_seconds = started.elapsed().as_secs_f64();
    if stats.delivered != args.events as u64 {
        bail!(
            "the broker acknowledged {} of {}",
            stats.delivered,
            args.events
        );
    }
    drop(tracker);

    // 2. Through the collector.
    let (mut collector, base) = serve(
        &args.target.activity_bin,
        "collect",
        "COLLECT_LISTEN",
        &[
            ("DATABASE_URL", &url),
            ("KAFKA_BROKERS", &args.target.brokers),
            ("KAFKA_TOPIC", topic),
            // The synthetic users repeat the same event on the same entity
            // often enough in long runs to pass the default spam threshold;
            // the check still runs on every event.
            ("COLLECT_SPAM_THRESHOLD", "1000000"),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let bodies: Arc<Vec<String>> = Arc::new(
        events
            .chunks(args.batch)
            .map(|chunk| {
                json!({"events": chunk.iter().map(to_json).collect::<Vec<_>>()}).to_string()
            })
            .collect(),
    );
    eprintln!(
        "http: {} requests of {} events from {} clients",
        bodies.len(),
        args.batch,
        args.clients
    );
    let next = Arc::new(AtomicUsize::new(0));
    let endpoint = format!("{base}/v1/events");
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            let (bodies, next, http, endpoint, key) = (
                bodies.clone(),
                next.clone(),
                http.clone(),
                endpoint.clone(),
                key.clone(),
            );
            tokio::spawn(async move {
                let mut accepted = 0u64;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else {
                        return Ok::<u64, anyhow::Error>(accepted);
                    };
                    let response = http
                        .post(&endpoint)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    if response.status() != 202 {
                        bail!("status {}: {}", response.status(), response.text().await?);
                    }
                    let answer: Value = response.json().await?;
                    accepted += answer["accepted"].as_u64().unwrap_or(0);
                }
            })
        })
        .collect();
    let mut accepted = 0;
    for client in clients {
        accepted += client.await??;
    }
    let http_seconds = started.elapsed().as_secs_f64();
    if accepted != args.events as u64 {
        bail!("the collector accepted {accepted} of {}", args.events);
    }

    // 3. Latency at a fixed rate, open loop.
    let requests = (args.rate as u64 * args.seconds) as usize / args.batch;
    let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    eprintln!(
        "fixed rate: {} events/s for {} s ({requests} requests)",
        args.rate, args.seconds
    );
    let schedule = tokio::time::Instant::now();
    let sends: Vec<_> = (0..requests)
        .map(|i| {
            let body = bodies[i % bodies.len()].clone();
            let (http, endpoint, key) = (http.clone(), endpoint.clone(), key.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(schedule + interval * i as u32).await;
                let sent = Instant::now();
                let response = http
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                response.bytes().await?;
                if status != 202 {
                    bail!("status {status}");
                }
                Ok::<f64, anyhow::Error>(sent.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for send in sends {
        latencies.push(send.await??);
    }
    latencies.sort_by(f64::total_cmp);
    let rss_kb = collector.id().map(vm_hwm_kb).unwrap_or(0);
    let _ = collector.kill().await;

    let direct_rate = args.events as f64 / direct_seconds;
    let http_rate = args.events as f64 / http_seconds;
    Ok(json!({
        "events": args.events,
        "batch": args.batch,
        "clients": args.clients,
        "http_events_per_s": http_rate.round(),
        "direct_events_per_s": direct_rate.round(),
        "ratio": round3(http_rate / direct_rate),
        "fixed_rate_events_per_s": args.rate,
        "fixed_rate_requests": requests,
        "latency_ms": {
            "p50": round3(percentile(&latencies, 0.5)),
            "p99": round3(percentile(&latencies, 0.99)),
            "max": round3(percentile(&latencies, 1.0)),
        },
        "collector_peak_rss_mb": round3(rss_kb as f64 / 1024.0),
    }))
}

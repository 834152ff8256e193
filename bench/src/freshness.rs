//! Freshness (run it with `bench/freshness`): how long after the broker
//! acknowledges an event the analytics API counts it, while synthetic
//! traffic streams in at a steady rate.
//!
//! A fresh topic and database; `activity consume` (release binary) as a
//! separate process; the API in this process. Background load goes through
//! `Tracker` at `--rate` events/s. Every 250 ms a probe event for a community
//! of its own is produced and its acknowledgement awaited; the API is then
//! polled every 10 ms until `/community/{id}` counts it. Prints one JSON line.

use std::time::{Duration, Instant};

use activity_analytics_api::{ApiConfig, Application, Claims, Keys, Role};
use activity_bench::{delete_topic, drop_databases, round3, run_id, spawn_consumer, Target};
use activity_core::avro::AvroCodec;
use activity_core::config::{AppEnv, GlobalArgs, Secret, Settings};
use activity_core::kafka::{client_config, ensure_topics, partition_key};
use activity_core::NewEvent;
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use anyhow::bail;
use chrono::Utc;
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Background events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to stream and probe.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[command(flatten)]
    target: Target,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = run_id();
    let topic = format!("bench.freshness.{run}");
    let db = format!("bench_freshness_{run}");
    let outcome = bench(&args, &run, &topic, &db).await;
    let dropped = drop_databases(&args.target.server, &[&db]).await;
    let deleted = delete_topic(&args.target.brokers, &topic).await;
    let figures = outcome?;
    dropped?;
    deleted?;
    println!("{figures}");
    Ok(())
}

async fn bench(args: &Args, run: &str, topic: &str, db: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/{db}", args.target.server);
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
    let _consumer = spawn_consumer(
        &args.target.activity_bin,
        &url,
        &args.target.brokers,
        topic,
        &format!("bench-{run}"),
        &settings.consumer,
    )?;

    let secret = b"freshness-bench-secret-0123456789";
    let app = Application::build(ApiConfig {
        listen: "127.0.0.1:0".into(),
        read_url: url.clone(),
        jwt_secret: secret.to_vec(),
        pool_size: 4,
    })
    .await?;
    let base = format!("http://{}", app.local_addr()?);
    let stop_api = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop_api.clone()));
    let token = Keys::new(secret).mint(&Claims {
        sub: "bench".into(),
        exp: (Utc::now().timestamp() + 3600) as f64,
        role: Role::Admin,
        communities: None,
        nbf: None,
    })?;
    let probe = Probe {
        producer: client_config(&args.target.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?,
        codec: AvroCodec::new()?,
        http: reqwest::Client::new(),
        base,
        token,
        topic: topic.to_owned(),
    };
    // The consumer has joined and the pipeline answers before timing starts.
    probe.once(Duration::from_secs(60)).await?;

    let stop_load = CancellationToken::new();
    let load = tokio::spawn(stream(settings.clone(), args.rate, stop_load.clone()));
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let next = Instant::now() + Duration::from_millis(250);
        latencies.push(probe.once(Duration::from_secs(30)).await?);
        tokio::time::sleep_until(next.into()).await;
    }
    stop_load.cancel();
    let sent = load.await??;
    stop_api.cancel();
    let rate = sent as f64 / started.elapsed().as_secs_f64();

    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Ok(json!({
        "probes": latencies.len(),
        "visible_after_ack_ms": {"p50": round3(at(0.5)), "p95": round3(at(0.95)), "max": round3(at(1.0))},
        "background_rate": rate.round(),
        "background_events": sent,
        "seconds": args.seconds,
    }))
}

struct Probe {
    producer: FutureProducer,
    codec: AvroCodec,
    http: reqwest::Client,
    base: String,
    token: String,
    topic: String,
}

impl Probe {
    /// Produces one event for a new community, waits for the broker's
    /// acknowledgement, then for the API to count it; returns the
    /// milliseconds between the two.
    async fn once(&self, patience: Duration) -> anyhow::Result<f64> {
        let community = Uuid::new_v4();
        let event = NewEvent::new("user.login")
            .community(community)
            .user(Uuid::new_v4())
            .validate(Utc::now())?;
        let payload = self.codec.encode(&event)?;
        let key = partition_key(event.community_id()).unwrap_or_default();
        let record = FutureRecord::to(&self.topic).payload(&payload).key(&key);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("probe not acknowledged: {e}"))?;
        let acked = Instant::now();
        let url = format!("{}/api/v1/analytics/community/{community}", self.base);
        while acked.elapsed() < patience {
            let response = self.http.get(&url).bearer_auth(&self.token).send().await?;
            if response.status().is_success() {
                let body: serde_json::Value = response.json().await?;
                if body["total_events"].as_i64() == Some(1) {
                    return Ok(acked.elapsed().as_secs_f64() * 1000.0);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("the API did not count a probe within {patience:?}")
    }
}

/// Synthetic traffic at `rate` events/s until cancelled; returns how many
/// events the broker acknowledged.
async fn stream(settings: Settings, rate: u64, stop: CancellationToken) -> Result<u64, TrackError> {
    let tracker = Tracker::new(&settings)?;
    let mut generator = Generator::new(Shape {
        days: 1,
        ..Shape::default()
    });
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut ticker = tokio::time::interval(tick);
    while !stop.is_cancelled() {
        ticker.tick().await;
        for _ in 0..per_tick {
            match tracker.track_event(generator.next_event()) {
                Ok(_) | Err(TrackError::QueueFull { .. }) => {}
                Err(other) => return Err(other),
            }
        }
    }
    let stats = tracker.flush(Duration::from_secs(60)).await?;
    Ok(stats.delivered)
}

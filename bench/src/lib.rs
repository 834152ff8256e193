//! What the benchmarks share: fresh databases and topics that are removed
//! afterwards, the consumer as a separate process, and small helpers.

use std::path::Path;
use std::process::Stdio;

use activity_core::kafka::{client_config, dlq_topic};
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use tokio_postgres::Client;
use uuid::Uuid;

/// What a benchmark runs against: the `activity` binary it measures, the
/// PostgreSQL server it makes its databases on, the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The `activity` binary (the release build, as deployed).
    #[arg(long, default_value = "target/release/activity")]
    pub activity_bin: std::path::PathBuf,
    /// PostgreSQL server (without a database name).
    #[arg(
        long,
        env = "BENCH_DATABASE_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub server: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// Starts `activity <command>` (the binary `bin`) listening on a free
/// loopback port, set through the environment variable `listen`, with `env`
/// besides, and waits until its `/readyz` answers 200. Returns the process
/// (killed when dropped) and its base URL.
pub async fn serve(
    bin: &Path,
    command: &str,
    listen: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(bin)
        .arg(command)
        .env("APP_ENV", "dev")
        .env("RUST_LOG", "warn")
        .env(listen, format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            anyhow::bail!("`activity {command}` did not become ready");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok((child, base))
}

/// A short random suffix for one run's databases, topic and group.
pub fn run_id() -> String {
    Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(10)
        .collect()
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Peak resident set size of a process, from /proc (0 when unreadable).
pub fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One connection, opened as the pipeline opens its own (TLS as `sslmode`
/// says), so a baseline and the pipeline pay for the same transport.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let target: activity_core::database::Target = url.parse().map_err(anyhow::Error::msg)?;
    Ok(target.connect().await?)
}

/// Drops these databases of `server` (a URL without a database name).
pub async fn drop_databases(server: &str, names: &[&str]) -> anyhow::Result<()> {
    let server = connect(&format!("{server}/postgres")).await?;
    for db in names {
        let statement: String = server
            .query_one(
                "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)",
                &[db],
            )
            .await?
            .try_get(0)?;
        server.batch_execute(&statement).await?;
    }
    Ok(())
}

/// Deletes a topic and its dead-letter topic.
pub async fn delete_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let dlq = dlq_topic(topic);
    admin
        .delete_topics(&[topic, dlq.as_str()], &AdminOptions::new())
        .await?;
    Ok(())
}

/// Starts `activity consume` (the release binary, as deployed).
pub fn spawn_consumer(
    bin: &Path,
    database_url: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    consumer: &activity_core::config::ConsumerSettings,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(bin)
        .arg("consume")
        .env("APP_ENV", "dev")
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", brokers)
        .env("KAFKA_TOPIC", topic)
        .env("CONSUMER_GROUP_ID", group)
        .env("CONSUMER_MAX_IN_FLIGHT", consumer.max_in_flight.to_string())
        .env("CONSUMER_BATCH_SIZE", consumer.batch_size.to_string())
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with cargo build --release)",
                bin.display()
            )
        })
}

/// Loads `events` events of a realistic shape (`sql/bench/`: 2,000
/// communities, 1,000,000 users, the ten types) with `created_at` spread
/// over the `span` before `end`, in slices of 500,000.
pub async fn load_events(
    client: &Client,
    events: u64,
    end: chrono::DateTime<chrono::Utc>,
    span: chrono::TimeDelta,
) -> anyhow::Result<()> {
    client
        .batch_execute(include_str!("../../sql/bench/load_profiles.sql"))
        .await?;
    let load = client
        .prepare(include_str!("../../sql/bench/load_events.sql"))
        .await?;
    let span = span.as_seconds_f64();
    let total = events as i64;
    let mut first = 0i64;
    while first < total {
        let n = 500_000i64.min(total - first);
        client.execute(&load, &[&n, &first, &end, &span]).await?;
        first += n;
        eprintln!("  {first} events");
    }
    Ok(())
}

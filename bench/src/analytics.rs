//! The analytics API's latency at scale (run it with `bench/analytics`).
//!
//! Loads `--events` (default 10,000,000) events of a realistic shape (10
//! event types, 2,000 communities of very different sizes, 1,000,000 users,
//! 90 days, metadata) with a bulk path (`sql/bench/`), rebuilds the rollups
//! from them, then times each endpoint over HTTP with randomized parameters
//! (small and huge communities, ranges of 1 to 90 days, hour and day
//! intervals, several zones), then the same requests again from several
//! concurrent clients (`--clients`: throughput and latency under load,
//! against the one-at-a-time rate), and in the same run the request's own
//! sample SQL on the raw table as the baseline. Prints one JSON line.

use std::time::Instant;

use activity_analytics_api::{Claims, Keys, Role};
use activity_bench::{connect, drop_databases, load_events, round3, run_id, serve};
use activity_consumer::Store;
use chrono::{Months, TimeDelta, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Events to load.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Requests per endpoint.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    #[arg(
        long,
        env = "BENCH_DATABASE_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    server: String,
    /// Keep the loaded database (named in the output) for further runs.
    #[arg(long)]
    keep: bool,
    /// Measure a database an earlier `--keep` run loaded, as it is (no
    /// loading, no rollup rebuild; `--events` is then ignored).
    #[arg(long, conflicts_with = "keep")]
    database: Option<String>,
    /// The `activity` binary whose API is measured.
    #[arg(long, default_value = "target/release/activity")]
    activity_bin: std::path::PathBuf,
    /// After the one-at-a-time timings, every request of them again from
    /// this many concurrent clients at once, for each number given
    /// (throughput and latency under load); none: skipped.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    clients: Vec<usize>,
}

const ZONES: [&str; 5] = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Sydney",
];
const TYPES: [&str; 4] = [
    "user.login",
    "github.push",
    "member.created",
    "hackathon.created",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = args
        .database
        .clone()
        .unwrap_or_else(|| format!("bench_analytics_{}", run_id()));
    let outcome = bench(&args, &db).await;
    if !args.keep && args.database.is_none() {
        drop_databases(&args.server, &[&db]).await?;
    }
    println!("{}", outcome?);
    Ok(())
}

async fn bench(args: &Args, db: &str) -> anyhow::Result<Value> {
    let url = format!("{}/{db}", args.server);
    activity_consumer::store::migrate::migrate(&url, 1).await?;
    let store = Store::connect(&url, 1)?;
    let now = Utc::now();
    let months: Vec<_> = (0..5)
        .filter_map(|m| now.checked_sub_months(Months::new(m)))
        .collect();
    store.ensure_partitions(months).await?;
    let client = connect(&url).await?;

    let (load_seconds, rollup_seconds) = if args.database.is_none() {
        load(&client, &store, args.events, db, now).await?
    } else {
        (f64::NAN, f64::NAN)
    };
    let events: i64 = client
        .query_one("SELECT count(*) FROM activity_event_ids", &[])
        .await?
        .get(0);

    let size = |sql: &'static str| {
        let client = &client;
        async move { Ok::<i64, tokio_postgres::Error>(client.query_one(sql, &[]).await?.get(0)) }
    };
    let raw_bytes = size(
        "SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits
                 WHERE inhparent = 'activities'::regclass)::bigint
              + pg_total_relation_size('activity_event_ids')",
    )
    .await?;
    let rollup_bytes = size(
        "SELECT sum(pg_total_relation_size(oid))::bigint FROM pg_class
         WHERE relkind = 'r' AND relname LIKE 'rollup\\_%'",
    )
    .await?;
    let millions = events as f64 / 1e6;

    // Warm cache for both sides (this machine reclaims cold pages within
    // minutes, so a database kept from an earlier run is otherwise read from
    // disk, by the API and the baseline alike). Each side's relations, with
    // their TOAST tables (a dense sketch is stored out of line, in
    // `pg_toast`) and indexes, are read into the OS page cache just before
    // that side is timed, once: at 10M events the two together are more
    // than this machine's memory, and pages read twice would stay cached
    // in place of the other side's.
    let started = Instant::now();
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .await?;
    prewarm(&client, Side::Rollups).await?;
    let prewarm_seconds = started.elapsed().as_secs_f64();

    // The release `activity api`, as deployed (its allocator, its default
    // pool of 8 connections), not a server built into this benchmark.
    let secret = b"analytics-bench-secret-0123456789";
    let (mut api, base) = serve(
        &args.activity_bin,
        "api",
        "API_LISTEN",
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_READ_URL", &url),
            ("JWT_SECRET", std::str::from_utf8(secret)?),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let token = Keys::new(secret).mint(&Claims {
        sub: "bench".into(),
        exp: (Utc::now().timestamp() + 7200) as f64,
        role: Role::Admin,
        communities: None,
        nbf: None,
    })?;
    let communities: Vec<Uuid> = client
        .query(
            "SELECT md5('c' || c)::uuid FROM generate_series(0, 1999) AS c ORDER BY c",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let users: Vec<Uuid> = client
        .query(
            "SELECT md5('u' || floor(random() * 1000000)::int)::uuid FROM generate_series(1, 1000)",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut rng = StdRng::seed_from_u64(5);
    let mut endpoints = serde_json::Map::new();
    // Every request timed one at a time, for the concurrent rounds.
    let mut requested: Vec<String> = Vec::with_capacity(4 * args.requests);
    let mut one_at_a_time_ms = 0.0;
    for endpoint in ["overview", "community", "user", "events"] {
        let mut times = Vec::with_capacity(args.requests);
        let mut slowest: Vec<(f64, String)> = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let days: i64 = *[1, 7, 30, 90].get(rng.gen_range(0..4)).unwrap_or(&30);
            let interval = if days <= 7 && rng.gen_bool(0.5) {
                "hour"
            } else {
                "day"
            };
            let tz = ZONES[rng.gen_range(0..ZONES.len())];
            let from =
                (now - TimeDelta::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let params = format!("from={from}&interval={interval}&tz={tz}");
            // Half the communities asked are among the ten largest.
            let community = if rng.gen_bool(0.5) {
                communities[rng.gen_range(0..10)]
            } else {
                communities[rng.gen_range(0..communities.len())]
            };
            let path = match endpoint {
                "overview" => format!("/api/v1/analytics/overview?{params}"),
                "community" => format!("/api/v1/analytics/community/{community}?{params}"),
                "user" => format!(
                    "/api/v1/analytics/user/{}?{params}",
                    users[rng.gen_range(0..users.len())]
                ),
                _ => format!(
                    "/api/v1/analytics/events?{params}&event_type={}&community_id={community}",
                    TYPES[rng.gen_range(0..TYPES.len())]
                ),
            };
            let ms = timed_get(&http, &base, &token, &path).await?;
            times.push(ms);
            one_at_a_time_ms += ms;
            requested.push(path.clone());
            slowest.push((ms, path));
        }
        let mut figures = percentiles(times);
        // The requests above p95, slowest first: what sets the tail.
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        slowest.truncate(args.requests / 20);
        figures["slowest"] = slowest
            .into_iter()
            .map(|(ms, path)| json!({"ms": round3(ms), "path": path}))
            .collect();
        endpoints.insert(endpoint.into(), figures);
    }
    // The same requests again, shuffled, from several clients at once: what
    // one API process on this machine serves, against the one-at-a-time
    // rate of the same requests above.
    let mut under_load = vec![json!({
        "clients": 1,
        "requests_per_second": round3(requested.len() as f64 / (one_at_a_time_ms / 1000.0)),
    })];
    for &clients in args.clients.iter().filter(|&&c| c > 1) {
        use rand::seq::SliceRandom as _;
        requested.shuffle(&mut rng);
        under_load.push(concurrently(&http, &base, &token, &requested, clients).await?);
    }
    let _ = api.kill().await;

    // The request's sample SQL on the raw rows, as the baseline.
    prewarm(&client, Side::Raw).await?;
    let mut baseline = serde_json::Map::new();
    let big = communities[0];
    for (name, sql, with_community) in [
        ("dau_last_day", "SELECT count(DISTINCT user_id) FROM activities WHERE created_at > now() - interval '1 day'", false),
        ("events_by_type", "SELECT event_type, count(*) FROM activities GROUP BY event_type", false),
        ("unique_users_30_days", "SELECT count(DISTINCT user_id) FROM activities WHERE created_at > now() - interval '30 days'", false),
        ("community_events_30_days", "SELECT count(*) FROM activities WHERE community_id = $1 AND created_at > now() - interval '30 days'", true),
        ("community_unique_users_30_days", "SELECT count(DISTINCT user_id) FROM activities WHERE community_id = $1 AND created_at > now() - interval '30 days'", true),
    ] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            if with_community {
                client.query(sql, &[&big]).await?;
            } else {
                client.query(sql, &[]).await?;
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        baseline.insert(name.into(), percentiles(times));
    }
    Ok(json!({
        "events": events,
        "database": db,
        "load_seconds": round3(load_seconds),
        "rollup_rebuild_seconds": round3(rollup_seconds),
        "prewarm_seconds": round3(prewarm_seconds),
        "raw_mb_per_million_events": round3(raw_bytes as f64 / 1048576.0 / millions),
        "rollup_mb_per_million_events": round3(rollup_bytes as f64 / 1048576.0 / millions),
        "api_ms": endpoints,
        "api_under_load": under_load,
        "raw_sql_ms": baseline,
        "requests_per_endpoint": args.requests,
    }))
}

/// One request, read to its end: the milliseconds it took, or an error for
/// any status but success.
async fn timed_get(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
) -> anyhow::Result<f64> {
    let sent = Instant::now();
    let response = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        anyhow::bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(ms)
}

/// Sends every one of `paths` once, from `clients` concurrent clients each
/// taking the next path as soon as its last answer arrived; the requests per
/// second over the whole round and the latency each request saw.
async fn concurrently(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    paths: &[String],
    clients: usize,
) -> anyhow::Result<Value> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let rounds = (0..clients).map(|_| async {
        let mut times = Vec::new();
        while let Some(path) = paths.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            times.push(timed_get(http, base, token, path).await?);
        }
        Ok::<_, anyhow::Error>(times)
    });
    let times: Vec<f64> = futures::future::try_join_all(rounds)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let mut figures = percentiles(times);
    figures["clients"] = clients.into();
    figures["requests_per_second"] = round3(paths.len() as f64 / seconds).into();
    Ok(figures)
}

#[derive(Clone, Copy)]
enum Side {
    /// `activities`' partitions and `activity_event_ids`.
    Raw,
    /// Everything else: the rollups and the small tables beside them.
    Rollups,
}

/// Reads one side's tables, their TOAST tables and all their indexes into
/// the OS page cache (`pg_prewarm`).
async fn prewarm(client: &tokio_postgres::Client, side: Side) -> anyhow::Result<()> {
    let raw = matches!(side, Side::Raw);
    client
        .query_one(
            "WITH heaps AS (
                 SELECT c.oid, c.reltoastrelid FROM pg_class AS c
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
                   AND (c.relname = 'activity_event_ids'
                        OR c.oid IN (SELECT inhrelid FROM pg_inherits
                                     WHERE inhparent = 'activities'::regclass)) = $1
             ), tables AS (
                 SELECT oid FROM heaps
                 UNION ALL SELECT reltoastrelid FROM heaps WHERE reltoastrelid <> 0
             )
             SELECT coalesce(sum(pg_prewarm(r.oid, 'read')), 0)::bigint
             FROM (SELECT oid FROM tables
                   UNION ALL
                   SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM tables)) AS r",
            &[&raw],
        )
        .await?;
    Ok(())
}

fn percentiles(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        round3(
            ms.get(((ms.len().max(1) - 1) as f64 * p) as usize)
                .copied()
                .unwrap_or(f64::NAN),
        )
    };
    json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99)})
}

/// Loads `events` events (`sql/bench/`), rebuilds the rollups from them and
/// vacuums; returns the seconds loading and rebuilding took.
async fn load(
    client: &tokio_postgres::Client,
    store: &Store,
    events: u64,
    db: &str,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<(f64, f64)> {
    eprintln!("loading {} events into {db}", events);
    let started = Instant::now();
    load_events(client, events, now, TimeDelta::days(90)).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    store
        .rebuild_rollups(now - TimeDelta::days(91), now + TimeDelta::days(1))
        .await?;
    let rollup_seconds = started.elapsed().as_secs_f64();
    // The rebuild compacted today too; a running pipeline compacts a day
    // only once it is over, and an hour once it is over, so queries read
    // today from its hour rows and the current hour from its 15-minute rows.
    client
        .batch_execute(
            "INSERT INTO rollup_dirty_days (day) VALUES (activity_day(now())) ON CONFLICT DO NOTHING;
             INSERT INTO rollup_dirty_hours (hour)
             VALUES (date_bin('1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')) ON CONFLICT DO NOTHING",
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok((load_seconds, rollup_seconds))
}

//! `activity dev`: the pipeline on one laptop, in one process.

use std::time::Duration;

use activity_consumer::{Consumer, Store};
use activity_core::config::Settings;
use activity_producer::Tracker;
use tokio_util::sync::CancellationToken;

use activity_analytics_api::{ApiConfig, Application, Claims, Keys, Role};

use super::{api, collect, consume, migrate, produce};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Send this many synthetic events through the pipeline first.
    #[arg(long, default_value_t = 0)]
    sample: u64,
    /// Stop once the sample is stored (for demos and scripts).
    #[arg(long)]
    exit_after_sample: bool,
    #[command(flatten)]
    shape: produce::ShapeArgs,
    #[command(flatten)]
    consume: consume::ConsumerArgs,
    /// Where the analytics API serves.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    api_listen: String,
    #[command(flatten)]
    auth: api::JwtArgs,
    /// Where the HTTP collector serves.
    #[arg(long, env = "COLLECT_LISTEN", default_value = "127.0.0.1:8081")]
    collect_listen: String,
    #[command(flatten)]
    collector: collect::Options,
}

pub(crate) async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    args.consume.apply(&mut settings);
    migrate::apply(&settings, true).await?;
    let store = Store::connect(settings.database_url.expose(), settings.consumer.pool_size)?;

    let shutdown = CancellationToken::new();
    activity_core::shutdown::cancel_on_signal(shutdown.clone());
    let consumer = Consumer::build(&settings, store.clone())?;
    let consuming = tokio::spawn(consumer.run_until_stopped(shutdown.clone()));
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
    let secret = args.auth.secret(&settings)?;
    let app = Application::build(ApiConfig {
        listen: args.api_listen.clone(),
        read_url: settings.database_url.expose().to_owned(),
        jwt_secret: secret.clone(),
        pool_size: 2,
    })
    .await?;
    let api_address = app.local_addr()?;
    eprintln!("analytics API on http://{api_address} (token: activity token --role admin)");
    let serving = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let collector = activity_collector::Application::build(
        &settings,
        args.collector.config(&args.collect_listen, &settings),
    )
    .await?;
    eprintln!(
        "HTTP collector on http://{}/v1/events (a key: activity keys create --name dev --all-communities)",
        collector.local_addr()?
    );
    let collecting = tokio::spawn(collector.run_until_stopped(shutdown.clone()));

    if args.sample > 0 {
        let tracker = Tracker::new(&settings)?;
        let sent =
            produce::send_synthetic(&tracker, args.shape.shape(), args.sample, &shutdown).await?;
        eprintln!(
            "sent {} events ({} unique) in {:.1}s; waiting for the consumer",
            sent.sent, sent.unique, sent.seconds
        );
        // Until every event sent is stored: by id, since on a database that
        // has them already (a second run, the same seed) none is new.
        while stored(&store, &sent.ids).await? < sent.ids.len() as i64 && !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if shutdown.is_cancelled() {
            // The API is stopping too: nothing to ask it.
            eprintln!("stopped before every sample event was stored");
        } else {
            print_summary(&store).await?;
            print_overview(api_address, &secret).await?;
        }
        if args.exit_after_sample {
            shutdown.cancel();
        }
    }

    let mut last = count(&store).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                let now = count(&store).await?;
                if now != last {
                    eprintln!("stored {} new events ({} in total)", now - last, now);
                    last = now;
                }
            }
        }
    }
    serving.await??;
    collecting.await??;
    compacting.await?;
    partitioning.await?;
    let totals = consuming.await??;
    eprintln!("consumer stopped: {totals:?}");
    Ok(())
}

/// Prints what the analytics API answers for the overview of the last 30 days.
async fn print_overview(address: std::net::SocketAddr, secret: &[u8]) -> anyhow::Result<()> {
    let token = Keys::new(secret).mint(&Claims {
        sub: "dev".into(),
        exp: (chrono::Utc::now().timestamp() + 300) as f64,
        role: Role::Admin,
        communities: None,
        nbf: None,
    })?;
    let url = format!("http://{address}/api/v1/analytics/overview?interval=week&limit=5");
    let body: serde_json::Value = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("GET {url}");
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// How many of `ids` the database has stored.
async fn stored(store: &Store, ids: &[uuid::Uuid]) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one(
            "SELECT count(*) FROM activity_event_ids WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await?
        .get(0))
}

async fn count(store: &Store) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one("SELECT count(*) FROM activity_event_ids", &[])
        .await?
        .get(0))
}

/// Prints what the database holds, as the analytics API will answer it.
async fn print_summary(store: &Store) -> anyhow::Result<()> {
    let client = store.pool().get().await?;
    let totals = client
        .query_one(include_str!("../../sql/queries/summary_totals.sql"), &[])
        .await?;
    println!("stored in PostgreSQL:");
    println!("  events       {:>10}", totals.get::<_, i64>("events"));
    println!(
        "  users        {:>10}  ({} with email from user.signup)",
        totals.get::<_, i64>("users"),
        totals.get::<_, i64>("users_with_email")
    );
    println!(
        "  communities  {:>10}  ({} named by community.created)",
        totals.get::<_, i64>("communities"),
        totals.get::<_, i64>("named_communities")
    );
    let first: Option<chrono::DateTime<chrono::Utc>> = totals.get("first_event");
    let last: Option<chrono::DateTime<chrono::Utc>> = totals.get("last_event");
    if let (Some(first), Some(last)) = (first, last) {
        println!("  from {first} to {last}");
    }
    println!("  {:<20} {:>10} {:>8}", "event_type", "events", "users");
    for row in client
        .query(include_str!("../../sql/queries/summary_by_type.sql"), &[])
        .await?
    {
        println!(
            "  {:<20} {:>10} {:>8}",
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        );
    }
    Ok(())
}

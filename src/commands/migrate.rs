//! `activity migrate`.

use activity_consumer::store::migrate::migrate;
use activity_core::config::Settings;
use activity_core::kafka::ensure_topics;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only the database; do not create the Kafka topics.
    #[arg(long, env = "MIGRATE_SKIP_TOPICS")]
    skip_topics: bool,
}

pub(crate) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    apply(&settings, !args.skip_topics).await?;
    println!("migrated");
    Ok(())
}

/// The database, partitions ahead, and (if asked) the topics.
pub(crate) async fn apply(settings: &Settings, topics: bool) -> anyhow::Result<()> {
    migrate(settings.database_url.expose(), settings.partitions.ahead).await?;
    tracing::info!("database migrated");
    if topics {
        ensure_topics(&settings.kafka).await.map_err(|error| {
            anyhow::anyhow!(
                "the database is migrated, but creating the topics {} and {} on \
                 KAFKA_BROKERS={} failed: {error} (is a broker running there? \
                 --skip-topics migrates the database alone)",
                settings.kafka.topic,
                activity_core::kafka::dlq_topic(&settings.kafka.topic),
                settings.kafka.brokers,
            )
        })?;
    }
    Ok(())
}

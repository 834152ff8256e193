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
    if topics {
        ensure_topics(&settings.kafka).await?;
    }
    Ok(())
}

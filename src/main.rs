//! `activity`: one binary for every process of the pipeline.

use clap::{Parser, Subcommand};

use activity_core::config::{GlobalArgs, LogFormat, Settings};

mod commands;

/// mimalloc instead of the system allocator: every process here allocates
/// per event (JSON, Avro, Kafka records), and glibc's malloc took a fifth of
/// the collector's time under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Activity Tracker: events from services, through Kafka, into PostgreSQL.
#[derive(Parser)]
#[command(name = "activity", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, apply migrations, create partitions and Kafka topics.
    Migrate(commands::migrate::Args),
    /// Run a member of the consumer group: Kafka → validate → PostgreSQL.
    Consume(commands::consume::Args),
    /// Send events from a JSON-lines file, or synthetic ones.
    Produce(commands::produce::Args),
    /// Serve the analytics API.
    Api(commands::api::Args),
    /// Serve the HTTP collector: POST /v1/events with a write key.
    Collect(commands::collect::Args),
    /// Create, list and revoke the collector's write keys.
    #[command(subcommand)]
    Keys(commands::keys::Command),
    /// Mint an analytics API token for local use.
    Token(commands::token::Args),
    /// Maintain the analytics rollups.
    #[command(subcommand)]
    Rollups(commands::rollups::Command),
    /// Create partitions ahead, list partitions with their tier and size.
    #[command(subcommand)]
    Partitions(commands::partitions::Command),
    /// The data lifecycle: `retention run` does partitions, tiers and archiving.
    #[command(subcommand)]
    Retention(commands::retention::Command),
    /// Archive every partition wholly before --before to ARCHIVE_URL (Parquet), verify, drop.
    Archive(commands::retention::ArchiveArgs),
    /// Bring archived rows in [--from, --to) back into PostgreSQL.
    Restore(commands::retention::RestoreArgs),
    /// Inspect the dead-letter topic, or replay what now validates.
    #[command(subcommand)]
    Dlq(commands::dlq::Command),
    /// Everything on one laptop: migrate, consume, collect and serve the API, optionally sample traffic; prints what the API answers.
    Dev(Box<commands::dev::Args>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.global)?;
    let log_format = settings.log_format;
    activity_core::telemetry::init(log_format);
    let result = run(cli.command, settings).await;
    match result {
        // With JSON logs (staging, prod) the error that ends the process is
        // one more JSON line, at level ERROR, where a log pipeline looks for
        // it; anyhow's `Error: …` text is for a terminal.
        Err(error) if log_format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) => {
            tracing::error!(error = format!("{error:#}"), "the command failed");
            std::process::exit(1)
        }
        result => result,
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate(args) => commands::migrate::run(settings, args).await,
        Command::Consume(args) => commands::consume::run(settings, args).await,
        Command::Produce(args) => commands::produce::run(settings, args).await,
        Command::Dev(args) => commands::dev::run(settings, *args).await,
        Command::Api(args) => commands::api::run(settings, args).await,
        Command::Collect(args) => commands::collect::run(settings, args).await,
        Command::Keys(command) => commands::keys::run(settings, command).await,
        Command::Token(args) => commands::token::run(settings, args),
        Command::Rollups(command) => commands::rollups::run(settings, command).await,
        Command::Dlq(command) => commands::dlq::run(settings, command).await,
        Command::Partitions(command) => commands::partitions::run(settings, command).await,
        Command::Retention(command) => commands::retention::run(settings, command).await,
        Command::Archive(args) => commands::retention::archive(settings, args).await,
        Command::Restore(args) => commands::retention::restore(settings, args).await,
    }
}

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
async fn main() {
    let cli = Cli::parse();
    let (result, log_format) = match Settings::load(&cli.global) {
        Ok(settings) => {
            let log_format = settings.log_format;
            activity_core::telemetry::init(log_format);
            (run(cli.command, settings).await, Some(log_format))
        }
        Err(error) => (Err(error.into()), None),
    };
    let Err(error) = result else { return };
    let text = report(&error);
    // With JSON logs (staging, prod) the error that ends the process is one
    // more JSON line, at level ERROR, where a log pipeline looks for it; a
    // terminal gets one line of text.
    if log_format == Some(LogFormat::Json) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(error = text, "the command failed");
    } else {
        eprintln!("Error: {text}");
    }
    std::process::exit(1)
}

/// An error and its causes on one line, each cause only where the text
/// before it does not already hold it: many errors print their cause
/// inside their own text and also give it as their source (thiserror's
/// `#[error("database: {0}")] Database(#[from] …)`, tokio-postgres'
/// `error connecting to server: <io error>`), which anyhow's report printed
/// twice.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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

#[cfg(test)]
mod tests {
    use super::report;

    /// Tells its cause and gives it as its source, as
    /// `#[error("database: {0}")] Database(#[from] …)` does.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_report_tells_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        // A cause already in its error's text is not told again.
        let error = anyhow::Error::from(Repeats(io())).context("partitions");
        assert_eq!(report(&error), "partitions: database: refused");
        // One that is not, is.
        let error = anyhow::Error::from(io()).context("reading the manifest");
        assert_eq!(report(&error), "reading the manifest: refused");
    }
}

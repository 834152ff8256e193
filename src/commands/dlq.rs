//! `activity dlq inspect` and `activity dlq replay`: what is in the
//! dead-letter topic and why, and sending back what now validates.

use std::collections::BTreeMap;
use std::time::Duration;

use activity_consumer::dlq::{read_letters, replay, Letter};
use activity_core::config::Settings;
use activity_core::kafka::dlq_topic;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// List the dead letters (oldest first per partition), each with its
    /// reason and source, then a count per reason. Reads from the start of
    /// the topic and commits nothing.
    Inspect {
        /// Show at most this many letters (at least 1).
        #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: usize,
        /// Stop reading after this long without a new letter.
        #[arg(long, default_value_t = 3000)]
        idle_ms: u64,
    },
    /// Send every dead letter that the current rules accept back to the
    /// events topic (original key and bytes); the consumer stores each event
    /// once, so running it twice is safe. Lists the ones still refused.
    Replay {
        /// Only say what would be sent.
        #[arg(long)]
        dry_run: bool,
        /// Stop reading after this long without a new letter.
        #[arg(long, default_value_t = 3000)]
        idle_ms: u64,
    },
}

pub(crate) async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    let kafka = &settings.kafka;
    let dlq = dlq_topic(&kafka.topic);
    // An empty answer for a topic that does not exist (a typo in
    // KAFKA_TOPIC) would read as "no dead letters".
    let probe = activity_core::kafka::TopicProbe::new(&kafka.brokers, &dlq)?;
    if let Some(problem) =
        tokio::task::spawn_blocking(move || probe.missing(Duration::from_secs(10))).await?
    {
        anyhow::bail!("{problem}");
    }
    match command {
        Command::Inspect { limit, idle_ms } => {
            let letters =
                read_letters(&kafka.brokers, &dlq, Duration::from_millis(idle_ms), limit).await?;
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for letter in &letters {
                println!("{}", describe(letter));
                *reasons.entry(reason_kind(&letter.error)).or_default() += 1;
            }
            println!("{} dead letters in {dlq}", letters.len());
            for (reason, count) in reasons {
                println!("{count:>8}  {reason}");
            }
            Ok(())
        }
        Command::Replay { dry_run, idle_ms } => {
            let letters = read_letters(
                &kafka.brokers,
                &dlq,
                Duration::from_millis(idle_ms),
                usize::MAX,
            )
            .await?;
            let done = replay(&kafka.brokers, &kafka.topic, &letters, dry_run).await?;
            let verb = if dry_run { "would send" } else { "sent" };
            for (partition, offset) in &done.sent {
                println!("{verb} {partition}@{offset}");
            }
            for (partition, offset, reason) in &done.still_bad {
                println!("still refused {partition}@{offset}: {reason}");
            }
            println!(
                "{} of {} dead letters {} {}; {} still refused",
                done.sent.len(),
                letters.len(),
                if dry_run {
                    "would be sent to"
                } else {
                    "sent to"
                },
                kafka.topic,
                done.still_bad.len()
            );
            Ok(())
        }
    }
}

/// One line: where the letter is, where it came from, why, and its size.
fn describe(letter: &Letter) -> String {
    format!(
        "{}@{}  from {}[{}]@{}  key={}  {} bytes  {}",
        letter.partition,
        letter.offset,
        letter.source_topic,
        letter.source_partition,
        letter.source_offset,
        letter
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_else(|| "-".into()),
        letter.payload.as_ref().map_or(0, Vec::len),
        letter.error
    )
}

/// The reason without the details that differ per letter (after a colon).
fn reason_kind(error: &str) -> String {
    error.split(':').next().unwrap_or(error).trim().to_owned()
}

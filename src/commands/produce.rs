//! `activity produce`: events from a JSON-lines file, or synthetic ones.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use activity_core::config::Settings;
use activity_core::{EventId, NewEvent, RawEvent};
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// JSON-lines file of events, one object per line ("-" reads stdin).
    /// An invalid line is named on stderr and skipped, the others are sent,
    /// and the command then exits with status 1.
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    file: Option<PathBuf>,
    /// Send this many synthetic events instead.
    #[arg(long)]
    synthetic: Option<u64>,
    #[command(flatten)]
    shape: ShapeArgs,
}

/// How synthetic traffic looks.
#[derive(clap::Args, Clone)]
pub(crate) struct ShapeArgs {
    /// Fraction of synthetic events that repeat an earlier event_id (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    duplicates: f64,
    /// Number of synthetic communities (at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    communities: usize,
    /// Number of synthetic users (at least 1).
    #[arg(long, default_value_t = 5_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    users: usize,
    /// Synthetic events are spread over this many days up to now.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i64).range(1..))]
    days: i64,
    /// Seed of the synthetic generator. The same seed gives the same
    /// events, event ids included: a second run with it sends events already
    /// stored (stored once, counted as duplicates); another seed gives new
    /// ones.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
        _ => Err(format!("{value} is not a number from 0 to 1")),
    }
}

impl ShapeArgs {
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            communities: self.communities,
            users: self.users,
            days: self.days,
            end: chrono::Utc::now(),
            duplicates: self.duplicates,
            seed: self.seed,
        }
    }
}

/// What a produce run did.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) sent: u64,
    pub(crate) unique: u64,
    pub(crate) invalid: u64,
    pub(crate) delivered: u64,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    /// SIGTERM or SIGINT stopped the run before every event was read; what
    /// was accepted was still flushed to the broker.
    pub(crate) interrupted: bool,
    /// The distinct event ids sent (synthetic runs), for `activity dev` to
    /// wait for.
    #[serde(skip)]
    pub(crate) ids: Vec<uuid::Uuid>,
}

pub(crate) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let tracker = Tracker::new(&settings)?;
    let shutdown = CancellationToken::new();
    activity_core::shutdown::cancel_on_signal(shutdown.clone());
    let summary = match (&args.file, args.synthetic) {
        (Some(path), _) => send_file(&tracker, path, &shutdown).await?,
        (None, Some(count)) => {
            send_synthetic(&tracker, args.shape.shape(), count, &shutdown).await?
        }
        (None, None) => anyhow::bail!("give --file or --synthetic"),
    };
    println!("{}", serde_json::to_string(&summary)?);
    if summary.failed > 0 {
        anyhow::bail!("{} events were not delivered", summary.failed);
    }
    if summary.invalid > 0 {
        anyhow::bail!(
            "{} lines were invalid and not sent (each is named above); the {} valid events were delivered",
            summary.invalid,
            summary.delivered
        );
    }
    Ok(())
}

/// Sends `count` synthetic events and waits for their delivery.
pub(crate) async fn send_synthetic(
    tracker: &Tracker,
    shape: Shape,
    count: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<Summary> {
    let mut generator = Generator::new(shape);
    let progress = progress(count);
    let started = Instant::now();
    let mut ids = HashSet::new();
    let mut sent = 0;
    for _ in 0..count {
        if shutdown.is_cancelled() {
            break;
        }
        let id = enqueue(tracker, generator.next_event()).await?;
        ids.insert(id);
        sent += 1;
        progress.inc(1);
    }
    let unique = ids.len() as u64;
    let mut summary = finish(tracker, progress, started, sent, unique, 0, shutdown).await?;
    summary.ids = ids.into_iter().map(|id| id.as_uuid()).collect();
    Ok(summary)
}

async fn send_file(
    tracker: &Tracker,
    path: &PathBuf,
    shutdown: &CancellationToken,
) -> anyhow::Result<Summary> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| anyhow::anyhow!("cannot open {}: {e}", path.display()),
        )?))
    };
    let progress = ProgressBar::new_spinner();
    let started = Instant::now();
    let (mut sent, mut invalid) = (0u64, 0u64);
    let mut ids = HashSet::new();
    // Lines are read as bytes: a line that is not UTF-8 is one invalid line,
    // not the end of the run (the lines after it are still sent).
    for (index, line) in reader.split(b'\n').enumerate() {
        if shutdown.is_cancelled() {
            break;
        }
        let line = line.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        // From the text, as the collector reads it: parsed into a tree
        // first, a reserved key (`"\u0024serde_json::private::Number"`) would
        // already have turned its object into another value.
        let parsed = std::str::from_utf8(&line)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|text| RawEvent::from_json_text(text).map_err(|e| e.to_string()))
            .and_then(|raw| raw.into_new_event().map_err(|e| e.to_string()));
        let event = match parsed {
            Ok(event) => event,
            Err(reason) => {
                invalid += 1;
                eprintln!("line {}: {reason}", index + 1);
                continue;
            }
        };
        match enqueue(tracker, event).await {
            Ok(id) => {
                sent += 1;
                ids.insert(id);
                progress.inc(1);
            }
            Err(TrackError::Invalid(reason)) => {
                invalid += 1;
                eprintln!("line {}: {reason}", index + 1);
            }
            Err(other) => return Err(other.into()),
        }
    }
    let unique = ids.len() as u64;
    finish(tracker, progress, started, sent, unique, invalid, shutdown).await
}

/// Enqueues one event; when the producer's queue is full, waits for room
/// (the bounded wait this command chooses for the library's QueueFull error).
async fn enqueue(tracker: &Tracker, event: NewEvent) -> Result<EventId, TrackError> {
    loop {
        match tracker.track_event(event.clone()) {
            Err(TrackError::QueueFull { .. }) => tokio::time::sleep(Duration::from_millis(2)).await,
            other => return other,
        }
    }
}

async fn finish(
    tracker: &Tracker,
    progress: ProgressBar,
    started: Instant,
    sent: u64,
    unique: u64,
    invalid: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<Summary> {
    progress.set_message("waiting for the broker");
    // Interrupted, the flush gets what is left of a 30 s stop.
    let timeout = if shutdown.is_cancelled() { 25 } else { 120 };
    let stats = tracker.flush(Duration::from_secs(timeout)).await?;
    progress.finish_and_clear();
    Ok(Summary {
        sent,
        unique,
        invalid,
        delivered: stats.delivered,
        failed: stats.failed,
        seconds: started.elapsed().as_secs_f64(),
        interrupted: shutdown.is_cancelled(),
        ids: Vec::new(),
    })
}

fn progress(count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}") {
        bar.set_style(style);
    }
    bar
}

//! The stream every scenario sends, and the proof every scenario ends with.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use activity_core::config::Settings;
use activity_core::NewEvent;
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::fixtures::*;

/// Events per scenario, duplicates included.
pub const EVENTS: usize = 200_000;
/// Messages sent per tick of the stream.
const CHUNK: usize = 1_000;

/// What a scenario sends.
pub struct Stream {
    pub events: Vec<NewEvent>,
    /// The distinct `event_id`s among `events`.
    pub ids: HashSet<Uuid>,
    /// Messages no consumer may store, one per `poison_every` events.
    pub poison: Vec<Vec<u8>>,
}

impl Stream {
    /// `EVENTS` events, 10% of them repeating an earlier `event_id`, and
    /// `poison_percent`% more messages that must be dead-lettered.
    pub fn new(seed: u64, poison_percent: usize) -> Self {
        let mut generator = Generator::new(Shape {
            seed,
            duplicates: 0.10,
            ..Shape::default()
        });
        let events: Vec<NewEvent> = (0..EVENTS).map(|_| generator.next_event()).collect();
        let ids = events.iter().filter_map(|e| e.event_id).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let poison = (0..EVENTS * poison_percent / 100)
            .map(|i| poison(i, &mut rng))
            .collect();
        Self {
            events,
            ids,
            poison,
        }
    }

    /// Sends everything at about `per_second` messages a second (0: as fast
    /// as the broker takes them), poison spread evenly among the events.
    /// Resolves to the number of messages the broker acknowledged.
    pub fn send(&self, settings: &Settings, per_second: usize) -> JoinHandle<u64> {
        let mut settings = settings.clone();
        // Every scenario makes a consumer fetch again from a committed or
        // paused position, which may lie inside a record batch: Tansu cannot
        // serve that (README: Known broker differences).
        settings.producer.batch_messages = 1;
        // The broker may be down or slow for a while in a scenario: the
        // bounded queue makes the sender wait instead of events expiring.
        settings.producer.delivery_timeout_ms = 600_000;
        let events = self.events.clone();
        let poison = self.poison.clone();
        tokio::spawn(async move {
            let tracker = Tracker::new(&settings).expect("tracker");
            let raw = RawProducer::on(&settings.kafka.brokers);
            let chunks = events.len().div_ceil(CHUNK);
            let poison_per_chunk = poison.len().div_ceil(chunks.max(1));
            let mut poison = poison.chunks(poison_per_chunk.max(1));
            let tick =
                (per_second > 0).then(|| Duration::from_secs_f64(CHUNK as f64 / per_second as f64));
            let mut delivered_raw = 0;
            for chunk in events.chunks(CHUNK) {
                let started = Instant::now();
                for event in chunk {
                    track(&tracker, event.clone()).await;
                }
                for message in poison.next().unwrap_or_default() {
                    raw.send(&settings.kafka.topic, None, None, message).await;
                    delivered_raw += 1;
                }
                if let Some(tick) = tick {
                    tokio::time::sleep(tick.saturating_sub(started.elapsed())).await;
                }
            }
            let stats = tracker
                .flush(Duration::from_secs(600))
                .await
                .expect("every event delivered");
            assert_eq!(stats.failed, 0, "no delivery failed");
            stats.delivered + delivered_raw
        })
    }
}

/// Enqueues one event, waiting while the producer's buffer is full.
pub async fn track(tracker: &Tracker, event: NewEvent) {
    loop {
        match tracker.track_event(event.clone()) {
            Err(TrackError::QueueFull { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            other => {
                other.expect("a valid event is accepted");
                return;
            }
        }
    }
}

/// One message of poison, of kind `i % 10`.
fn poison(i: usize, rng: &mut impl Rng) -> Vec<u8> {
    match i % 10 {
        // Nothing at all.
        0 => Vec::new(),
        // Random bytes (never the Avro single-object marker).
        1 => {
            let mut bytes: Vec<u8> = (0..rng.gen_range(1..200)).map(|_| rng.gen()).collect();
            bytes[0] = 0x7b;
            bytes
        }
        // A service that forgot Avro and sent JSON.
        2 => format!(
            r#"{{"event_id":"{}","event_type":"user.login"}}"#,
            Uuid::new_v4()
        )
        .into_bytes(),
        // A writer schema nobody has (fingerprint altered).
        3 => {
            let mut bytes = foreign_record(&Uuid::new_v4().to_string(), "user.login", None);
            bytes[2] ^= 0xff;
            bytes
        }
        // A record cut short.
        4 => {
            let mut bytes = foreign_record(&Uuid::new_v4().to_string(), "user.login", None);
            bytes.truncate(bytes.len() - 3);
            bytes
        }
        // Wrong values in a well-formed record.
        5 => foreign_record("not-a-uuid", "user.login", None),
        6 => foreign_record(
            &Uuid::new_v4().to_string(),
            "x'); DROP TABLE activities; --",
            None,
        ),
        7 => foreign_record(
            &Uuid::new_v4().to_string(),
            &format!("user.{}", "a".repeat(70)),
            None,
        ),
        // Metadata PostgreSQL's jsonb cannot hold, or that is not an object,
        // or that nests without end.
        8 => foreign_record(
            &Uuid::new_v4().to_string(),
            "user.login",
            Some(r#"{"note":"a\u0000b"}"#),
        ),
        _ => {
            let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
            let metadata = if rng.gen_bool(0.5) {
                "[1,2,3]".to_owned()
            } else {
                format!(r#"{{"deep":{deep}}}"#)
            };
            foreign_record(&Uuid::new_v4().to_string(), "user.login", Some(&metadata))
        }
    }
}

/// Each partition's next offset to store, as the consumers record it.
type Offsets = HashMap<i32, i64>;

/// Samples every partition's progress ten times a second, so that, at the
/// end, the time each fault took to recover can be read off: from the end of
/// the fault until every partition that still had events to store stored
/// more.
pub struct Recovery {
    samples: Arc<Mutex<Vec<(Instant, Offsets)>>>,
    faults: Vec<Instant>,
    sampler: JoinHandle<()>,
}

impl Recovery {
    pub async fn start(db: &TestDb) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let url = db.url.clone();
        let sampler = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut client: Option<tokio_postgres::Client> = None;
                loop {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                            Ok((c, connection)) => {
                                tokio::spawn(connection);
                                Some(c)
                            }
                            Err(_) => None,
                        };
                    }
                    if let Some(c) = &client {
                        if let Ok(rows) = c
                            .query("SELECT partition, next_offset FROM consumer_progress", &[])
                            .await
                        {
                            let offsets = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                            lock(&samples).push((Instant::now(), offsets));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Self {
            samples,
            faults: Vec::new(),
            sampler,
        }
    }

    /// The fault just ended (the process restarted, the server is back).
    pub fn fault_over(&mut self) {
        self.faults.push(Instant::now());
    }

    /// The longest recovery, once everything is stored; None without faults.
    fn longest(&self) -> Option<Duration> {
        self.sampler.abort();
        let samples = lock(&self.samples);
        let (_, last) = samples.last()?;
        self.faults
            .iter()
            .map(|&fault| {
                let before = samples
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= fault)
                    .map(|(_, offsets)| offsets.clone())
                    .unwrap_or_default();
                last.iter()
                    .filter(|(p, end)| before.get(p).copied().unwrap_or(0) < **end)
                    .map(|(p, _)| {
                        let was = before.get(p).copied().unwrap_or(0);
                        samples
                            .iter()
                            .find(|(at, offsets)| {
                                *at > fault && offsets.get(p).is_some_and(|&now| now > was)
                            })
                            .map_or(Duration::ZERO, |(at, _)| *at - fault)
                    })
                    .max()
                    .unwrap_or(Duration::ZERO)
            })
            .max()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for every distinct event, then checks the proof and prints the line.
pub async fn prove(
    name: &str,
    db: &TestDb,
    topic: &TestTopic,
    stream: &Stream,
    sent: u64,
    recovery: &Recovery,
    consumers: Vec<ConsumerProcess>,
) {
    let distinct = stream.ids.len() as i64;
    db.wait_for_events(distinct, Duration::from_secs(600)).await;
    // Whatever redelivered tail remains is read and found stored already.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovery = recovery
        .longest()
        .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    for consumer in &consumers {
        consumer.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let client = db.client().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM activities", &[])
        .await
        .expect("count rows")
        .get(0);
    let stored: HashSet<Uuid> = client
        .query("SELECT event_id FROM activity_event_ids", &[])
        .await
        .expect("read ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost = stream.ids.difference(&stored).count();
    let foreign = stored.difference(&stream.ids).count();
    let letters = activity_consumer::dlq::read_letters(
        &topic.brokers,
        &topic.dlq(),
        Duration::from_secs(3),
        usize::MAX,
    )
    .await
    .expect("read the dead-letter topic");
    let line = format!(
        "{name:<42} sent {sent:>7}  distinct {distinct:>7}  stored {:>7}  duplicates stored {}  lost {lost}  dlq {:>5}  recovery {recovery}",
        stored.len(),
        rows - stored.len() as i64,
        letters.len(),
    );
    println!("{line}");
    let report = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(report)
    {
        let _ = writeln!(file, "{line}");
    }

    assert_eq!(lost, 0, "{name}: events lost");
    assert_eq!(foreign, 0, "{name}: ids stored that were never sent");
    assert_eq!(rows, stored.len() as i64, "{name}: an event stored twice");
    let mut expected: HashMap<Vec<u8>, usize> = HashMap::new();
    for message in &stream.poison {
        *expected.entry(message.clone()).or_default() += 1;
    }
    let mut dead: HashMap<Vec<u8>, usize> = HashMap::new();
    for letter in &letters {
        *dead
            .entry(letter.payload.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        dead.keys().collect::<HashSet<_>>(),
        expected.keys().collect::<HashSet<_>>(),
        "{name}: the dead-letter topic holds exactly the invalid messages"
    );
    // A crash between a letter's acknowledgement and the commit sends it
    // again (at least once, like every Kafka write); none may be missing.
    for (message, copies) in &expected {
        assert!(
            dead.get(message).copied().unwrap_or(0) >= *copies,
            "{name}: every invalid message dead-lettered"
        );
    }
}

//! The dead-letter topic, `<topic>.dlq`.
//!
//! A dead letter keeps the original key and value bytes and says why in the
//! headers `error`, `source_topic`, `source_partition`, `source_offset`. A
//! letter counts as sent only when the broker acknowledged it; until then the
//! consumer does not commit past its source offset.
//!
//! [`read_letters`] and [`replay`] are `activity dlq inspect` and `replay`.

use std::time::Duration;

use activity_core::kafka::QuietContext;
use activity_core::kafka::{client_config, dlq_headers, dlq_topic};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::retry::{Aborted, Backoff};

/// One message that will not be stored, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
    pub partition: i32,
    pub offset: i64,
}

/// The producer for the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer<QuietContext>,
    source_topic: String,
    topic: String,
    health: Health,
}

impl DeadLetters {
    pub fn new(
        brokers: &str,
        source_topic: &str,
        health: Health,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create_with_context(QuietContext::default())?;
        Ok(Self {
            producer,
            source_topic: source_topic.to_owned(),
            topic: dlq_topic(source_topic),
            health,
        })
    }

    /// Sends one letter and waits for the broker's acknowledgement, retrying
    /// with backoff until it is acknowledged or `abort` fires.
    pub async fn send(
        &self,
        letter: &DeadLetter,
        abort: &CancellationToken,
    ) -> Result<(), Aborted> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let mut backoff = Backoff::default();
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: dlq_headers::ERROR,
                    value: Some(letter.error.as_bytes()),
                })
                .insert(Header {
                    key: dlq_headers::SOURCE_TOPIC,
                    value: Some(self.source_topic.as_bytes()),
                })
                .insert(Header {
                    key: dlq_headers::SOURCE_PARTITION,
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: dlq_headers::SOURCE_OFFSET,
                    value: Some(offset.as_bytes()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload.as_slice());
            }
            let sent = tokio::select! {
                _ = abort.cancelled() => return Err(Aborted),
                sent = self.producer.send(record, Timeout::After(Duration::from_secs(30))) => sent,
            };
            match sent {
                Ok(_) => {
                    self.health.dead_letters_ok();
                    tracing::warn!(
                        partition = letter.partition,
                        offset = letter.offset,
                        error = %letter.error,
                        "event dead-lettered"
                    );
                    return Ok(());
                }
                Err((error, _)) => {
                    self.health.dead_letters_failed(&error);
                    tracing::error!(%error, attempt = backoff.attempts(), "dead-letter topic refused a message; retrying");
                    backoff.wait(abort).await?;
                }
            }
        }
    }
}

/// A message read back from the dead-letter topic (`activity dlq inspect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Where it is in the dead-letter topic.
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The headers the consumer wrote (empty when a header is missing).
    pub error: String,
    pub source_topic: String,
    pub source_partition: String,
    pub source_offset: String,
}

/// Reads every letter in `dlq` from the beginning, in partition and offset
/// order, until none has arrived for `idle` or `limit` were read. It joins
/// no consumer group and commits nothing: reading changes nothing.
pub async fn read_letters(
    brokers: &str,
    dlq: &str,
    idle: Duration,
    limit: usize,
) -> Result<Vec<Letter>, rdkafka::error::KafkaError> {
    let brokers = brokers.to_owned();
    let dlq = dlq.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &dlq, idle, limit))
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)?
}

fn read_blocking(
    brokers: &str,
    dlq: &str,
    idle: Duration,
    limit: usize,
) -> Result<Vec<Letter>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let reader: BaseConsumer = client_config(brokers)
        // Required by librdkafka for fetching, never joined (assign, not subscribe).
        .set("group.id", "activity-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let metadata = reader.fetch_metadata(Some(dlq), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            assignment.add_partition_offset(dlq, partition.id(), Offset::Beginning)?;
        }
    }
    reader.assign(&assignment)?;
    let mut letters = Vec::new();
    let mut quiet_since = std::time::Instant::now();
    while letters.len() < limit && quiet_since.elapsed() < idle {
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        quiet_since = std::time::Instant::now();
        let header = |name: &str| {
            message
                .headers()
                .and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_default()
        };
        letters.push(Letter {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            error: header(dlq_headers::ERROR),
            source_topic: header(dlq_headers::SOURCE_TOPIC),
            source_partition: header(dlq_headers::SOURCE_PARTITION),
            source_offset: header(dlq_headers::SOURCE_OFFSET),
        });
    }
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

/// What `activity dlq replay` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Letters that now decode and validate, produced to the events topic
    /// again (acknowledged by the broker), with their original key and bytes.
    pub sent: Vec<(i32, i64)>,
    /// Letters that still do not, with today's reason.
    pub still_bad: Vec<(i32, i64, String)>,
}

/// Sends back to `topic` every letter that the current rules accept (after a
/// fix, a new schema file, a relaxed rule); the consumer stores each event
/// once whatever was sent twice (`event_id` deduplication), so replaying
/// again is harmless. With `dry_run` nothing is sent.
pub async fn replay(
    brokers: &str,
    topic: &str,
    letters: &[Letter],
    dry_run: bool,
) -> Result<Replayed, ReplayError> {
    let codec = activity_core::avro::AvroCodec::new().map_err(|e| ReplayError(e.to_string()))?;
    let producer: FutureProducer = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .map_err(|e| ReplayError(e.to_string()))?;
    let now = chrono::Utc::now();
    let mut replayed = Replayed::default();
    for letter in letters {
        let Some(payload) = &letter.payload else {
            replayed.still_bad.push((
                letter.partition,
                letter.offset,
                "message has no value".into(),
            ));
            continue;
        };
        if let Err(error) = codec.decode_valid(payload, now) {
            replayed
                .still_bad
                .push((letter.partition, letter.offset, error.to_string()));
            continue;
        }
        if !dry_run {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).payload(payload.as_slice());
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            producer
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
                .map_err(|(error, _)| {
                    ReplayError(format!(
                        "the broker did not take letter {}@{}: {error}",
                        letter.partition, letter.offset
                    ))
                })?;
        }
        replayed.sent.push((letter.partition, letter.offset));
    }
    Ok(replayed)
}

/// Replay stopped: the codec or producer could not be set up, or the broker
/// refused a letter (the ones before it were sent; running again is safe).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplayError(String);

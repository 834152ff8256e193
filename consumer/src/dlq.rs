//! The dead-letter topic, `<topic>.dlq`.
//!
//! A dead letter keeps the original key and value bytes and says why in the
//! headers `error`, `source_topic`, `source_partition`, `source_offset`. A
//! letter counts as sent only when the broker acknowledged it; until then the
//! consumer does not commit past its source offset.

use std::time::Duration;

use activity_core::kafka::{client_config, dlq_headers, dlq_topic};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

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
    producer: FutureProducer,
    source_topic: String,
    topic: String,
}

impl DeadLetters {
    pub fn new(brokers: &str, source_topic: &str) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            producer,
            source_topic: source_topic.to_owned(),
            topic: dlq_topic(source_topic),
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
                    tracing::warn!(
                        partition = letter.partition,
                        offset = letter.offset,
                        error = %letter.error,
                        "event dead-lettered"
                    );
                    return Ok(());
                }
                Err((error, _)) => {
                    tracing::error!(%error, attempt = backoff.attempts(), "dead-letter topic refused a message; retrying");
                    backoff.wait(abort).await?;
                }
            }
        }
    }
}

//! What every Kafka client of the project agrees on: the key, the topics,
//! the base client configuration.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;
use crate::event::CommunityId;

/// The message key: `community_id` as lowercase hyphenated UUID text, so all
/// of a tenant's events share a partition and stay in order. System events
/// (no community) have no key and are spread over the partitions.
pub fn partition_key(community_id: Option<CommunityId>) -> Option<String> {
    community_id.map(|id| id.to_string())
}

/// `<topic>.dlq`: where undecodable and invalid events go, with the reason.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Header names on dead-lettered messages.
pub mod dlq_headers {
    pub const ERROR: &str = "error";
    pub const SOURCE_TOPIC: &str = "source_topic";
    pub const SOURCE_PARTITION: &str = "source_partition";
    pub const SOURCE_OFFSET: &str = "source_offset";
}

/// Base configuration for every client of the project's brokers.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "activity-tracker");
    config
}

/// From librdkafka's statistics, `Some(why)` when none of the brokers a
/// client knows is up (the consumer's and the collector's `/readyz`) (those
/// configured or learned from metadata; not its internal and logical
/// pseudo-brokers, such as the group coordinator's handle).
pub fn no_broker_up(statistics: &rdkafka::Statistics) -> Option<String> {
    let brokers: Vec<&rdkafka::statistics::Broker> = statistics
        .brokers
        .values()
        .filter(|broker| matches!(broker.source.as_str(), "configured" | "learned"))
        .collect();
    if brokers.iter().any(|broker| broker.state == "UP") {
        return None;
    }
    let mut names: Vec<&str> = brokers.iter().map(|broker| broker.name.as_str()).collect();
    names.sort_unstable();
    Some(format!("no broker reachable ({})", names.join(", ")))
}

/// Asks the brokers whether a topic exists, with a client that never
/// creates one by asking (a consumer's metadata requests do not, whatever
/// the broker's `auto.create.topics.enable`). For a producer's `/readyz`:
/// every event sent to a missing topic would wait out its delivery timeout.
pub struct TopicProbe {
    client: rdkafka::consumer::BaseConsumer<QuietContext>,
    topic: String,
}

impl TopicProbe {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            client: client_config(brokers)
                .set("allow.auto.create.topics", "false")
                .create_with_context(QuietContext::default())?,
            topic: topic.to_owned(),
        })
    }

    /// `Some(why)` when the topic does not exist; `None` when it does or
    /// when no broker answered within `timeout` (that is reported by the
    /// client's own statistics, see [`no_broker_up`]). Blocks.
    pub fn missing(&self, timeout: Duration) -> Option<String> {
        use rdkafka::consumer::Consumer as _;
        let metadata = self
            .client
            .fetch_metadata(Some(&self.topic), timeout)
            .ok()?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        (!exists).then(|| {
            format!(
                "topic {} does not exist (`activity migrate` creates it)",
                self.topic
            )
        })
    }
}

/// Creates the events topic and its dead-letter topic if they are missing.
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(&settings.brokers).create()?;
    let dlq = dlq_topic(&settings.topic);
    let topics = [
        NewTopic::new(
            &settings.topic,
            settings.partitions,
            TopicReplication::Fixed(settings.replication_factor),
        ),
        NewTopic::new(
            &dlq,
            settings.partitions.min(3),
            TopicReplication::Fixed(settings.replication_factor),
        ),
    ];
    // Both bounded: with no broker answering, the request's own timeout
    // (librdkafka's socket timeout, 60 s) had set how long this waited.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn key_is_the_lowercase_community_id() {
        let id = Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        let key = partition_key(Some(CommunityId::parse(id).unwrap()));
        assert_eq!(key.as_deref(), Some("6f9619ff-8b86-d011-b42d-00c04fc964ff"));
        assert_eq!(partition_key(None), None);
        assert_eq!(dlq_topic("activities"), "activities.dlq");
    }
}

/// Logs librdkafka's errors without flooding: each kind of error (its
/// librdkafka code: "Global error: AllBrokersDown" and "Message consumption
/// error: AllBrokersDown" are one) is logged when first seen, then at most
/// once every [`ErrorLog::EVERY`] with how often it came meanwhile
/// (librdkafka reports an unreachable broker every few milliseconds: 550
/// lines in 12 s before).
#[derive(Default)]
pub struct ErrorLog {
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

impl ErrorLog {
    pub const EVERY: Duration = Duration::from_secs(30);

    pub fn log(&self, error: &KafkaError, reason: &str) {
        let kind = error
            .rdkafka_error_code()
            .map_or_else(|| error.to_string(), |code| format!("{code:?}"));
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 64 && !seen.contains_key(&kind) {
            seen.clear();
        }
        match seen.get_mut(&kind) {
            Some((at, repeats)) if now.duration_since(*at) < Self::EVERY => *repeats += 1,
            Some((at, repeats)) => {
                tracing::error!(%error, reason, repeated = *repeats, "kafka error (repeated)");
                (*at, *repeats) = (now, 0);
            }
            None => {
                tracing::error!(%error, reason, "kafka error");
                seen.insert(kind, (now, 0));
            }
        }
    }
}

/// A client context whose only work is [`ErrorLog`]: for the clients that
/// need no other (the dead-letter producer, admin clients, [`TopicProbe`]).
#[derive(Default)]
pub struct QuietContext {
    errors: ErrorLog,
}

impl rdkafka::ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.log(&error, reason);
    }
}

/// [`TopicProbe`] only asks for metadata: it never joins a group.
impl rdkafka::consumer::ConsumerContext for QuietContext {}

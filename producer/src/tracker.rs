//! `Tracker`: the non-blocking `trackEvent` of the original request.
//!
//! # Contract
//!
//! - [`Tracker::track_event`] validates, sanitizes and encodes the event,
//!   then enqueues it for the broker and returns its `event_id` without
//!   waiting for the network. It never blocks and never allocates beyond the
//!   bounded queue.
//! - The queue holds at most `producer.queue_capacity` events. When it is
//!   full, `track_event` returns [`TrackError::QueueFull`] at once: nothing
//!   is dropped silently, and the caller chooses to retry, shed or slow down.
//! - Delivery is idempotent (`enable.idempotence=true`, `acks=all`): the
//!   broker stores each message once and in order per partition, retrying
//!   until `producer.delivery_timeout_ms`. A message that still fails is
//!   counted in [`DeliveryStats::failed`] and logged with its `event_id`.
//! - [`Tracker::flush`] waits until every queued event is delivered or has
//!   failed; call it before the process exits.
//! - [`Tracker::send_event`] is the acknowledged variant (the HTTP collector
//!   answers only once the broker has its events): it enqueues the same way,
//!   then resolves when the broker acknowledged the event or it failed.
//! - An idempotent producer that hits a fatal error (librdkafka's
//!   `rd_kafka_fatal_error`), or whose identity the broker refuses (fenced,
//!   unknown producer id, out-of-order sequence: seen after its messages
//!   timed out), fails every later message. The tracker then replaces it
//!   with a new one on the next event (its events in flight fail and are
//!   counted as failed), and counts `producer_restarts_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use activity_core::avro::{AvroCodec, EncodeError, SchemaError};
use activity_core::config::Settings;
use activity_core::kafka::{client_config, partition_key};
use activity_core::{ActivityEvent, EventId, NewEvent, ValidationError};
use chrono::Utc;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    #[error("the producer queue is full ({capacity} events waiting for the broker); retry later")]
    QueueFull { capacity: usize },
    #[error("{0}")]
    Encode(#[from] EncodeError),
    #[error("avro schemas: {0}")]
    Schema(#[from] SchemaError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("flush timed out with {0} events still waiting for the broker")]
    FlushTimeout(i32),
    #[error("the broker did not take the event: {0}")]
    Delivery(KafkaError),
}

/// Where the delivery report of an acknowledged send goes.
type Acknowledgement = tokio::sync::oneshot::Sender<Result<(), KafkaError>>;

/// Counts since the tracker was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Events accepted by `track_event`.
    pub enqueued: u64,
    /// Events the broker acknowledged.
    pub delivered: u64,
    /// Events that failed after every retry.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Receives delivery reports on librdkafka's background thread.
struct DeliveryContext {
    counters: Arc<Counters>,
    /// The broker refused this producer's identity (fenced it, or lost its
    /// sequence): every later message would fail the same way.
    fenced: std::sync::atomic::AtomicBool,
    /// Why no broker can be reached, as of the latest statistics.
    unreachable: Mutex<Option<String>>,
    errors: activity_core::kafka::ErrorLog,
}

impl ClientContext for DeliveryContext {
    /// librdkafka's errors, a repeated one logged every 30 s with its count.
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.log(&error, reason);
    }

    /// librdkafka's statistics (every 10 s): events waiting in the
    /// producer's queue for the broker, as `producer_queue_messages`.
    ///
    /// And whether any broker is up ([`Tracker::unreachable`]).
    fn stats(&self, statistics: rdkafka::Statistics) {
        metrics::gauge!("producer_queue_messages").set(statistics.msg_cnt as f64);
        *self.unreachable.lock().unwrap_or_else(|e| e.into_inner()) =
            activity_core::kafka::no_broker_up(&statistics);
    }
}

/// What a delivery report needs of its event: its id (for the log) and
/// whom to tell.
struct Pending {
    event_id: EventId,
    acknowledgement: Option<Acknowledgement>,
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        let Pending {
            event_id,
            acknowledgement,
        } = *pending;
        if let Some(acknowledgement) = acknowledgement {
            // The receiver may be gone (the request timed out): nothing to tell.
            let _ = acknowledgement.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
        }
        match result {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("producer_events_delivered_total").increment(1);
            }
            Err((error, message)) => {
                if matches!(
                    error.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::UnknownProducerId
                            | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    )
                ) {
                    self.fenced.store(true, Ordering::Relaxed);
                }
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("producer_delivery_failures_total").increment(1);
                let key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                tracing::error!(%error, %event_id, community_id = key, partition = message.partition(), "event delivery failed");
            }
        }
    }
}

/// Publishes activity events to Kafka. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Tracker {
    /// The current producer; replaced after a fatal error or a fence
    /// ([`Tracker::producer`]).
    producer: Arc<RwLock<Arc<ThreadedProducer<DeliveryContext>>>>,
    config: Arc<ClientConfig>,
    codec: Arc<AvroCodec>,
    counters: Arc<Counters>,
    topic: Arc<str>,
    capacity: usize,
}

impl Tracker {
    /// Builds a tracker for the configured brokers and topic.
    pub fn new(settings: &Settings) -> Result<Self, TrackError> {
        let counters = Arc::new(Counters::default());
        let mut config = client_config(&settings.kafka.brokers);
        config
            .set("enable.idempotence", "true")
            // Queue depth for /metrics (DeliveryContext::stats).
            .set("statistics.interval.ms", "10000")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", settings.producer.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                settings.producer.queue_capacity.to_string(),
            )
            .set(
                "message.timeout.ms",
                settings.producer.delivery_timeout_ms.to_string(),
            )
            .set(
                "batch.num.messages",
                settings.producer.batch_messages.max(1).to_string(),
            );
        let producer = create_producer(&config, &counters)?;
        metrics::counter!("producer_restarts_total").increment(0);
        metrics::counter!("producer_delivery_failures_total").increment(0);
        Ok(Self {
            producer: Arc::new(RwLock::new(Arc::new(producer))),
            config: Arc::new(config),
            codec: Arc::new(AvroCodec::new()?),
            counters,
            topic: settings.kafka.topic.as_str().into(),
            capacity: settings.producer.queue_capacity,
        })
    }

    /// The producer in use now.
    fn current(&self) -> Arc<ThreadedProducer<DeliveryContext>> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The producer to send with: the current one, or a new one in its
    /// place when it has hit a fatal error or been fenced.
    fn producer(&self) -> Result<Arc<ThreadedProducer<DeliveryContext>>, TrackError> {
        let current = self.current();
        let problem = current.client().fatal_error().or_else(|| {
            current.context().fenced.load(Ordering::Relaxed).then(|| {
                (
                    RDKafkaErrorCode::ProducerFenced,
                    "the broker fenced the producer".to_owned(),
                )
            })
        });
        let Some((code, reason)) = problem else {
            return Ok(current);
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, &current) {
            // Another caller replaced it already.
            return Ok(slot.clone());
        }
        tracing::error!(?code, %reason, "the Kafka producer can send no more: replacing it with a new one");
        let fresh = Arc::new(create_producer(&self.config, &self.counters)?);
        let failed = std::mem::replace(&mut *slot, fresh.clone());
        drop(slot);
        metrics::counter!("producer_restarts_total").increment(1);
        // Dropping it purges its queue (each event's delivery report says it
        // failed) and may wait for librdkafka: not on the caller's thread.
        std::thread::spawn(move || drop(failed));
        Ok(fresh)
    }

    /// Why no broker can be reached (none is up), as of librdkafka's latest
    /// statistics (every 10 s); `None` while one is.
    pub fn unreachable(&self) -> Option<String> {
        self.current()
            .context()
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Validates, encodes and enqueues one event; returns its `event_id`
    /// (generated if the event had none). Does not wait for the broker.
    pub fn track_event(&self, event: NewEvent) -> Result<EventId, TrackError> {
        self.enqueue(event.validate(Utc::now())?, None)
    }

    /// Validates, encodes and enqueues one event like [`Tracker::track_event`]
    /// (an invalid event or a full queue is an error at once), then waits for
    /// the broker: resolves to the `event_id` once acknowledged, or
    /// [`TrackError::Delivery`] after `producer.delivery_timeout_ms`.
    pub fn send_event(
        &self,
        event: NewEvent,
    ) -> Result<impl std::future::Future<Output = Result<EventId, TrackError>>, TrackError> {
        self.send_valid(event.validate(Utc::now())?)
    }

    /// [`Tracker::send_event`] for an event already validated (the
    /// collector validates before it counts an event towards spam).
    pub fn send_valid(
        &self,
        event: ActivityEvent,
    ) -> Result<impl std::future::Future<Output = Result<EventId, TrackError>>, TrackError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let event_id = self.enqueue(event, Some(sender))?;
        Ok(async move {
            match receiver.await {
                Ok(Ok(())) => Ok(event_id),
                Ok(Err(error)) => Err(TrackError::Delivery(error)),
                Err(_) => Err(TrackError::Delivery(KafkaError::Canceled)),
            }
        })
    }

    fn enqueue(
        &self,
        event: ActivityEvent,
        acknowledgement: Option<Acknowledgement>,
    ) -> Result<EventId, TrackError> {
        let payload = self.codec.encode(&event)?;
        let key = partition_key(event.community_id());
        let pending = Box::new(Pending {
            event_id: event.event_id(),
            acknowledgement,
        });
        let mut record: BaseRecord<'_, str, [u8], Box<Pending>> =
            BaseRecord::with_opaque_to(&self.topic, pending).payload(&payload);
        if let Some(key) = &key {
            record = record.key(key.as_str());
        }
        match self.producer()?.send(record) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(event.event_id())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(TrackError::QueueFull {
                    capacity: self.capacity,
                })
            }
            Err((error, _)) => Err(error.into()),
        }
    }

    /// Waits until every enqueued event is delivered or failed (on a
    /// blocking thread: librdkafka's flush blocks).
    pub async fn flush(&self, timeout: Duration) -> Result<DeliveryStats, TrackError> {
        let producer = self.current();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled));
        match flushed {
            Ok(()) => Ok(self.stats()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                Err(TrackError::FlushTimeout(self.queued()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Events waiting for the broker right now.
    pub fn queued(&self) -> i32 {
        self.current().in_flight_count()
    }

    pub fn stats(&self) -> DeliveryStats {
        DeliveryStats {
            enqueued: self.counters.enqueued.load(Ordering::Relaxed),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

/// One idempotent producer of `config`, counting into `counters`.
fn create_producer(
    config: &ClientConfig,
    counters: &Arc<Counters>,
) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
    config.create_with_context(DeliveryContext {
        counters: counters.clone(),
        fenced: std::sync::atomic::AtomicBool::new(false),
        unreachable: Mutex::new(None),
        errors: activity_core::kafka::ErrorLog::default(),
    })
}

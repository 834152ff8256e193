//! The consumer group member.
//!
//! # Delivery contract
//!
//! At-least-once from Kafka, exactly-once into PostgreSQL:
//!
//! 1. An offset is committed only after every message before it in its
//!    partition is stored in a committed PostgreSQL transaction, or was
//!    acknowledged by the dead-letter topic. Offsets are *stored* in librdkafka
//!    (`enable.auto.offset.store=false`) only then, and librdkafka's
//!    auto-commit commits stored offsets only.
//! 2. A batch that fails is retried in place, with capped backoff, until it
//!    is stored or the process stops. Up to `consumer.max_in_flight` batches
//!    are written at once, but their offsets are stored strictly in the order
//!    the batches were taken, so no later commit can pass a batch that is
//!    not stored yet.
//! 3. While a batch waits for the database, the consumer stops receiving
//!    once the next batch is full (librdkafka's prefetch is bounded), and
//!    after a third of `max.poll.interval.ms` (at most 30 s) pauses its partitions and keeps polling, so it stays in
//!    its group however long the outage lasts, and memory stays bounded.
//! 4. Redelivery is harmless: each `event_id` is stored once, whatever the
//!    offset, partition or timestamp of its copies (see `store`).
//! 5. When partitions are revoked, the messages held for them are dropped
//!    uncommitted (their new owner reads them again) and offsets are stored
//!    only for partitions still assigned under the same assignment.
//! 6. On shutdown it stops polling, finishes the batch in hand within the
//!    grace period, commits what is stored, and leaves the group.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use activity_core::avro::AvroCodec;
use activity_core::config::{ConsumerSettings, Settings};
use activity_core::kafka::client_config;
use chrono::Utc;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dlq::DeadLetters;
use crate::flush::{flush, Flushed, Received};
use crate::health::Health;
use crate::retry::Aborted;
use crate::store::Store;

/// How long a full batch may wait for the one in flight before the consumer
/// pauses its partitions and polls only to stay in the group: a third of
/// `max.poll.interval.ms`, at most 30 s. Until then it simply stops
/// receiving (librdkafka's prefetch is bounded). Long enough that a slow
/// moment (a lock, a checkpoint, compaction) never pauses; short enough
/// that a member waiting on the database always polls in time.
fn stall_after(settings: &ConsumerSettings) -> Duration {
    (settings.max_poll_interval() / 3).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("avro schemas: {0}")]
    Schema(#[from] activity_core::avro::SchemaError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("a flush task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a consumer did in its lifetime.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub batches: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

impl Totals {
    fn register() {
        for name in [
            "consumer_batches_total",
            "consumer_events_stored_total",
            "consumer_events_duplicate_total",
            "consumer_events_dead_lettered_total",
            "consumer_offsets_skipped_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        for kind in crate::store::StoreError::KINDS {
            metrics::counter!("consumer_store_errors_total", "kind" => kind).increment(0);
        }
    }

    fn add(&mut self, flushed: &Flushed) {
        let duplicates = flushed.stored.duplicates + flushed.duplicates_in_batch;
        self.batches += 1;
        self.stored += flushed.stored.inserted;
        self.duplicates += duplicates;
        self.dead_lettered += flushed.dead_lettered;
        metrics::counter!("consumer_batches_total").increment(1);
        metrics::counter!("consumer_events_stored_total").increment(flushed.stored.inserted);
        metrics::counter!("consumer_events_duplicate_total").increment(duplicates);
        metrics::counter!("consumer_events_dead_lettered_total").increment(flushed.dead_lettered);
    }
}

/// Messages of a partition this member holds that are not stored yet:
/// librdkafka's lag (the end of the log less the committed offset), and
/// while the group has committed nothing there (a new group, or one whose
/// consumers have never stored a batch), the whole log from its start,
/// which `auto.offset.reset=earliest` reads. librdkafka says -1 then, which
/// read as 0 hid a consumer that had stored nothing since it started.
fn unstored(partition: &rdkafka::statistics::Partition) -> i64 {
    if partition.consumer_lag >= 0 {
        return partition.consumer_lag;
    }
    let end = if partition.ls_offset >= 0 {
        partition.ls_offset
    } else {
        partition.hi_offset
    };
    if partition.committed_offset < 0 && end >= 0 && partition.lo_offset >= 0 {
        (end - partition.lo_offset).max(0)
    } else {
        0
    }
}

/// Assignment generations: bumped on every assign, removed on revoke, so a
/// message can be checked against the assignment it arrived under.
#[derive(Default)]
struct GroupContext {
    generations: Mutex<HashMap<i32, u64>>,
    next: Mutex<u64>,
    health: Health,
    errors: activity_core::kafka::ErrorLog,
}

impl GroupContext {
    fn current(&self, partition: i32) -> Option<u64> {
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .copied()
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's errors, a repeated one logged every 30 s with its count
    /// (an unreachable broker is reported every few milliseconds).
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.log(&error, reason);
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): the lag of
    /// each partition this member owns, the broker's high watermark minus
    /// the group's committed offset, as `consumer_lag_messages{partition}`.
    /// Partitions it does not own (any more) read 0, so a sum over members
    /// counts each partition once.
    ///
    /// A partition no member owns (after a bad rebalance) has no lag on any
    /// member, so each also says how many partitions the topic has and how
    /// many it owns (`consumer_topic_partitions`,
    /// `consumer_partitions_assigned`): summed over the group, fewer owned
    /// than there are is the alert `ActivityPartitionsUnowned`.
    ///
    /// And whether any broker is up: with none (a wrong `KAFKA_BROKERS`, the
    /// cluster down), `/readyz` says so instead of answering ready while
    /// nothing can be read.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health
            .kafka_state(activity_core::kafka::no_broker_up(&statistics));
        for topic in statistics.topics.values() {
            let partitions = topic.partitions.values().filter(|p| p.partition >= 0);
            let (known, owned) = partitions.fold((0u32, 0u32), |(known, owned), p| {
                (known + 1, owned + u32::from(p.desired))
            });
            metrics::gauge!("consumer_topic_partitions").set(f64::from(known));
            metrics::gauge!("consumer_partitions_assigned").set(f64::from(owned));
            for partition in topic.partitions.values() {
                if partition.partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let lag = if partition.desired {
                    unstored(partition) as f64
                } else {
                    0.0
                };
                metrics::gauge!("consumer_lag_messages", "partition" => partition.partition.to_string())
                    .set(lag);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            for element in partitions.elements() {
                generations.remove(&element.partition());
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
                for element in partitions.elements() {
                    *next += 1;
                    generations.insert(element.partition(), *next);
                }
                let list: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?list, "partitions assigned");
                if !list.is_empty() {
                    self.health.topic_state(None);
                }
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(partitions = offsets.count(), "offsets committed"),
            // Nothing stored since the last commit: not an error.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "offset commit failed; the next commit covers it"),
        }
    }
}

/// One member of the consumer group.
pub struct Consumer {
    consumer: StreamConsumer<GroupContext>,
    topic: String,
    store: Store,
    dlq: DeadLetters,
    codec: AvroCodec,
    settings: ConsumerSettings,
    health: Health,
    offsets: std::sync::Mutex<crate::gaps::OffsetTracker>,
}

impl Consumer {
    /// Connects (lazily) to the brokers and the database, and subscribes.
    pub fn build(settings: &Settings, store: Store) -> Result<Self, ConsumerError> {
        let mut consumer = client_config(&settings.kafka.brokers);
        consumer
            .set("group.id", &settings.consumer.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.consumer.session_timeout_ms.to_string(),
            )
            .set(
                "max.poll.interval.ms",
                settings.consumer.max_poll_interval_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (settings.consumer.session_timeout_ms / 3)
                    .max(100)
                    .to_string(),
            )
            // Lag per partition for /metrics (GroupContext::stats).
            .set("statistics.interval.ms", "10000")
            // Bounds the prefetch buffer, and so the consumer's memory.
            .set("queued.max.messages.kbytes", "16384");
        let health = Health::default();
        let consumer: StreamConsumer<GroupContext> =
            consumer.create_with_context(GroupContext {
                health: health.clone(),
                ..GroupContext::default()
            })?;
        consumer.subscribe(&[&settings.kafka.topic])?;
        Ok(Self {
            consumer,
            topic: settings.kafka.topic.clone(),
            store,
            dlq: DeadLetters::new(
                &settings.kafka.brokers,
                &settings.kafka.topic,
                health.clone(),
            )?,
            codec: AvroCodec::new()?,
            settings: settings.consumer.clone(),
            health,
            offsets: std::sync::Mutex::default(),
        })
    }

    /// What `/readyz` reports for this consumer.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in
    /// hand, commits and leaves the group.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<Totals, ConsumerError> {
        // Every counter is exported from the start, at 0: a rate over a
        // series that does not exist is no series, and an alert comparing
        // it (ActivityIngestionFailing: errors and nothing stored) stayed
        // silent for a consumer that had not stored a batch since it started.
        Totals::register();
        let watching = tokio::spawn(self.store.clone().keep_watched(
            self.health.clone(),
            Duration::from_secs(10),
            shutdown.clone(),
        ));
        let batch_size = self.settings.batch_size;
        let linger = self.settings.batch_linger();
        let stall = stall_after(&self.settings);
        // Cancelled only when the grace period after `shutdown` runs out.
        let abort = CancellationToken::new();
        let mut totals = Totals::default();
        let mut pending: Vec<Received> = Vec::with_capacity(batch_size);
        let mut oldest: Option<Instant> = None;
        // Batches being stored, oldest first. Several may be in the database
        // at once, but their offsets are stored strictly in this order, so a
        // batch that is still retrying holds back every later one.
        let max_in_flight = self.settings.max_in_flight.max(1);
        let mut in_flight: VecDeque<(JoinHandle<Result<Flushed, Aborted>>, Instant)> =
            VecDeque::with_capacity(max_in_flight);
        let mut paused: Option<TopicPartitionList> = None;

        loop {
            let full = pending.len() >= batch_size;
            let lingered = oldest.is_some_and(|t| t.elapsed() >= linger);
            let room = in_flight.len() < max_in_flight;
            if room && !pending.is_empty() && (full || lingered) {
                let batch = self.take_batch(&mut pending, batch_size);
                oldest = (!pending.is_empty()).then(Instant::now);
                in_flight.push_back((self.spawn_flush(batch, &abort), Instant::now()));
                continue;
            }
            let stalled = full
                && !room
                && in_flight
                    .front()
                    .is_some_and(|(_, since)| since.elapsed() >= stall);
            if stalled && paused.is_none() {
                paused = self.pause();
            }
            let receive = !full || paused.is_some();
            let linger_at = oldest.map(|t| t + linger);

            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                joined = async {
                    match in_flight.front_mut() {
                        Some((handle, _)) => handle.await,
                        None => std::future::pending().await,
                    }
                }, if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    match joined? {
                        Ok(flushed) => {
                            self.store_offsets(&flushed);
                            totals.add(&flushed);
                        }
                        Err(Aborted) => break,
                    }
                    if let Some(partitions) = paused.take() {
                        self.resume(&partitions);
                    }
                }
                message = self.consumer.recv(), if receive => {
                    if let Some(received) = self.decode(message) {
                        oldest.get_or_insert_with(Instant::now);
                        pending.push(received);
                    }
                }
                _ = sleep_until(linger_at), if linger_at.is_some() && room => {}
                _ = tokio::time::sleep(stall), if full && !room && paused.is_none() => {}
            }
        }

        let stopped = self.shut_down(pending, in_flight, abort, totals).await;
        watching.abort();
        stopped
    }

    async fn shut_down(
        &self,
        mut pending: Vec<Received>,
        in_flight: VecDeque<(JoinHandle<Result<Flushed, Aborted>>, Instant)>,
        abort: CancellationToken,
        mut totals: Totals,
    ) -> Result<Totals, ConsumerError> {
        self.health.set_stopping();
        let grace = self.settings.shutdown_grace();
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            held = pending.len(),
            "stopping: finishing the batch in hand"
        );
        let deadline = Instant::now() + grace;
        let abort_at_deadline = {
            let abort = abort.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                abort.cancel();
            })
        };
        // In order: once one is abandoned, no later batch's offsets are stored.
        let mut abandoned = false;
        for (handle, _) in in_flight {
            match handle.await? {
                Ok(flushed) if !abandoned => {
                    self.store_offsets(&flushed);
                    totals.add(&flushed);
                }
                _ => abandoned = true,
            }
        }
        // What was already received is in hand too: store it if time allows.
        while !abandoned && !pending.is_empty() && !abort.is_cancelled() {
            let batch = self.take_batch(&mut pending, self.settings.batch_size);
            match self.spawn_flush(batch, &abort).await? {
                Ok(flushed) => {
                    self.store_offsets(&flushed);
                    totals.add(&flushed);
                }
                Err(Aborted) => break,
            }
        }
        abort_at_deadline.abort();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "final commit failed; uncommitted events will be read again and deduplicated")
            }
        }
        tracing::info!(
            stored = totals.stored,
            duplicates = totals.duplicates,
            dead_lettered = totals.dead_lettered,
            "consumer stopped"
        );
        // Dropping the consumer closes it: it leaves the group at once.
        Ok(totals)
    }

    /// Takes up to `size` messages, dropping those whose partition was
    /// revoked (or revoked and re-assigned) since they arrived.
    fn take_batch(&self, pending: &mut Vec<Received>, size: usize) -> Vec<Received> {
        let rest = pending.split_off(size.min(pending.len()));
        let batch = std::mem::replace(pending, rest);
        let context = self.consumer.context();
        let before = batch.len();
        let batch: Vec<Received> = batch
            .into_iter()
            .filter(|m| context.current(m.partition) == Some(m.generation))
            .collect();
        if batch.len() < before {
            tracing::info!(
                dropped = before - batch.len(),
                "dropped messages of revoked partitions"
            );
        }
        batch
    }

    fn spawn_flush(
        &self,
        batch: Vec<Received>,
        abort: &CancellationToken,
    ) -> JoinHandle<Result<Flushed, Aborted>> {
        let store = self.store.clone();
        let dlq = self.dlq.clone();
        let health = self.health.clone();
        let abort = abort.clone();
        let topic = self.topic.clone();
        // One span per batch: its size and, per partition, the first and
        // last offset it holds, on every log line written while storing it.
        let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
        for message in &batch {
            let range = ranges
                .entry(message.partition)
                .or_insert((message.offset, message.offset));
            range.0 = range.0.min(message.offset);
            range.1 = range.1.max(message.offset);
        }
        let offsets: Vec<String> = ranges
            .iter()
            .map(|(p, (first, last))| format!("{p}@{first}-{last}"))
            .collect();
        let span = tracing::info_span!("batch", events = batch.len(), offsets = %offsets.join(","));
        metrics::histogram!("consumer_batch_events").record(batch.len() as f64);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let started = std::time::Instant::now();
                let flushed = flush(batch, &store, &dlq, &health, &abort).await?;
                metrics::histogram!("consumer_batch_store_seconds")
                    .record(started.elapsed().as_secs_f64());
                let progress = flushed.offsets.iter().map(|(&p, &(_, next))| (p, next));
                if let Err(error) = store.record_progress(&topic, progress).await {
                    // Informational only: the events are stored and may be committed.
                    tracing::warn!(%error, "cannot record consumer progress");
                }
                Ok(flushed)
            },
            span,
        ))
    }

    fn decode(
        &self,
        message: KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
    ) -> Option<Received> {
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                let problem = format!(
                    "topic {} does not exist (`activity migrate` creates it)",
                    self.topic
                );
                tracing::error!(topic = %self.topic, "{problem}");
                self.consumer.context().health.topic_state(Some(problem));
                return None;
            }
            Err(error) => {
                self.consumer
                    .context()
                    .errors
                    .log(&error, "kafka consumer error");
                return None;
            }
        };
        let partition = message.partition();
        let generation = self.consumer.context().current(partition)?;
        self.check_offset(partition, generation, message.offset());
        let payload = message.payload().unwrap_or_default();
        let outcome = self
            .codec
            .decode_valid(payload, Utc::now())
            .map_err(|e| e.to_string());
        Some(Received {
            partition,
            offset: message.offset(),
            generation,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            outcome,
        })
    }

    /// Reports offsets the broker skipped ([`crate::gaps`]): between two
    /// messages of an assignment here, and for its first message, against
    /// the progress stored by whichever member held the partition before.
    fn check_offset(&self, partition: i32, generation: u64, offset: i64) {
        let seen = self
            .offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(partition, generation, offset);
        match seen {
            crate::gaps::Seen::InOrder => {}
            crate::gaps::Seen::Gap { expected, received } => {
                crate::gaps::report(&self.topic, partition, expected, received);
            }
            crate::gaps::Seen::FirstOfAssignment => {
                let (store, topic) = (self.store.clone(), self.topic.clone());
                tokio::spawn(async move {
                    match store.progress(&topic, partition).await {
                        Ok(Some(next)) if offset > next => {
                            crate::gaps::report(&topic, partition, next, offset);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(%error, partition, "stored progress not read");
                        }
                    }
                });
            }
        }
    }

    /// Stores (for the next auto-commit) the offsets a flushed batch made
    /// safe, for partitions still held under the same assignment.
    fn store_offsets(&self, flushed: &Flushed) {
        let context = self.consumer.context();
        let mut list = TopicPartitionList::new();
        for (&partition, &(generation, next)) in &flushed.offsets {
            if context.current(partition) == Some(generation) {
                if let Err(error) =
                    list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
                {
                    tracing::warn!(%error, partition, "cannot store offset");
                }
            }
        }
        if list.count() > 0 {
            if let Err(error) = self.consumer.store_offsets(&list) {
                tracing::warn!(%error, "cannot store offsets; the events will be read again and deduplicated");
            }
        }
    }

    fn pause(&self) -> Option<TopicPartitionList> {
        let assignment = self.consumer.assignment().ok()?;
        match self.consumer.pause(&assignment) {
            Ok(()) => {
                self.health.set_paused(true);
                tracing::warn!(
                    partitions = assignment.count(),
                    "database slow or down: partitions paused"
                );
                Some(assignment)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot pause partitions");
                None
            }
        }
    }

    fn resume(&self, partitions: &TopicPartitionList) {
        self.health.set_paused(false);
        match self.consumer.resume(partitions) {
            Ok(()) => tracing::info!("partitions resumed"),
            Err(error) => tracing::warn!(%error, "cannot resume partitions"),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

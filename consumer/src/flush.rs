//! One batch, from decoded messages to "safe to commit".
//!
//! A batch is flushed when every message in it is either stored in
//! PostgreSQL (or found already stored) or acknowledged by the dead-letter
//! topic. Database errors that can pass are retried in place with backoff;
//! a batch the database refuses is split until the refused rows are found,
//! and only those are dead-lettered, with PostgreSQL's reason.

use std::collections::{BTreeMap, HashSet};

use activity_core::ActivityEvent;
use futures::future::try_join_all;
use tokio_util::sync::CancellationToken;

use crate::dlq::{DeadLetter, DeadLetters};
use crate::health::Health;
use crate::retry::{Aborted, Backoff};
use crate::store::{Store, StoreError, Stored};

/// One message of a batch, decoded.
#[derive(Debug)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    /// The assignment generation of `partition` when the message arrived.
    pub generation: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub outcome: Result<ActivityEvent, String>,
}

impl Received {
    fn dead_letter(self, error: String) -> DeadLetter {
        DeadLetter {
            key: self.key,
            payload: self.payload,
            error,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// What flushing a batch did, and the offsets it made safe to commit.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Per partition: the generation the messages came from and the next
    /// offset to consume (last handled + 1).
    pub offsets: BTreeMap<i32, (u64, i64)>,
    pub stored: Stored,
    /// Events skipped because another message of the same batch had the same `event_id`.
    pub duplicates_in_batch: u64,
    pub dead_lettered: u64,
}

/// Stores and dead-letters one batch; returns once every message is handled,
/// or [`Aborted`] if `abort` fires first (then nothing may be committed).
#[tracing::instrument(skip_all, fields(messages = batch.len()))]
pub async fn flush(
    batch: Vec<Received>,
    store: &Store,
    dlq: &DeadLetters,
    health: &Health,
    abort: &CancellationToken,
) -> Result<Flushed, Aborted> {
    let mut flushed = Flushed::default();
    for message in &batch {
        let entry = flushed
            .offsets
            .entry(message.partition)
            .or_insert((message.generation, message.offset + 1));
        entry.1 = entry.1.max(message.offset + 1);
    }

    let mut seen = HashSet::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut sources = Vec::with_capacity(batch.len());
    let mut letters = Vec::new();
    for mut message in batch {
        match std::mem::replace(&mut message.outcome, Err(String::new())) {
            Ok(event) => {
                if seen.insert(event.event_id()) {
                    events.push(event);
                    sources.push(Some(message));
                } else {
                    flushed.duplicates_in_batch += 1;
                }
            }
            Err(reason) => letters.push(message.dead_letter(reason)),
        }
    }

    let (stored, refused) = store_isolating(store, events, health, abort).await?;
    flushed.stored = stored;
    for (index, reason) in refused {
        if let Some(source) = sources.get_mut(index).and_then(Option::take) {
            letters.push(source.dead_letter(format!("rejected by PostgreSQL: {reason}")));
        }
    }
    flushed.dead_lettered = letters.len() as u64;
    try_join_all(letters.iter().map(|letter| dlq.send(letter, abort))).await?;
    Ok(flushed)
}

/// Inserts `events`, retrying what can pass and isolating what cannot.
/// Returns what was stored and, for each refused event, its index and reason.
async fn store_isolating(
    store: &Store,
    events: Vec<ActivityEvent>,
    health: &Health,
    abort: &CancellationToken,
) -> Result<(Stored, Vec<(usize, String)>), Aborted> {
    let mut stored = Stored::default();
    let mut refused = Vec::new();
    // Work list of index ranges still to store; a refused range is halved.
    let mut ranges = Vec::new();
    ranges.push(0..events.len());
    while let Some(range) = ranges.pop() {
        if range.is_empty() {
            continue;
        }
        let mut backoff = Backoff::default();
        loop {
            match store.insert_batch(&events[range.clone()]).await {
                Ok(done) => {
                    health.database_ok();
                    stored.inserted += done.inserted;
                    stored.duplicates += done.duplicates;
                    break;
                }
                Err(StoreError::Rejected(reason)) if range.len() == 1 => {
                    health.database_ok();
                    refused.push((range.start, reason));
                    break;
                }
                Err(StoreError::Rejected(reason)) => {
                    tracing::warn!(rows = range.len(), %reason, "database refused the batch; splitting it to find the rows");
                    let middle = range.start + range.len() / 2;
                    ranges.push(middle..range.end);
                    ranges.push(range.start..middle);
                    break;
                }
                Err(error) => {
                    health.database_failed(&error);
                    metrics::counter!("consumer_store_errors_total", "kind" => error.kind())
                        .increment(1);
                    if matches!(
                        error,
                        StoreError::Schema(_) | StoreError::Config(_) | StoreError::Refused(_)
                    ) {
                        tracing::error!(%error, attempt = backoff.attempts(), "batch not stored: needs an operator; retrying");
                    } else {
                        tracing::warn!(%error, attempt = backoff.attempts(), "batch not stored; retrying");
                    }
                    if error.to_string().contains("no partition of relation") {
                        store.forget_partitions();
                    }
                    backoff.wait(abort).await?;
                }
            }
        }
    }
    Ok((stored, refused))
}

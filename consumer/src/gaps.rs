//! Offsets the broker skipped: a partition's messages arrive at
//! consecutive offsets (the topic is not compacted and its producers are
//! not transactional), starting where the stored progress ends. A message
//! past that is a hole: the events between were never delivered, so never
//! stored, while the offsets committed after it pass over them. Kafka does
//! not do this; Tansu does when a fetch starts inside a record batch (see
//! the README's known broker differences). The consumer cannot fetch the
//! hole again from that broker, so it says so, loudly: an error log naming
//! the offsets, `consumer_offsets_skipped_total`, and the alert on it.

use std::collections::HashMap;

/// What one message's offset says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The partition's first message under this assignment: compare it with
    /// the stored progress (`consumer_progress.next_offset`).
    FirstOfAssignment,
    /// Right after the one before (or read again: dedupe takes care).
    InOrder,
    /// Offsets `expected..received` were never delivered.
    Gap { expected: i64, received: i64 },
}

/// The last offset seen per partition, under its assignment generation.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    last: HashMap<i32, (u64, i64)>,
}

impl OffsetTracker {
    pub fn observe(&mut self, partition: i32, generation: u64, offset: i64) -> Seen {
        let seen = match self.last.get(&partition) {
            Some(&(g, last)) if g == generation => {
                if offset > last + 1 {
                    Seen::Gap {
                        expected: last + 1,
                        received: offset,
                    }
                } else {
                    Seen::InOrder
                }
            }
            _ => Seen::FirstOfAssignment,
        };
        let last = match (seen, self.last.get(&partition)) {
            (Seen::InOrder, Some(&(_, last))) => last.max(offset),
            _ => offset,
        };
        self.last.insert(partition, (generation, last));
        seen
    }
}

/// Logs and counts a hole in `partition` of `topic`.
pub fn report(topic: &str, partition: i32, expected: i64, received: i64) {
    let skipped = received - expected;
    tracing::error!(
        topic,
        partition,
        expected,
        received,
        skipped,
        "offsets skipped: the broker delivered offset {received} where {expected} was next, so \
         the events between were never stored (against Tansu set producer.batch_messages = 1; \
         to store them, read the partition again from offset {expected}: every event is stored once)"
    );
    metrics::counter!("consumer_offsets_skipped_total").increment(skipped.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_offsets_are_in_order_and_a_jump_is_a_gap() {
        let mut tracker = OffsetTracker::default();
        assert_eq!(tracker.observe(0, 1, 10), Seen::FirstOfAssignment);
        assert_eq!(tracker.observe(0, 1, 11), Seen::InOrder);
        assert_eq!(tracker.observe(1, 1, 500), Seen::FirstOfAssignment);
        assert_eq!(
            tracker.observe(0, 1, 15),
            Seen::Gap {
                expected: 12,
                received: 15
            }
        );
        assert_eq!(tracker.observe(0, 1, 16), Seen::InOrder);
        // Read again (a seek back, a redelivery): not a gap, and the
        // position does not move back.
        assert_eq!(tracker.observe(0, 1, 12), Seen::InOrder);
        assert_eq!(tracker.observe(0, 1, 17), Seen::InOrder);
        // A new assignment starts over.
        assert_eq!(tracker.observe(0, 2, 40), Seen::FirstOfAssignment);
        assert_eq!(tracker.observe(0, 2, 41), Seen::InOrder);
    }
}

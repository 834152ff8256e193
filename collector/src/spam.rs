//! Bursts of identical events: the same user sending the same event type for
//! the same entity more than `threshold` times within `window`. The events
//! past the threshold are rejected with a reason (never dropped behind a
//! 2xx) and counted; everything else passes.
//!
//! Per replica and in memory: a burst is a client loop or a script, and it
//! reaches one replica through one connection, or a few; a key's total
//! volume is bounded by its rate limit, which is shared. Events without a
//! user (system events) are never counted as spam. Memory and time are
//! bounded: at most `MAX_TRACKED` signatures are tracked; when full, windows
//! that ended are forgotten (one sweep at most every tenth of a window, so a
//! full table never costs a sweep per event), and until a sweep makes room,
//! new signatures pass unchecked rather than block legitimate traffic.
//!
//! Signatures are tracked by a 64-bit hash (SipHash with this process's own
//! random keys), not by their text: no copy of the strings per event, and a
//! fixed size per entry. A new signature shares a count with another only
//! if their hashes collide: with the table full, about one chance in 10^14
//! per event, and a client cannot aim for it without the keys.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

const MAX_TRACKED: usize = 100_000;

/// What makes two events identical for spam purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature<'a> {
    pub key: Uuid,
    pub user: Uuid,
    pub event_type: &'a str,
    pub entity: Option<(&'a str, &'a str)>,
}

/// An event counted towards its signature's window.
pub struct Counted(u64);

/// Counts identical events per window.
pub struct SpamFilter {
    threshold: u32,
    window: Duration,
    hasher: RandomState,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    windows: HashMap<u64, (Instant, u32)>,
    swept: Option<Instant>,
}

impl SpamFilter {
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self {
            threshold,
            window,
            hasher: RandomState::new(),
            seen: Mutex::default(),
        }
    }

    /// Counts this event in its window: `None` when it is past the
    /// threshold (spam), else what to [`SpamFilter::refund`] if the request
    /// that holds it is not accepted after all (answered 503 and retried:
    /// its events must not count twice).
    pub fn count(&self, signature: Signature<'_>) -> Option<Counted> {
        self.count_at(signature, Instant::now())
    }

    /// Takes back one counted event.
    pub fn refund(&self, counted: Counted) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = seen.windows.get_mut(&counted.0) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    fn count_at(&self, signature: Signature<'_>, now: Instant) -> Option<Counted> {
        let signature = self.hasher.hash_one(signature);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.windows.len() >= MAX_TRACKED && !seen.windows.contains_key(&signature) {
            let due = seen
                .swept
                .is_none_or(|at| now.duration_since(at) >= self.window / 10);
            if due {
                let window = self.window;
                seen.windows
                    .retain(|_, (start, _)| now.duration_since(*start) < window);
                seen.swept = Some(now);
            }
            if seen.windows.len() >= MAX_TRACKED {
                return Some(Counted(signature)); // not tracked: not spam
            }
        }
        let entry = seen.windows.entry(signature).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        (entry.1 <= self.threshold).then_some(Counted(signature))
    }

    pub fn describe(&self) -> String {
        format!(
            "spam: more than {} identical events (same user, event type and entity) within {} s",
            self.threshold,
            self.window.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SpamFilter {
        fn spam_at(&self, signature: Signature<'_>, now: Instant) -> bool {
            self.count_at(signature, now).is_none()
        }
    }

    #[test]
    fn a_refunded_event_does_not_count() {
        let filter = SpamFilter::new(2, Duration::from_secs(10));
        let user = Uuid::new_v4();
        let start = Instant::now();
        let first = filter.count_at(signature(user, "post.liked"), start);
        assert!(filter
            .count_at(signature(user, "post.liked"), start)
            .is_some());
        filter.refund(first.expect("counted"));
        assert!(
            !filter.spam_at(signature(user, "post.liked"), start),
            "2 of 2 after the refund"
        );
        assert!(
            filter.spam_at(signature(user, "post.liked"), start),
            "the third is spam"
        );
    }

    fn signature(user: Uuid, event_type: &str) -> Signature<'_> {
        Signature {
            key: Uuid::nil(),
            user,
            event_type,
            entity: Some(("post", "1")),
        }
    }

    #[test]
    fn only_what_passes_the_threshold_in_a_window_is_spam() {
        let filter = SpamFilter::new(3, Duration::from_secs(10));
        let user = Uuid::new_v4();
        let start = Instant::now();
        let verdicts: Vec<bool> = (0..5)
            .map(|_| filter.spam_at(signature(user, "post.liked"), start))
            .collect();
        assert_eq!(verdicts, [false, false, false, true, true]);
        // Another type, another user: their own counts.
        assert!(!filter.spam_at(signature(user, "post.viewed"), start));
        assert!(!filter.spam_at(signature(Uuid::new_v4(), "post.liked"), start));
        // A new window starts over.
        let later = start + Duration::from_secs(10);
        assert!(!filter.spam_at(signature(user, "post.liked"), later));
    }

    #[test]
    fn a_full_table_lets_new_signatures_pass_and_is_swept_at_most_every_tenth_of_a_window() {
        let filter = SpamFilter::new(0, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..MAX_TRACKED {
            // Threshold 0: every tracked signature is spam from its first event.
            assert!(filter.spam_at(signature(Uuid::new_v4(), "a.b"), start));
        }
        // Full, every window open: a new signature passes unchecked.
        assert!(!filter.spam_at(signature(Uuid::new_v4(), "a.b"), start));
        // Once the windows ended, the next sweep makes room again.
        let later = start + Duration::from_secs(11);
        assert!(filter.spam_at(signature(Uuid::new_v4(), "a.b"), later));
        let seen = filter.seen.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(seen.windows.len(), 1);
    }
}

//! Capped exponential backoff with full jitter, cancellable.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// First delay.
pub const BASE: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
pub const CAP: Duration = Duration::from_secs(10);

/// The process is stopping: the work was abandoned, nothing was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned: shutting down")]
pub struct Aborted;

/// Backoff state for one piece of work.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// Number of failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt: uniformly random in
    /// `[0, min(CAP, BASE * 2^attempt)]`, so many consumers retrying the same
    /// database do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BASE.saturating_mul(1u32 << self.attempt.min(16)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }

    /// Sleeps for the next delay, or returns [`Aborted`] if `abort` fires first.
    pub async fn wait(&mut self, abort: &CancellationToken) -> Result<(), Aborted> {
        let delay = self.next_delay();
        tokio::select! {
            _ = abort.cancelled() => Err(Aborted),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut backoff = Backoff::default();
        for attempt in 0..40u32 {
            let delay = backoff.next_delay();
            let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
        }
        assert_eq!(backoff.attempts(), 40);
    }

    #[tokio::test]
    async fn waiting_stops_when_aborted() {
        let abort = CancellationToken::new();
        abort.cancel();
        let mut backoff = Backoff { attempt: 30 };
        assert_eq!(backoff.wait(&abort).await, Err(Aborted));
    }
}

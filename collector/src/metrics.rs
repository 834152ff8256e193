//! The collector's counters, served as Prometheus text on `/metrics`.

use metrics::{counter, gauge};

/// The unlabelled series, at 0 until something happens: a dashboard or an
/// alert's `rate()` sees them from the start.
pub(crate) fn register() {
    for name in [
        "collector_events_accepted_total",
        "collector_spam_events_dropped_total",
        "collector_requests_rate_limited_total",
    ] {
        counter!(name).increment(0);
    }
}

pub(crate) fn accepted(accepted: usize) {
    counter!("collector_events_accepted_total").increment(accepted as u64);
}

/// One event refused, by kind (`ValidationError::kind`, or
/// `event_too_large`, `community_not_allowed`, `spam`).
pub(crate) fn rejected(reason: &'static str) {
    counter!("collector_events_rejected_total", "reason" => reason).increment(1);
}

/// One answered `POST /v1/events`, by status (202, 400, 401, 403, 413,
/// 415, 429, 503).
pub(crate) fn answered(status: u16) {
    counter!("collector_requests_total", "status" => status.to_string()).increment(1);
}

pub(crate) fn spam_dropped() {
    counter!("collector_spam_events_dropped_total").increment(1);
}

pub(crate) fn rate_limited() {
    counter!("collector_requests_rate_limited_total").increment(1);
}

/// 1 while the rate limits are local to this replica (Redis unavailable).
pub(crate) fn rate_limits_local(local: bool) {
    gauge!("collector_rate_limits_local").set(if local { 1.0 } else { 0.0 });
}

//! What the consumer tells its orchestrator: `/healthz`, `/readyz` and
//! `/metrics` on `--metrics-listen` (default `127.0.0.1:9091`).
//!
//! - `/healthz` answers 200 while the process serves HTTP: a liveness probe
//!   restarts only a process that no longer answers. A database outage must
//!   not restart the consumer (it would lose its place in the group for
//!   nothing); it waits and retries by itself.
//! - `/readyz` answers 200 when the consumer is storing events, and 503 with
//!   the reasons otherwise: the database refuses or cannot be reached, the
//!   dead-letter topic cannot be written, no Kafka broker is reachable, the
//!   events topic does not exist, the partitions are paused, or the process
//!   is shutting down. Dashboards and alerts read it; an outage shows
//!   here within one failed attempt, and clears with the first stored batch.
//! - `/metrics`: Prometheus text: `consumer_events_stored_total`,
//!   `consumer_events_duplicate_total`, `consumer_events_dead_lettered_total`,
//!   `consumer_batches_total`, `consumer_batch_store_seconds` (a histogram of
//!   the time from taking a batch to having it stored), `consumer_ready`,
//!   and the lag and partition gauges (`kafka.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Shared, cheap to clone; every part of the consumer reports into it.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last database error, until a batch is stored again.
    database: Mutex<Option<String>>,
    /// Why the database does not answer a probe, from the probe every 10 s
    /// (`Store::keep_watched`): set and cleared by each.
    reachable: Mutex<Option<String>>,
    /// The last dead-letter topic error, until a letter is acknowledged.
    dead_letters: Mutex<Option<String>>,
    /// Why Kafka cannot be read (no broker reachable), from librdkafka's
    /// statistics: set and cleared by each report.
    kafka: Mutex<Option<String>>,
    /// Why the events topic cannot be read (it does not exist), from the
    /// consumer's error; cleared when partitions of it are assigned.
    topic: Mutex<Option<String>>,
    paused: AtomicBool,
    stopping: AtomicBool,
}

/// The body of `/readyz`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, one line each; empty when ready.
    pub reasons: Vec<String>,
}

fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = value;
}

fn get_reason(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Health {
    pub fn database_failed(&self, error: &impl std::fmt::Display) {
        set(&self.inner.database, Some(error.to_string()));
    }

    pub fn database_ok(&self) {
        set(&self.inner.database, None);
    }

    /// What the latest database probe says: `None` when it answered.
    pub fn database_reachable(&self, problem: Option<String>) {
        set(&self.inner.reachable, problem);
    }

    pub fn dead_letters_failed(&self, error: &impl std::fmt::Display) {
        set(&self.inner.dead_letters, Some(error.to_string()));
    }

    pub fn dead_letters_ok(&self) {
        set(&self.inner.dead_letters, None);
    }

    /// What the latest Kafka report says: `None` when a broker is up.
    pub fn kafka_state(&self, problem: Option<String>) {
        set(&self.inner.kafka, problem);
    }

    /// Whether the events topic exists: `Some(reason)` when Kafka says it
    /// does not, `None` once partitions of it are assigned.
    pub fn topic_state(&self, problem: Option<String>) {
        set(&self.inner.topic, problem);
    }

    pub fn set_paused(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if self.inner.stopping.load(Ordering::Relaxed) {
            reasons.push("shutting down".to_owned());
        }
        for slot in [&self.inner.database, &self.inner.reachable] {
            if let Some(error) = get_reason(slot) {
                // The store and the probe often say the same thing.
                let reason = format!("database: {error}");
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
        if let Some(error) = get_reason(&self.inner.dead_letters) {
            reasons.push(format!("dead-letter topic: {error}"));
        }
        for slot in [&self.inner.kafka, &self.inner.topic] {
            if let Some(problem) = get_reason(slot) {
                reasons.push(format!("kafka: {problem}"));
            }
        }
        if self.inner.paused.load(Ordering::Relaxed) {
            reasons.push("partitions paused: waiting for the batch in flight".to_owned());
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Installs the process-wide Prometheus recorder (once per process).
async fn render_metrics(
    State((health, handle)): State<(Health, Option<PrometheusHandle>)>,
) -> String {
    metrics::gauge!("consumer_ready").set(if health.readiness().ready { 1.0 } else { 0.0 });
    handle.map(|h| h.render()).unwrap_or_default()
}

async fn readyz(State(health): State<Health>) -> (StatusCode, Json<Readiness>) {
    let readiness = health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// The consumer's HTTP endpoints.
pub fn router(health: Health, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(health.clone()))
        .route(
            "/metrics",
            get(render_metrics).with_state((health, metrics)),
        )
}

/// Binds `listen` and serves [`router`] until `shutdown` is cancelled.
pub async fn serve(
    listen: &str,
    health: Health,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let served = activity_core::http::serve(
            listener,
            router(health, metrics),
            shutdown.cancelled_owned(),
        )
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "health endpoints stopped");
        }
    });
    Ok((address, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_a_reason_until_it_clears() {
        let health = Health::default();
        assert_eq!(
            health.readiness(),
            Readiness {
                ready: true,
                reasons: vec![]
            }
        );
        health.database_failed(&"connection refused");
        health.set_paused(true);
        let readiness = health.readiness();
        assert!(!readiness.ready);
        assert_eq!(
            readiness.reasons,
            vec![
                "database: connection refused".to_owned(),
                "partitions paused: waiting for the batch in flight".to_owned()
            ]
        );
        health.database_ok();
        health.set_paused(false);
        assert!(health.readiness().ready);
        health.set_stopping();
        assert_eq!(health.readiness().reasons, vec!["shutting down".to_owned()]);
    }

    #[test]
    fn the_store_and_the_probe_saying_the_same_is_one_reason() {
        let health = Health::default();
        health.database_failed(&"database \"x\" does not exist");
        health.database_reachable(Some("database \"x\" does not exist".to_owned()));
        assert_eq!(
            health.readiness().reasons,
            vec!["database: database \"x\" does not exist".to_owned()]
        );
        health.database_reachable(Some("connection refused".to_owned()));
        assert_eq!(health.readiness().reasons.len(), 2);
    }
}

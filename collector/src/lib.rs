//! Where events enter over HTTP: the collector (`activity collect`).
//!
//! - [`ingest`]: `POST /v1/events`, its checks and its answers;
//! - [`keys`]: write keys (created, listed, revoked; cached per replica);
//! - [`limits`]: rate limits per key, shared through Redis;
//! - [`spam`]: bursts of identical events;
//! - [`error`]: the error answers;
//! - [`metrics`]: the counters on `/metrics`.
//!
//! Validation and metadata sanitizing are the shared rules of
//! `activity-core`, applied again by the consumer.

pub mod error;
pub mod ingest;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod spam;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use activity_core::config::Settings;
use activity_core::database::Pool;
use activity_producer::Tracker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::CollectError;
use crate::ingest::Collector;
use crate::keys::KeyCache;
use crate::limits::{Limits, RateLimiter};
use crate::spam::SpamFilter;

/// How to run a collector.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: String,
    pub database_url: String,
    pub redis_url: String,
    /// Limits of keys that set none.
    pub default_limits: Limits,
    pub trusted_proxies: Vec<IpAddr>,
    /// How long the broker may take to acknowledge before the answer is 503.
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a Kafka batch: short, since every
    /// request waits for its acknowledgement.
    pub linger: Duration,
    pub spam_threshold: u32,
    pub spam_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Database(String),
    #[error("invalid REDIS_URL: {0}")]
    Redis(String),
    #[error("producer: {0}")]
    Producer(#[from] activity_producer::TrackError),
}

#[derive(Clone)]
struct AppState {
    collector: Arc<Collector>,
    metrics: Option<PrometheusHandle>,
    draining: CancellationToken,
}

/// A bound, not yet serving, collector.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    pool: Pool,
    topic_probe: activity_core::kafka::TopicProbe,
}

impl Application {
    pub async fn build(settings: &Settings, config: CollectorConfig) -> Result<Self, BuildError> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| BuildError::Listen(config.listen.clone(), e))?;
        // Installed first, so the series registered at 0 below (and the
        // producer's) are served before the first event.
        let metrics = activity_core::telemetry::install_metrics();
        metrics::register();
        let mut producer_settings = settings.clone();
        producer_settings.producer.delivery_timeout_ms =
            u64::try_from(config.delivery_timeout.as_millis()).unwrap_or(u64::MAX);
        producer_settings.producer.linger_ms =
            u64::try_from(config.linger.as_millis()).unwrap_or(u64::MAX);
        let collector = Collector {
            tracker: Tracker::new(&producer_settings)?,
            keys: KeyCache::default(),
            limiter: RateLimiter::new(&config.redis_url, ingest::MAX_EVENTS as u32)
                .await
                .map_err(BuildError::Redis)?,
            spam: SpamFilter::new(config.spam_threshold, config.spam_window),
            default_limits: config.default_limits,
            trusted_proxies: config.trusted_proxies.clone(),
            topic_problem: std::sync::Mutex::new(None),
        };
        let topic_probe =
            activity_core::kafka::TopicProbe::new(&settings.kafka.brokers, &settings.kafka.topic)
                .map_err(|e| BuildError::Producer(e.into()))?;
        Ok(Self {
            listener,
            state: AppState {
                collector: Arc::new(collector),
                metrics,
                draining: CancellationToken::new(),
            },
            pool: activity_core::database::pool(&config.database_url, 2)
                .map_err(BuildError::Database)?,
            topic_probe,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; then answers 503 on `/readyz`, finishes the
    /// requests in flight (their events are acknowledged or refused) and
    /// flushes the producer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let keys = tokio::spawn(
            self.state
                .collector
                .keys
                .clone()
                .keep_fresh(self.pool.clone(), shutdown.clone()),
        );
        let topic = tokio::spawn(keep_topic_checked(
            self.state.collector.clone(),
            self.topic_probe,
            shutdown.clone(),
        ));
        let state = self.state.clone();
        let router = Router::new()
            .route("/v1/events", post(ingest::post_events))
            .with_state(state.collector.clone())
            .route("/healthz", get(|| async { StatusCode::OK }))
            .route("/readyz", get(readyz).with_state(state.clone()))
            .route("/metrics", get(render_metrics).with_state(state.clone()))
            // Unknown paths and methods get the error body too.
            .fallback(|| async {
                CollectError::NotFound("no such path: events go to POST /v1/events".into())
            })
            .method_not_allowed_fallback(|| async {
                CollectError::MethodNotAllowed(
                    "/v1/events takes POST; /healthz, /readyz and /metrics take GET".into(),
                )
            });
        let draining = self.state.draining.clone();
        let served = activity_core::http::serve(self.listener, router, async move {
            shutdown.cancelled().await;
            draining.cancel();
        })
        .await;
        let _ = keys.await;
        let _ = topic.await;
        if let Err(error) = self
            .state
            .collector
            .tracker
            .flush(Duration::from_secs(10))
            .await
        {
            tracing::warn!(%error, "producer not flushed at shutdown");
        }
        served
    }
}

/// How often the collector asks the brokers whether its topic exists.
const TOPIC_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps [`Collector::topic_problem`] current: at start, then every
/// [`TOPIC_PROBE_INTERVAL`].
async fn keep_topic_checked(
    collector: Arc<Collector>,
    probe: activity_core::kafka::TopicProbe,
    shutdown: CancellationToken,
) {
    let probe = Arc::new(probe);
    loop {
        let asked = probe.clone();
        let problem = tokio::task::spawn_blocking(move || asked.missing(Duration::from_secs(5)))
            .await
            .ok()
            .flatten();
        {
            let mut current = collector
                .topic_problem
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *current != problem {
                match &problem {
                    Some(problem) => tracing::error!("kafka: {problem}"),
                    None => tracing::info!("kafka: the topic exists"),
                }
                *current = problem;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TOPIC_PROBE_INTERVAL) => {}
        }
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut reasons = Vec::new();
    if state.draining.is_cancelled() {
        reasons.push("shutting down".to_owned());
    }
    if !state.collector.keys.loaded() {
        reasons.push("write keys not loaded: the database has not answered".to_owned());
    }
    // Every request would get 503: out of rotation until a broker is up
    // and the topic exists.
    if let Some(problem) = state.collector.tracker.unreachable() {
        reasons.push(format!("kafka: {problem}"));
    }
    if let Some(problem) = state.collector.topic_problem() {
        reasons.push(format!("kafka: {problem}"));
    }
    let local = state.collector.limiter.degraded();
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let notes: Vec<&str> = if local {
        vec!["Redis unavailable: rate limits are local to this replica"]
    } else {
        vec![]
    };
    (
        status,
        Json(json!({"ready": reasons.is_empty(), "reasons": reasons, "degraded": notes})),
    )
}

async fn render_metrics(State(state): State<AppState>) -> (StatusCode, String) {
    metrics::rate_limits_local(state.collector.limiter.degraded());
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::OK, String::new()),
    }
}

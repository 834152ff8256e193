//! Where events are queried: the analytics API.
//!
//! - [`routes`]: the four endpoints, health and readiness;
//! - [`auth`]: HS256 JWTs and the caller's scope;
//! - [`db`]: the scoped, read-only transaction every query runs in (row-level
//!   security applies there: tenant isolation is enforced twice);
//! - [`params`]: query parameters, checked;
//! - [`reports`]: the response shapes (also in `/api/v1/openapi.json`);
//! - [`error`]: the one error type and the SPEC's error body.
//!
//! Counts come from rollups kept by the consumer in the same transaction as
//! the events (`sql/migrations/0002_rollups_and_rls.sql`).

pub mod auth;
pub mod db;
pub mod error;
pub mod params;
pub mod reports;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use activity_core::database::Pool;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use auth::{Claims, Keys, Role};
use error::ApiError;
use params::Endpoint;

/// What a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub keys: Arc<Keys>,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// What `/metrics` renders (None when another component of the process
    /// installed the recorder first: `activity dev`).
    pub metrics: Option<PrometheusHandle>,
}

/// How to run the API.
pub struct ApiConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The database to read (a replica will do).
    pub read_url: String,
    pub jwt_secret: Vec<u8>,
    pub pool_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("invalid database URL (DATABASE_READ_URL, or DATABASE_URL when it is not set): {0}")]
    Database(String),
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Activity Tracker analytics API", version = "1"),
    paths(routes::overview, routes::community, routes::user, routes::events),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth, &EachEndpointsParams)
)]
pub struct ApiDoc;

/// Lists on each endpoint only the query parameters it takes
/// ([`Endpoint::takes`]): the handlers share one parameter struct.
struct EachEndpointsParams;

impl Modify for EachEndpointsParams {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for endpoint in Endpoint::ALL {
            let operation = openapi
                .paths
                .paths
                .get_mut(endpoint.path())
                .and_then(|item| item.get.as_mut());
            if let Some(parameters) = operation.and_then(|o| o.parameters.as_mut()) {
                parameters.retain(|p| {
                    p.parameter_in != utoipa::openapi::path::ParameterIn::Query
                        || endpoint.takes().contains(&p.name.as_str())
                });
            }
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API, bound to its address, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: ApiConfig) -> Result<Self, BuildError> {
        let pool = activity_core::database::pool(&config.read_url, config.pool_size)
            .map_err(BuildError::Database)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| BuildError::Listen(config.listen.clone(), e))?;
        Ok(Self {
            listener,
            state: AppState {
                pool,
                keys: Arc::new(Keys::new(&config.jwt_secret)),
                draining: CancellationToken::new(),
                metrics: activity_core::telemetry::install_metrics(),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, answers
    /// not-ready, and lets requests in flight finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let draining = self.state.draining.clone();
        let app = router(self.state);
        activity_core::http::serve(self.listener, app, async move {
            shutdown.cancelled().await;
            draining.cancel();
        })
        .await
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(Endpoint::Overview.path(), get(routes::overview))
        .route(Endpoint::Community.path(), get(routes::community))
        .route(Endpoint::User.path(), get(routes::user))
        .route(Endpoint::Events.path(), get(routes::events))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route_layer(axum::middleware::from_fn(measure))
        .route("/metrics", get(render_metrics))
        // Unknown paths and methods get the SPEC's error body too.
        .fallback(|| async {
            ApiError::NotFound(
                "no such path: the endpoints are listed in /api/v1/openapi.json".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this path answers GET (and HEAD) only".into())
        })
        .with_state(state)
}

/// `/metrics`: Prometheus text.
async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Counts and times every request by route template (never the ids in the
/// path: bounded labels) and status code: `api_requests_total`,
/// `api_request_duration_seconds`.
async fn measure(
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    // One span per request, with the caller's X-Request-Id or a new one.
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", route = route.as_str(), %request_id);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let labels = [
        ("route", route.as_str().to_owned()),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!("api_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("api_requests_total", &labels).increment(1);
    response
}

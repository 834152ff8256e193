//! The accept loop of every HTTP server here: the analytics API, the
//! collector and the consumer's health and metrics port.
//!
//! `axum::serve` sets no timer on its connections, so hyper's header read
//! timeout never applied: a client that opened connections and sent half a
//! request line held each of them forever, and 20,000 of them (no token
//! needed) used up the process's file descriptors until `/healthz` itself
//! went unanswered. Here every connection must deliver a request's headers
//! within [`HEADER_READ_TIMEOUT`] of starting it, or of the previous
//! response on a kept-alive connection, or it is closed.
//!
//! HTTP/1.1 only: `axum::serve` also spoke cleartext HTTP/2 with prior
//! knowledge, and hyper's version detection that allows it waits for a
//! connection's first bytes with no timeout at all. Load balancers,
//! Kubernetes probes and Prometheus speak HTTP/1.1 to a backend.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a connection may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after the shutdown signal, the requests in flight have to
/// finish; connections still open then are closed. A client trickling a
/// body would otherwise hold the process for the collector's 30 s body
/// timeout, past Kubernetes' grace period (30 s, with a 5 s preStop and up
/// to 10 s of producer flush after this). A request waiting for Kafka's
/// acknowledgement usually ends at the delivery timeout (5 s by default),
/// but not while its produce request is outstanding at a slow broker.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the requests in flight, at most
/// [`DRAIN_TIMEOUT`]. Handlers can extract
/// `ConnectInfo<SocketAddr>` (the peer's address).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // A client may shut down its side once its request is sent and wait
        // for the answer (RFC 9112 9.6 allows it); without this the
        // connection was closed unanswered.
        .half_close(true);
    let connections = GracefulShutdown::new();
    // Every connection's task, so those still open when the drain time runs
    // out can be stopped: left running, their handlers went on producing
    // events (for clients that would never get an answer) until the process
    // exited.
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // Reaps finished connections, so the set holds only open ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: try again shortly
                    // rather than spin (what axum::serve does too).
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tasks.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection closed");
            }
        });
    }
    drop(listener);
    let draining = std::time::Instant::now();
    while tasks.try_join_next().is_some() {}
    let open = tasks.len();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
        .await
        .is_ok()
    {
        tracing::info!(
            connections = open,
            milliseconds = draining.elapsed().as_millis() as u64,
            "every request in flight answered"
        );
    } else {
        while tasks.try_join_next().is_some() {}
        // Their clients get no answer and retry; events a handler already
        // handed to Kafka are stored once all the same (event ids dedupe).
        tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            unanswered = tasks.len(),
            "requests still in flight when the drain time ran out: their connections are closed"
        );
    }
    tasks.shutdown().await;
    Ok(())
}

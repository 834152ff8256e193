//! `POST /v1/events`: a batch in, each event checked, the accepted ones
//! acknowledged by Kafka before the answer.
//!
//! Order of checks: the key (401 unknown, 403 revoked), the body (413 past
//! 1 MiB or 500 events, 400 when it is not `{"events": [...]}`), the key's
//! rate limits (429 with `Retry-After`), then each event on its own: size,
//! fields, the key's communities, spam. Every event not accepted is listed
//! in `rejected` with its index and reason. The accepted ones are produced
//! and the answer (202) waits for the broker; if it cannot take them all
//! within the delivery timeout the answer is 503, and the client retries the
//! same request: the event ids are fixed before producing (the client's, or
//! derived from the key, the body and the position), so a retry stores each
//! event once.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use activity_core::{ActivityEvent, RawEvent};
use activity_producer::{TrackError, Tracker};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::CollectError;
use crate::keys::{KeyCache, Lookup, WriteKey};
use crate::limits::{Limits, RateLimiter, Verdict};
use crate::metrics;
use crate::spam::{Counted, Signature, SpamFilter};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a request's body may take to arrive, once its headers have.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most events in one request.
pub const MAX_EVENTS: usize = 500;
/// Largest single event, as JSON.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// Everything a request needs.
pub struct Collector {
    pub tracker: Tracker,
    pub keys: KeyCache,
    pub limiter: RateLimiter,
    pub spam: SpamFilter,
    /// Limits of keys that set none.
    pub default_limits: Limits,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Why the topic cannot take events (it does not exist), as of the
    /// latest probe (`crate::keep_topic_checked`).
    pub topic_problem: std::sync::Mutex<Option<String>>,
}

impl Collector {
    pub fn topic_problem(&self) -> Option<String> {
        self.topic_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub error: String,
}

fn bearer(headers: &HeaderMap) -> Result<&str, CollectError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            CollectError::Unauthorized("missing Authorization: Bearer <write key>".into())
        })?
        .to_str()
        .map_err(|_| CollectError::Unauthorized("malformed Authorization header".into()))?;
    activity_core::bearer_credential(value).ok_or_else(|| {
        CollectError::Unauthorized("expected Authorization: Bearer <write key>".into())
    })
}

fn authenticate(collector: &Collector, headers: &HeaderMap) -> Result<WriteKey, CollectError> {
    match collector.keys.lookup(bearer(headers)?) {
        Lookup::Valid(key) => Ok(key),
        Lookup::Revoked => Err(CollectError::Forbidden("this write key was revoked".into())),
        Lookup::Unknown => Err(CollectError::Unauthorized("unknown write key".into())),
        Lookup::NotLoaded => Err(CollectError::Unavailable(
            "write keys are not loaded yet (the database has not answered); retry".into(),
        )),
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most address of `X-Forwarded-For` that is not a trusted proxy.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// The id of an event sent without one: the same key, body and position
/// always give the same id, so a retried request dedupes.
fn derived_event_id(key: Uuid, body: &[u8], index: usize) -> Uuid {
    let mut digest = Sha256::new();
    digest.update(key.as_bytes());
    digest.update(body);
    digest.update((index as u64).to_le_bytes());
    let hash = digest.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    Uuid::new_v8(bytes)
}

/// The body as sent, or decompressed when it was sent with
/// `Content-Encoding: gzip`: the 1 MiB limit then holds for the
/// decompressed body too (a small gzip bomb stops at the limit), and event
/// ids derived from the body are the same however it was compressed.
fn decoded(headers: &HeaderMap, body: Bytes) -> Result<Bytes, CollectError> {
    // Every Content-Encoding line, as one list (RFC 9110 5.3).
    let mut lines = Vec::new();
    for line in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(line) = line.to_str() else {
            return Err(CollectError::UnsupportedEncoding(
                "Content-Encoding is not visible ASCII".into(),
            ));
        };
        lines.push(line.trim().to_ascii_lowercase());
    }
    if lines.is_empty() {
        return Ok(body);
    }
    let encoding = lines.join(", ");
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut decompressed =
                Vec::with_capacity(body.len().saturating_mul(4).min(MAX_BODY_BYTES));
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut decompressed)
                .map_err(|e| {
                    CollectError::BadRequest(format!(
                        "the gzip body could not be decompressed: {e}"
                    ))
                })?;
            if decompressed.len() > MAX_BODY_BYTES {
                return Err(CollectError::TooLarge(format!(
                    "the body decompressed is over {MAX_BODY_BYTES} bytes"
                )));
            }
            Ok(decompressed.into())
        }
        _ => Err(CollectError::UnsupportedEncoding(format!(
            "Content-Encoding {:?} is not supported; send the body as is or gzip-compressed",
            activity_core::event::excerpt(&encoding)
        ))),
    }
}

/// The request body: each event kept as its text, parsed one by one later
/// (one bad event must not fail the others, and its size is its text's).
#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    sent_at: Option<Value>,
}

const SHAPE: &str = r#"the body must be a JSON object {"events": [...]}"#;

fn parse_body(body: &[u8]) -> Result<(Vec<&RawValue>, Option<DateTime<Utc>>), CollectError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| CollectError::BadRequest("the body is not UTF-8 JSON".into()))?;
    if !text.trim_start().starts_with('{') {
        return Err(CollectError::BadRequest(SHAPE.into()));
    }
    let batch: Batch<'_> = serde_json::from_str(text)
        .map_err(|e| CollectError::BadRequest(format!("{SHAPE}: {e}")))?;
    let sent_at = match batch.sent_at {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    CollectError::BadRequest("sent_at must be an RFC 3339 timestamp".into())
                })?
                .with_timezone(&Utc),
        ),
        Some(_) => {
            return Err(CollectError::BadRequest(
                "sent_at must be an RFC 3339 timestamp".into(),
            ))
        }
    };
    if batch.events.len() > MAX_EVENTS {
        return Err(CollectError::TooLarge(format!(
            "{} events in one request; at most {MAX_EVENTS}",
            batch.events.len()
        )));
    }
    Ok((batch.events, sent_at))
}

/// Why one event of a request was not accepted: a bounded kind (the
/// metric's `reason` label) and the message for the client.
struct Refusal(&'static str, String);

/// How far an event's `created_at` may be after its batch's `sent_at`.
const MAX_CREATED_AFTER_SENT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Checks one event and fills in what the request knows.
fn prepare(
    collector: &Collector,
    key: &WriteKey,
    raw: &RawValue,
    context: &RequestContext<'_>,
    index: usize,
) -> Result<(ActivityEvent, Option<Counted>), Refusal> {
    let size = raw.get().len();
    if size > MAX_EVENT_BYTES {
        return Err(Refusal(
            "event_too_large",
            format!("event is {size} bytes; at most {MAX_EVENT_BYTES}"),
        ));
    }
    let mut event = RawEvent::from_json_text(raw.get())
        .and_then(RawEvent::into_new_event)
        .map_err(|e| Refusal(e.kind(), e.to_string()))?;
    if !key.may_write(event.community_id) {
        return Err(Refusal(
            "community_not_allowed",
            match event.community_id {
                Some(community) => {
                    format!("this write key may not write events of community {community}")
                }
                None => {
                    "this write key writes only events of its communities; community_id is missing"
                        .into()
                }
            },
        ));
    }
    event.created_at = Some(match (event.created_at, context.sent_at) {
        // An event cannot be created after the batch that holds it was sent:
        // one clock or the other is wrong, and moving the event by their
        // difference would make up a time (beyond the 10 minutes of skew
        // any created_at is allowed).
        (Some(created), Some(sent)) if created - sent > MAX_CREATED_AFTER_SENT => {
            return Err(Refusal(
                "bad_created_at",
                format!(
                    "created_at {} is after the batch's sent_at {}: one of the two clocks is wrong",
                    created.to_rfc3339(),
                    sent.to_rfc3339()
                ),
            ));
        }
        // The client's clock is off by (sent_at - received_at): move the
        // event by the same amount (Segment's convention).
        (Some(created), Some(sent)) => context.received_at - (sent - created),
        (Some(created), None) => created,
        (None, _) => context.received_at,
    });
    // Empty is missing, as validation reads an empty ip_address.
    if event
        .ip_address
        .as_deref()
        .is_none_or(|ip| ip.trim().is_empty())
    {
        event.ip_address = Some(context.client_ip.to_string());
    }
    if event.user_agent.as_deref().is_none_or(str::is_empty) {
        event.user_agent = context.user_agent.as_deref().map(str::to_owned);
    }
    if event.event_id.is_none() {
        event.event_id = Some(derived_event_id(key.id, context.body, index));
    }
    let event = event
        .validate(context.received_at)
        .map_err(|reason| Refusal(reason.kind(), reason.to_string()))?;
    // Counted only once valid: invalid events are never spam.
    let counted = match event.user_id() {
        Some(user) => {
            let signature = Signature {
                key: key.id,
                user: user.as_uuid(),
                event_type: event.event_type().as_str(),
                entity: event.entity_type().zip(event.entity_id()),
            };
            match collector.spam.count(signature) {
                Some(counted) => Some(counted),
                None => {
                    metrics::spam_dropped();
                    return Err(Refusal("spam", collector.spam.describe()));
                }
            }
        }
        None => None,
    };
    Ok((event, counted))
}

struct RequestContext<'a> {
    body: &'a [u8],
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    client_ip: IpAddr,
    user_agent: Option<std::borrow::Cow<'a, str>>,
}

/// `POST /v1/events`, in one span per request (the caller's X-Request-Id or
/// a new one; the write key's id once known).
pub async fn post_events(
    State(collector): State<Arc<Collector>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, CollectError> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", route = "/v1/events", %request_id, key = tracing::field::Empty);
    tracing::Instrument::instrument(
        async move {
            let answer = ingest(collector, peer, headers, body).await;
            match &answer {
                Ok(_) => metrics::answered(202),
                Err(error) => {
                    let status = error.status().as_u16();
                    metrics::answered(status);
                    // 503s are logged where they happen, with the cause.
                    if status != 503 {
                        tracing::info!(status, %error, "request refused");
                    }
                }
            }
            answer
        },
        span,
    )
    .await
}

fn body_too_large() -> CollectError {
    CollectError::TooLarge(format!("the body is over {MAX_BODY_BYTES} bytes"))
}

/// Why a body could not be read: over the limit (413), or not a
/// well-formed HTTP body (bad chunked encoding, the connection closed before
/// the declared length: 400).
fn unreadable_body(error: &axum::Error) -> CollectError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return body_too_large();
        }
        cause = current.source();
    }
    CollectError::BadRequest(format!("the body could not be read: {error}"))
}

async fn ingest(
    collector: Arc<Collector>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, CollectError> {
    let received_at = Utc::now();
    let key = authenticate(&collector, &headers)?;
    tracing::Span::current().record("key", tracing::field::display(key.id));
    // A body declared too large is refused before a byte of it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(body_too_large());
    }
    // A body trickled in a byte at a time would hold its connection (and a
    // file descriptor) for as long as the client likes: write keys are
    // public, in browsers. The headers have their own 10 s (core/src/http.rs).
    let body: Bytes =
        tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
            .await
            .map_err(|_| {
                CollectError::Timeout(format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|error| unreadable_body(&error))?;
    let body = decoded(&headers, body)?;
    let (events, sent_at) = parse_body(&body)?;

    let limits = Limits {
        requests_per_second: key
            .requests_per_second
            .unwrap_or(collector.default_limits.requests_per_second),
        events_per_second: key
            .events_per_second
            .unwrap_or(collector.default_limits.events_per_second),
    };
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
    if let Verdict::Limited(wait) = collector.limiter.check(key.id, limits, count).await {
        metrics::rate_limited();
        return Err(CollectError::RateLimited(wait));
    }

    let context = RequestContext {
        body: &body,
        sent_at,
        received_at,
        client_ip: client_ip(peer.ip(), &headers, &collector.trusted_proxies),
        // Not always ASCII (browsers' are; some clients send UTF-8).
        user_agent: headers
            .get(header::USER_AGENT)
            .map(|value| String::from_utf8_lossy(value.as_bytes())),
    };
    let mut rejected = Vec::new();
    // Counted only once the request is answered 202, like the accepted
    // ones: a request refused with 503 is retried and would count twice.
    let mut rejected_kinds = Vec::new();
    let mut deliveries = Vec::with_capacity(events.len());
    // What this request counted towards spam: taken back if it is answered
    // 503, since its client retries it.
    let mut counted = Vec::new();
    let refund = |counted: Vec<Counted>| counted.into_iter().for_each(|c| collector.spam.refund(c));
    for (index, raw) in events.into_iter().enumerate() {
        let sent = prepare(&collector, &key, raw, &context, index).and_then(|(event, spam)| {
            counted.extend(spam);
            match collector.tracker.send_valid(event) {
                Ok(delivery) => Ok(Ok(delivery)),
                Err(TrackError::Invalid(reason)) => Err(Refusal(reason.kind(), reason.to_string())),
                Err(other) => Ok(Err(other)),
            }
        });
        match sent {
            Ok(Ok(delivery)) => deliveries.push(delivery),
            Ok(Err(error)) => {
                tracing::warn!(%error, "the producer cannot take events");
                refund(counted);
                return Err(CollectError::Unavailable(format!(
                    "Kafka cannot take events now ({error}); nothing of this request was accepted; retry it"
                )));
            }
            Err(Refusal(kind, error)) => {
                rejected_kinds.push(kind);
                rejected.push(Rejected { index, error });
            }
        }
    }
    let accepted = deliveries.len();
    // librdkafka fails each message at its delivery timeout (checked once a
    // second, and never while a produce request holding it is still
    // outstanding: an event the broker is about to acknowledge is not
    // answered 503).
    if let Err(error) = futures::future::try_join_all(deliveries).await {
        let error = error.to_string();
        let error = match collector.topic_problem() {
            Some(problem) => format!("{problem}; {error}"),
            None => error,
        };
        tracing::warn!(%error, "Kafka did not acknowledge an event");
        refund(counted);
        return Err(CollectError::Unavailable(format!(
            "Kafka did not acknowledge the events ({error}); retry this request: events already stored are not stored twice"
        )));
    }
    metrics::accepted(accepted);
    if let Some(first) = rejected.first() {
        // The key is in the span: whose client sends what.
        tracing::info!(
            accepted,
            rejected = rejected.len(),
            first_index = first.index,
            first_error = %first.error,
            "events rejected"
        );
    }
    rejected_kinds.into_iter().for_each(metrics::rejected);
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted, rejected })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.7, 10.0.0.1"
                .parse()
                .expect("header"),
        );
        // Behind the proxy: the right-most address that is not a proxy.
        assert_eq!(client_ip(proxy, &headers, &[proxy]), client);
        // From anyone else, the header is the client's word: ignored.
        let stranger: IpAddr = "192.0.2.9".parse().expect("ip");
        assert_eq!(client_ip(stranger, &headers, &[proxy]), stranger);
    }

    fn gzip(bytes: &[u8]) -> Bytes {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("compress");
        encoder.finish().expect("compress").into()
    }

    fn encoded(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, encoding.parse().expect("header"));
        headers
    }

    #[test]
    fn gzip_bodies_are_decompressed_within_the_limit() {
        let body = br#"{"events":[{"event_type":"user.login"}]}"#;
        for encoding in ["gzip", "x-gzip", " GZIP "] {
            let plain = decoded(&encoded(encoding), gzip(body)).expect("decompressed");
            assert_eq!(&plain[..], body, "{encoding}");
        }
        let as_sent = Bytes::from_static(body);
        assert_eq!(
            decoded(&HeaderMap::new(), as_sent.clone()).ok(),
            Some(as_sent.clone())
        );
        assert_eq!(
            decoded(&encoded("identity"), as_sent.clone()).ok(),
            Some(as_sent.clone())
        );
        // Exactly the limit decompressed is fine; one byte more (from a
        // body of a few KiB) is not.
        let full = vec![b' '; MAX_BODY_BYTES];
        assert_eq!(
            decoded(&encoded("gzip"), gzip(&full)).map(|b| b.len()).ok(),
            Some(MAX_BODY_BYTES)
        );
        let bomb = gzip(&vec![b' '; MAX_BODY_BYTES + 1]);
        assert!(bomb.len() < 8 * 1024, "{}", bomb.len());
        assert!(matches!(
            decoded(&encoded("gzip"), bomb),
            Err(CollectError::TooLarge(_))
        ));
        assert!(matches!(
            decoded(&encoded("gzip"), as_sent.clone()),
            Err(CollectError::BadRequest(_))
        ));
        let mut two_lines = encoded("gzip");
        two_lines.append(header::CONTENT_ENCODING, "br".parse().expect("header"));
        assert!(matches!(
            decoded(&two_lines, gzip(body)),
            Err(CollectError::UnsupportedEncoding(_))
        ));
        for other in ["br", "deflate", "gzip, br"] {
            assert!(
                matches!(
                    decoded(&encoded(other), as_sent.clone()),
                    Err(CollectError::UnsupportedEncoding(_))
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn derived_ids_repeat_for_the_same_request_only() {
        let key = Uuid::new_v4();
        let a = derived_event_id(key, b"{\"events\":[{}]}", 0);
        assert_eq!(a, derived_event_id(key, b"{\"events\":[{}]}", 0));
        assert_ne!(a, derived_event_id(key, b"{\"events\":[{}]}", 1));
        assert_ne!(a, derived_event_id(key, b"{\"events\":[{} ]}", 0));
        assert_ne!(a, derived_event_id(Uuid::new_v4(), b"{\"events\":[{}]}", 0));
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_refused() {
        assert!(matches!(
            parse_body(b"nope"),
            Err(CollectError::BadRequest(_))
        ));
        assert!(matches!(
            parse_body(b"[1]"),
            Err(CollectError::BadRequest(_))
        ));
        assert!(matches!(
            parse_body(b"{\"events\": 3}"),
            Err(CollectError::BadRequest(_))
        ));
        assert!(matches!(
            parse_body(b"{\"events\": [], \"sent_at\": \"yesterday\"}"),
            Err(CollectError::BadRequest(_))
        ));
        let many = format!("{{\"events\": [{}]}}", vec!["{}"; 501].join(","));
        assert!(matches!(
            parse_body(many.as_bytes()),
            Err(CollectError::TooLarge(_))
        ));
        let (events, sent_at) =
            parse_body(b"{\"events\": [{}], \"sent_at\": \"2026-01-01T00:00:00Z\"}").expect("ok");
        assert_eq!(events.len(), 1);
        assert!(sent_at.is_some());
    }
}

//! The endpoints. Each checks the caller's scope (403 outside it), then reads
//! through a scoped transaction, where row-level security checks it again.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Offset, Utc};
use chrono_tz::Tz;
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::db::{scoped, timed, with_top_list_memory, Reader};
use crate::error::{ApiError, ErrorBody};
use crate::params::{parse_uuid, Cursor, Endpoint, Range, RawParams};
use crate::reports::*;
use crate::AppState;

type Params = Result<Query<RawParams>, QueryRejection>;

fn params(params: Params, endpoint: Endpoint) -> Result<RawParams, ApiError> {
    let raw = params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    raw.check_for(endpoint)?;
    Ok(raw)
}

/// The communities a report covers: only the one the caller asked for with
/// `community_id` (403 when it may not read it; a `user` reads only its own
/// rows anyway), or else `otherwise`.
fn narrowed(
    caller: &Caller,
    asked: Option<Uuid>,
    otherwise: Option<Vec<Uuid>>,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    match asked {
        Some(id) if caller.role != Role::User && !caller.may_read_community(id) => Err(
            ApiError::Forbidden(format!("this token may not read community {id}")),
        ),
        Some(id) => Ok(Some(vec![id])),
        None => Ok(otherwise),
    }
}

fn path_id(name: &str, id: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(text) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    parse_uuid(name, &text)
}

/// `at` in RFC 3339 with `tz`'s offset at that instant. RFC 3339 offsets are
/// whole minutes; a zone's offset of the past with seconds (Africa/Monrovia's
/// -0:44:30 until 1972) is rounded to the minute and the clock time shown
/// moved with it, so the text still names the exact instant (chrono dropped
/// the seconds from the offset alone: 30 s off).
fn local(at: DateTime<Utc>, tz: Tz) -> String {
    let offset = at.with_timezone(&tz).offset().fix();
    let seconds = offset.local_minus_utc();
    if seconds % 60 == 0 {
        return at.with_timezone(&offset).to_rfc3339();
    }
    let minutes = (f64::from(seconds) / 60.0).round() as i32;
    match chrono::FixedOffset::east_opt(minutes * 60) {
        Some(rounded) => at.with_timezone(&rounded).to_rfc3339(),
        None => at.to_rfc3339(),
    }
}

fn range_out(range: &Range) -> RangeOut {
    RangeOut {
        from: local(range.from, range.tz),
        to: local(range.to, range.tz),
        tz: range.tz.name().to_owned(),
        interval: range.interval.as_str().to_owned(),
    }
}

/// Below this many events in a range, a top list sums every count at once
/// instead of first reading each day's most active (the threshold rule of
/// `sql/migrations/0003_top_lists.sql`): summing 20,000 events' user-day
/// rows takes about 16 ms at 10M events, the rule 30 ms and more when the
/// activity is flat and it cannot prove its list (bench/analytics).
const SUM_EVERY_COUNT_BELOW: i64 = 20_000;

/// Runs a top-list query (`sql/queries/analytics/top_*.sql`) with the
/// memory those need ([`with_top_list_memory`]), summing every count at once
/// when the range holds fewer than [`SUM_EVERY_COUNT_BELOW`] events
/// (`total_events`). `item` reads one row of the list.
async fn top_list<T>(
    tx: &Transaction<'_>,
    name: &'static str,
    sql: &str,
    (range, communities, limit): (&Range, &Option<Vec<Uuid>>, i64),
    total_events: i64,
    item: impl Fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, ApiError> {
    let none: Option<String> = None;
    let direct = total_events < SUM_EVERY_COUNT_BELOW;
    let rows = with_top_list_memory(tx, async {
        Ok(timed(
            name,
            tx.query(
                sql,
                &[&range.from, &range.to, communities, &none, &limit, &direct],
            ),
        )
        .await?)
    })
    .await?;
    Ok(rows.iter().map(item).collect::<Result<_, _>>()?)
}

/// Runs a report's two halves: at once when `side` has its own transaction
/// (`parallel`), otherwise one after the other on the lead's.
async fn together<A, B>(
    parallel: bool,
    side: impl std::future::Future<Output = Result<A, ApiError>>,
    lead: impl std::future::Future<Output = Result<B, ApiError>>,
) -> Result<(A, B), ApiError> {
    if parallel {
        tokio::try_join!(side, lead)
    } else {
        let side = side.await?;
        Ok((side, lead.await?))
    }
}

/// A report's side half (on the helper when there is one): the time series
/// and events by type, the two that merge the most sketches over long
/// ranges.
async fn series_and_types(
    tx: &Transaction<'_>,
    range: &Range,
    communities: &Option<Vec<Uuid>>,
) -> Result<(Vec<Point>, Vec<TypeCount>), ApiError> {
    let time_series = series(tx, range, communities, &None).await?;
    Ok((time_series, by_type(tx, range, communities).await?))
}

/// Events and unique users in the range.
struct Totals {
    events: i64,
    unique_users: i64,
}

async fn totals(
    tx: &Transaction<'_>,
    range: &Range,
    communities: &Option<Vec<Uuid>>,
    event_type: &Option<String>,
) -> Result<Totals, ApiError> {
    let row = timed(
        "totals",
        tx.query_one(
            include_str!("../../sql/queries/analytics/totals.sql"),
            &[&range.from, &range.to, communities, event_type],
        ),
    )
    .await?;
    Ok(Totals {
        events: row.try_get("events")?,
        unique_users: row.try_get("unique_users")?,
    })
}

async fn series(
    tx: &Transaction<'_>,
    range: &Range,
    communities: &Option<Vec<Uuid>>,
    event_type: &Option<String>,
) -> Result<Vec<Point>, ApiError> {
    let interval = range.interval.as_str();
    Ok(timed(
        "series",
        tx.query(
            include_str!("../../sql/queries/analytics/series.sql"),
            &[&range.from, &range.to, communities, event_type, &interval],
        ),
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Point {
            start: local(row.try_get("start")?, range.tz),
            events: row.try_get("events")?,
            unique_users: row.try_get("unique_users")?,
        })
    })
    .collect::<Result<_, tokio_postgres::Error>>()?)
}

async fn by_type(
    tx: &Transaction<'_>,
    range: &Range,
    communities: &Option<Vec<Uuid>>,
) -> Result<Vec<TypeCount>, ApiError> {
    let none: Option<String> = None;
    Ok(timed(
        "by_type",
        tx.query(
            include_str!("../../sql/queries/analytics/by_type.sql"),
            &[&range.from, &range.to, communities, &none],
        ),
    )
    .await?
    .iter()
    .map(|row| {
        Ok(TypeCount {
            event_type: row.try_get("event_type")?,
            events: row.try_get("events")?,
            unique_users: row.try_get("unique_users")?,
        })
    })
    .collect::<Result<_, tokio_postgres::Error>>()?)
}

async fn active_users(
    tx: &Transaction<'_>,
    range: &Range,
    communities: &Option<Vec<Uuid>>,
) -> Result<ActiveUsers, ApiError> {
    let none: Option<String> = None;
    let row = timed(
        "active_users",
        tx.query_one(
            include_str!("../../sql/queries/analytics/active_users.sql"),
            &[&range.from, &range.to, communities, &none],
        ),
    )
    .await?;
    Ok(ActiveUsers {
        as_of: local(range.to, range.tz),
        dau: row.try_get("dau")?,
        wau: row.try_get("wau")?,
        mau: row.try_get("mau")?,
    })
}

async fn freshness(tx: &Transaction<'_>) -> Result<Freshness, ApiError> {
    let row = timed(
        "freshness",
        tx.query_one(
            include_str!("../../sql/queries/analytics/freshness.sql"),
            &[],
        ),
    )
    .await?;
    let generated_at = Utc::now();
    let last: Option<DateTime<Utc>> = row.try_get("last_stored_at")?;
    Ok(Freshness {
        generated_at,
        last_stored_at: last,
        seconds_since_last_store: last
            .map(|t| (generated_at - t).num_milliseconds() as f64 / 1000.0),
        oldest_partition_stored_at: row.try_get("oldest_partition_stored_at")?,
    })
}

/// Totals, unique users, DAU/WAU/MAU, events by type, a time series and the
/// top communities, over every community the caller may read.
#[utoipa::path(get, path = "/api/v1/analytics/overview", params(RawParams),
    security(("bearer" = [])),
    responses((status = 200, body = Overview), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 503, body = ErrorBody, description = "the database cannot answer now; retry")))]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    raw: Params,
) -> Result<Json<Overview>, ApiError> {
    if caller.role == Role::User {
        return Err(ApiError::Forbidden(
            "a user token may only read /user/{its own id}".into(),
        ));
    }
    let raw = params(raw, Endpoint::Overview)?;
    let range = raw.range(Endpoint::Overview, Utc::now())?;
    let limit = raw.limit()?;
    let communities = narrowed(&caller, raw.community_id()?, caller.community_scope())?;
    let mut reader = Reader::get(&state.pool).await?;
    let (tx, helper) = reader.scoped(&caller, range.tz.name()).await?;
    let none: Option<String> = None;
    let side = series_and_types(helper.as_ref().unwrap_or(&tx), &range, &communities);
    let lead = async {
        let totals = totals(&tx, &range, &communities, &none).await?;
        let active_users = active_users(&tx, &range, &communities).await?;
        let top_communities = top_list(
            &tx,
            "top_communities",
            include_str!("../../sql/queries/analytics/top_communities.sql"),
            (&range, &communities, limit),
            totals.events,
            |row| {
                Ok(CommunityCount {
                    community_id: row.try_get("community_id")?,
                    name: row.try_get("name")?,
                    events: row.try_get("events")?,
                })
            },
        )
        .await?;
        let freshness = freshness(&tx).await?;
        Ok::<_, ApiError>((totals, active_users, top_communities, freshness))
    };
    let ((time_series, events_by_type), (totals, active_users, top_communities, freshness)) =
        together(helper.is_some(), side, lead).await?;
    Ok(Json(Overview {
        range: range_out(&range),
        freshness,
        total_events: totals.events,
        unique_users: totals.unique_users,
        active_users,
        events_by_type,
        time_series,
        top_communities,
    }))
}

/// The overview of one community, plus its top users and top entities.
#[utoipa::path(get, path = "/api/v1/analytics/community/{id}", params(("id" = Uuid, Path), RawParams),
    security(("bearer" = [])),
    responses((status = 200, body = CommunityReport), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody),
               (status = 503, body = ErrorBody, description = "the database cannot answer now; retry")))]
pub async fn community(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    raw: Params,
) -> Result<Json<CommunityReport>, ApiError> {
    let id = path_id("community id", id)?;
    if !caller.may_read_community(id) {
        return Err(ApiError::Forbidden(format!(
            "this token may not read community {id}"
        )));
    }
    let raw = params(raw, Endpoint::Community)?;
    let range = raw.range(Endpoint::Community, Utc::now())?;
    let limit = raw.limit()?;
    let communities = Some(vec![id]);
    let mut reader = Reader::get(&state.pool).await?;
    let (tx, helper) = reader.scoped(&caller, range.tz.name()).await?;
    let none: Option<String> = None;
    // First the community and the total, which both top lists need; then
    // two halves (measured at 10M events, the API's means over 90-day daily
    // and 7-day hourly reports of the largest community: series 18 ms,
    // active users 5, top entities 15; events by type 8, top users 20).
    // Series, active users and events by type on one side, the two top
    // lists on the other, was no faster: 42-46 ms instead of 38-49 for the
    // daily reports, 30-33 instead of 26-29 for the hourly ones outside
    // Asia/Kolkata (bench/analytics-probe, best of 5).
    let row = timed(
        "community",
        tx.query_opt(
            include_str!("../../sql/queries/analytics/community.sql"),
            &[&id],
        ),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no community {id}")))?;
    let info = CommunityInfo {
        id,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    };
    let totals = totals(&tx, &range, &communities, &none).await?;
    let side = async {
        let on = helper.as_ref().unwrap_or(&tx);
        let time_series = series(on, &range, &communities, &None).await?;
        let active_users = active_users(on, &range, &communities).await?;
        let top_entities = top_list(
            on,
            "top_entities",
            include_str!("../../sql/queries/analytics/top_entities.sql"),
            (&range, &communities, limit),
            totals.events,
            |row| {
                Ok(EntityCount {
                    entity_type: row.try_get("entity_type")?,
                    entity_id: row.try_get("entity_id")?,
                    events: row.try_get("events")?,
                })
            },
        )
        .await?;
        Ok::<_, ApiError>((time_series, active_users, top_entities))
    };
    let lead = async {
        let events_by_type = by_type(&tx, &range, &communities).await?;
        let top_users = top_list(
            &tx,
            "top_users",
            include_str!("../../sql/queries/analytics/top_users.sql"),
            (&range, &communities, limit),
            totals.events,
            |row| {
                Ok(UserCount {
                    user_id: row.try_get("user_id")?,
                    events: row.try_get("events")?,
                })
            },
        )
        .await?;
        let freshness = freshness(&tx).await?;
        Ok::<_, ApiError>((events_by_type, top_users, freshness))
    };
    let ((time_series, active_users, top_entities), (events_by_type, top_users, freshness)) =
        together(helper.is_some(), side, lead).await?;
    Ok(Json(CommunityReport {
        community: info,
        range: range_out(&range),
        freshness,
        total_events: totals.events,
        unique_users: totals.unique_users,
        active_users,
        events_by_type,
        time_series,
        top_users,
        top_entities,
    }))
}

/// One user's totals, first and last seen, events by type and activity
/// timeline (newest first, cursor-paged).
#[utoipa::path(get, path = "/api/v1/analytics/user/{id}", params(("id" = Uuid, Path), RawParams),
    security(("bearer" = [])),
    responses((status = 200, body = UserReport), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 503, body = ErrorBody, description = "the database cannot answer now; retry")))]
pub async fn user(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    raw: Params,
) -> Result<Json<UserReport>, ApiError> {
    let id = path_id("user id", id)?;
    if caller.role == Role::User && caller.user_id() != Some(id) {
        return Err(ApiError::Forbidden(
            "a user token may only read its own activity".into(),
        ));
    }
    let raw = params(raw, Endpoint::User)?;
    let range = raw.range(Endpoint::User, Utc::now())?;
    let limit = raw.limit()?;
    let cursor = raw.cursor()?;
    let communities = match caller.role {
        Role::CommunityAdmin => caller.community_scope(),
        Role::Admin | Role::User => None,
    };
    let communities = narrowed(&caller, raw.community_id()?, communities)?;
    let mut client = state.pool.get().await?;
    let tx = scoped(&mut client, &caller, range.tz.name()).await?;
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&id, &range.from, &range.to, &communities];
    let summary = timed(
        "user_summary",
        tx.query_one(
            include_str!("../../sql/queries/analytics/user_summary.sql"),
            &args,
        ),
    )
    .await?;
    let events_by_type = timed(
        "user_by_type",
        tx.query(
            include_str!("../../sql/queries/analytics/user_by_type.sql"),
            &args,
        ),
    )
    .await?
    .iter()
    .map(|row| {
        Ok(UserTypeCount {
            event_type: row.try_get("event_type")?,
            events: row.try_get("events")?,
        })
    })
    .collect::<Result<_, tokio_postgres::Error>>()?;
    let (after_time, after_id) = match cursor {
        Some(c) => (Some(c.created_at), Some(c.id)),
        None => (None, None),
    };
    // One row more than the page tells whether another page follows.
    let fetch = limit + 1;
    let rows = timed(
        "user_timeline",
        tx.query(
            include_str!("../../sql/queries/analytics/user_timeline.sql"),
            &[
                &id,
                &range.from,
                &range.to,
                &communities,
                &after_time,
                &after_id,
                &fetch,
            ],
        ),
    )
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows.iter().take(limit as usize) {
        let created_at: DateTime<Utc> = row.try_get("created_at")?;
        last = Some(Cursor {
            created_at,
            id: row.try_get("id")?,
        });
        items.push(TimelineItem {
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            community_id: row.try_get("community_id")?,
            entity_type: row.try_get("entity_type")?,
            entity_id: row.try_get("entity_id")?,
            metadata: row.try_get("metadata")?,
            created_at,
        });
    }
    let next_cursor = if rows.len() > limit as usize {
        last.map(|c| c.encode())
    } else {
        None
    };
    Ok(Json(UserReport {
        user_id: id,
        range: range_out(&range),
        freshness: freshness(&tx).await?,
        total_events: summary.try_get("events")?,
        first_seen: summary.try_get("first_seen")?,
        last_seen: summary.try_get("last_seen")?,
        events_by_type,
        timeline: Timeline { items, next_cursor },
    }))
}

/// Events and unique users over time, for one event type or all, in one
/// community or every community the caller may read.
#[utoipa::path(get, path = "/api/v1/analytics/events", params(RawParams),
    security(("bearer" = [])),
    responses((status = 200, body = EventsReport), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 503, body = ErrorBody, description = "the database cannot answer now; retry")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    raw: Params,
) -> Result<Json<EventsReport>, ApiError> {
    if caller.role == Role::User {
        return Err(ApiError::Forbidden(
            "a user token may only read /user/{its own id}".into(),
        ));
    }
    let raw = params(raw, Endpoint::Events)?;
    let range = raw.range(Endpoint::Events, Utc::now())?;
    let event_type = raw.event_type()?;
    let community_id = raw.community_id()?;
    let communities = narrowed(&caller, community_id, caller.community_scope())?;
    let mut client = state.pool.get().await?;
    let tx = scoped(&mut client, &caller, range.tz.name()).await?;
    let totals = totals(&tx, &range, &communities, &event_type).await?;
    let time_series = series(&tx, &range, &communities, &event_type).await?;
    Ok(Json(EventsReport {
        event_type,
        community_id,
        range: range_out(&range),
        freshness: freshness(&tx).await?,
        total_events: totals.events,
        unique_users: totals.unique_users,
        time_series,
    }))
}

pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Ready when the database answers and the server is not draining.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let problem = if state.draining.is_cancelled() {
        Some("shutting down".to_owned())
    } else {
        let checked = match state.pool.get().await {
            Ok(client) => client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| {
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
                }),
            Err(e) => Err(e.to_string()),
        };
        checked.err().map(|reason| {
            tracing::warn!(%reason, "not ready: the database does not answer");
            format!("database: {reason}")
        })
    };
    // The body of the consumer's and the collector's /readyz.
    let status = if problem.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let reasons: Vec<String> = problem.into_iter().collect();
    (
        status,
        Json(serde_json::json!({"ready": reasons.is_empty(), "reasons": reasons})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_name_the_exact_instant() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("a time")
                .with_timezone(&Utc)
        };
        for (instant, zone) in [
            // -0:44:30 then.
            ("1971-06-01T00:00:00Z", chrono_tz::Africa::Monrovia),
            ("1971-05-31T00:44:30Z", chrono_tz::Africa::Monrovia),
            // Local mean times with seconds.
            ("1700-01-01T12:00:00Z", chrono_tz::Pacific::Honolulu),
            ("1700-01-01T12:00:00Z", chrono_tz::America::St_Johns),
            ("2026-03-29T01:00:00Z", chrono_tz::Europe::Berlin),
            ("2026-11-27T10:15:00Z", chrono_tz::Asia::Kolkata),
        ] {
            let text = local(at(instant), zone);
            assert_eq!(at(&text), at(instant), "{instant} in {zone}: {text}");
        }
        assert_eq!(
            local(at("2026-11-27T10:15:00Z"), chrono_tz::Asia::Kolkata),
            "2026-11-27T15:45:00+05:30"
        );
    }
}

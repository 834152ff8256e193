//! What the endpoints answer (each type is in the OpenAPI document).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The range a response covers: the one asked, widened to whole 15-minute
/// buckets, with times in the requested zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct RangeOut {
    #[schema(example = "2026-11-01T00:00:00+05:30")]
    pub from: String,
    pub to: String,
    #[schema(example = "Asia/Kolkata")]
    pub tz: String,
    #[schema(example = "day")]
    pub interval: String,
}

/// How fresh the answer is. Rollups are written in the same transaction as
/// the events, so every event the consumer has stored is counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Freshness {
    /// When this answer was computed.
    pub generated_at: DateTime<Utc>,
    /// When the consumer last stored a batch (any partition).
    pub last_stored_at: Option<DateTime<Utc>>,
    /// Seconds from `last_stored_at` to `generated_at`.
    pub seconds_since_last_store: Option<f64>,
    /// The least recent last store over every partition: a partition with a
    /// stuck consumer shows here.
    pub oldest_partition_stored_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveUsers {
    /// The end of the windows (the range's `to`).
    pub as_of: String,
    /// Distinct users in the 24 hours before `as_of`.
    pub dau: i64,
    /// ... in the 7 days before.
    pub wau: i64,
    /// ... in the 30 days before.
    pub mau: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TypeCount {
    pub event_type: String,
    pub events: i64,
    pub unique_users: i64,
}

/// One interval of a time series; `start` is in the requested zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    #[schema(example = "2026-11-02T00:00:00+05:30")]
    pub start: String,
    pub events: i64,
    pub unique_users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityCount {
    pub community_id: Uuid,
    pub name: Option<String>,
    pub events: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCount {
    pub user_id: Uuid,
    pub events: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntityCount {
    pub entity_type: String,
    pub entity_id: String,
    pub events: i64,
}

/// `GET /api/v1/analytics/overview`: every community the caller may read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub range: RangeOut,
    pub freshness: Freshness,
    pub total_events: i64,
    pub unique_users: i64,
    pub active_users: ActiveUsers,
    /// Most events first; equal counts by `event_type` ascending.
    pub events_by_type: Vec<TypeCount>,
    pub time_series: Vec<Point>,
    /// Most events first; equal counts by `community_id` ascending.
    pub top_communities: Vec<CommunityCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityInfo {
    pub id: Uuid,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `GET /api/v1/analytics/community/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityReport {
    pub community: CommunityInfo,
    pub range: RangeOut,
    pub freshness: Freshness,
    pub total_events: i64,
    pub unique_users: i64,
    pub active_users: ActiveUsers,
    /// Most events first; equal counts by `event_type` ascending.
    pub events_by_type: Vec<TypeCount>,
    pub time_series: Vec<Point>,
    /// Most events first; equal counts by `user_id` ascending.
    pub top_users: Vec<UserCount>,
    /// Most events first; equal counts by `entity_type`, then `entity_id`,
    /// ascending.
    pub top_entities: Vec<EntityCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserTypeCount {
    pub event_type: String,
    pub events: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    pub event_id: Uuid,
    pub event_type: String,
    pub community_id: Option<Uuid>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// Newest first; events of the same instant by row, newest stored first.
    pub items: Vec<TimelineItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/analytics/user/{id}`. For a `community_admin`, only the
/// user's activity inside the caller's communities.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserReport {
    pub user_id: Uuid,
    pub range: RangeOut,
    pub freshness: Freshness,
    pub total_events: i64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Most events first; equal counts by `event_type` ascending.
    pub events_by_type: Vec<UserTypeCount>,
    pub timeline: Timeline,
}

/// `GET /api/v1/analytics/events`: one event type (or all), over time.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsReport {
    pub event_type: Option<String>,
    pub community_id: Option<Uuid>,
    pub range: RangeOut,
    pub freshness: Freshness,
    pub total_events: i64,
    pub unique_users: i64,
    pub time_series: Vec<Point>,
}

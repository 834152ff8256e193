//! Query parameters, checked: every bad value is a 400 with a message that
//! names it, never a 500.

use std::str::FromStr;

use activity_core::EventType;
use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;

/// Rollup bucket width: ranges are widened to whole buckets.
pub const BUCKET: TimeDelta = TimeDelta::minutes(15);
/// Longest range any endpoint answers.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Longest range answered at `interval=hour`.
pub const MAX_HOURLY_RANGE_DAYS: i64 = 35;
pub const DEFAULT_RANGE_DAYS: i64 = 30;
pub const DEFAULT_LIMIT: i64 = 10;
pub const MAX_LIMIT: i64 = 100;

/// The parameters as sent; parsed by [`RawParams::range`] and friends.
/// Each is kept as text so that a bad value gets this API's own message;
/// the `param` attributes tell the OpenAPI document what a valid one is.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawParams {
    /// Start of the range, RFC 3339 (default: 30 days before `to`); widened
    /// down to a 15-minute boundary. Years 1678 to 2261.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// End of the range, RFC 3339, exclusive (default: now); widened up to a
    /// 15-minute boundary. After `from`, and at most 400 days after it.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Time-series buckets: `hour` (ranges up to 35 days), `day` (default), `week`, `month`.
    #[param(value_type = Option<Interval>, inline)]
    pub interval: Option<String>,
    /// IANA time zone for the buckets (default `UTC`), e.g. `Asia/Kolkata`.
    #[param(example = "Asia/Kolkata")]
    pub tz: Option<String>,
    /// Length of top lists and timeline pages: 1 to 100, default 10 (not `/events`).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Timeline page to continue from (`/user/{id}`), as returned in `next_cursor`.
    pub cursor: Option<String>,
    /// Only this event type (`/events` only).
    #[param(max_length = 64, pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]
    pub event_type: Option<String>,
    /// Only this community, which the caller must be allowed to read
    /// (`/overview`, `/user/{id}` and `/events`).
    #[param(value_type = Option<uuid::Uuid>, format = Uuid)]
    pub community_id: Option<String>,
}

/// The four endpoints (their routes, for the router and the OpenAPI
/// document), and the parameters of [`RawParams`] each takes. One sent to an
/// endpoint that does not take it is refused (400, naming where it applies)
/// rather than ignored: ignoring `event_type` on `/overview`, say, would
/// answer another question than the one asked. Names not in [`RawParams`]
/// are ignored, as on the web (cache busters). The OpenAPI document lists
/// each endpoint's own (`lib.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Overview,
    Community,
    User,
    Events,
}

impl Endpoint {
    /// Whether its answer has a time series (`interval` sets its buckets).
    pub fn has_series(self) -> bool {
        self != Self::User
    }

    pub const ALL: [Endpoint; 4] = [Self::Overview, Self::Community, Self::User, Self::Events];

    /// The route, as in the OpenAPI document.
    pub fn path(self) -> &'static str {
        match self {
            Self::Overview => "/api/v1/analytics/overview",
            Self::Community => "/api/v1/analytics/community/{id}",
            Self::User => "/api/v1/analytics/user/{id}",
            Self::Events => "/api/v1/analytics/events",
        }
    }

    pub fn takes(self) -> &'static [&'static str] {
        match self {
            Self::Overview => &["from", "to", "interval", "tz", "limit", "community_id"],
            Self::Community => &["from", "to", "interval", "tz", "limit"],
            Self::User => &[
                "from",
                "to",
                "interval",
                "tz",
                "limit",
                "cursor",
                "community_id",
            ],
            Self::Events => &["from", "to", "interval", "tz", "event_type", "community_id"],
        }
    }
}

/// A time series' buckets (the OpenAPI document's values of `interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
    Week,
    Month,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// A checked time range, widened to whole 15-minute buckets.
#[derive(Debug, Clone)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tz: Tz,
    pub interval: Interval,
}

impl RawParams {
    /// Refuses a parameter `endpoint` does not take ([`Endpoint`]).
    pub fn check_for(&self, endpoint: Endpoint) -> Result<(), ApiError> {
        let sent = [
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("interval", self.interval.is_some()),
            ("tz", self.tz.is_some()),
            ("limit", self.limit.is_some()),
            ("cursor", self.cursor.is_some()),
            ("event_type", self.event_type.is_some()),
            ("community_id", self.community_id.is_some()),
        ];
        for (name, present) in sent {
            if present && !endpoint.takes().contains(&name) {
                let elsewhere: Vec<&str> = Endpoint::ALL
                    .iter()
                    .filter(|e| e.takes().contains(&name))
                    .map(|e| e.path())
                    .collect();
                return Err(ApiError::BadRequest(format!(
                    "{name} does not apply to {}; it applies to {}",
                    endpoint.path(),
                    elsewhere.join(" and ")
                )));
            }
        }
        Ok(())
    }

    /// The range asked of `endpoint`, checked and widened to whole buckets.
    pub fn range(&self, endpoint: Endpoint, now: DateTime<Utc>) -> Result<Range, ApiError> {
        let to = match &self.to {
            Some(text) => parse_time("to", text)?,
            None => now,
        };
        let from = match &self.from {
            Some(text) => parse_time("from", text)?,
            None => to - TimeDelta::days(DEFAULT_RANGE_DAYS),
        };
        if from >= to {
            return Err(ApiError::BadRequest(format!(
                "from ({}) must be before to ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        let interval = match self.interval.as_deref().unwrap_or("day") {
            "hour" => Interval::Hour,
            "day" => Interval::Day,
            "week" => Interval::Week,
            "month" => Interval::Month,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "interval must be hour, day, week or month, not {:?}",
                    truncate(other)
                )))
            }
        };
        let tz = match self.tz.as_deref() {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                ApiError::BadRequest(format!(
                    "tz must be an IANA time zone name, not {:?}",
                    truncate(name)
                ))
            })?,
        };
        let from = from
            .duration_trunc(BUCKET)
            .map_err(|e| ApiError::BadRequest(format!("from: {e}")))?;
        let to_floor = to
            .duration_trunc(BUCKET)
            .map_err(|e| ApiError::BadRequest(format!("to: {e}")))?;
        let to = if to_floor == to {
            to
        } else {
            to_floor + BUCKET
        };
        // The limits hold for the range as answered, after widening: checked
        // before it in whole days, 400 days and a second was 401 days.
        let span = to - from;
        if span > TimeDelta::days(MAX_RANGE_DAYS) {
            return Err(ApiError::BadRequest(format!(
                "the range is {} days (widened to 15-minute boundaries); at most {MAX_RANGE_DAYS} days may be asked at once",
                days(span)
            )));
        }
        if interval == Interval::Hour
            && endpoint.has_series()
            && span > TimeDelta::days(MAX_HOURLY_RANGE_DAYS)
        {
            return Err(ApiError::BadRequest(format!(
                "the range is {} days (widened to 15-minute boundaries); interval=hour allows at most {MAX_HOURLY_RANGE_DAYS}",
                days(span)
            )));
        }
        Ok(Range {
            from,
            to,
            tz,
            interval,
        })
    }

    pub fn limit(&self) -> Result<i64, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {:?}",
                    truncate(text)
                ))),
            },
        }
    }

    pub fn event_type(&self) -> Result<Option<String>, ApiError> {
        self.event_type
            .as_deref()
            .map(|text| {
                EventType::parse(text)
                    .map(|t| t.as_str().to_owned())
                    .map_err(|e| ApiError::BadRequest(format!("event_type: {e}")))
            })
            .transpose()
    }

    pub fn community_id(&self) -> Result<Option<Uuid>, ApiError> {
        self.community_id
            .as_deref()
            .map(|text| parse_uuid("community_id", text))
            .transpose()
    }

    /// The timeline cursor: `<created_at in µs since the epoch>.<row id>`.
    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        self.cursor.as_deref().map(Cursor::parse).transpose()
    }
}

/// A span in days, to two decimals without trailing zeros: `400.01`, `36`.
fn days(span: TimeDelta) -> String {
    let text = format!("{:.2}", span.num_minutes() as f64 / 1440.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Where a timeline page starts: just after this row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "cursor {:?} is not one this API returned",
                truncate(text)
            ))
        };
        let (micros, id) = text.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let id: i64 = id.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(|t| *t >= activity_core::event::earliest_created_at() && t.year() <= 9999)
            .ok_or_else(bad)?;
        Ok(Self { created_at, id })
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

pub fn parse_uuid(name: &str, text: &str) -> Result<Uuid, ApiError> {
    let id = Uuid::parse_str(text).map_err(|_| {
        ApiError::BadRequest(format!("{name} must be a UUID, not {:?}", truncate(text)))
    })?;
    if activity_core::event::is_reserved(id) {
        return Err(ApiError::BadRequest(format!(
            "{name} must not be the nil or the max UUID (both are reserved)"
        )));
    }
    Ok(id)
}

/// An RFC 3339 timestamp of the years 1678 to 2261 (what a range's
/// 15-minute widening can compute, in nanoseconds); a leap second (`:60`)
/// is the instant after it, which is what it ends at.
fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 timestamp such as 2026-01-31T00:00:00Z, not {:?}",
                truncate(text)
            ))
        })?;
    if !(1678..=2261).contains(&at.year()) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be in the years 1678 to 2261, not {:?}",
            truncate(text)
        )));
    }
    let nanos = at.timestamp_subsec_nanos();
    if nanos < 1_000_000_000 {
        return Ok(at);
    }
    DateTime::from_timestamp(at.timestamp() + 1, nanos - 1_000_000_000)
        .ok_or_else(|| ApiError::BadRequest(format!("{name}: no such instant")))
}

/// Echoed values are cut short: a hostile parameter is not mirrored whole.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> RawParams {
        let mut p = RawParams::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "from" => p.from = v,
                "to" => p.to = v,
                "interval" => p.interval = v,
                "tz" => p.tz = v,
                "limit" => p.limit = v,
                "cursor" => p.cursor = v,
                _ => {}
            }
        }
        p
    }

    #[test]
    fn ranges_widen_to_buckets_and_default_to_thirty_days() {
        let now = DateTime::parse_from_rfc3339("2026-03-10T10:07:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let range = params(&[]).range(Endpoint::Overview, now).unwrap();
        assert_eq!(range.to.to_rfc3339(), "2026-03-10T10:15:00+00:00");
        assert_eq!(range.from.to_rfc3339(), "2026-02-08T10:00:00+00:00");
        assert_eq!(range.tz, Tz::UTC);
        assert_eq!(range.interval, Interval::Day);
    }

    #[test]
    fn bad_values_are_bad_requests() {
        let now = Utc::now();
        for bad in [
            params(&[
                ("from", "2026-02-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ]),
            params(&[("from", "yesterday")]),
            params(&[
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ]),
            params(&[("interval", "minute")]),
            params(&[
                ("interval", "hour"),
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
            ]),
            params(&[("tz", "Mars/Olympus")]),
            params(&[("tz", "'; DROP TABLE activities; --")]),
        ] {
            assert!(
                matches!(
                    bad.range(Endpoint::Overview, now),
                    Err(ApiError::BadRequest(_))
                ),
                "{bad:?}"
            );
        }
        for limit in ["0", "101", "-1", "1e9", "99999999999999999999", "ten"] {
            assert!(matches!(
                params(&[("limit", limit)]).limit(),
                Err(ApiError::BadRequest(_))
            ));
        }
        for cursor in [
            "",
            "1.",
            ".1",
            "abc.def",
            "99999999999999999999.1",
            "-99999999999999999.1",
            "253402300800000000.1",
        ] {
            assert!(
                matches!(
                    params(&[("cursor", cursor)]).cursor(),
                    Err(ApiError::BadRequest(_))
                ),
                "{cursor}"
            );
        }
    }

    #[test]
    fn limits_hold_for_the_widened_range() {
        let now = Utc::now();
        let asked = |from: &str, to: &str, interval: &str, endpoint: Endpoint| {
            params(&[("from", from), ("to", to), ("interval", interval)]).range(endpoint, now)
        };
        // 400 days exactly, and a second more, which widens to 400 days and
        // 15 minutes (checked in whole days before widening, it passed).
        let whole = asked(
            "2025-10-22T00:00:00Z",
            "2026-11-26T00:00:00Z",
            "day",
            Endpoint::Overview,
        );
        assert!(whole.is_ok(), "{whole:?}");
        match asked(
            "2025-10-22T00:00:00Z",
            "2026-11-26T00:00:01Z",
            "day",
            Endpoint::Overview,
        ) {
            Err(ApiError::BadRequest(message)) => {
                assert!(message.contains("400.01 days"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // 35 days at interval=hour, and a second more.
        assert!(asked(
            "2026-10-22T00:00:00Z",
            "2026-11-26T00:00:00Z",
            "hour",
            Endpoint::Events
        )
        .is_ok());
        assert!(matches!(
            asked(
                "2026-10-22T00:00:00Z",
                "2026-11-26T00:00:01Z",
                "hour",
                Endpoint::Events
            ),
            Err(ApiError::BadRequest(_))
        ));
        // /user/{id} has no time series: interval=hour limits nothing there.
        assert!(asked(
            "2026-09-01T00:00:00Z",
            "2026-11-26T00:00:00Z",
            "hour",
            Endpoint::User
        )
        .is_ok());
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: 42,
        };
        assert_eq!(Cursor::parse(&cursor.encode()).unwrap(), cursor);
    }
}

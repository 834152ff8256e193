//! The event model: the fields of one activity and the rules that make it valid.
//!
//! Every path into the system (the Rust [`NewEvent`] builder, a JSON
//! [`RawEvent`], an Avro record read back from Kafka) ends in
//! [`NewEvent::validate`], so the rules below are applied once, the same way,
//! whoever produced the event.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::metadata::{Metadata, MetadataError};

/// Longest accepted `event_type`, in bytes.
/// The longest email address (RFC 5321: a 256-byte path less its angle
/// brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Longest accepted `entity_type`, in bytes.
pub const MAX_ENTITY_TYPE_BYTES: usize = 64;
/// Longest accepted `entity_id`, in bytes.
pub const MAX_ENTITY_ID_BYTES: usize = 256;
/// `user_agent` is truncated (at a character boundary) to this many bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// How far in the future `created_at` may be before the event is rejected:
/// clocks drift, but an event stored in the future would distort every chart.
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::minutes(10);

/// The earliest `created_at` accepted (2000-01-01T00:00:00Z). Older values are
/// almost always a zero or seconds-for-milliseconds bug in the producer, and
/// each would otherwise create a partition of its own.
pub fn earliest_created_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Why an event was refused. The message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("`{field}` is not a UUID: {value:?}")]
    InvalidUuid { field: &'static str, value: String },
    #[error("`{0}` must not be the nil or the max UUID (both are reserved)")]
    ReservedUuid(&'static str),
    #[error(
        "event_type {0:?} must match ^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$ and be at most 64 bytes"
    )]
    EventType(String),
    #[error("`{field}` is {len} bytes, more than the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("`{0}` contains a NUL character, which PostgreSQL cannot store")]
    Nul(&'static str),
    #[error("ip_address {0:?} is not a valid IPv4 or IPv6 address")]
    IpAddress(String),
    #[error("created_at {0:?} is not an RFC 3339 timestamp")]
    Timestamp(String),
    #[error("created_at {0} is more than 10 minutes in the future")]
    Future(DateTime<Utc>),
    #[error("created_at {0} is before 2000-01-01T00:00:00Z")]
    TooOld(DateTime<Utc>),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("metadata {0}")]
    Metadata(#[from] MetadataError),
    /// An object that is not valid JSON for an event (a duplicate field, a
    /// lone surrogate, a number out of range, nesting past serde_json's
    /// 128 levels): the parser's message, shortened.
    #[error("the event is not valid JSON: {0}")]
    Json(String),
}

impl ValidationError {
    /// A short, bounded name for the kind of problem: a metric label (the
    /// message itself carries values and is unbounded).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_field",
            Self::InvalidUuid { .. } | Self::ReservedUuid(_) => "bad_uuid",
            Self::EventType(_) => "bad_event_type",
            Self::TooLong { .. } => "too_long",
            Self::Nul(_) => "nul_character",
            Self::IpAddress(_) => "bad_ip_address",
            Self::Timestamp(_) | Self::Future(_) | Self::TooOld(_) => "bad_created_at",
            Self::WrongType { .. } => "wrong_type",
            Self::Metadata(_) => "bad_metadata",
            Self::Json(_) => "bad_json",
        }
    }
}

/// Shortens a hostile value before it is echoed back in an error message:
/// at most 80 bytes of it, cut at a character.
pub fn excerpt(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

fn parse_uuid(field: &'static str, value: &str) -> Result<Uuid, ValidationError> {
    Uuid::parse_str(value).map_err(|_| ValidationError::InvalidUuid {
        field,
        value: excerpt(value),
    })
}

/// The nil and the max UUID are never ids: the rollups count events without
/// a community under the nil one and every community together under the max
/// one (`sql/migrations/0002_rollups_and_rls.sql`), so an event or a caller
/// naming either would read or write those rows.
pub fn is_reserved(id: Uuid) -> bool {
    id.is_nil() || id.is_max()
}

fn not_reserved(field: &'static str, id: Uuid) -> Result<Uuid, ValidationError> {
    if is_reserved(id) {
        Err(ValidationError::ReservedUuid(field))
    } else {
        Ok(id)
    }
}

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Accepts any UUID but the reserved ones ([`is_reserved`]).
            pub fn parse(id: Uuid) -> Result<Self, ValidationError> {
                not_reserved($field, id).map(Self)
            }

            /// Parses the textual form (any case, with or without hyphens).
            pub fn parse_str(text: &str) -> Result<Self, ValidationError> {
                Self::parse(parse_uuid($field, text)?)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Lowercase hyphenated: the form used for Kafka keys and logs.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

uuid_newtype!(
    /// Unique forever: the same `event_id` is stored once, whatever path it takes.
    EventId,
    "event_id"
);
uuid_newtype!(
    /// A user; `None` on system events.
    UserId,
    "user_id"
);
uuid_newtype!(
    /// The tenant, and the Kafka key.
    CommunityId,
    "community_id"
);

impl EventId {
    /// A new time-ordered id (UUIDv7), so ids inserted together sit together
    /// in the uniqueness index.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

/// A dotted lowercase name such as `github.pr.opened`. New types need no code
/// change; only the shape is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

impl EventType {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let well_formed = value.len() <= MAX_EVENT_TYPE_BYTES
            && value.split('.').count() >= 2
            && value.split('.').all(|segment| {
                let mut chars = segment.chars();
                matches!(chars.next(), Some('a'..='z'))
                    && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
            });
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::EventType(excerpt(value)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event as a caller describes it: everything optional but the type.
/// [`NewEvent::validate`] turns it into an [`ActivityEvent`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEvent {
    pub event_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub community_id: Option<Uuid>,
    pub event_type: String,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            ..Self::default()
        }
    }

    pub fn event_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    pub fn user(mut self, id: Uuid) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn community(mut self, id: Uuid) -> Self {
        self.community_id = Some(id);
        self
    }

    pub fn entity(mut self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Self {
        self.entity_type = Some(entity_type.into());
        self.entity_id = Some(entity_id.into());
        self
    }

    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    pub fn ip_address(mut self, ip: impl Into<String>) -> Self {
        self.ip_address = Some(ip.into());
        self
    }

    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = Some(at);
        self
    }

    /// Applies every rule of the event model. `now` is the receive time: the
    /// default `created_at`, and the clock the future-skew rule is checked against.
    pub fn validate(self, now: DateTime<Utc>) -> Result<ActivityEvent, ValidationError> {
        let event_id = match self.event_id {
            Some(id) => EventId::parse(id)?,
            None => EventId::generate(),
        };
        let user_id = self.user_id.map(UserId::parse).transpose()?;
        let community_id = self.community_id.map(CommunityId::parse).transpose()?;
        if self.event_type.is_empty() {
            return Err(ValidationError::Missing("event_type"));
        }
        let event_type = EventType::parse(&self.event_type)?;
        let entity_type = bounded_text("entity_type", self.entity_type, MAX_ENTITY_TYPE_BYTES)?;
        let entity_id = bounded_text("entity_id", self.entity_id, MAX_ENTITY_ID_BYTES)?;
        let metadata = match self.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(Metadata::sanitize(value)?),
        };
        let ip_address = self
            .ip_address
            .filter(|ip| !ip.is_empty())
            .map(|ip| {
                ip.trim()
                    .parse::<IpAddr>()
                    // An IPv4 client seen by a server listening on IPv6
                    // (`::ffff:1.2.3.4`) is stored as the IPv4 address.
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| ValidationError::IpAddress(excerpt(&ip)))
            })
            .transpose()?;
        let user_agent = match self.user_agent {
            Some(agent) if agent.contains('\0') => return Err(ValidationError::Nul("user_agent")),
            Some(agent) => Some(truncate(agent, MAX_USER_AGENT_BYTES)),
            None => None,
        };
        let created_at = self.created_at.unwrap_or(now);
        if created_at > now + MAX_FUTURE_SKEW {
            return Err(ValidationError::Future(created_at));
        }
        if created_at < earliest_created_at() {
            return Err(ValidationError::TooOld(created_at));
        }
        Ok(ActivityEvent {
            event_id,
            user_id,
            community_id,
            event_type,
            entity_type,
            entity_id,
            metadata,
            ip_address,
            user_agent,
            // PostgreSQL and Avro both keep microseconds; drop the rest here so
            // what is stored equals what was encoded.
            created_at: truncate_to_micros(created_at),
        })
    }
}

fn bounded_text(
    field: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match value {
        None => Ok(None),
        Some(text) if text.len() > max => Err(ValidationError::TooLong {
            field,
            len: text.len(),
            max,
        }),
        Some(text) if text.contains('\0') => Err(ValidationError::Nul(field)),
        Some(text) => Ok(Some(text)),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// A valid, sanitized event. The only way to get one is
/// [`NewEvent::validate`] (or decoding one that was valid when encoded).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    event_id: EventId,
    user_id: Option<UserId>,
    community_id: Option<CommunityId>,
    event_type: EventType,
    entity_type: Option<String>,
    entity_id: Option<String>,
    metadata: Option<Metadata>,
    ip_address: Option<IpAddr>,
    user_agent: Option<String>,
    created_at: DateTime<Utc>,
}

impl ActivityEvent {
    pub fn event_id(&self) -> EventId {
        self.event_id
    }
    pub fn user_id(&self) -> Option<UserId> {
        self.user_id
    }
    pub fn community_id(&self) -> Option<CommunityId> {
        self.community_id
    }
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }
    pub fn entity_type(&self) -> Option<&str> {
        self.entity_type.as_deref()
    }
    pub fn entity_id(&self) -> Option<&str> {
        self.entity_id.as_deref()
    }
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }
    pub fn ip_address(&self) -> Option<IpAddr> {
        self.ip_address
    }
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// The email a `user.signup` event carries in `metadata.email`, used to
    /// fill in the `users` row: only one that can be an address (an `@`, at
    /// most [`MAX_EMAIL_BYTES`]). Any other (a redacted value, 3 kB of text)
    /// is kept in the event's metadata and leaves the row's email unset: a
    /// value too long for `users_email_key`'s index had failed the insert
    /// of every batch it was in, and a redacted one would have been one
    /// user's email.
    pub fn signup_email(&self) -> Option<&str> {
        (self.event_type.as_str() == "user.signup")
            .then(|| self.metadata.as_ref()?.get_str("email"))
            .flatten()
            .filter(|email| email.len() <= MAX_EMAIL_BYTES && email.contains('@'))
    }

    /// The name a `community.created` event carries in `metadata.name`, used
    /// to fill in the `communities` row.
    pub fn community_name(&self) -> Option<&str> {
        (self.event_type.as_str() == "community.created")
            .then(|| self.metadata.as_ref()?.get_str("name"))
            .flatten()
    }

    /// Back to the caller's form, e.g. to re-validate it against a new rule.
    pub fn into_new_event(self) -> NewEvent {
        NewEvent {
            event_id: Some(self.event_id.as_uuid()),
            user_id: self.user_id.map(|id| id.as_uuid()),
            community_id: self.community_id.map(|id| id.as_uuid()),
            event_type: self.event_type.0,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            metadata: self.metadata.map(Metadata::into_value),
            ip_address: self.ip_address.map(|ip| ip.to_string()),
            user_agent: self.user_agent,
            created_at: Some(self.created_at),
        }
    }
}

/// An event as JSON: one line of a `produce` file, or one element of a
/// collector request. Field types are checked here, field rules by
/// [`NewEvent::validate`]. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawEvent {
    #[serde(default)]
    pub event_id: serde_json::Value,
    #[serde(default)]
    pub user_id: serde_json::Value,
    #[serde(default)]
    pub community_id: serde_json::Value,
    #[serde(default)]
    pub event_type: serde_json::Value,
    #[serde(default)]
    pub entity_type: serde_json::Value,
    #[serde(default)]
    pub entity_id: serde_json::Value,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub ip_address: serde_json::Value,
    #[serde(default)]
    pub user_agent: serde_json::Value,
    #[serde(default)]
    pub created_at: serde_json::Value,
}

impl RawEvent {
    /// Parses one JSON object; any other JSON value is a clear error.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ValidationError> {
        if !value.is_object() {
            return Err(ValidationError::WrongType {
                field: "event",
                expected: "a JSON object",
            });
        }
        serde_json::from_value(value).map_err(|_| ValidationError::WrongType {
            field: "event",
            expected: "a JSON object",
        })
    }

    /// Parses one JSON object from its text (the collector's path: no
    /// intermediate tree); any other JSON value is a clear error.
    pub fn from_json_text(text: &str) -> Result<Self, ValidationError> {
        let not_an_object = ValidationError::WrongType {
            field: "event",
            expected: "a JSON object",
        };
        // Checked first: serde would read a struct from an array too.
        if !text.trim_start().starts_with('{') {
            // Text that is not JSON at all (a line of a file) says so.
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => not_an_object,
                Err(e) => ValidationError::Json(excerpt(&e.to_string())),
            });
        }
        crate::metadata::refuse_serde_tokens(text)
            .map_err(|e| ValidationError::Json(e.to_string()))?;
        serde_json::from_str(text).map_err(|e| ValidationError::Json(excerpt(&e.to_string())))
    }

    /// Checks the JSON types and parses ids and timestamps.
    pub fn into_new_event(self) -> Result<NewEvent, ValidationError> {
        let uuid = |field: &'static str, value: serde_json::Value| {
            optional_string(field, value)?
                .map(|text| parse_uuid(field, &text))
                .transpose()
        };
        let created_at = optional_string("created_at", self.created_at)?
            .map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| ValidationError::Timestamp(excerpt(&text)))
            })
            .transpose()?;
        let metadata = match self.metadata {
            serde_json::Value::Null => None,
            object @ serde_json::Value::Object(_) => Some(object),
            _ => return Err(MetadataError::NotAnObject.into()),
        };
        // Ids of the platform's entities are often numeric in the JSON of
        // other services; they are stored as text.
        let entity_id = match self.entity_id {
            serde_json::Value::Number(number) => Some(number.to_string()),
            other => optional_string("entity_id", other)?,
        };
        Ok(NewEvent {
            event_id: uuid("event_id", self.event_id)?,
            user_id: uuid("user_id", self.user_id)?,
            community_id: uuid("community_id", self.community_id)?,
            event_type: optional_string("event_type", self.event_type)?
                .ok_or(ValidationError::Missing("event_type"))?,
            entity_type: optional_string("entity_type", self.entity_type)?,
            entity_id,
            metadata,
            ip_address: optional_string("ip_address", self.ip_address)?,
            user_agent: optional_string("user_agent", self.user_agent)?,
            created_at,
        })
    }
}

fn optional_string(
    field: &'static str,
    value: serde_json::Value,
) -> Result<Option<String>, ValidationError> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => Ok(Some(text)),
        _ => Err(ValidationError::WrongType {
            field,
            expected: "a string or null",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    #[test]
    fn event_type_accepts_the_known_types_and_new_dotted_ones() {
        for t in [
            "user.signup",
            "user.login",
            "community.created",
            "member.created",
            "member.activated",
            "event.created",
            "hackathon.created",
            "webhook.triggered",
            "github.push",
            "github.pr.opened",
            "billing.invoice_paid2",
        ] {
            assert!(EventType::parse(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn event_type_rejects_malformed_names() {
        let long = format!("a.{}", "b".repeat(63));
        for t in [
            "",
            "user",
            "User.login",
            "user.",
            ".user",
            "user..login",
            "1user.login",
            "user.1login",
            "user.log-in",
            "user login",
            "user.login ",
            "usér.login",
            &long,
        ] {
            assert!(
                matches!(EventType::parse(t), Err(ValidationError::EventType(_))),
                "{t:?}"
            );
        }
        assert!(EventType::parse(&format!("a.{}", "b".repeat(62))).is_ok());
    }

    #[test]
    fn missing_event_id_and_created_at_are_generated() {
        let event = NewEvent::new("user.login").validate(now()).unwrap();
        assert_eq!(event.created_at(), now());
        assert_eq!(event.event_id().as_uuid().get_version_num(), 7);
    }

    #[test]
    fn reserved_and_malformed_uuids_are_rejected() {
        let nil = NewEvent::new("user.login")
            .user(Uuid::nil())
            .validate(now());
        assert_eq!(nil.unwrap_err(), ValidationError::ReservedUuid("user_id"));
        let max = NewEvent::new("user.login")
            .community(Uuid::max())
            .validate(now());
        assert_eq!(
            max.unwrap_err(),
            ValidationError::ReservedUuid("community_id")
        );
        let raw = RawEvent::from_json(json!({"event_type": "user.login", "community_id": "nope"}))
            .unwrap()
            .into_new_event();
        assert!(matches!(
            raw,
            Err(ValidationError::InvalidUuid {
                field: "community_id",
                ..
            })
        ));
    }

    #[test]
    fn text_limits_are_enforced_and_user_agent_truncated() {
        let too_long = NewEvent::new("user.login")
            .entity("x".repeat(65), "1")
            .validate(now());
        assert!(matches!(
            too_long,
            Err(ValidationError::TooLong {
                field: "entity_type",
                len: 65,
                max: 64
            })
        ));
        let id_too_long = NewEvent::new("user.login")
            .entity("post", "x".repeat(257))
            .validate(now());
        assert!(matches!(
            id_too_long,
            Err(ValidationError::TooLong {
                field: "entity_id",
                ..
            })
        ));
        let agent = "é".repeat(400); // 800 bytes, two per char
        let event = NewEvent::new("user.login")
            .user_agent(agent)
            .validate(now())
            .unwrap();
        assert_eq!(event.user_agent().unwrap().len(), 512);
        let nul = NewEvent::new("user.login")
            .entity("post", "a\0b")
            .validate(now());
        assert_eq!(nul.unwrap_err(), ValidationError::Nul("entity_id"));
    }

    #[test]
    fn ip_addresses_must_parse() {
        for ok in ["10.0.0.1", "::1", "2001:db8::8a2e:370:7334"] {
            let event = NewEvent::new("user.login")
                .ip_address(ok)
                .validate(now())
                .unwrap();
            assert_eq!(event.ip_address().unwrap(), ok.parse::<IpAddr>().unwrap());
        }
        for mapped in [
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "0:0:0:0:0:ffff:0102:0304",
        ] {
            let event = NewEvent::new("user.login")
                .ip_address(mapped)
                .validate(now())
                .unwrap();
            assert_eq!(
                event.ip_address().unwrap().to_string(),
                "1.2.3.4",
                "{mapped}"
            );
        }
        for bad in ["300.1.1.1", "localhost", "1.2.3", "::g"] {
            assert!(matches!(
                NewEvent::new("user.login").ip_address(bad).validate(now()),
                Err(ValidationError::IpAddress(_))
            ));
        }
    }

    #[test]
    fn future_and_ancient_timestamps_are_rejected() {
        let soon = now() + TimeDelta::minutes(9);
        assert!(NewEvent::new("user.login")
            .created_at(soon)
            .validate(now())
            .is_ok());
        let later = now() + TimeDelta::minutes(11);
        assert_eq!(
            NewEvent::new("user.login")
                .created_at(later)
                .validate(now())
                .unwrap_err(),
            ValidationError::Future(later)
        );
        let ancient = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap();
        assert!(matches!(
            NewEvent::new("user.login")
                .created_at(ancient)
                .validate(now()),
            Err(ValidationError::TooOld(_))
        ));
    }

    #[test]
    fn created_at_is_kept_to_the_microsecond() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let event = NewEvent::new("user.login")
            .created_at(at)
            .validate(now())
            .unwrap();
        assert_eq!(event.created_at().timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn raw_json_types_are_checked() {
        let wrong = RawEvent::from_json(json!({"event_type": 5}))
            .unwrap()
            .into_new_event();
        assert!(matches!(
            wrong,
            Err(ValidationError::WrongType {
                field: "event_type",
                ..
            })
        ));
        let missing = RawEvent::from_json(json!({"user_id": null}))
            .unwrap()
            .into_new_event();
        assert_eq!(missing.unwrap_err(), ValidationError::Missing("event_type"));
        assert!(RawEvent::from_json(json!([1, 2])).is_err());
        let numeric = RawEvent::from_json(json!({"event_type": "github.push", "entity_id": 42}))
            .unwrap()
            .into_new_event()
            .unwrap();
        assert_eq!(numeric.entity_id.as_deref(), Some("42"));
        // Beyond 64 bits, every digit is kept (not rounded through f64).
        let long = RawEvent::from_json_text(
            r#"{"event_type": "github.push", "entity_id": 123456789012345678901234567890}"#,
        )
        .unwrap()
        .into_new_event()
        .unwrap();
        assert_eq!(
            long.entity_id.as_deref(),
            Some("123456789012345678901234567890")
        );
        let metadata = RawEvent::from_json(json!({"event_type": "a.b", "metadata": "x"}))
            .unwrap()
            .into_new_event();
        assert_eq!(
            metadata.unwrap_err(),
            ValidationError::Metadata(MetadataError::NotAnObject)
        );
    }

    #[test]
    fn objects_that_are_not_valid_json_events_say_why() {
        let reason = |text: &str| match RawEvent::from_json_text(text) {
            Err(ValidationError::Json(message)) => message,
            other => panic!("{text}: expected a JSON error, got {other:?}"),
        };
        assert!(reason(r#"{"event_type": "a.b", "event_type": "c.d"}"#).contains("duplicate"));
        let lone = reason(r#"{"event_type": "a.b", "entity_id": "\ud800"}"#);
        assert!(lone.contains("hex escape"), "{lone}");
        let deep = format!(
            r#"{{"metadata": {}1{}}}"#,
            r#"{"a":"#.repeat(200),
            "}".repeat(200)
        );
        assert!(reason(&deep).contains("recursion limit"));
        // Not an object at all: the shape error, as before.
        assert_eq!(
            RawEvent::from_json_text("[1]").unwrap_err().kind(),
            "wrong_type"
        );
        // Not JSON at all (a bad line of a file): says that, not "object".
        assert!(
            reason("not json").contains("expected"),
            "{}",
            reason("not json")
        );
    }

    #[test]
    fn signup_and_community_creation_carry_profile_fields() {
        let signup = NewEvent::new("user.signup")
            .metadata(json!({"email": "a@example.com"}))
            .validate(now())
            .unwrap();
        assert_eq!(signup.signup_email(), Some("a@example.com"));
        for not_an_address in [
            format!("{}@example.com", "a".repeat(3000)),
            "[REDACTED]".to_owned(),
        ] {
            let signup = NewEvent::new("user.signup")
                .metadata(json!({ "email": not_an_address }))
                .validate(now())
                .unwrap();
            assert_eq!(signup.signup_email(), None, "{not_an_address:.40}");
        }
        let login = NewEvent::new("user.login")
            .metadata(json!({"email": "a@example.com"}))
            .validate(now())
            .unwrap();
        assert_eq!(login.signup_email(), None);
        let created = NewEvent::new("community.created")
            .metadata(json!({"name": "Rustaceans"}))
            .validate(now())
            .unwrap();
        assert_eq!(created.community_name(), Some("Rustaceans"));
    }

    /// Any JSON value: scalars, and arrays and objects of them, nested.
    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::hash_map(".{0,12}", inner, 0..8)
                    .prop_map(|m| { serde_json::Value::Object(m.into_iter().collect()) }),
            ]
        })
    }

    const FIELDS: &[&str] = &[
        "event_id",
        "user_id",
        "community_id",
        "event_type",
        "entity_type",
        "entity_id",
        "metadata",
        "ip_address",
        "user_agent",
        "created_at",
    ];

    proptest::proptest! {
        /// The collector's and `produce --file`'s parser, then every rule:
        /// never a panic, whatever the JSON; and what passes obeys the rules.
        #[test]
        fn parsing_and_validating_any_json_never_panics(
            value in any_json(),
            fields in proptest::collection::vec((0..FIELDS.len(), any_json()), 0..10),
        ) {
            let mut object = serde_json::Map::new();
            for (field, field_value) in fields {
                object.insert(FIELDS[field].to_owned(), field_value);
            }
            for candidate in [value, serde_json::Value::Object(object)] {
                // The collector's parser (from text) and the tree parser
                // accept the same values.
                proptest::prop_assert_eq!(
                    RawEvent::from_json_text(&candidate.to_string()).is_ok(),
                    RawEvent::from_json(candidate.clone()).is_ok()
                );
                let validated = RawEvent::from_json(candidate)
                    .and_then(RawEvent::into_new_event)
                    .and_then(|event| event.validate(now()));
                if let Ok(event) = validated {
                    proptest::prop_assert!(event.event_type().as_str().len() <= 64);
                    proptest::prop_assert!(event.user_agent().is_none_or(|ua| ua.len() <= 512));
                    proptest::prop_assert!(event.created_at() <= now() + MAX_FUTURE_SKEW);
                }
            }
        }
    }
}

//! The bytes on the topic: Avro single-object encoding.
//!
//! Each message value is `C3 01`, then the 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema's Parsing Canonical Form, then the
//! Avro binary datum (Avro specification, "Single object encoding"). Writer
//! schemas are the files in `schemas/`, compiled in; the reader resolves any
//! of them to the newest, so producers can move to a new schema version while
//! every consumer reads every version it has a file for, and new
//! consumers read everything.
//!
//! `apache-avro` encodes and resolves the datum; the 10-byte header is written
//! and read here because the crate's single-object reader accepts one schema
//! only, and the consumer must choose among every version by fingerprint.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::DateTime;

use crate::event::{ActivityEvent, NewEvent};
use crate::metadata::Metadata;
use crate::ValidationError;

/// Every schema version, oldest first. A new version is a new file in
/// `schemas/` and a new line here.
pub const SCHEMAS: &[(&str, &str)] = &[(
    "activity_event.v1.avsc",
    include_str!("../../schemas/activity_event.v1.avsc"),
)];

const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// Why bytes from the topic could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no value")]
    Empty,
    #[error("not Avro single-object encoding: expected header C3 01, found {0:02X?}")]
    BadMagic(Vec<u8>),
    #[error("unknown writer schema fingerprint {0:#018x}")]
    UnknownFingerprint(u64),
    #[error("undecodable Avro datum: {0}")]
    Datum(String),
    #[error("{0} trailing bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("field `{field}` has an unexpected Avro value: {found}")]
    Field { field: &'static str, found: String },
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
}

/// Why an event could not be encoded. Only a bug can cause one: every
/// [`ActivityEvent`] fits the schema.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event as Avro: {0}")]
pub struct EncodeError(String);

/// Errors in the compiled-in schemas themselves.
#[derive(Debug, thiserror::Error)]
#[error("schema {file}: {message}")]
pub struct SchemaError {
    file: &'static str,
    message: String,
}

/// One event as the writer schema's record, field for field (the names are
/// the schema's; `apache-avro` checks each value against its field).
#[derive(serde::Serialize)]
struct WireEvent<'a> {
    event_id: &'a str,
    user_id: Option<&'a str>,
    community_id: Option<&'a str>,
    event_type: &'a str,
    entity_type: Option<&'a str>,
    entity_id: Option<&'a str>,
    metadata: Option<&'a str>,
    ip_address: Option<&'a str>,
    user_agent: Option<&'a str>,
    created_at: i64,
}

/// Encodes with the newest schema; decodes any known version.
#[derive(Debug, Clone)]
pub struct AvroCodec {
    writer: Schema,
    writer_fingerprint: u64,
    readers: HashMap<u64, Schema>,
}

/// Parses a schema file for reading and writing.
///
/// The `uuid` logical type is dropped from string fields: it changes neither
/// the bytes nor the canonical form (so not the fingerprint), but with it
/// `apache-avro` rejects a malformed UUID while decoding the datum, with an
/// error that does not name the field. Without it, ids are read as strings
/// and validation says which field is not a UUID.
fn parse_for_the_wire(text: &str) -> Result<Schema, String> {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("logicalType").and_then(serde_json::Value::as_str) == Some("uuid") {
                    map.remove("logicalType");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    strip(&mut json);
    Schema::parse(&json).map_err(|e| e.to_string())
}

/// The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.
pub fn fingerprint(schema: &Schema) -> u64 {
    crc64_avro(&parsing_canonical_form(schema))
}

/// The schema's Parsing Canonical Form as the Avro specification defines it.
///
/// `apache-avro` keeps a logical type's base as `{"type":"long"}` where the
/// specification (and the Java, Python and Go implementations) strip it to
/// `"long"` (AVRO-4004, still open), which would give our schema a different
/// fingerprint than every other client computes. Its output is normalized
/// here: any object that is only `{"type": <primitive>}` becomes the name.
pub fn parsing_canonical_form(schema: &Schema) -> String {
    const PRIMITIVES: [&str; 8] = [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ];
    // The canonical form has no whitespace, and an object can only appear
    // where a type is expected, so this textual rewrite is exact.
    PRIMITIVES
        .iter()
        .fold(schema.canonical_form(), |form, name| {
            form.replace(&format!(r#"{{"type":"{name}"}}"#), &format!(r#""{name}""#))
        })
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub fn crc64_avro(text: &str) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *slot = fp;
        }
        table
    });
    text.bytes().fold(EMPTY, |fp, byte| {
        (fp >> 8) ^ table[((fp ^ u64::from(byte)) & 0xff) as usize]
    })
}

/// The most `apache-avro` may allocate for one string or bytes field while
/// decoding. It allocates a field's declared length before reading it, up to
/// 512 MB by default: a 41-byte message declaring a 500 MB string took a
/// consumer from 24 MB to 519 MB of memory (dead-lettered, but the memory
/// stayed), past its Kubernetes limit. No valid event comes near this
/// (the collector's events are at most 32 KiB, metadata 16 KiB), and
/// Kafka's default largest message is 1 MB.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

impl AvroCodec {
    /// Parses every schema in `schemas/`, and caps what decoding may
    /// allocate for one field at [`MAX_FIELD_BYTES`] (process-wide).
    pub fn new() -> Result<Self, SchemaError> {
        apache_avro::util::max_allocation_bytes(MAX_FIELD_BYTES);
        let mut readers = HashMap::new();
        let mut newest = None;
        for (file, text) in SCHEMAS {
            let schema =
                parse_for_the_wire(text).map_err(|message| SchemaError { file, message })?;
            let fp = fingerprint(&schema);
            readers.insert(fp, schema.clone());
            newest = Some((schema, fp));
        }
        let (writer, writer_fingerprint) = newest.ok_or(SchemaError {
            file: "schemas/",
            message: "no schema".into(),
        })?;
        Ok(Self {
            writer,
            writer_fingerprint,
            readers,
        })
    }

    /// The fingerprint written in front of every message.
    pub fn writer_fingerprint(&self) -> u64 {
        self.writer_fingerprint
    }

    pub fn writer_schema(&self) -> &Schema {
        &self.writer
    }

    /// Single-object encoding of one event: the header, then the datum
    /// serialized straight from the event by `apache-avro`'s schema-aware
    /// serializer (no intermediate `Value` tree, no schema resolution per
    /// event: those were a tenth of the collector's time).
    pub fn encode(&self, event: &ActivityEvent) -> Result<Vec<u8>, EncodeError> {
        let mut ids = [[0u8; uuid::fmt::Hyphenated::LENGTH]; 3];
        let [event_id, user_id, community_id] = &mut ids;
        let metadata = event.metadata().map(Metadata::to_json);
        let ip_address = event.ip_address().map(|ip| ip.to_string());
        let wire = WireEvent {
            event_id: event
                .event_id()
                .as_uuid()
                .hyphenated()
                .encode_lower(event_id),
            user_id: event
                .user_id()
                .map(|id| &*id.as_uuid().hyphenated().encode_lower(user_id)),
            community_id: event
                .community_id()
                .map(|id| &*id.as_uuid().hyphenated().encode_lower(community_id)),
            event_type: event.event_type().as_str(),
            entity_type: event.entity_type(),
            entity_id: event.entity_id(),
            metadata: metadata.as_deref(),
            ip_address: ip_address.as_deref(),
            user_agent: event.user_agent(),
            created_at: event.created_at().timestamp_micros(),
        };
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&self.writer_fingerprint.to_le_bytes());
        apache_avro::write_avro_datum_ref(&self.writer, &wire, &mut bytes)
            .map_err(|e| EncodeError(e.to_string()))?;
        Ok(bytes)
    }

    /// Reads one message value back into the caller's form. The result still
    /// has to pass [`NewEvent::validate`]: bytes on a topic are untrusted.
    pub fn decode(&self, bytes: &[u8]) -> Result<NewEvent, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
            return Err(DecodeError::BadMagic(bytes[..bytes.len().min(2)].to_vec()));
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let writer = self
            .readers
            .get(&fp)
            .ok_or(DecodeError::UnknownFingerprint(fp))?;
        let mut datum = &bytes[HEADER_LEN..];
        let reader = (fp != self.writer_fingerprint).then_some(&self.writer);
        let value = apache_avro::from_avro_datum(writer, &mut datum, reader)
            .map_err(|e| DecodeError::Datum(e.to_string()))?;
        if !datum.is_empty() {
            return Err(DecodeError::TrailingBytes(datum.len()));
        }
        record_to_event(value)
    }

    /// Decodes and validates: the consumer's one call per message.
    pub fn decode_valid(
        &self,
        bytes: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ActivityEvent, DecodeError> {
        Ok(self.decode(bytes)?.validate(now)?)
    }
}

fn record_to_event(value: Value) -> Result<NewEvent, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::Datum("datum is not a record".into()));
    };
    let mut event = NewEvent::default();
    for (name, value) in fields {
        let value = match value {
            Value::Union(_, inner) => *inner,
            other => other,
        };
        match name.as_str() {
            "event_id" => event.event_id = uuid("event_id", value)?,
            "user_id" => event.user_id = uuid("user_id", value)?,
            "community_id" => event.community_id = uuid("community_id", value)?,
            "event_type" => event.event_type = string("event_type", value)?.unwrap_or_default(),
            "entity_type" => event.entity_type = string("entity_type", value)?,
            "entity_id" => event.entity_id = string("entity_id", value)?,
            "metadata" => {
                event.metadata = string("metadata", value)?
                    .map(|text| Metadata::parse_json(&text).map(Metadata::into_value))
                    .transpose()
                    .map_err(ValidationError::from)?
            }
            "ip_address" => event.ip_address = string("ip_address", value)?,
            "user_agent" => event.user_agent = string("user_agent", value)?,
            "created_at" => {
                event.created_at = match value {
                    Value::TimestampMicros(micros) | Value::Long(micros) => Some(
                        DateTime::from_timestamp_micros(micros).ok_or(DecodeError::Field {
                            field: "created_at",
                            found: format!("{micros} µs is out of range"),
                        })?,
                    ),
                    other => return Err(unexpected("created_at", &other)),
                }
            }
            // Fields added by later schema versions that this code does not
            // know yet are read and ignored.
            _ => {}
        }
    }
    Ok(event)
}

fn unexpected(field: &'static str, value: &Value) -> DecodeError {
    let mut found = format!("{value:?}");
    found.truncate(80);
    DecodeError::Field { field, found }
}

fn uuid(field: &'static str, value: Value) -> Result<Option<uuid::Uuid>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::Uuid(id) => Ok(Some(id)),
        Value::String(text) => uuid::Uuid::parse_str(&text).map(Some).map_err(|_| {
            DecodeError::Invalid(ValidationError::InvalidUuid {
                field,
                value: crate::event::excerpt(&text),
            })
        }),
        other => Err(unexpected(field, &other)),
    }
}

fn string(field: &'static str, value: Value) -> Result<Option<String>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        other => Err(unexpected(field, &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use uuid::Uuid;

    fn sample(now: chrono::DateTime<Utc>) -> ActivityEvent {
        NewEvent::new("github.pr.opened")
            .event_id(Uuid::now_v7())
            .user(Uuid::new_v4())
            .community(Uuid::new_v4())
            .entity("pull_request", "1234")
            .metadata(json!({"repo": "a/b", "draft": false, "n": 3, "nested": {"x": [1, "y"]}}))
            .ip_address("2001:db8::1")
            .user_agent("curl/8.0")
            .created_at(Utc.timestamp_opt(1_764_000_000, 123_456_000).unwrap())
            .validate(now)
            .unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let codec = AvroCodec::new().unwrap();
        let now = Utc::now();
        let event = sample(now);
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(codec.decode_valid(&bytes, now).unwrap(), event);

        let minimal = NewEvent::new("user.login").validate(now).unwrap();
        let bytes = codec.encode(&minimal).unwrap();
        assert_eq!(codec.decode_valid(&bytes, now).unwrap(), minimal);
    }

    #[test]
    fn a_declared_length_past_the_cap_is_refused_before_allocating() {
        let codec = AvroCodec::new().unwrap();
        assert_eq!(
            apache_avro::util::max_allocation_bytes(usize::MAX),
            MAX_FIELD_BYTES,
            "the codec set the cap first"
        );
        // A whole event, then the same bytes with event_id's length (the
        // datum's first varint) claiming 500 MB.
        let bytes = codec.encode(&sample(Utc::now())).unwrap();
        let datum = &bytes[HEADER_LEN..];
        let zigzag = |n: u64| {
            let (mut n, mut out) = (n << 1, Vec::new());
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    return out;
                }
                out.push(byte | 0x80);
            }
        };
        let first = zigzag(36); // a hyphenated UUID's length
        assert!(datum.starts_with(&first));
        let mut hostile = bytes[..HEADER_LEN].to_vec();
        hostile.extend(zigzag(500_000_000));
        hostile.extend_from_slice(&datum[first.len()..]);
        match codec.decode(&hostile) {
            Err(DecodeError::Datum(reason)) => assert!(reason.contains("500000000"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_and_fingerprint_follow_the_avro_specification() {
        let codec = AvroCodec::new().unwrap();
        // Parsing Canonical Form, written out by hand from the specification:
        // full name first, only name/type/fields, logical types stripped to
        // their primitive, no whitespace.
        let canonical = concat!(
            r#"{"name":"io.activitytracker.ActivityEvent","type":"record","fields":["#,
            r#"{"name":"event_id","type":"string"},"#,
            r#"{"name":"user_id","type":["null","string"]},"#,
            r#"{"name":"community_id","type":["null","string"]},"#,
            r#"{"name":"event_type","type":"string"},"#,
            r#"{"name":"entity_type","type":["null","string"]},"#,
            r#"{"name":"entity_id","type":["null","string"]},"#,
            r#"{"name":"metadata","type":["null","string"]},"#,
            r#"{"name":"ip_address","type":["null","string"]},"#,
            r#"{"name":"user_agent","type":["null","string"]},"#,
            r#"{"name":"created_at","type":"long"}]}"#
        );
        assert_eq!(parsing_canonical_form(codec.writer_schema()), canonical);
        assert_eq!(codec.writer_fingerprint(), crc64_avro(canonical));
        // The specification's test vectors (share/test/data/schema-tests.txt).
        assert_eq!(crc64_avro(r#""null""#) as i64, 7_195_948_357_588_979_594);
        assert_eq!(
            crc64_avro(r#""boolean""#) as i64,
            -6_970_731_678_124_411_036
        );
        assert_eq!(
            crc64_avro(r#"{"name":"foo","type":"fixed","size":15}"#) as i64,
            1_756_455_273_707_447_556
        );

        let bytes = codec.encode(&sample(Utc::now())).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(&bytes[2..10], &crc64_avro(canonical).to_le_bytes());
        // The datum after the header is plain Avro binary: a generic reader
        // with only the schema file can read it.
        let value =
            apache_avro::from_avro_datum(codec.writer_schema(), &mut &bytes[10..], None).unwrap();
        assert!(matches!(value, Value::Record(ref fields) if fields.len() == 10));
    }

    #[test]
    fn datum_is_what_the_generic_avro_writer_writes() {
        let codec = AvroCodec::new().unwrap();
        let now = Utc::now();
        for event in [
            sample(now),
            NewEvent::new("user.login").validate(now).unwrap(),
        ] {
            let bytes = codec.encode(&event).unwrap();
            let value =
                apache_avro::from_avro_datum(codec.writer_schema(), &mut &bytes[10..], None)
                    .unwrap();
            // The same record through the crate's generic, validating
            // writer gives the same bytes.
            let generic = apache_avro::to_avro_datum(codec.writer_schema(), value).unwrap();
            assert_eq!(&bytes[10..], &generic[..]);
        }
    }

    #[test]
    fn rejects_foreign_or_damaged_bytes_with_a_reason() {
        let codec = AvroCodec::new().unwrap();
        assert!(matches!(codec.decode(b""), Err(DecodeError::Empty)));
        assert!(matches!(
            codec.decode(b"{\"json\": true}"),
            Err(DecodeError::BadMagic(_))
        ));
        let mut unknown = vec![0xC3, 0x01];
        unknown.extend_from_slice(&42u64.to_le_bytes());
        unknown.push(0);
        assert!(matches!(
            codec.decode(&unknown),
            Err(DecodeError::UnknownFingerprint(42))
        ));
        let bytes = codec.encode(&sample(Utc::now())).unwrap();
        assert!(matches!(
            codec.decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Datum(_))
        ));
        let mut longer = bytes.clone();
        longer.push(7);
        assert!(matches!(
            codec.decode(&longer),
            Err(DecodeError::TrailingBytes(1))
        ));
    }

    #[test]
    fn decoded_events_are_validated() {
        let codec = AvroCodec::new().unwrap();
        // Written by a generic writer, as another client would: a bad
        // event_type and a UUID that is not one.
        let record = |event_type: &str, user: &str| {
            let datum = apache_avro::to_avro_datum(
                codec.writer_schema(),
                Value::Record(vec![
                    ("event_id".into(), Value::String(Uuid::now_v7().to_string())),
                    (
                        "user_id".into(),
                        Value::Union(1, Box::new(Value::String(user.into()))),
                    ),
                    (
                        "community_id".into(),
                        Value::Union(0, Box::new(Value::Null)),
                    ),
                    ("event_type".into(), Value::String(event_type.into())),
                    ("entity_type".into(), Value::Union(0, Box::new(Value::Null))),
                    ("entity_id".into(), Value::Union(0, Box::new(Value::Null))),
                    ("metadata".into(), Value::Union(0, Box::new(Value::Null))),
                    ("ip_address".into(), Value::Union(0, Box::new(Value::Null))),
                    ("user_agent".into(), Value::Union(0, Box::new(Value::Null))),
                    (
                        "created_at".into(),
                        Value::TimestampMicros(Utc::now().timestamp_micros()),
                    ),
                ]),
            );
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&codec.writer_fingerprint().to_le_bytes());
            bytes.extend_from_slice(&datum.unwrap());
            bytes
        };
        let good = record("user.login", &Uuid::new_v4().to_string());
        assert!(codec.decode_valid(&good, Utc::now()).is_ok());
        let bad_type = record("Login", &Uuid::new_v4().to_string());
        assert!(matches!(
            codec.decode_valid(&bad_type, Utc::now()),
            Err(DecodeError::Invalid(ValidationError::EventType(_)))
        ));
        let bad_id = record("user.login", "not-a-uuid");
        let error = codec
            .decode_valid(&bad_id, Utc::now())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("user_id") && error.contains("not-a-uuid"),
            "{error}"
        );
    }
}

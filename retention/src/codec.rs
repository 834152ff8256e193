//! Archived rows as Parquet, and back.
//!
//! One file holds consecutive rows of one partition, in primary key order,
//! with the columns of `activities` and these types (schema version 1):
//!
//! | column | Parquet | Arrow |
//! |---|---|---|
//! | `id` | INT64 | Int64 |
//! | `event_id`, `user_id`, `community_id` | FIXED_LEN_BYTE_ARRAY(16), logical UUID | FixedSizeBinary(16), `arrow.uuid` |
//! | `event_type`, `entity_type`, `entity_id`, `ip_address`, `user_agent` | BYTE_ARRAY, STRING | Utf8 |
//! | `metadata` | BYTE_ARRAY, JSON (PostgreSQL's `jsonb` text) | Utf8, `arrow.json` |
//! | `created_at` | INT64, TIMESTAMP(MICROS, UTC) | Timestamp(µs, "UTC") |
//!
//! Zstandard compressed. [`rows_digest`] is the SHA-256 of the rows
//! themselves (not of the file's bytes), computed the same way from the rows
//! read out of PostgreSQL and from the rows decoded out of the file: equal
//! digests prove the file holds exactly those rows.

use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow_schema::extension::{Json, Uuid as UuidExtension};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::RetentionError;

/// The archive format's version, written into every manifest.
pub const SCHEMA_VERSION: u32 = 1;

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 65_536;

/// One row of `activities`, as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRow {
    pub id: i64,
    pub event_id: Uuid,
    pub user_id: Option<Uuid>,
    pub community_id: Option<Uuid>,
    pub event_type: String,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// `metadata::text`: PostgreSQL's canonical `jsonb` text.
    pub metadata: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl ArchivedRow {
    /// A row of `sql/queries/retention/read_part.sql`.
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            user_id: row.try_get("user_id")?,
            community_id: row.try_get("community_id")?,
            event_type: row.try_get("event_type")?,
            entity_type: row.try_get("entity_type")?,
            entity_id: row.try_get("entity_id")?,
            metadata: row.try_get("metadata")?,
            ip_address: row.try_get("ip_address")?,
            user_agent: row.try_get("user_agent")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

fn uuid_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::FixedSizeBinary(16), nullable).with_extension_type(UuidExtension)
}

/// The Arrow schema of an archived file.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        uuid_field("event_id", false),
        uuid_field("user_id", true),
        uuid_field("community_id", true),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("entity_type", DataType::Utf8, true),
        Field::new("entity_id", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true).with_extension_type(Json::default()),
        Field::new("ip_address", DataType::Utf8, true),
        Field::new("user_agent", DataType::Utf8, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

fn batch(rows: &[ArchivedRow]) -> Result<RecordBatch, RetentionError> {
    let n = rows.len();
    let mut id = Int64Builder::with_capacity(n);
    let mut uuids: [FixedSizeBinaryBuilder; 3] =
        std::array::from_fn(|_| FixedSizeBinaryBuilder::with_capacity(n, 16));
    let mut texts: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::new());
    let mut created_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for row in rows {
        id.append_value(row.id);
        for (builder, value) in
            uuids
                .iter_mut()
                .zip([Some(row.event_id), row.user_id, row.community_id])
        {
            match value {
                Some(uuid) => builder.append_value(uuid.as_bytes())?,
                None => builder.append_null(),
            }
        }
        texts[0].append_value(&row.event_type);
        for (builder, value) in texts[1..].iter_mut().zip([
            &row.entity_type,
            &row.entity_id,
            &row.metadata,
            &row.ip_address,
            &row.user_agent,
        ]) {
            builder.append_option(value.as_deref());
        }
        created_at.append_value(row.created_at.timestamp_micros());
    }
    let [event_id, user_id, community_id] = uuids.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [event_type, entity_type, entity_id, metadata, ip_address, user_agent] =
        texts.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(id.finish()),
            event_id,
            user_id,
            community_id,
            event_type,
            entity_type,
            entity_id,
            metadata,
            ip_address,
            user_agent,
            Arc::new(created_at.finish()),
        ],
    )?)
}

/// `rows` as one Parquet file.
pub fn encode(rows: &[ArchivedRow]) -> Result<Bytes, RetentionError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(properties))?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        writer.write(&batch(chunk)?)?;
    }
    writer.close()?;
    Ok(Bytes::from(out))
}

/// The rows of a Parquet file written by [`encode`]. Refuses a file whose
/// columns are not the archive's.
pub fn decode(file: Bytes) -> Result<Vec<ArchivedRow>, RetentionError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.schema().fields() != schema().fields() {
            return Err(RetentionError::Verify(format!(
                "archived file has columns {:?}, expected schema version {SCHEMA_VERSION}",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            )));
        }
        let column = |i: usize| batch.column(i);
        let id = column(0).as_primitive::<Int64Type>();
        let uuids: Vec<&FixedSizeBinaryArray> =
            (1..=3).map(|i| column(i).as_fixed_size_binary()).collect();
        let texts: Vec<&StringArray> = (4..=9).map(|i| column(i).as_string::<i32>()).collect();
        let created_at = column(10).as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let uuid = |a: &FixedSizeBinaryArray| -> Result<Option<Uuid>, RetentionError> {
                if a.is_null(i) {
                    return Ok(None);
                }
                Uuid::from_slice(a.value(i))
                    .map(Some)
                    .map_err(|e| RetentionError::Verify(format!("bad uuid in archive: {e}")))
            };
            let text = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
            let micros = created_at.value(i);
            rows.push(ArchivedRow {
                id: id.value(i),
                event_id: uuid(uuids[0])?.ok_or_else(|| {
                    RetentionError::Verify("archived row without event_id".into())
                })?,
                user_id: uuid(uuids[1])?,
                community_id: uuid(uuids[2])?,
                event_type: texts[0].value(i).to_owned(),
                entity_type: text(texts[1]),
                entity_id: text(texts[2]),
                metadata: text(texts[3]),
                ip_address: text(texts[4]),
                user_agent: text(texts[5]),
                created_at: DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                    RetentionError::Verify(format!("timestamp out of range: {micros}"))
                })?,
            });
        }
    }
    Ok(rows)
}

/// SHA-256 of the rows, in order: every field, length-prefixed, NULL told
/// apart from empty.
pub fn rows_digest(rows: &[ArchivedRow]) -> String {
    fn text(hasher: &mut Sha256, value: Option<&str>) {
        match value {
            None => hasher.update([0]),
            Some(s) => {
                hasher.update([1]);
                hasher.update((s.len() as u64).to_le_bytes());
                hasher.update(s.as_bytes());
            }
        }
    }
    fn uuid(hasher: &mut Sha256, value: Option<Uuid>) {
        match value {
            None => hasher.update([0]),
            Some(u) => {
                hasher.update([1]);
                hasher.update(u.as_bytes());
            }
        }
    }
    let mut hasher = Sha256::new();
    for row in rows {
        hasher.update(row.id.to_le_bytes());
        uuid(&mut hasher, Some(row.event_id));
        uuid(&mut hasher, row.user_id);
        uuid(&mut hasher, row.community_id);
        text(&mut hasher, Some(&row.event_type));
        text(&mut hasher, row.entity_type.as_deref());
        text(&mut hasher, row.entity_id.as_deref());
        text(&mut hasher, row.metadata.as_deref());
        text(&mut hasher, row.ip_address.as_deref());
        text(&mut hasher, row.user_agent.as_deref());
        hasher.update(row.created_at.timestamp_micros().to_le_bytes());
    }
    hex(&hasher.finalize())
}

/// SHA-256 of a file's bytes.
pub fn file_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(id: i64) -> ArchivedRow {
        ArchivedRow {
            id,
            event_id: Uuid::now_v7(),
            user_id: Some(Uuid::new_v4()),
            community_id: None,
            event_type: "user.login".into(),
            entity_type: Some(String::new()),
            entity_id: None,
            metadata: Some(r#"{"a": [1, 2.5, "é\u0000"], "b": null}"#.into()),
            ip_address: Some("2001:db8::1".into()),
            user_agent: None,
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn rows_survive_a_round_trip_through_parquet() {
        let rows: Vec<_> = (1..=1000).map(row).collect();
        let decoded = decode(encode(&rows).unwrap()).unwrap();
        assert_eq!(decoded, rows);
        assert_eq!(rows_digest(&decoded), rows_digest(&rows));
    }

    #[test]
    fn the_digest_tells_null_from_empty_and_sees_order() {
        let a = row(1);
        let mut b = a.clone();
        b.entity_type = None;
        assert_ne!(
            rows_digest(std::slice::from_ref(&a)),
            rows_digest(&[b.clone()])
        );
        assert_ne!(
            rows_digest(&[a.clone(), b.clone()]),
            rows_digest(&[b, a.clone()])
        );
        let mut c = a.clone();
        c.created_at += chrono::TimeDelta::microseconds(1);
        assert_ne!(rows_digest(&[a]), rows_digest(&[c]));
    }

    #[test]
    fn a_file_that_is_not_an_archive_is_an_error_not_a_panic() {
        assert!(decode(Bytes::from_static(b"PAR1 not really")).is_err());
        assert!(decode(Bytes::new()).is_err());
    }

    proptest! {
        #[test]
        fn any_text_round_trips(
            event_type in "[a-z]{1,8}\\.[a-z]{1,8}",
            entity in proptest::option::of(".{0,40}"),
            metadata in proptest::option::of(".{0,80}"),
            micros in -62_135_596_800_000_000i64..253_402_300_799_999_999,
        ) {
            let mut r = row(7);
            r.event_type = event_type;
            r.entity_id = entity;
            r.metadata = metadata;
            r.created_at = DateTime::from_timestamp_micros(micros).unwrap();
            let rows = vec![r];
            prop_assert_eq!(decode(encode(&rows).unwrap()).unwrap(), rows);
        }
    }
}

//! `activity archive`: cold partitions to Parquet in object storage, verified,
//! then dropped.
//!
//! A partition goes through three steps, each safe to interrupt:
//!
//! 1. **Detach** (one transaction): drop its hot indexes, detach it from
//!    `activities` and rename it `activities_archiving_pYYYY_MM`. From then
//!    on nothing writes to it; an event that arrives late for that month
//!    makes the consumer create a fresh partition, archived by a later run.
//! 2. **Write and verify**: its rows, in primary key order, go out in parts
//!    of `retention.archive_part_rows` rows; each part is read back from the
//!    store, decoded and compared (row count and the SHA-256 of the rows)
//!    with what was read from PostgreSQL. Then the manifest, read back too.
//! 3. **Drop** (one transaction): record the archive in `activity_archives`
//!    and drop the table, after checking that it still holds exactly the
//!    rows the manifest counts.
//!
//! A run that finds a table left in step 2 by a crash finishes it first.
//! Names are deterministic (`objects.rs`), so a repeated step 2 overwrites
//! its own files. Nothing is dropped whose archive was not read back.

use activity_core::config::RetentionSettings;
use activity_core::database::Pool;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::codec::{self, ArchivedRow};
use crate::objects::{month_dir, Archive, Manifest, Part, TABLE_DIR};
use crate::partitions::{self, month_end, month_of, quoted};
use crate::RetentionError;

/// An arbitrary constant naming the advisory lock one archive or retention
/// run holds (two runs at once would both try to detach the same month).
const RETENTION_LOCK: i64 = 0x7265_7465_6e74_696f; // "retentio"

/// What archiving one partition did.
#[derive(Debug, Clone, Serialize)]
pub struct Archived {
    pub partition: String,
    pub month: DateTime<Utc>,
    pub rows: u64,
    pub bytes: u64,
    pub parts: usize,
    /// Object key of the manifest (none for an empty partition).
    pub manifest: Option<String>,
}

/// Holds the retention advisory lock for as long as it lives.
pub struct RetentionLock {
    client: activity_core::database::Object,
}

impl RetentionLock {
    /// Takes the lock, or fails at once if another run holds it.
    pub async fn take(pool: &Pool) -> Result<Self, RetentionError> {
        let client = pool.get().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])
            .await?
            .try_get(0)?;
        if !locked {
            return Err(RetentionError::Busy);
        }
        Ok(Self { client })
    }

    pub async fn release(self) -> Result<(), RetentionError> {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK])
            .await?;
        Ok(())
    }
}

/// Archives and drops every partition wholly before `before` (first any left
/// half-archived by an earlier run). Months in `skip` are left alone.
/// The caller holds the [`RetentionLock`].
pub async fn archive_before(
    pool: &Pool,
    archive: &Archive,
    policy: &RetentionSettings,
    before: DateTime<Utc>,
    skip: &[DateTime<Utc>],
) -> Result<Vec<Archived>, RetentionError> {
    let mut done = Vec::new();
    let client = pool.get().await?;
    let now = Utc::now();
    let found = partitions::list(&**client, now, policy, false).await?;
    drop(client);
    for partition in found.iter().filter(|p| !p.attached) {
        tracing::info!(table = %partition.name, "finishing an archive an earlier run left half done");
        done.push(write_and_drop(pool, archive, policy, &partition.name).await?);
    }
    for partition in found.iter().filter(|p| p.attached) {
        if partition.to > before || skip.contains(&partition.from) {
            continue;
        }
        let detached = detach(pool, &partition.name).await?;
        done.push(write_and_drop(pool, archive, policy, &detached).await?);
    }
    Ok(done)
}

/// Step 1: returns the detached table's name.
async fn detach(pool: &Pool, partition: &str) -> Result<String, RetentionError> {
    let Some(month) = month_of(partition) else {
        return Err(RetentionError::Config(format!(
            "not a partition: {partition}"
        )));
    };
    let detached = format!("activities_archiving_p{}", month.format("%Y_%m"));
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // DETACH locks the parent briefly; wait behind running batches, not forever.
    tx.batch_execute("SET LOCAL lock_timeout = '30s'; SET LOCAL client_min_messages = warning")
        .await?;
    tx.execute("SELECT activity_warm_indexes($1)", &[&partition])
        .await?;
    tx.batch_execute(&format!(
        "ALTER TABLE activities DETACH PARTITION {p}; ALTER TABLE {p} RENAME TO {d}",
        p = quoted(partition),
        d = quoted(&detached)
    ))
    .await?;
    tx.commit().await?;
    tracing::info!(%partition, %detached, "partition detached for archiving");
    Ok(detached)
}

/// Steps 2 and 3 for a detached table.
async fn write_and_drop(
    pool: &Pool,
    archive: &Archive,
    policy: &RetentionSettings,
    table: &str,
) -> Result<Archived, RetentionError> {
    let month = month_of(table)
        .ok_or_else(|| RetentionError::Config(format!("not an archiving table: {table}")))?;
    let partition = format!("activities_p{}", month.format("%Y_%m"));
    let client = pool.get().await?;
    let stats = client
        .query_one(
            &format!("SELECT count(*), min(id), max(id) FROM {}", quoted(table)),
            &[],
        )
        .await?;
    let count: i64 = stats.try_get(0)?;
    let (Some(first_id), Some(last_id)) = (
        stats.try_get::<_, Option<i64>>(1)?,
        stats.try_get::<_, Option<i64>>(2)?,
    ) else {
        drop(client);
        let archive_id = format!("month={}/empty", month.format("%Y-%m"));
        drop_recorded(pool, table, &archive_id, month, None, 0, 0).await?;
        return Ok(Archived {
            partition,
            month,
            rows: 0,
            bytes: 0,
            parts: 0,
            manifest: None,
        });
    };

    let dir = format!("{}/ids-{first_id}-{last_id}", month_dir(month));
    let read_part = include_str!("../../sql/queries/retention/read_part.sql")
        .replace("{table}", &quoted(table));
    let statement = client.prepare(&read_part).await?;
    let limit = i64::from(policy.archive_part_rows);
    // Below every row: ids are compared first, and no id is i64::MIN.
    let mut after = (i64::MIN, DateTime::<Utc>::UNIX_EPOCH);
    let mut parts = Vec::new();
    loop {
        let rows: Vec<ArchivedRow> = client
            .query(&statement, &[&after.0, &after.1, &limit])
            .await?
            .iter()
            .map(ArchivedRow::from_row)
            .collect::<Result<_, _>>()?;
        let Some(last) = rows.last() else {
            break;
        };
        after = (last.id, last.created_at);
        let file = format!("part-{:05}.parquet", parts.len());
        let part = write_part(archive, &format!("{dir}/{file}"), file, &rows).await?;
        tracing::info!(%table, part = %part.file, rows = part.rows, bytes = part.bytes, "part written and verified");
        parts.push(part);
    }

    drop(statement);
    drop(client);
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let bytes: u64 = parts.iter().map(|p| p.bytes).sum();
    let manifest = Manifest {
        schema_version: codec::SCHEMA_VERSION,
        table: "activities".into(),
        partition: partition.clone(),
        range_from: month,
        range_to: month_end(month),
        rows,
        first_id,
        last_id,
        parts,
    };
    let manifest_path = format!("{dir}/manifest.json");
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| RetentionError::Verify(format!("cannot encode the manifest: {e}")))?;
    archive.put(&manifest_path, json.into()).await?;
    if archive.read_manifest(&manifest_path).await? != manifest {
        return Err(RetentionError::Verify(format!(
            "{manifest_path} read back differs from what was written"
        )));
    }
    if rows != count as u64 {
        return Err(RetentionError::Verify(format!(
            "{table} has {count} rows but its archive {rows}: not dropped"
        )));
    }
    let archive_id = dir
        .strip_prefix(TABLE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(&dir)
        .to_owned();
    let manifest_key = archive.key(&manifest_path);
    let parts = manifest.parts.len();
    drop_recorded(
        pool,
        table,
        &archive_id,
        month,
        Some(&manifest_key),
        rows,
        bytes,
    )
    .await?;
    Ok(Archived {
        partition,
        month,
        rows,
        bytes,
        parts,
        manifest: Some(manifest_key),
    })
}

/// Encodes, uploads, downloads, decodes and compares one part.
async fn write_part(
    archive: &Archive,
    path: &str,
    file: String,
    rows: &[ArchivedRow],
) -> Result<Part, RetentionError> {
    let expected = codec::rows_digest(rows);
    let encoded = codec::encode(rows)?;
    let sha256 = codec::file_digest(&encoded);
    let bytes = encoded.len() as u64;
    archive.put(path, encoded).await?;

    let read_back = archive.get(path).await?;
    if codec::file_digest(&read_back) != sha256 {
        return Err(RetentionError::Verify(format!(
            "{path}: the bytes read back differ from the bytes written"
        )));
    }
    let decoded = codec::decode(read_back)?;
    if decoded.len() != rows.len() || codec::rows_digest(&decoded) != expected {
        return Err(RetentionError::Verify(format!(
            "{path}: the rows read back differ from the rows archived"
        )));
    }
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(RetentionError::Verify(format!("{path}: an empty part")));
    };
    Ok(Part {
        file,
        rows: rows.len() as u64,
        bytes,
        sha256,
        rows_sha256: expected,
        first_id: first.id,
        last_id: last.id,
    })
}

/// Step 3: records the archive and drops the detached table, in one
/// transaction, if the table still holds `rows` rows.
async fn drop_recorded(
    pool: &Pool,
    table: &str,
    archive_id: &str,
    month: DateTime<Utc>,
    manifest: Option<&str>,
    rows: u64,
    bytes: u64,
) -> Result<(), RetentionError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        quoted(table)
    ))
    .await?;
    let now: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {}", quoted(table)), &[])
        .await?
        .try_get(0)?;
    if now as u64 != rows {
        return Err(RetentionError::Verify(format!(
            "{table} changed while it was archived ({rows} rows archived, {now} now): not dropped"
        )));
    }
    tx.execute(
        include_str!("../../sql/queries/retention/record_archive.sql"),
        &[
            &archive_id,
            &month,
            &manifest,
            &(rows as i64),
            &(bytes as i64),
        ],
    )
    .await?;
    tx.batch_execute(&format!("DROP TABLE {}", quoted(table)))
        .await?;
    tx.commit().await?;
    tracing::info!(%table, archive_id, rows, bytes, "archive recorded; table dropped");
    Ok(())
}

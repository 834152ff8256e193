//! `activity restore --from --to`: archived rows back into their partitions.
//!
//! Month by month, in one transaction per month: every manifest of the month
//! in object storage, every part it lists (its SHA-256 checked), the rows in
//! `[from, to)` staged with a binary `COPY`, then inserted into `activities`
//! with their original `id`s, each `event_id` once and none already there.
//! Running it twice restores nothing the second time. The rollups are left
//! alone: they outlived the raw rows and already count them. A restored
//! month is held back from archiving for `retention.restore_hold_days`.

use activity_core::config::RetentionSettings;
use activity_core::database::Pool;
use chrono::{DateTime, Months, Utc};
use futures::pin_mut;
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::codec;
use crate::objects::{manifest_path, Archive};
use crate::partitions::month_end;
use crate::RetentionError;

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restored {
    /// Months that had at least one archive.
    pub months: Vec<DateTime<Utc>>,
    /// Archived rows in the range, read from object storage.
    pub read: u64,
    /// Rows inserted into `activities`.
    pub inserted: u64,
    /// Rows that were already there.
    pub already_present: u64,
}

pub async fn restore(
    pool: &Pool,
    archive: &Archive,
    policy: &RetentionSettings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Restored, RetentionError> {
    if from >= to {
        return Err(RetentionError::Config(
            "--from must be before --to".to_owned(),
        ));
    }
    let mut restored = Restored::default();
    let mut month = activity_consumer::store::month_start(from);
    while month < to {
        let (read, inserted) = restore_month(pool, archive, policy, month, from, to).await?;
        if let Some(read) = read {
            restored.months.push(month);
            restored.read += read;
            restored.inserted += inserted;
            restored.already_present += read - inserted;
        }
        month = month
            .checked_add_months(Months::new(1))
            .ok_or_else(|| RetentionError::Config("--to is out of range".to_owned()))?;
    }
    Ok(restored)
}

/// Returns (rows read, rows inserted); no rows read when the month has no
/// archive.
async fn restore_month(
    pool: &Pool,
    archive: &Archive,
    policy: &RetentionSettings,
    month: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Option<u64>, u64), RetentionError> {
    let manifests = archive.manifests_of_month(month).await?;
    let mut client = pool.get().await?;
    // Every archive the database recorded for the month must be there: a
    // month restored without one of them would look whole (and let a
    // rollup rebuild count it as empty). Manifests the database does not
    // know (a restore into a new database) are read as well.
    let recorded: Vec<String> = client
        .query(
            "SELECT archive_id FROM activity_archives
             WHERE month = $1 AND manifest IS NOT NULL AND rows > 0 ORDER BY archive_id",
            &[&month],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let missing: Vec<String> = recorded
        .iter()
        .map(|id| manifest_path(id))
        .filter(|path| !manifests.contains(path))
        .collect();
    if !missing.is_empty() {
        return Err(RetentionError::Verify(format!(
            "{}: the database records archives whose manifests are not in {}: {}; \
             nothing of the month was restored (is ARCHIVE_URL the one they were written to?)",
            month.format("%Y-%m"),
            archive.url(),
            missing.join(", ")
        )));
    }
    if manifests.is_empty() {
        return Ok((None, 0));
    }
    let next = month_end(month);
    let tx = client.transaction().await?;
    tx.batch_execute(
        "CREATE TEMPORARY TABLE restore_rows (
            id BIGINT, event_id UUID, user_id UUID, community_id UUID, event_type TEXT,
            entity_type TEXT, entity_id TEXT, metadata TEXT, ip_address TEXT,
            user_agent TEXT, created_at TIMESTAMPTZ
        ) ON COMMIT DROP",
    )
    .await?;
    let sink = tx
        .copy_in("COPY restore_rows FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::UUID,
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(writer);
    let mut read = 0u64;
    for path in &manifests {
        let manifest = archive.read_manifest(path).await?;
        if manifest.schema_version != codec::SCHEMA_VERSION {
            return Err(RetentionError::Verify(format!(
                "{path}: schema version {} (this build reads {})",
                manifest.schema_version,
                codec::SCHEMA_VERSION
            )));
        }
        let dir = path.trim_end_matches("manifest.json");
        for part in &manifest.parts {
            let file = format!("{dir}{}", part.file);
            let bytes = archive.get(&file).await?;
            if codec::file_digest(&bytes) != part.sha256 {
                return Err(RetentionError::Verify(format!(
                    "{file}: its SHA-256 is not the manifest's: the archive is damaged"
                )));
            }
            let rows = codec::decode(bytes)?;
            if rows.len() as u64 != part.rows || codec::rows_digest(&rows) != part.rows_sha256 {
                return Err(RetentionError::Verify(format!(
                    "{file}: its rows are not the ones the manifest describes"
                )));
            }
            for row in rows
                .iter()
                .filter(|r| r.created_at >= from && r.created_at < to)
            {
                let values: [&(dyn ToSql + Sync); 11] = [
                    &row.id,
                    &row.event_id,
                    &row.user_id,
                    &row.community_id,
                    &row.event_type,
                    &row.entity_type,
                    &row.entity_id,
                    &row.metadata,
                    &row.ip_address,
                    &row.user_agent,
                    &row.created_at,
                ];
                writer.as_mut().write(&values).await?;
                read += 1;
            }
        }
    }
    writer.finish().await?;

    tx.execute("SELECT activity_ensure_partition($1)", &[&month])
        .await?;
    tx.batch_execute(include_str!(
        "../../sql/queries/retention/restore_references.sql"
    ))
    .await?;
    let inserted: i64 = tx
        .query_one(
            include_str!("../../sql/queries/retention/restore_rows.sql"),
            &[&month, &next],
        )
        .await?
        .try_get(0)?;
    // Rows keep their ids; the identity must not hand them out again (a
    // restore into a new database).
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('activities', 'id'),
                       greatest((SELECT max(id) FROM restore_rows),
                                (SELECT last_value FROM activities_id_seq)))
         WHERE EXISTS (SELECT 1 FROM restore_rows)",
    )
    .await?;
    if from <= month && to >= next {
        tx.execute(
            "UPDATE activity_archives SET restored_at = now() WHERE month = $1",
            &[&month],
        )
        .await?;
    }
    let hold_days = i32::try_from(policy.restore_hold_days).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO retention_holds (month, until) VALUES ($1, now() + make_interval(days => $2))
         ON CONFLICT (month) DO UPDATE SET until = greatest(retention_holds.until, EXCLUDED.until)",
        &[&month, &hold_days],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(month = %month.format("%Y-%m"), read, inserted, "month restored");
    Ok((Some(read), inserted as u64))
}

//! The data lifecycle of `activities` (README: "Retention").
//!
//! - [`partitions`]: monthly partitions kept ahead, listed, and moved
//!   between tiers (hot: every index; warm: the indexes old-data queries
//!   use; cold: archived).
//! - [`archive`]: cold partitions written to object storage as Parquet
//!   ([`codec`], [`objects`]), read back and verified, then dropped.
//! - [`restore`]: archived rows back into their partitions, deduplicated.
//! - [`run`], [`archive()`], [`restore()`]: the commands, each under the
//!   retention lock; `run` does all of it in order, re-runnable.

pub mod archive;
pub mod codec;
pub mod objects;
pub mod partitions;
pub mod restore;

use activity_consumer::{Store, StoreError};
use activity_core::config::Settings;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use archive::Archived;
use archive::{archive_before, RetentionLock};
pub use objects::Archive;
pub use restore::Restored;

/// Why a lifecycle step failed. Nothing is dropped after an error.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Database(#[from] StoreError),
    #[error("object storage: {0}")]
    Objects(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Config(String),
    #[error(
        "another archive or retention run holds the retention lock; try again when it has finished"
    )]
    Busy,
}

impl From<tokio_postgres::Error> for RetentionError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<activity_core::database::PoolError> for RetentionError {
    fn from(error: activity_core::database::PoolError) -> Self {
        Self::Database(error.into())
    }
}

/// What `activity retention run` did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub started_at: DateTime<Utc>,
    /// Partitions from last month to `partitions.ahead` months ahead exist.
    pub partitions_ensured: usize,
    pub tier_changes: Vec<partitions::TierChange>,
    /// Months before this are cold.
    pub cold_before: DateTime<Utc>,
    /// Cold months a restore holds back.
    pub held: Vec<DateTime<Utc>>,
    pub archived: Vec<Archived>,
}

/// Connects, opens `ARCHIVE_URL` and runs `step` under the retention lock
/// (one archive, restore or retention run at a time: a second fails at once
/// with [`RetentionError::Busy`]).
async fn locked<T, F, Fut>(settings: &Settings, step: F) -> Result<T, RetentionError>
where
    F: FnOnce(Store, Archive) -> Fut,
    Fut: std::future::Future<Output = Result<T, RetentionError>>,
{
    let store = Store::connect(settings.database_url.expose(), 3)?;
    let archive = Archive::open(&settings.archive_url)?;
    let lock = RetentionLock::take(store.pool()).await?;
    let result = step(store, archive).await;
    lock.release().await?;
    result
}

/// `activity retention run`: partitions ahead, tiers, then archives the cold
/// partitions (except months a restore holds back).
pub async fn run(settings: &Settings, now: DateTime<Utc>) -> Result<RunSummary, RetentionError> {
    locked(settings, |store, archive| async move {
        let pool = store.pool();
        let ensured = partitions::ensure_ahead(&store, now, settings.partitions.ahead).await?;
        let client = pool.get().await?;
        let policy = &settings.retention;
        let tier_changes = partitions::apply_tiers(&**client, now, policy).await?;
        let held = held_months(&**client).await?;
        drop(client);
        let cold_before = partitions::cold_before(now, policy);
        let archived = archive_before(pool, &archive, policy, cold_before, &held).await?;
        Ok(RunSummary {
            started_at: now,
            partitions_ensured: ensured.len(),
            tier_changes,
            cold_before,
            held,
            archived,
        })
    })
    .await
}

/// Months a restore holds back from archiving (`retention_holds`).
async fn held_months(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<DateTime<Utc>>, RetentionError> {
    Ok(client
        .query(
            include_str!("../../sql/queries/retention/held_months.sql"),
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// `activity archive --before`: every partition wholly before `before`,
/// whatever its tier, except months a restore holds back (unless
/// `include_held`). Never the month being written or one to come: `before`
/// may be at most the start of the current month (UTC).
pub async fn archive(
    settings: &Settings,
    before: DateTime<Utc>,
    include_held: bool,
) -> Result<Vec<Archived>, RetentionError> {
    let this_month = activity_consumer::store::month_start(Utc::now());
    if before > this_month {
        return Err(RetentionError::Config(format!(
            "--before {} would archive the month being written ({}) or months to come; \
             the latest --before is {}",
            before.to_rfc3339(),
            this_month.format("%Y-%m"),
            this_month.format("%Y-%m-%d")
        )));
    }
    locked(settings, |store, archive| async move {
        let held = if include_held {
            Vec::new()
        } else {
            let client = store.pool().get().await?;
            held_months(&**client).await?
        };
        for month in held.iter().filter(|month| **month < before) {
            tracing::warn!(
                month = %month.format("%Y-%m"),
                "not archived: a restore holds it back (retention.restore_hold_days); \
                 --include-held archives it anyway"
            );
        }
        archive_before(store.pool(), &archive, &settings.retention, before, &held).await
    })
    .await
}

/// `activity restore --from --to`.
pub async fn restore(
    settings: &Settings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Restored, RetentionError> {
    locked(settings, |store, archive| async move {
        restore::restore(store.pool(), &archive, &settings.retention, from, to).await
    })
    .await
}

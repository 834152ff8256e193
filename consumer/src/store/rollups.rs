//! Rebuilding the rollups from raw rows (`activity rollups rebuild`).
//!
//! The consumer keeps the rollups in step with `activities` as it stores
//! events (`sql/queries/insert_activities.sql`); a rebuild recomputes a range
//! of them after a bug fix or a backfill. It is idempotent: rebuilding twice
//! gives the same rows as rebuilding once.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::{Store, StoreError};

/// The rollups' bucket width (`activity_bucket()` in SQL).
pub const BUCKET: TimeDelta = TimeDelta::minutes(15);

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// The range rebuilt, widened to whole buckets.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Raw events counted.
    pub events: i64,
}

impl Store {
    /// Recomputes every rollup bucket overlapping `[from, to)` from the raw
    /// rows, in one transaction, while consumers wait.
    pub async fn rebuild_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Rebuilt, StoreError> {
        let from = from.duration_trunc(BUCKET).map_err(StoreError::config)?;
        let to = ceil(to)?;
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(
            "LOCK TABLE rollup_events, rollup_users, rollup_entities, sketch_users, \
             rollup_community_days IN EXCLUSIVE MODE",
        )
        .await?;
        tx.execute(
            include_str!("../../../sql/queries/rollups_clear.sql"),
            &[&from, &to],
        )
        .await?;
        let events: i64 = tx
            .query_one(
                include_str!("../../../sql/queries/rollups_rebuild.sql"),
                &[&from, &to],
            )
            .await?
            .try_get(0)?;
        tx.execute(
            include_str!("../../../sql/queries/rollups_clear_days.sql"),
            &[&from, &to],
        )
        .await?;
        tx.execute(
            include_str!("../../../sql/queries/rollups_rebuild_days.sql"),
            &[&from, &to],
        )
        .await?;
        tx.commit().await?;
        Ok(Rebuilt { from, to, events })
    }
}

fn ceil(at: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    let floor = at.duration_trunc(BUCKET).map_err(StoreError::config)?;
    Ok(if floor == at { at } else { floor + BUCKET })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ranges_widen_to_whole_buckets() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 3, 29, h, m, s).unwrap();
        assert_eq!(ceil(at(1, 0, 0)).unwrap(), at(1, 0, 0));
        assert_eq!(ceil(at(1, 0, 1)).unwrap(), at(1, 15, 0));
        assert_eq!(ceil(at(1, 59, 59)).unwrap(), at(2, 0, 0));
    }
}

//! The rollups beside the raw rows: rebuilding them (`activity rollups
//! rebuild`) and compacting them.
//!
//! The consumer keeps the 15-minute rollups in step with `activities` as it
//! stores events (`sql/queries/insert_activities.sql`) and marks the UTC days
//! and hours it wrote to as dirty. The compactor ([`Store::keep_compacted`],
//! run by every `activity consume`) sums each dirty day that is over into
//! hour, quarter-day, day, head and tail rows (and user and entity day rows,
//! for the top lists), then its week's rows, and each dirty hour that is
//! over of today into hour rows, so long ranges read a few rows per week or
//! day; queries read a dirty hour from its 15-minute rows (`activity_tiles()`
//! in `sql/migrations/0010`), so answers are exact whether or not anything
//! is compacted yet.
//!
//! A rebuild recomputes a range after a bug fix or a backfill. It is
//! idempotent: rebuilding twice gives the same rows as rebuilding once.

use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// The rollups' bucket width (`activity_bucket()` in SQL).
pub const BUCKET: TimeDelta = TimeDelta::minutes(15);

/// The advisory lock namespaces of the UTC days and hours: writers lock the
/// days they write to, and the hours since yesterday they write to, shared
/// (`sql/queries/lock_writes.sql`); the compactor a day that is over, or an
/// hour of today, exclusively.
pub(super) const DAY_LOCK_NAMESPACE: i32 = 1_633_907_830;
pub(super) const HOUR_LOCK_NAMESPACE: i32 = 1_633_907_831;
/// The namespace of the weeks' locks: a compactor holds its day's week
/// while it changes the week's user rows (only compactors take it).
const WEEK_LOCK_NAMESPACE: i32 = 1_633_907_832;

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
    /// rows, and the hour, day and week rows of every UTC day it touches,
    /// one week (Monday 00:00 UTC) at a time: each week in one transaction
    /// that holds every rollup table while consumers and compactors wait,
    /// so they wait for a week's rebuild rather than the whole range's, and
    /// readers see each week either as it was or rebuilt. An interrupted
    /// rebuild leaves whole weeks rebuilt; running it again finishes it.
    pub async fn rebuild_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Rebuilt, StoreError> {
        let from = from.duration_trunc(BUCKET).map_err(StoreError::config)?;
        let to = ceil(to)?;
        let mut client = self.pool().get().await?;
        // Refused before anything changes (and again by each week, in its
        // transaction, should a month be archived meanwhile).
        refuse_archived(&**client, from, to).await?;
        let mut events = 0;
        let mut start = from;
        while start < to {
            let end = (week_of(start)? + WEEK).min(to);
            let tx = client.transaction().await?;
            events += rebuild_week(&tx, start, end).await?;
            tx.commit().await?;
            tracing::info!(from = %start, to = %end, "rollups rebuilt");
            start = end;
        }
        Ok(Rebuilt { from, to, events })
    }

    /// Compacts every dirty UTC day that ended at or before `now`, and every
    /// dirty hour that did of a day that did not (today); returns how many
    /// days and hours it compacted. Safe beside consumers and other
    /// compactors.
    pub async fn compact_rollups(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut client = self.pool().get().await?;
        let due: Vec<(DateTime<Utc>, bool)> = client
            .query(
                include_str!("../../../sql/queries/rollups_dirty.sql"),
                &[&now],
            )
            .await?
            .iter()
            .map(|row| Ok((row.try_get("at")?, row.try_get("day")?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let mut compacted = 0;
        for (at, whole_day) in due {
            let tx = client.transaction().await?;
            let still_dirty = try_lock(&tx, at, whole_day).await?
                && tx
                    .query_opt(
                        if whole_day {
                            "SELECT 1 FROM rollup_dirty_days WHERE day = $1"
                        } else {
                            "SELECT 1 FROM rollup_dirty_hours WHERE hour = $1"
                        },
                        &[&at],
                    )
                    .await?
                    .is_some();
            if !still_dirty {
                tx.rollback().await?;
                continue;
            }
            if whole_day {
                compact_day(&tx, at, Weeks::Adjusted).await?;
                sum_event_weeks(&tx, at, at + TimeDelta::days(1)).await?;
            } else {
                compact_hour(&tx, at).await?;
            }
            tx.commit().await?;
            compacted += 1;
        }
        Ok(compacted)
    }

    /// Compacts `every` so often until `shutdown`. Errors are logged and the
    /// next round tries again (queries stay exact meanwhile).
    pub async fn keep_compacted(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.compact_rollups(Utc::now()).await {
                Ok(0) => {}
                Ok(days) => tracing::info!(days, "rollups compacted"),
                Err(error) => tracing::warn!(%error, "rollup compaction failed; retrying later"),
            }
        }
    }
}

/// Takes, for the transaction, the lock of the day `at` (a day that is
/// over) or of the hour `at` (of today) exclusively, if no batch writing to
/// it holds it: a compaction never waits for writers nor makes them wait
/// for long. False when busy (tried again next round; queries stay exact).
async fn try_lock(
    tx: &tokio_postgres::Transaction<'_>,
    at: DateTime<Utc>,
    whole_day: bool,
) -> Result<bool, StoreError> {
    let locked: bool = tx
        .query_one(
            if whole_day {
                "SELECT pg_try_advisory_xact_lock($1, activity_day_lock($2))"
            } else {
                "SELECT pg_try_advisory_xact_lock($1, activity_hour_lock($2))"
            },
            &[
                if whole_day {
                    &DAY_LOCK_NAMESPACE
                } else {
                    &HOUR_LOCK_NAMESPACE
                },
                &at,
            ],
        )
        .await?
        .try_get(0)?;
    Ok(locked)
}

/// Replaces the hour rows of one hour (of a day still going on) with the
/// sums of its 15-minute rows, and unmarks it.
async fn compact_hour(
    tx: &tokio_postgres::Transaction<'_>,
    hour: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "WITH ranks AS (DELETE FROM rollup_community_ranks WHERE grain = 60 AND bucket = $1)
         DELETE FROM rollup_events WHERE grain = 60 AND bucket = $1",
        &[&hour],
    )
    .await?;
    tx.query_one(
        include_str!("../../../sql/queries/rollups_compact_hour.sql"),
        &[&hour],
    )
    .await?;
    Ok(())
}

/// What compacting a day does to its week's user and entity rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weeks {
    /// Takes the day's old rows out of them and adds its new ones (the
    /// compactor).
    Adjusted,
    /// Leaves them alone: the caller deletes them and sums them from their
    /// day rows once every day is compacted (a rebuild; updating each week
    /// row once per day of its week took longer and left its two indexes
    /// mostly empty pages).
    SummedAfter,
}

/// A week of the rollups' weeks: 7 days from Monday 00:00 UTC
/// (`activity_week()` in SQL).
const WEEK: TimeDelta = TimeDelta::days(7);

/// The start of the week `at` is in.
fn week_of(at: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    let day = at
        .duration_trunc(TimeDelta::days(1))
        .map_err(StoreError::config)?;
    Ok(day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday())))
}

/// Refuses a range whose raw rows are archived, or detached by an archive
/// run that has not finished: their rollups outlive them.
async fn refuse_archived(
    client: &impl tokio_postgres::GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rows = client
        .query(
            include_str!("../../../sql/queries/retention/archived_months.sql"),
            &[&from, &to],
        )
        .await?;
    let mut archived = Vec::new();
    let mut archiving = Vec::new();
    for row in &rows {
        let month: DateTime<Utc> = row.try_get(0)?;
        let month = month.format("%Y-%m").to_string();
        if row.try_get(1)? {
            archiving.push(month);
        } else {
            archived.push(month);
        }
    }
    let mut reasons = Vec::new();
    if !archived.is_empty() {
        reasons.push(format!(
            "the raw rows of {} are archived: run `activity restore` for those months first",
            archived.join(", ")
        ));
    }
    if !archiving.is_empty() {
        reasons.push(format!(
            "the raw rows of {} are detached by an archive run that did not finish \
             (activities_archiving_* tables): finish it with `activity retention run` \
             or `activity archive`",
            archiving.join(", ")
        ));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(StoreError::Refused(format!(
        "rollups outlive raw rows, so they cannot be recomputed where the rows are gone: {}",
        reasons.join("; ")
    )))
}

/// Rebuilds `[from, to)`, which lies within one week, in `tx`; returns the
/// raw events counted.
async fn rebuild_week(
    tx: &tokio_postgres::Transaction<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, StoreError> {
    tx.batch_execute(
        "LOCK TABLE rollup_events, rollup_users, rollup_entities, rollup_user_days, \
         rollup_entity_days, rollup_community_ranks, rollup_user_weeks, rollup_entity_weeks, rollup_dirty_days, rollup_dirty_hours \
         IN EXCLUSIVE MODE",
    )
    .await?;
    refuse_archived(tx, from, to).await?;
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
    let mut day = from
        .duration_trunc(TimeDelta::days(1))
        .map_err(StoreError::config)?;
    while day < to {
        compact_day(tx, day, Weeks::SummedAfter).await?;
        day += TimeDelta::days(1);
    }
    // The week summed again from its day rows (the compaction above left
    // them alone): repaired if it was wrong.
    tx.execute(
        "WITH entities AS (
             DELETE FROM rollup_entity_weeks
             WHERE week >= activity_week($1::timestamptz) AND week < activity_week($2::timestamptz - interval '1 microsecond') + interval '168 hours'
         )
         DELETE FROM rollup_user_weeks
         WHERE week >= activity_week($1::timestamptz) AND week < activity_week($2::timestamptz - interval '1 microsecond') + interval '168 hours'",
        &[&from, &to],
    )
    .await?;
    tx.query_one(
        include_str!("../../../sql/queries/rollups_sum_weeks.sql"),
        &[&from, &to],
    )
    .await?;
    sum_event_weeks(tx, from, to).await?;
    Ok(events)
}

/// Replaces the hour and day rows of one UTC day with the sums of its
/// 15-minute rows, and unmarks it and its hours.
async fn compact_day(
    tx: &tokio_postgres::Transaction<'_>,
    day: DateTime<Utc>,
    weeks: Weeks,
) -> Result<(), StoreError> {
    let adjust_weeks = weeks == Weeks::Adjusted;
    // Compactors of two days of one week take turns: both change the
    // week's user rows, row by row, and would otherwise deadlock.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, floor(extract(epoch FROM activity_week($2)) / 604800)::integer)",
        &[&WEEK_LOCK_NAMESPACE, &day],
    )
    .await?;
    tx.execute(
        include_str!("../../../sql/queries/rollups_uncompact_day.sql"),
        &[&day, &adjust_weeks],
    )
    .await?;
    tx.query_one(
        include_str!("../../../sql/queries/rollups_compact_day.sql"),
        &[&day, &adjust_weeks],
    )
    .await?;
    Ok(())
}

/// Replaces the week rows of rollup_events (and their communities' ranks)
/// of every week `[from, to)` touches with the sums of its day rows, or
/// with nothing while one of its days is dirty (`sql/migrations/0009`).
/// The compactor runs it for the day it compacted, holding the week's lock.
async fn sum_event_weeks(
    tx: &tokio_postgres::Transaction<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "WITH ranks AS (
             DELETE FROM rollup_community_ranks
             WHERE grain = 10080 AND bucket >= activity_week($1) AND bucket < $2
         )
         DELETE FROM rollup_events WHERE grain = 10080 AND bucket >= activity_week($1) AND bucket < $2",
        &[&from, &to],
    )
    .await?;
    tx.query_one(
        include_str!("../../../sql/queries/rollups_sum_event_weeks.sql"),
        &[&from, &to],
    )
    .await?;
    Ok(())
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

    #[test]
    fn weeks_start_on_monday_at_midnight_utc() {
        let at = |d, h| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        // 2026-11-23 is a Monday.
        assert_eq!(week_of(at(27, 13)).unwrap(), at(23, 0));
        assert_eq!(week_of(at(23, 0)).unwrap(), at(23, 0));
        assert_eq!(week_of(at(29, 23)).unwrap(), at(23, 0));
        assert_eq!(week_of(at(30, 0)).unwrap(), at(30, 0));
    }
}

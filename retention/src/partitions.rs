//! The monthly partitions of `activities`: which exist, their tier, and
//! moving them between tiers.
//!
//! Written here rather than with `pg_partman`: partitions are one month
//! each, created by one SQL function (`activity_ensure_partition`, which the
//! consumer also calls for any event whose month has no partition yet), and
//! the tiers need index changes and an archive step that pg_partman does not
//! do. Plain SQL (no extension, no superuser) also runs unchanged on RDS and
//! Cloud SQL.

use activity_consumer::store::migrate::months_around;
use activity_consumer::Store;
use activity_core::config::RetentionSettings;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::Serialize;

use crate::RetentionError;

/// What a partition's age makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Every index.
    Hot,
    /// The primary key, `(user_id, created_at)` and the BRIN on `created_at`.
    Warm,
    /// To be archived and dropped.
    Cold,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hot => "hot",
            Self::Warm => "warm",
            Self::Cold => "cold",
        })
    }
}

/// Whole months from `month` to the month of `now` (0: this month; negative
/// for months ahead).
pub fn age_in_months(month: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (i64::from(now.year()) * 12 + i64::from(now.month0()))
        - (i64::from(month.year()) * 12 + i64::from(month.month0()))
}

pub fn tier_of(month: DateTime<Utc>, now: DateTime<Utc>, policy: &RetentionSettings) -> Tier {
    let age = age_in_months(month, now);
    if age < i64::from(policy.hot_months) {
        Tier::Hot
    } else if age < i64::from(policy.warm_months) {
        Tier::Warm
    } else {
        Tier::Cold
    }
}

/// The first month that is not cold: partitions wholly before it are.
pub fn cold_before(now: DateTime<Utc>, policy: &RetentionSettings) -> DateTime<Utc> {
    let this_month = activity_consumer::store::month_start(now);
    this_month
        .checked_sub_months(Months::new(policy.warm_months.saturating_sub(1)))
        .unwrap_or(this_month)
}

/// The month a partition's name says (`activities_p2025_01`, or
/// `activities_archiving_p2025_01` once detached for archiving).
pub fn month_of(name: &str) -> Option<DateTime<Utc>> {
    let suffix = name
        .strip_prefix("activities_archiving_p")
        .or_else(|| name.strip_prefix("activities_p"))?;
    let (year, month) = suffix.split_once('_')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// The end of the month that starts at `month`.
pub fn month_end(month: DateTime<Utc>) -> DateTime<Utc> {
    month.checked_add_months(Months::new(1)).unwrap_or(month)
}

/// A partition as `activity partitions list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Attached to `activities`; false while detached for archiving.
    pub attached: bool,
    pub tier: Tier,
    /// Exact when asked for, else the planner's estimate (-1: never analyzed).
    pub rows: i64,
    pub bytes: i64,
    pub index_bytes: i64,
    /// How many of the three hot-only indexes it has.
    pub hot_indexes: i64,
}

pub async fn list(
    client: &impl tokio_postgres::GenericClient,
    now: DateTime<Utc>,
    policy: &RetentionSettings,
    exact: bool,
) -> Result<Vec<Partition>, RetentionError> {
    let rows = client
        .query(
            include_str!("../../sql/queries/retention/partitions.sql"),
            &[],
        )
        .await?;
    let mut partitions = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("name")?;
        let Some(from) = month_of(&name) else {
            continue;
        };
        let mut estimated: i64 = row.try_get("estimated_rows")?;
        if exact {
            estimated = client
                .query_one(&format!("SELECT count(*) FROM {}", quoted(&name)), &[])
                .await?
                .try_get(0)?;
        }
        partitions.push(Partition {
            tier: tier_of(from, now, policy),
            to: month_end(from),
            from,
            name,
            attached: row.try_get("attached")?,
            rows: estimated,
            bytes: row.try_get("bytes")?,
            index_bytes: row.try_get("index_bytes")?,
            hot_indexes: row.try_get("hot_indexes")?,
        });
    }
    Ok(partitions)
}

/// One archive of a month, as the database records it.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveRecord {
    pub archive_id: String,
    pub month: DateTime<Utc>,
    pub manifest: Option<String>,
    pub rows: i64,
    pub bytes: i64,
    pub archived_at: DateTime<Utc>,
    pub restored_at: Option<DateTime<Utc>>,
}

pub async fn archives(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<ArchiveRecord>, RetentionError> {
    let rows = client
        .query(
            include_str!("../../sql/queries/retention/archives.sql"),
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ArchiveRecord {
                archive_id: row.try_get("archive_id")?,
                month: row.try_get("month")?,
                manifest: row.try_get("manifest")?,
                rows: row.try_get("rows")?,
                bytes: row.try_get("bytes")?,
                archived_at: row.try_get("archived_at")?,
                restored_at: row.try_get("restored_at")?,
            })
        })
        .collect()
}

/// A partition moved to another tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierChange {
    pub partition: String,
    pub tier: Tier,
}

/// Gives every attached partition the indexes of its tier: hot ones all
/// three hot-only indexes, warm and cold ones none of them.
pub async fn apply_tiers(
    client: &impl tokio_postgres::GenericClient,
    now: DateTime<Utc>,
    policy: &RetentionSettings,
) -> Result<Vec<TierChange>, RetentionError> {
    let mut changes = Vec::new();
    for partition in list(client, now, policy, false).await? {
        if !partition.attached {
            continue;
        }
        let function = match partition.tier {
            Tier::Hot if partition.hot_indexes < 3 => "activity_hot_indexes",
            Tier::Warm | Tier::Cold if partition.hot_indexes > 0 => "activity_warm_indexes",
            _ => continue,
        };
        client
            .execute(&format!("SELECT {function}($1)"), &[&partition.name])
            .await?;
        tracing::info!(partition = %partition.name, tier = %partition.tier, "partition moved to its tier");
        changes.push(TierChange {
            partition: partition.name,
            tier: partition.tier,
        });
    }
    Ok(changes)
}

/// Creates the partitions from last month to `ahead` months after this one
/// (each with the hot indexes). Returns the months covered.
pub async fn ensure_ahead(
    store: &Store,
    now: DateTime<Utc>,
    ahead: u32,
) -> Result<Vec<DateTime<Utc>>, RetentionError> {
    let months = months_around(now, ahead);
    store.ensure_partitions(months.iter().copied()).await?;
    Ok(months)
}

/// A partition name, checked and double-quoted for SQL.
pub(crate) fn quoted(name: &str) -> String {
    debug_assert!(month_of(name).is_some(), "not a partition name: {name}");
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn tiers_follow_whole_months_of_age() {
        let policy = RetentionSettings {
            hot_months: 3,
            warm_months: 12,
            ..RetentionSettings::default()
        };
        let now = at("2026-11-25T12:00:00Z");
        let tier = |m: &str| tier_of(at(m), now, &policy);
        assert_eq!(tier("2027-01-01T00:00:00Z"), Tier::Hot); // ahead
        assert_eq!(tier("2026-11-01T00:00:00Z"), Tier::Hot);
        assert_eq!(tier("2026-09-01T00:00:00Z"), Tier::Hot);
        assert_eq!(tier("2026-08-01T00:00:00Z"), Tier::Warm);
        assert_eq!(tier("2025-12-01T00:00:00Z"), Tier::Warm);
        assert_eq!(tier("2025-11-01T00:00:00Z"), Tier::Cold);
        assert_eq!(cold_before(now, &policy), at("2025-12-01T00:00:00Z"));
    }

    #[test]
    fn partition_names_give_their_month() {
        assert_eq!(
            month_of("activities_p2025_01"),
            Some(at("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            month_of("activities_archiving_p2024_12"),
            Some(at("2024-12-01T00:00:00Z"))
        );
        for bad in [
            "activities",
            "activities_p2025_13",
            "activities_p25_01",
            "x_p2025_01",
        ] {
            assert_eq!(month_of(bad), None, "{bad}");
        }
        assert_eq!(
            month_end(at("2024-12-01T00:00:00Z")),
            at("2025-01-01T00:00:00Z")
        );
    }
}

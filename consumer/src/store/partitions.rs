//! Partition routing: `activities` has one partition per UTC month.
//!
//! Before a batch is inserted, every month it touches is created if missing
//! (`activity_ensure_partition`), so an event from a month with no partition
//! yet (late, backfilled, or just after midnight of a new month) never fails
//! its batch. There is no DEFAULT partition: rows would pile up in it
//! silently, and attaching the real partition later would have to scan it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use activity_core::database::Object as Client;
use chrono::{DateTime, Datelike, TimeZone, Utc};

use super::StoreError;

/// The first instant of the UTC month holding `at`: its partition's lower bound.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

/// The months this process knows have a partition.
#[derive(Clone, Default)]
pub(super) struct PartitionCache(Arc<Mutex<HashSet<DateTime<Utc>>>>);

impl PartitionCache {
    pub(super) async fn ensure(
        &self,
        client: &Client,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let months: HashSet<DateTime<Utc>> = times.into_iter().map(month_start).collect();
        let missing: Vec<DateTime<Utc>> = {
            let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let statement = client
            .prepare_cached(include_str!("../../../sql/queries/ensure_partition.sql"))
            .await?;
        for month in missing {
            let row = client.query_one(&statement, &[&month]).await?;
            let name: String = row.get(0);
            tracing::debug!(partition = name, "partition ready");
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(month);
        }
        Ok(())
    }

    pub(super) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_each_instant_to_its_utc_month() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            month_start(at("2026-11-25T13:14:15.123456Z")),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            month_start(at("2026-12-01T00:00:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            month_start(at("2026-11-30T23:59:59.999999Z")),
            at("2026-11-01T00:00:00Z")
        );
        // Local midnight in UTC+14 is still the previous UTC month.
        assert_eq!(
            month_start(at("2027-01-01T00:30:00+14:00")),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            month_start(at("2028-02-29T12:00:00Z")),
            at("2028-02-01T00:00:00Z")
        );
    }
}

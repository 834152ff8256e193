//! `activity migrate`: the database, its schema, and partitions ahead.
//!
//! Idempotent and safe to run from several pods at once: migrations are
//! applied under an advisory lock, each in its own transaction, and recorded
//! in `schema_migrations`.

use activity_core::database::Target;
use chrono::{DateTime, Months, Utc};

use super::{month_start, Store, StoreError};

/// The numbered files in `sql/migrations/`, in order.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_schema.sql",
        include_str!("../../../sql/migrations/0001_schema.sql"),
    ),
    (
        2,
        "0002_rollups_and_rls.sql",
        include_str!("../../../sql/migrations/0002_rollups_and_rls.sql"),
    ),
    (
        3,
        "0003_top_lists.sql",
        include_str!("../../../sql/migrations/0003_top_lists.sql"),
    ),
    (
        4,
        "0004_write_keys.sql",
        include_str!("../../../sql/migrations/0004_write_keys.sql"),
    ),
    (
        5,
        "0005_retention.sql",
        include_str!("../../../sql/migrations/0005_retention.sql"),
    ),
    (
        6,
        "0006_community_ranks.sql",
        include_str!("../../../sql/migrations/0006_community_ranks.sql"),
    ),
    (
        7,
        "0007_week_lists.sql",
        include_str!("../../../sql/migrations/0007_week_lists.sql"),
    ),
    (
        8,
        "0008_zone_days.sql",
        include_str!("../../../sql/migrations/0008_zone_days.sql"),
    ),
    (
        9,
        "0009_week_rows.sql",
        include_str!("../../../sql/migrations/0009_week_rows.sql"),
    ),
    (
        10,
        "0010_series_tiles.sql",
        include_str!("../../../sql/migrations/0010_series_tiles.sql"),
    ),
    (
        11,
        "0011_unique_users_aggregate.sql",
        include_str!("../../../sql/migrations/0011_unique_users_aggregate.sql"),
    ),
    (
        12,
        "0012_covering_rollup_keys.sql",
        include_str!("../../../sql/migrations/0012_covering_rollup_keys.sql"),
    ),
    (
        13,
        "0013_tile_rows.sql",
        include_str!("../../../sql/migrations/0013_tile_rows.sql"),
    ),
    (
        14,
        "0014_half_hours.sql",
        include_str!("../../../sql/migrations/0014_half_hours.sql"),
    ),
    (
        15,
        "0015_reserved_ids.sql",
        include_str!("../../../sql/migrations/0015_reserved_ids.sql"),
    ),
    (
        16,
        "0016_scope_once.sql",
        include_str!("../../../sql/migrations/0016_scope_once.sql"),
    ),
    (
        17,
        "0017_local_starts.sql",
        include_str!("../../../sql/migrations/0017_local_starts.sql"),
    ),
];

/// An arbitrary constant naming the migration advisory lock.
const MIGRATION_LOCK: i64 = 0x6163_7469_7669_7479; // "activity"

/// Creates the database named in `database_url` if it does not exist,
/// applies every pending migration, and creates partitions from last month
/// to `ahead` months after the current one.
pub async fn migrate(database_url: &str, ahead: u32) -> Result<(), StoreError> {
    migrate_through(database_url, i32::MAX, ahead).await
}

/// [`migrate`], applying the pending migrations up to version `last` only
/// (the tests of what a later migration does to an existing database).
pub async fn migrate_through(database_url: &str, last: i32, ahead: u32) -> Result<(), StoreError> {
    create_database(database_url).await?;
    let target: Target = database_url.parse().map_err(StoreError::config)?;
    let mut client = target.connect().await?;

    // The lock first: CREATE TABLE IF NOT EXISTS is not safe against a
    // concurrent one (two `migrate`s on a new database failed with "type
    // schema_migrations already exists").
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = match client
        .batch_execute(
            "SET client_min_messages = warning;
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
    {
        Ok(()) => apply(&mut client, last).await,
        Err(e) => Err(e.into()),
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result?;
    drop(client);

    let store = Store::connect(database_url, 1)?;
    store
        .ensure_partitions(months_around(Utc::now(), ahead))
        .await?;
    Ok(())
}

async fn apply(client: &mut tokio_postgres::Client, last: i32) -> Result<(), StoreError> {
    for (version, name, sql) in MIGRATIONS.iter().filter(|(version, ..)| *version <= last) {
        let tx = client.transaction().await?;
        let applied = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if applied {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "migration applied");
    }
    Ok(())
}

/// The first instant of each month from the one before `now` to `ahead` after it.
pub fn months_around(now: DateTime<Utc>, ahead: u32) -> Vec<DateTime<Utc>> {
    let this_month = month_start(now);
    let first = this_month
        .checked_sub_months(Months::new(1))
        .unwrap_or(this_month);
    (0..=ahead + 1)
        .filter_map(|i| first.checked_add_months(Months::new(i)))
        .collect()
}

async fn create_database(database_url: &str) -> Result<(), StoreError> {
    let mut maintenance: Target = database_url.parse().map_err(StoreError::config)?;
    let Some(name) = maintenance.config.get_dbname().map(str::to_owned) else {
        return Ok(()); // the server's default database for the user: it exists
    };
    maintenance.config.dbname("postgres");
    let client = maintenance.connect().await?;
    // Migrations of a new database started together (a deploy's jobs):
    // one creates it, the others wait here and find it. (CREATE DATABASE
    // racing another fails on pg_database's unique index, not always as
    // "already exists".) A lock per database name, held until this
    // connection closes.
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&name])
        .await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // CREATE DATABASE takes no parameters: the server quotes the name.
        let statement: String = client
            .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])
            .await?
            .get(0);
        match client.batch_execute(&statement).await {
            Ok(()) => tracing::info!(database = name, "database created"),
            // Another migrate created it between our check and our CREATE.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client); // closing the connection releases the lock
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_last_month_to_ahead() {
        let now = DateTime::parse_from_rfc3339("2026-12-15T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let months: Vec<String> = months_around(now, 2)
            .iter()
            .map(|m| m.format("%Y-%m").to_string())
            .collect();
        assert_eq!(months, ["2026-11", "2026-12", "2027-01", "2027-02"]);
    }
}

//! Where events are stored: PostgreSQL.
//!
//! [`Store::insert_batch`] writes one batch in one transaction: the users and
//! communities it names (created if unknown), then each event whose
//! `event_id` was never stored before. It is idempotent: a batch stored twice
//! leaves the database as if it had been stored once.

mod error;
pub mod migrate;
mod partitions;
pub mod rollups;

use std::collections::HashSet;

use activity_core::database::Pool;
use activity_core::ActivityEvent;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use error::StoreError;
pub use partitions::month_start;

use partitions::PartitionCache;

/// What one stored batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Rows inserted into `activities`.
    pub inserted: u64,
    /// Events skipped because their `event_id` was already stored.
    pub duplicates: u64,
}

/// A pool of connections to the events database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    partitions: PartitionCache,
}

impl Store {
    /// A pool of at most `pool_size` connections; connects lazily.
    pub fn connect(database_url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let pool = activity_core::database::pool(database_url, pool_size)
            .map_err(|e| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        Ok(Self {
            pool,
            partitions: PartitionCache::default(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stores a batch in one transaction. Events must have distinct
    /// `event_id`s (the consumer deduplicates a batch before calling this).
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn insert_batch(&self, events: &[ActivityEvent]) -> Result<Stored, StoreError> {
        if events.is_empty() {
            return Ok(Stored::default());
        }
        let mut client = self.pool.get().await?;
        self.partitions
            .ensure(&client, events.iter().map(ActivityEvent::created_at))
            .await?;

        let columns = Columns::from(events);
        let tx = client.transaction().await?;
        let statement = tx
            .prepare_cached(include_str!("../../../sql/queries/lock_writes.sql"))
            .await?;
        tx.query_one(
            &statement,
            &[
                &columns.created_at,
                &rollups::DAY_LOCK_NAMESPACE,
                &rollups::HOUR_LOCK_NAMESPACE,
            ],
        )
        .await?;

        let (user_ids, user_times) = columns.users();
        let statement = tx
            .prepare_cached(include_str!("../../../sql/queries/insert_users.sql"))
            .await?;
        tx.execute(&statement, &[&user_ids, &user_times]).await?;

        let (community_ids, community_times) = columns.communities();
        let statement = tx
            .prepare_cached(include_str!("../../../sql/queries/insert_communities.sql"))
            .await?;
        tx.execute(&statement, &[&community_ids, &community_times])
            .await?;

        let signups = Profiles::collect(events, |e| {
            Some((e.user_id()?.as_uuid(), e.signup_email()?))
        });
        if !signups.ids.is_empty() {
            let statement = tx
                .prepare_cached(include_str!("../../../sql/queries/fill_user_emails.sql"))
                .await?;
            tx.execute(&statement, &[&signups.ids, &signups.values, &signups.times])
                .await?;
        }
        let creations = Profiles::collect(events, |e| {
            Some((e.community_id()?.as_uuid(), e.community_name()?))
        });
        if !creations.ids.is_empty() {
            let statement = tx
                .prepare_cached(include_str!(
                    "../../../sql/queries/fill_community_names.sql"
                ))
                .await?;
            tx.execute(
                &statement,
                &[&creations.ids, &creations.values, &creations.times],
            )
            .await?;
        }

        let statement = tx
            .prepare_cached(include_str!("../../../sql/queries/insert_activities.sql"))
            .await?;
        let inserted: i64 = tx
            .query_one(
                &statement,
                &[
                    &columns.event_id,
                    &columns.user_id,
                    &columns.community_id,
                    &columns.event_type,
                    &columns.entity_type,
                    &columns.entity_id,
                    &columns.metadata,
                    &columns.ip_address,
                    &columns.user_agent,
                    &columns.created_at,
                ],
            )
            .await?
            .try_get(0)?;
        let inserted = inserted as u64;
        tx.commit().await?;
        Ok(Stored {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }

    /// Records, per partition of `topic`, the next offset whose events are all
    /// stored (the analytics API reports it as freshness).
    pub async fn record_progress(
        &self,
        topic: &str,
        offsets: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<(), StoreError> {
        let (partitions, next): (Vec<i32>, Vec<i64>) = offsets.into_iter().unzip();
        if partitions.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(include_str!("../../../sql/queries/record_progress.sql"))
            .await?;
        client
            .execute(&statement, &[&topic, &partitions, &next])
            .await?;
        Ok(())
    }

    /// The next offset of `partition` of `topic` whose events are all
    /// stored, if any member recorded one.
    pub async fn progress(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT next_offset FROM consumer_progress WHERE topic = $1 AND partition = $2",
                &[&topic, &partition],
            )
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// Creates the partitions for these timestamps if they are missing.
    pub async fn ensure_partitions(
        &self,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        self.partitions.ensure(&client, times).await
    }

    /// Keeps the partitions from last month to `ahead` months after this one
    /// created, now and every hour until `shutdown`, so that a new month
    /// never waits on DDL in the insert path. Errors are logged and retried
    /// next round (a batch creates a missing partition itself anyway).
    pub async fn keep_partitions_ahead(self, ahead: u32, shutdown: CancellationToken) {
        loop {
            let months = migrate::months_around(Utc::now(), ahead);
            if let Err(error) = self.ensure_partitions(months).await {
                tracing::warn!(%error, "could not create partitions ahead; retrying in an hour");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            }
        }
    }

    /// Asks the database every `every` whether it answers, and tells
    /// `health`: a consumer whose database is gone (or was never there)
    /// is not ready even while no batch comes to fail, and is again once
    /// the database answers.
    pub async fn keep_watched(
        self,
        health: crate::health::Health,
        every: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let answer = match self.pool.get().await {
                Ok(client) => client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| StoreError::from(e).to_string()),
                Err(error) => Err(StoreError::from(error).to_string()),
            };
            health.database_reachable(answer.err());
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Forgets which partitions exist (after retention dropped some, say).
    pub fn forget_partitions(&self) {
        self.partitions.clear();
    }
}

/// A batch turned into one array per column, for `unnest`.
struct Columns {
    event_id: Vec<Uuid>,
    user_id: Vec<Option<Uuid>>,
    community_id: Vec<Option<Uuid>>,
    event_type: Vec<String>,
    entity_type: Vec<Option<String>>,
    entity_id: Vec<Option<String>>,
    metadata: Vec<Option<String>>,
    ip_address: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
}

impl From<&[ActivityEvent]> for Columns {
    fn from(events: &[ActivityEvent]) -> Self {
        let n = events.len();
        let mut c = Columns {
            event_id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            community_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            entity_type: Vec::with_capacity(n),
            entity_id: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            ip_address: Vec::with_capacity(n),
            user_agent: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
        };
        for e in events {
            c.event_id.push(e.event_id().as_uuid());
            c.user_id.push(e.user_id().map(|id| id.as_uuid()));
            c.community_id.push(e.community_id().map(|id| id.as_uuid()));
            c.event_type.push(e.event_type().as_str().to_owned());
            c.entity_type.push(e.entity_type().map(str::to_owned));
            c.entity_id.push(e.entity_id().map(str::to_owned));
            c.metadata.push(e.metadata().map(|m| m.to_json()));
            c.ip_address.push(e.ip_address().map(|ip| ip.to_string()));
            c.user_agent.push(e.user_agent().map(str::to_owned));
            c.created_at.push(e.created_at());
        }
        c
    }
}

impl Columns {
    fn users(&self) -> (Vec<Uuid>, Vec<DateTime<Utc>>) {
        Self::present(&self.user_id, &self.created_at)
    }

    fn communities(&self) -> (Vec<Uuid>, Vec<DateTime<Utc>>) {
        Self::present(&self.community_id, &self.created_at)
    }

    fn present(ids: &[Option<Uuid>], times: &[DateTime<Utc>]) -> (Vec<Uuid>, Vec<DateTime<Utc>>) {
        ids.iter()
            .zip(times)
            .filter_map(|(id, at)| Some(((*id)?, *at)))
            .unzip()
    }
}

/// Profile fields (email, community name) some event types carry.
struct Profiles {
    ids: Vec<Uuid>,
    values: Vec<String>,
    times: Vec<DateTime<Utc>>,
}

impl Profiles {
    fn collect<'a>(
        events: &'a [ActivityEvent],
        field: impl Fn(&'a ActivityEvent) -> Option<(Uuid, &'a str)>,
    ) -> Self {
        let mut seen = HashSet::new();
        let mut profiles = Profiles {
            ids: Vec::new(),
            values: Vec::new(),
            times: Vec::new(),
        };
        for event in events {
            if let Some((id, value)) = field(event) {
                if seen.insert(id) {
                    profiles.ids.push(id);
                    profiles.values.push(value.to_owned());
                    profiles.times.push(event.created_at());
                }
            }
        }
        profiles
    }
}

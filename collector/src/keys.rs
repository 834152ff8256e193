//! Write keys: created, listed and revoked by `activity keys`, checked by
//! every collector replica.
//!
//! A key is `atk_` followed by 43 characters of URL-safe base64 (32 random
//! bytes). Only its SHA-256 is stored. Each collector reloads the whole
//! table every [`REFRESH`], so a revoked key stops working on every replica
//! within that time, and a new key starts working within it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use activity_core::database::Pool;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a collector reloads the keys.
pub const REFRESH: Duration = Duration::from_secs(1);

const PREFIX: &str = "atk_";

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteKey {
    pub id: Uuid,
    pub name: String,
    /// `None`: every community.
    pub communities: Option<Vec<Uuid>>,
    pub events_per_second: Option<u32>,
    pub requests_per_second: Option<u32>,
    pub revoked: bool,
}

impl WriteKey {
    pub fn may_write(&self, community: Option<Uuid>) -> bool {
        match (&self.communities, community) {
            (None, _) => true,
            (Some(allowed), Some(community)) => allowed.contains(&community),
            // A key limited to communities writes only events of them.
            (Some(_), None) => false,
        }
    }
}

/// A new key, as `keys create` shows it (once).
pub struct CreatedKey {
    pub id: Uuid,
    pub secret: String,
}

/// What `keys create` is asked for.
pub struct NewKey {
    pub name: String,
    pub communities: Option<Vec<Uuid>>,
    pub events_per_second: Option<u32>,
    pub requests_per_second: Option<u32>,
}

/// One row of `keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyListing {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub communities: Option<Vec<Uuid>>,
    pub events_per_second: Option<u32>,
    pub requests_per_second: Option<u32>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn to_i32(value: Option<u32>) -> Option<i32> {
    value.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

fn to_u32(value: Option<i32>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Pool(#[from] activity_core::database::PoolError),
    #[error("no key with id {0}")]
    NotFound(Uuid),
}

/// Creates a key and returns it; the secret is not stored anywhere.
pub async fn create(pool: &Pool, new: &NewKey) -> Result<CreatedKey, KeyError> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let id = Uuid::now_v7();
    let prefix: String = secret.chars().take(PREFIX.len() + 6).collect();
    let client = pool.get().await?;
    client
        .execute(
            include_str!("../../sql/queries/keys/create_key.sql"),
            &[
                &id,
                &new.name,
                &hash(&secret),
                &prefix,
                &new.communities,
                &to_i32(new.events_per_second),
                &to_i32(new.requests_per_second),
            ],
        )
        .await?;
    Ok(CreatedKey { id, secret })
}

pub async fn list(pool: &Pool) -> Result<Vec<KeyListing>, KeyError> {
    let client = pool.get().await?;
    let rows = client
        .query(include_str!("../../sql/queries/keys/list_keys.sql"), &[])
        .await?;
    Ok(rows
        .iter()
        .map(|row| KeyListing {
            id: row.get(0),
            name: row.get(1),
            prefix: row.get(2),
            communities: row.get(3),
            events_per_second: to_u32(row.get(4)),
            requests_per_second: to_u32(row.get(5)),
            created_at: row.get(6),
            revoked_at: row.get(7),
        })
        .collect())
}

/// Revokes a key; every collector refuses it within [`REFRESH`]. Returns
/// when it was first revoked (revoking again keeps that time).
pub async fn revoke(pool: &Pool, id: Uuid) -> Result<chrono::DateTime<chrono::Utc>, KeyError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            include_str!("../../sql/queries/keys/revoke_key.sql"),
            &[&id],
        )
        .await?;
    match row {
        Some(row) => Ok(row.get("revoked_at")),
        None => Err(KeyError::NotFound(id)),
    }
}

/// Every key, by the SHA-256 of its secret.
type KeysByHash = HashMap<Vec<u8>, WriteKey>;

/// The keys as this replica last read them (None until the first read).
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<RwLock<Option<KeysByHash>>>,
}

/// What a presented key turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Valid(WriteKey),
    Revoked,
    Unknown,
    /// The keys were never read (the database has not answered yet).
    NotLoaded,
}

impl KeyCache {
    pub fn lookup(&self, secret: &str) -> Lookup {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let Some(keys) = keys.as_ref() else {
            return Lookup::NotLoaded;
        };
        match keys.get(&hash(secret)) {
            Some(key) if key.revoked => Lookup::Revoked,
            Some(key) => Lookup::Valid(key.clone()),
            None => Lookup::Unknown,
        }
    }

    pub fn loaded(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    async fn reload(&self, pool: &Pool) -> Result<usize, KeyError> {
        let client = pool.get().await?;
        let rows = client
            .query(include_str!("../../sql/queries/keys/active_keys.sql"), &[])
            .await?;
        let keys: KeysByHash = rows
            .iter()
            .map(|row| {
                (
                    row.get::<_, Vec<u8>>(2),
                    WriteKey {
                        id: row.get(0),
                        name: row.get(1),
                        communities: row.get(3),
                        events_per_second: to_u32(row.get(4)),
                        requests_per_second: to_u32(row.get(5)),
                        revoked: row.get(6),
                    },
                )
            })
            .collect();
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(keys);
        Ok(count)
    }

    /// Reloads every [`REFRESH`] until `shutdown`; keeps the last good copy
    /// while the database does not answer.
    pub async fn keep_fresh(self, pool: Pool, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            match self.reload(&pool).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("write keys reloaded again");
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot reload write keys; using the last copy");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_scope() {
        let a = Uuid::new_v4();
        let key = WriteKey {
            id: Uuid::new_v4(),
            name: "k".into(),
            communities: Some(vec![a]),
            events_per_second: None,
            requests_per_second: None,
            revoked: false,
        };
        assert!(key.may_write(Some(a)));
        assert!(!key.may_write(Some(Uuid::new_v4())));
        assert!(!key.may_write(None));
        let all = WriteKey {
            communities: None,
            ..key
        };
        assert!(all.may_write(Some(Uuid::new_v4())) && all.may_write(None));
    }

    #[test]
    fn only_the_right_secret_matches() {
        let cache = KeyCache::default();
        assert_eq!(cache.lookup("atk_x"), Lookup::NotLoaded);
        let key = WriteKey {
            id: Uuid::new_v4(),
            name: "k".into(),
            communities: None,
            events_per_second: None,
            requests_per_second: None,
            revoked: false,
        };
        *cache.keys.write().unwrap_or_else(|e| e.into_inner()) =
            Some(HashMap::from([(hash("atk_right"), key.clone())]));
        assert_eq!(cache.lookup("atk_right"), Lookup::Valid(key));
        assert_eq!(cache.lookup("atk_wrong"), Lookup::Unknown);
    }
}

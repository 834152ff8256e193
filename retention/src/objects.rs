//! Where archives live (`ARCHIVE_URL`) and what describes them (manifests).
//!
//! Layout under the URL's prefix, one directory per archive of a partition
//! (Hive-style `month=`, so DuckDB, Spark or Athena prune by month):
//!
//! ```text
//! activities/month=2025-01/ids-1-912345/part-00000.parquet
//! activities/month=2025-01/ids-1-912345/part-00001.parquet
//! activities/month=2025-01/ids-1-912345/manifest.json
//! ```
//!
//! `ids-FIRST-LAST` is the partition's smallest and largest `id`: the same
//! frozen partition always gets the same names, so an archive run repeated
//! after a crash overwrites its own files instead of adding copies. A
//! manifest is written only after every part it lists was read back and
//! verified; a restore reads manifests, never a directory listing of parts.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::RetentionError;

/// Describes one archive of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`crate::codec::SCHEMA_VERSION`] of the parts.
    pub schema_version: u32,
    pub table: String,
    /// The partition the rows were in, e.g. `activities_p2025_01`.
    pub partition: String,
    /// The partition's range, `[range_from, range_to)` on `created_at`.
    pub range_from: DateTime<Utc>,
    pub range_to: DateTime<Utc>,
    pub rows: u64,
    pub first_id: i64,
    pub last_id: i64,
    pub parts: Vec<Part>,
}

/// One Parquet file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// File name, beside the manifest.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// SHA-256 of its rows (`codec::rows_digest`).
    pub rows_sha256: String,
    pub first_id: i64,
    pub last_id: i64,
}

/// The object store `ARCHIVE_URL` names, and the prefix in it.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

impl Archive {
    /// `file:///abs/path`, `file://./relative/path`, or `s3://bucket/prefix`
    /// (credentials, region and endpoint from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, as the AWS tools read them).
    pub fn open(url: &str) -> Result<Self, RetentionError> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(RetentionError::Config(format!(
                    "ARCHIVE_URL {url:?} names no directory"
                )));
            }
            std::fs::create_dir_all(path).map_err(|e| {
                RetentionError::Config(format!("cannot create the archive directory {path}: {e}"))
            })?;
            let store = LocalFileSystem::new_with_prefix(path)?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: String::new(),
                url: url.to_owned(),
            });
        }
        if url.starts_with("s3://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| RetentionError::Config(format!("ARCHIVE_URL {url:?}: {e}")))?;
            let bucket = parsed.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(RetentionError::Config(format!(
                    "ARCHIVE_URL {url:?} names no bucket"
                )));
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: parsed.path().trim_matches('/').to_owned(),
                url: url.to_owned(),
            });
        }
        Err(RetentionError::Config(format!(
            "ARCHIVE_URL must be s3://bucket/prefix or file:///path, not {url:?}"
        )))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of `relative` (a `/`-separated path under the prefix).
    pub fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), RetentionError> {
        self.store
            .put(&Path::from(self.key(relative)), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    pub async fn get(&self, relative: &str) -> Result<Bytes, RetentionError> {
        Ok(self
            .store
            .get(&Path::from(self.key(relative)))
            .await?
            .bytes()
            .await?)
    }

    /// The manifests under `activities/month=YYYY-MM/`, as paths relative to
    /// the prefix, sorted.
    pub async fn manifests_of_month(
        &self,
        month: DateTime<Utc>,
    ) -> Result<Vec<String>, RetentionError> {
        let dir = month_dir(month);
        let listing: Vec<_> = self
            .store
            .list(Some(&Path::from(self.key(&dir))))
            .try_collect()
            .await?;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut manifests: Vec<String> = listing
            .into_iter()
            .map(|meta| meta.location.to_string())
            .filter(|key| key.ends_with("/manifest.json"))
            .filter_map(|key| key.get(strip..).map(str::to_owned))
            .collect();
        manifests.sort();
        Ok(manifests)
    }

    pub async fn read_manifest(&self, relative: &str) -> Result<Manifest, RetentionError> {
        let bytes = self.get(relative).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RetentionError::Verify(format!("manifest {relative} is unreadable: {e}")))
    }
}

/// `activities/month=YYYY-MM`.
pub fn month_dir(month: DateTime<Utc>) -> String {
    format!("{TABLE_DIR}/month={}", month.format("%Y-%m"))
}

/// The top directory of the layout, and what an archive id
/// (`month=YYYY-MM/ids-FIRST-LAST`, as `activity_archives` records it) is
/// relative to.
pub const TABLE_DIR: &str = "activities";

/// The manifest of the archive `archive_id`, relative to the prefix.
pub fn manifest_path(archive_id: &str) -> String {
    format!("{TABLE_DIR}/{archive_id}/manifest.json")
}

//! The consumer group: events leave Kafka here and are stored in PostgreSQL.
//!
//! - [`kafka`]: the group member, its delivery contract, and the poll loop;
//! - [`flush`]: one batch stored, dead-lettered and acknowledged;
//! - [`dlq`]: the dead-letter topic;
//! - [`gaps`]: offsets the broker skipped, reported;
//! - [`health`]: `/healthz` and `/readyz`;
//! - [`store`]: PostgreSQL (schema, partitions, the batch insert);
//! - [`retry`]: backoff for anything retried.

pub mod dlq;
pub mod flush;
pub mod gaps;
pub mod health;
pub mod kafka;
pub mod retry;
pub mod store;

pub use kafka::{Consumer, ConsumerError, Totals};
pub use store::{Store, StoreError};

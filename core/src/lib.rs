//! The activity event and everything every process agrees on about it.
//!
//! An event enters as a [`NewEvent`] (from the Rust producer, a JSON line, or
//! an Avro record read back from Kafka) and becomes an [`ActivityEvent`] only
//! through [`NewEvent::validate`]: once a value is an `ActivityEvent` it is
//! valid and sanitized everywhere. [`avro`] turns it into the bytes on the
//! topic and back, [`kafka::partition_key`] is the one place the Kafka key is
//! derived, [`config`] is the layered configuration all binaries share, and
//! [`database::pool`] the one way they open PostgreSQL.

pub mod avro;
pub mod config;
pub mod database;
pub mod event;
pub mod kafka;
pub mod metadata;
pub mod shutdown;
pub mod telemetry;

pub use event::{
    ActivityEvent, CommunityId, EventId, EventType, NewEvent, RawEvent, UserId, ValidationError,
};
pub use metadata::Metadata;

//! Where events enter: the producer library services link to publish events.
//!
//! [`Tracker`] validates and encodes an event on the caller's thread and
//! hands it to librdkafka's bounded in-memory queue; a background thread
//! delivers it to the broker. See [`tracker`] for the full contract.

pub mod synthetic;
pub mod tracker;

pub use tracker::{DeliveryStats, TrackError, Tracker};

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
pub mod http;
pub mod kafka;
pub mod metadata;
pub mod shutdown;
pub mod telemetry;

pub use event::{
    ActivityEvent, CommunityId, EventId, EventType, NewEvent, RawEvent, UserId, ValidationError,
};
pub use metadata::Metadata;

/// The credential of an `Authorization: Bearer <credential>` header value:
/// the scheme in any case (RFC 9110 §11.1), the credential trimmed and not
/// empty. The collector's write keys and the API's tokens both use it.
pub fn bearer_credential(header_value: &str) -> Option<&str> {
    let scheme = header_value.get(..7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    Some(header_value[7..].trim()).filter(|credential| !credential.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer k1", "bearer k1", "BEARER  k1 "] {
            assert_eq!(super::bearer_credential(value), Some("k1"), "{value}");
        }
        for value in ["Basic k1", "Bearer ", "Bearer", "Bearerk1", "", "Bé"] {
            assert_eq!(super::bearer_credential(value), None, "{value}");
        }
    }
}

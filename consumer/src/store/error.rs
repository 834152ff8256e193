//! Storage errors, classified by what the consumer must do about them.

use activity_core::database::{ConnectError, PoolError};
use tokio_postgres::error::SqlState;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, overloaded or aborted the transaction
    /// (connection, resource, operator-intervention and transaction-rollback
    /// classes): retry the same batch after a backoff.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a value in the batch (data-exception,
    /// integrity and program-limit classes): find the rows it refuses and
    /// dead-letter only them.
    #[error("database rejected the batch: {0}")]
    Rejected(String),
    /// The schema or permissions are wrong (a missing table, a revoked
    /// grant): retry slowly and alert; dead-lettering would send every event
    /// to the DLQ for an operator's mistake.
    #[error("database schema or permission problem: {0}")]
    Schema(String),
    /// The configuration cannot work (a malformed URL).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// An operator's command that would give wrong answers (rebuilding the
    /// rollups of archived months).
    #[error("refused: {0}")]
    Refused(String),
}

impl StoreError {
    /// Every value of [`StoreError::kind`], for `/metrics` to show each
    /// counter at 0 from the start.
    pub const KINDS: [&'static str; 4] = ["unavailable", "schema", "config", "refused"];

    /// The `kind` label of `consumer_store_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Schema(_) => "schema",
            Self::Config(_) => "config",
            Self::Refused(_) | Self::Rejected(_) => "refused",
        }
    }

    pub(crate) fn config(error: impl std::fmt::Display) -> Self {
        Self::Config(error.to_string())
    }

    /// Whether retrying the same batch can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Schema(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let message = match error.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => error.to_string(),
        };
        Self::classify(&error, message)
    }
}

impl From<ConnectError> for StoreError {
    fn from(error: ConnectError) -> Self {
        Self::classify(error.postgres(), error.to_string())
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Connect(e) => e.into(),
            PoolError::Pool(_) => Self::Unavailable(error.to_string()),
        }
    }
}

impl StoreError {
    /// What `error` means for the batch, by its SQLSTATE, told as `message`.
    fn classify(error: &tokio_postgres::Error, message: String) -> Self {
        let Some(code) = error.code() else {
            // No SQLSTATE: the connection itself failed.
            return Self::Unavailable(message);
        };
        // A month with no partition (dropped under a running consumer): the
        // partition cache is stale; creating it and retrying will succeed.
        if *code == SqlState::CHECK_VIOLATION && message.contains("no partition of relation") {
            return Self::Unavailable(message);
        }
        // users.email UNIQUE can race between consumers filling in signups;
        // on retry the NOT EXISTS guard sees the winner's row.
        if *code == SqlState::UNIQUE_VIOLATION {
            return Self::Unavailable(message);
        }
        match &code.code()[..2] {
            "08" | "53" | "57" | "40" | "55" | "58" | "XX" => Self::Unavailable(message),
            // 54: a value past one of PostgreSQL's limits (an index row
            // over 2,704 bytes, say) is a value it refuses too.
            "22" | "23" | "54" => Self::Rejected(message),
            _ => Self::Schema(message),
        }
    }
}

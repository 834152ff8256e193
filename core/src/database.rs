//! The one way every process opens PostgreSQL: a lazily connecting pool.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// A pool of at most `size` connections to `url`; nothing connects until a
/// connection is asked for. The error is the URL's or the pool's, as text.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| e.to_string())
}

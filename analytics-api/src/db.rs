//! Every query of a request runs in one read-only, repeatable-read
//! transaction (one snapshot) scoped to its caller: the
//! caller's communities (or user) are set for the row-level security
//! policies, the role is switched to `activity_api` (subject to them), and
//! the session time zone is the requested one.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::IsolationLevel;

use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// Longest any API query may run.
const STATEMENT_TIMEOUT: &str = "5s";

/// JIT compilation is off in every API transaction: the queries read few
/// rows, but their estimates over functions returning sets are large enough
/// to make PostgreSQL spend 300 ms compiling each.
///
/// Memory for each sort or hash of the top-list queries, which may
/// aggregate a few hundred thousand rollup rows (spilling to disk at
/// PostgreSQL's default of 4 MB). Only for them ([`for_top_lists`]): with it
/// set for the whole transaction, each `activity_tiles()` call cost ten
/// times as much (measured: a 7-day hourly series 62 ms instead of 8 ms).
const TOP_LIST_WORK_MEM: &str = "SET LOCAL work_mem = '32MB'";

/// Gives the rest of `tx` the memory the top-list queries need: the
/// endpoints run every other query before.
pub async fn for_top_lists(tx: &Transaction<'_>) -> Result<(), ApiError> {
    tx.batch_execute(TOP_LIST_WORK_MEM).await?;
    Ok(())
}

pub async fn scoped<'a>(
    client: &'a mut Object,
    caller: &Caller,
    tz: &str,
) -> Result<Transaction<'a>, ApiError> {
    // One snapshot for every query of a response, so that its parts (totals,
    // series, events by type, top lists) count the same events while the
    // consumer keeps committing.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let all = if caller.role == Role::Admin {
        "on"
    } else {
        "off"
    };
    let communities = caller
        .community_scope()
        .unwrap_or_default()
        .iter()
        .map(uuid::Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let user = caller
        .user_id()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let statement = tx
        .prepare_cached(
            "SELECT set_config('activity.scope_all', $1, true),
                    set_config('activity.scope_communities', $2, true),
                    set_config('activity.scope_user', $3, true),
                    set_config('TimeZone', $4, true),
                    set_config('statement_timeout', $5, true),
                    set_config('jit', 'off', true)",
        )
        .await?;
    tx.execute(
        &statement,
        &[&all, &communities, &user, &tz, &STATEMENT_TIMEOUT],
    )
    .await?;
    tx.batch_execute("SET LOCAL ROLE activity_api").await?;
    Ok(tx)
}

/// Runs one of the API's queries (`sql/queries/analytics/<name>.sql`) and
/// records how long it took as `db_query_duration_seconds{query="<name>"}`.
pub async fn timed<T, E>(
    name: &'static str,
    query: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = query.await;
    metrics::histogram!("db_query_duration_seconds", "query" => name)
        .record(started.elapsed().as_secs_f64());
    result
}

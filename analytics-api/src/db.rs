//! Every query of a request runs in one read-only, repeatable-read
//! transaction (one snapshot) scoped to its caller: the
//! caller's communities (or user) are set for the row-level security
//! policies, the role is switched to `activity_api` (subject to them), and
//! the session time zone is the requested one.
//!
//! The overview and community reports run their long queries on two
//! connections at once when the pool has one to spare ([`Reader`]): the
//! second transaction imports the first one's snapshot (`pg_export_snapshot`,
//! as `pg_dump --jobs` does), so the response is still one snapshot.

use activity_core::database::{Object, Pool};
use deadpool_postgres::Transaction;
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
/// PostgreSQL's default of 4 MB). Only for them ([`with_top_list_memory`]):
/// with it set for the whole transaction, each `activity_tiles()` call cost
/// ten times as much (measured: a 7-day hourly series 62 ms instead of 8 ms,
/// before `activity_tiles()` fixed its own `work_mem` in
/// `sql/migrations/0010_series_tiles.sql`).
const TOP_LIST_WORK_MEM: &str = "SET LOCAL work_mem = '32MB'";
const USUAL_WORK_MEM: &str = "SET LOCAL work_mem TO DEFAULT";

/// Runs `query` (a top list) with the memory the top lists need, then gives
/// the rest of `tx` the usual amount again, so a report's queries may run in
/// any order.
pub async fn with_top_list_memory<T>(
    tx: &Transaction<'_>,
    query: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tx.batch_execute(TOP_LIST_WORK_MEM).await?;
    let result = query.await?;
    tx.batch_execute(USUAL_WORK_MEM).await?;
    Ok(result)
}

pub async fn scoped<'a>(
    client: &'a mut Object,
    caller: &Caller,
    tz: &str,
) -> Result<Transaction<'a>, ApiError> {
    scoped_in(client, caller, tz, None).await
}

/// A scoped transaction; with `snapshot`, on that exported snapshot.
async fn scoped_in<'a>(
    client: &'a mut Object,
    caller: &Caller,
    tz: &str,
    snapshot: Option<&str>,
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
    if let Some(snapshot) = snapshot {
        // Must come before any query of the transaction. Not a parameter
        // (the statement takes none); checked to be only the hex digits and
        // dashes PostgreSQL writes.
        if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(ApiError::Internal(format!(
                "unexpected snapshot id {snapshot:?}"
            )));
        }
        tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
            .await?;
    }
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

/// Where a report's queries run: its lead transaction, and a second one on
/// the same snapshot when the pool had a connection to spare.
pub struct Reader {
    lead: Object,
    helper: Option<Object>,
}

impl Reader {
    /// A connection, and a second one only if it is free right now: a
    /// report never waits for its second connection, so a busy pool serves
    /// each request on one (and requests cannot starve each other of their
    /// second connections).
    pub async fn get(pool: &Pool) -> Result<Self, ApiError> {
        let lead = pool.get().await?;
        let helper = pool.get_now().await;
        Ok(Self { lead, helper })
    }

    /// The lead transaction, scoped to the caller, and the helper's on its
    /// snapshot (`None` without a helper).
    pub async fn scoped<'a>(
        &'a mut self,
        caller: &Caller,
        tz: &str,
    ) -> Result<(Transaction<'a>, Option<Transaction<'a>>), ApiError> {
        let lead = scoped_in(&mut self.lead, caller, tz, None).await?;
        let helper = match self.helper.as_mut() {
            Some(client) => {
                let snapshot: String = lead
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await?
                    .try_get(0)?;
                Some(scoped_in(client, caller, tz, Some(&snapshot)).await?)
            }
            None => None,
        };
        Ok((lead, helper))
    }
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

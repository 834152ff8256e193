//! One module per subcommand: parse its flags, call the libraries.

pub(crate) mod api;
pub(crate) mod collect;
pub(crate) mod consume;
pub(crate) mod dev;
pub(crate) mod dlq;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod partitions;
pub(crate) mod produce;
pub(crate) mod retention;
pub(crate) mod rollups;
pub(crate) mod token;

/// A `--community` flag (`keys create`, `token`): a UUID, not the nil or
/// the max one, under which the rollups keep events without a community
/// and every community together.
pub(crate) fn community(value: &str) -> Result<uuid::Uuid, String> {
    let id = uuid::Uuid::parse_str(value).map_err(|e| format!("not a UUID: {e}"))?;
    if id.is_nil() || id.is_max() {
        return Err("the nil and the max UUID name no community".into());
    }
    Ok(id)
}

/// A date flag (`--from`, `--to`, `--before`): `YYYY-MM-DD` (midnight UTC)
/// or RFC 3339.
pub(crate) fn parse_date(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.to_utc());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| format!("{text:?} is not a date: use YYYY-MM-DD or RFC 3339"))
}

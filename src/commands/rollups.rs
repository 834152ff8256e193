//! `activity rollups rebuild`: recompute rollups from raw rows.

use activity_consumer::Store;
use activity_core::config::Settings;
use chrono::{DateTime, Utc};

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Recompute every rollup bucket in [--from, --to) from the raw events
    /// (after a bug fix or a backfill), one week per transaction: consumers
    /// wait while a week is rebuilt. Idempotent; run again to finish an
    /// interrupted rebuild. The range is cut to where events can be (from
    /// 2000-01-01 to now); each week rebuilt is logged.
    Rebuild {
        /// `YYYY-MM-DD` (midnight UTC) or RFC 3339; widened down to a
        /// 15-minute boundary.
        #[arg(long, value_parser = super::parse_date)]
        from: DateTime<Utc>,
        /// `YYYY-MM-DD` (midnight UTC) or RFC 3339, exclusive; widened up to
        /// a 15-minute boundary.
        #[arg(long, value_parser = super::parse_date)]
        to: DateTime<Utc>,
    },
}

pub(crate) async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Rebuild { from, to } => {
            if from >= to {
                anyhow::bail!("--from must be before --to");
            }
            // No event is stored before 2000 or more than 10 minutes ahead
            // (validation refuses them), so nothing outside is rebuilt: a
            // typo such as 1900 had spent minutes on a century of empty weeks.
            let earliest = activity_core::event::earliest_created_at();
            let latest = Utc::now() + chrono::TimeDelta::hours(1);
            let (from, to) = (from.max(earliest), to.min(latest));
            if from >= to {
                anyhow::bail!(
                    "no event can be stored in that range: events are from {} to 10 minutes from now",
                    earliest.to_rfc3339()
                );
            }
            let store = Store::connect(settings.database_url.expose(), 1)?;
            let rebuilt = store.rebuild_rollups(from, to).await?;
            println!(
                "rebuilt rollups from {} to {} over {} events",
                rebuilt.from.to_rfc3339(),
                rebuilt.to.to_rfc3339(),
                rebuilt.events
            );
            Ok(())
        }
    }
}

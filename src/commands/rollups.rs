//! `activity rollups rebuild`: recompute rollups from raw rows.

use activity_consumer::Store;
use activity_core::config::Settings;
use chrono::{DateTime, Utc};

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Recompute every rollup bucket in [--from, --to) from the raw events
    /// (after a bug fix or a backfill), one week per transaction: consumers
    /// wait while a week is rebuilt. Idempotent; run again to finish an
    /// interrupted rebuild.
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

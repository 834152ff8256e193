//! `activity partitions ensure|list`: the monthly partitions of `activities`.

use activity_consumer::Store;
use activity_core::config::Settings;
use activity_retention::partitions;
use chrono::Utc;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Create the partitions from last month to --ahead months after this one
    /// (the consumer also keeps them ahead, hourly).
    Ensure {
        /// Months ahead of this one, 0 to 120; default: partitions.ahead of
        /// the profile.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(activity_core::config::MAX_PARTITIONS_AHEAD)))]
        ahead: Option<u32>,
    },
    /// Show each partition (range, tier, rows, size) and each archived month.
    List {
        /// Count rows exactly (a scan of every partition) instead of the
        /// planner's estimate.
        #[arg(long)]
        exact: bool,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    let store = Store::connect(settings.database_url.expose(), 1)?;
    let now = Utc::now();
    match command {
        Command::Ensure { ahead } => {
            let ahead = ahead.unwrap_or(settings.partitions.ahead);
            let months = partitions::ensure_ahead(&store, now, ahead).await?;
            for month in months {
                println!("activities_p{}", month.format("%Y_%m"));
            }
        }
        Command::List { exact, json } => {
            let client = store.pool().get().await?;
            let found = partitions::list(&**client, now, &settings.retention, exact).await?;
            let archives = partitions::archives(&**client).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "partitions": found,
                        "archives": archives,
                    }))?
                );
                return Ok(());
            }
            println!(
                "{:<30} {:<10} {:<10} {:<9} {:>12} {:>10} {:>10}",
                "partition", "from", "to", "tier", "rows", "size MB", "index MB"
            );
            for p in &found {
                let tier = if p.attached {
                    p.tier.to_string()
                } else {
                    "archiving".to_owned()
                };
                let rows = if exact || p.rows >= 0 {
                    p.rows.to_string()
                } else {
                    "?".to_owned()
                };
                println!(
                    "{:<30} {:<10} {:<10} {:<9} {:>12} {:>10.1} {:>10.1}",
                    p.name,
                    p.from.format("%Y-%m-%d"),
                    p.to.format("%Y-%m-%d"),
                    tier,
                    rows,
                    p.bytes as f64 / 1e6,
                    p.index_bytes as f64 / 1e6
                );
            }
            if !exact {
                println!("(rows: the planner's estimate; --exact counts)");
            }
            if !archives.is_empty() {
                println!();
                println!(
                    "{:<40} {:>12} {:>10} {:<20} {:<10}",
                    "archive", "rows", "size MB", "archived at", "restored"
                );
                for a in &archives {
                    println!(
                        "{:<40} {:>12} {:>10.1} {:<20} {:<10}",
                        a.archive_id,
                        a.rows,
                        a.bytes as f64 / 1e6,
                        a.archived_at.format("%Y-%m-%d %H:%M"),
                        a.restored_at
                            .map(|t| t.format("%Y-%m-%d").to_string())
                            .unwrap_or_else(|| "no".to_owned())
                    );
                }
            }
        }
    }
    Ok(())
}

//! `activity keys`: write keys of the HTTP collector.

use activity_collector::keys::{self, NewKey};
use activity_core::config::Settings;
use uuid::Uuid;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Create a key; the key is printed once, alone on the last line.
    Create {
        /// What the key is for (a service's name).
        #[arg(long)]
        name: String,
        /// A community the key may write events of (repeat for several).
        #[arg(long = "community", required_unless_present = "all_communities")]
        communities: Vec<Uuid>,
        /// The key may write events of every community (and system events).
        #[arg(long, conflicts_with = "communities")]
        all_communities: bool,
        /// Events per second, at least 1 (default: the collector's).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        events_per_second: Option<u32>,
        /// Requests per second, at least 1 (default: the collector's).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        requests_per_second: Option<u32>,
    },
    /// List keys (never the keys themselves: their first characters).
    List,
    /// Revoke a key by id; every collector refuses it within a second.
    Revoke { id: Uuid },
}

pub(crate) async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    let pool = activity_core::database::pool(settings.database_url.expose(), 1)
        .map_err(|e| anyhow::anyhow!("invalid DATABASE_URL: {e}"))?;
    match command {
        Command::Create {
            name,
            communities,
            all_communities,
            events_per_second,
            requests_per_second,
        } => {
            let created = keys::create(
                &pool,
                &NewKey {
                    name,
                    communities: (!all_communities).then_some(communities),
                    events_per_second,
                    requests_per_second,
                },
            )
            .await?;
            eprintln!(
                "created key {}; it is shown once, store it now:",
                created.id
            );
            println!("{}", created.secret);
        }
        Command::List => {
            for key in keys::list(&pool).await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
        Command::Revoke { id } => {
            keys::revoke(&pool, id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

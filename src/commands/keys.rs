//! `activity keys`: write keys of the HTTP collector.

use activity_collector::keys::{self, NewKey};
use activity_core::config::Settings;
use uuid::Uuid;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Create a key; the key is printed once, alone on the last line.
    Create {
        /// What the key is for (a service's name, 1 to 200 characters).
        #[arg(long, value_parser = key_name)]
        name: String,
        /// A community the key may write events of (repeat for several).
        #[arg(long = "community", required_unless_present = "all_communities", value_parser = super::community)]
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
    Revoke {
        /// The key's id (`keys list`, or what `keys create` said).
        id: Uuid,
    },
}

fn key_name(value: &str) -> Result<String, String> {
    match value.trim().chars().count() {
        1..=200 => Ok(value.trim().to_owned()),
        0 => Err("a key needs a name (what it is for)".into()),
        _ => Err("at most 200 characters".into()),
    }
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
            let revoked_at = keys::revoke(&pool, id).await?;
            println!("revoked {id} (since {})", revoked_at.to_rfc3339());
        }
    }
    Ok(())
}

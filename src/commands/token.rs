//! `activity token`: mints an analytics API token for local use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use activity_analytics_api::{Claims, Keys, Role};
use activity_core::config::Settings;
use uuid::Uuid;

use super::api::JwtArgs;

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Admin,
    CommunityAdmin,
    User,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// What the token may read.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The token's subject; for `user`, the user's UUID.
    #[arg(long, default_value = "local")]
    sub: String,
    /// A community a `community_admin` may read (repeat for several).
    #[arg(long = "community", value_parser = super::community)]
    communities: Vec<Uuid>,
    /// Lifetime in seconds (at least 1).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    #[command(flatten)]
    auth: JwtArgs,
}

pub(crate) fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let role = match args.role {
        RoleArg::Admin => Role::Admin,
        RoleArg::CommunityAdmin => Role::CommunityAdmin,
        RoleArg::User => Role::User,
    };
    if matches!(role, Role::User) {
        Uuid::parse_str(&args.sub)
            .map_err(|_| anyhow::anyhow!("--sub must be the user's UUID for --role user"))?;
    }
    if matches!(role, Role::CommunityAdmin) && args.communities.is_empty() {
        anyhow::bail!("--role community-admin needs at least one --community");
    }
    if !matches!(role, Role::CommunityAdmin) && !args.communities.is_empty() {
        anyhow::bail!("--community applies to --role community-admin only");
    }
    let exp = (SystemTime::now() + Duration::from_secs(args.ttl))
        .duration_since(UNIX_EPOCH)?
        .as_secs_f64()
        .floor();
    let keys = Keys::new(&args.auth.secret(&settings)?);
    let token = keys.mint(&Claims {
        sub: args.sub,
        exp,
        role,
        communities: matches!(role, Role::CommunityAdmin).then_some(args.communities),
        nbf: None,
    })?;
    println!("{token}");
    Ok(())
}

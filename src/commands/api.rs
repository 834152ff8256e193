//! `activity api`: the analytics API.

use activity_analytics_api::{ApiConfig, Application};
use activity_core::config::{AppEnv, Secret, Settings};
use tokio_util::sync::CancellationToken;

/// The key `dev` uses when JWT_SECRET is not set (never in staging or prod).
pub(crate) const DEV_JWT_SECRET: &str = "activity-dev-secret-not-for-production";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to serve on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    auth: JwtArgs,
    /// Database the API reads (a read replica will do); defaults to DATABASE_URL.
    #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
    database_read_url: Option<Secret>,
    /// Database connections in the pool.
    #[arg(long, env = "API_POOL_SIZE", default_value_t = 8)]
    pool_size: usize,
}

#[derive(clap::Args)]
pub(crate) struct JwtArgs {
    /// HS256 key for analytics tokens (required in staging and prod).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<Secret>,
}

/// Published keys (the dev key above, `.env.example`'s placeholder): anyone
/// could mint an admin token for a deployment that used one.
const PUBLISHED_JWT_SECRETS: [&str; 2] = [
    DEV_JWT_SECRET,
    "dev-only-jwt-secret-0123456789abcdef0123456789",
];

/// Fewer distinct bytes than this in a staging or prod key (32 times `a`)
/// is refused as a placeholder, not a key.
const MIN_DISTINCT_SECRET_BYTES: usize = 10;

impl JwtArgs {
    pub(crate) fn secret(&self, settings: &Settings) -> anyhow::Result<Vec<u8>> {
        key_for(
            settings.app_env.unwrap_or(AppEnv::Dev),
            self.jwt_secret.as_ref().map(Secret::expose),
        )
    }
}

/// The HS256 key `env` runs with: `JWT_SECRET` as given in dev (the dev
/// key without it); in staging and prod one of at least 32 bytes that is
/// neither published nor a placeholder.
fn key_for(env: AppEnv, secret: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match secret {
        Some(secret) if env == AppEnv::Dev => Ok(secret.as_bytes().to_vec()),
        Some(secret) => {
            let distinct = secret
                .bytes()
                .collect::<std::collections::HashSet<_>>()
                .len();
            if secret.len() < 32 {
                anyhow::bail!("JWT_SECRET must be at least 32 bytes in {}", env.name())
            }
            if PUBLISHED_JWT_SECRETS.contains(&secret) {
                anyhow::bail!(
                    "JWT_SECRET is a published example key; {} needs a key of its own \
                     (e.g. `openssl rand -base64 48`)",
                    env.name()
                )
            }
            if distinct < MIN_DISTINCT_SECRET_BYTES {
                anyhow::bail!(
                    "JWT_SECRET has only {distinct} distinct characters: a placeholder, \
                     not a key; {} needs a random one (e.g. `openssl rand -base64 48`)",
                    env.name()
                )
            }
            Ok(secret.as_bytes().to_vec())
        }
        None if env == AppEnv::Dev => {
            tracing::warn!("JWT_SECRET is not set: using the dev key (APP_ENV=dev only)");
            Ok(DEV_JWT_SECRET.as_bytes().to_vec())
        }
        None => anyhow::bail!("JWT_SECRET is required in {}", env.name()),
    }
}

pub(crate) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    if let (Some(AppEnv::Prod), Some(read_url)) = (settings.app_env, &args.database_read_url) {
        activity_core::config::check_prod_database_url("DATABASE_READ_URL", read_url.expose())?;
    }
    let read_url = args
        .database_read_url
        .clone()
        .unwrap_or_else(|| settings.database_url.clone());
    let app = Application::build(ApiConfig {
        listen: args.listen.clone(),
        read_url: read_url.expose().to_owned(),
        jwt_secret: args.auth.secret(&settings)?,
        pool_size: args.pool_size,
    })
    .await?;
    tracing::info!(address = %app.local_addr()?, "analytics API listening");
    let shutdown = CancellationToken::new();
    activity_core::shutdown::cancel_on_signal(shutdown.clone());
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_and_prod_refuse_keys_anyone_could_know() {
        let random = "q7Vn2xK9pL4mZ8rT1wY6bH3jF5sD0aGc";
        for env in [AppEnv::Staging, AppEnv::Prod] {
            assert_eq!(key_for(env, Some(random)).unwrap(), random.as_bytes());
            for (secret, why) in [
                (None, "required"),
                (Some("short-but-random-Q7x"), "at least 32 bytes"),
                (Some(DEV_JWT_SECRET), "published"),
                (Some(PUBLISHED_JWT_SECRETS[1]), "published"),
                (Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "distinct"),
            ] {
                let error = key_for(env, secret).unwrap_err().to_string();
                assert!(error.contains(why), "{secret:?}: {error}");
                assert!(error.contains(env.name()), "{error}");
            }
        }
        // dev takes what it is given, and has a key of its own without one.
        assert_eq!(key_for(AppEnv::Dev, Some("x")).unwrap(), b"x");
        assert_eq!(
            key_for(AppEnv::Dev, None).unwrap(),
            DEV_JWT_SECRET.as_bytes()
        );
    }
}

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

impl JwtArgs {
    pub(crate) fn secret(&self, settings: &Settings) -> anyhow::Result<Vec<u8>> {
        match (&self.jwt_secret, settings.app_env.unwrap_or(AppEnv::Dev)) {
            (Some(secret), AppEnv::Dev) => Ok(secret.expose().as_bytes().to_vec()),
            (Some(secret), _) if secret.expose().len() >= 32 => {
                Ok(secret.expose().as_bytes().to_vec())
            }
            (Some(_), env) => anyhow::bail!("JWT_SECRET must be at least 32 bytes in {env:?}"),
            (None, AppEnv::Dev) => {
                tracing::warn!("JWT_SECRET is not set: using the dev key (APP_ENV=dev only)");
                Ok(DEV_JWT_SECRET.as_bytes().to_vec())
            }
            (None, env) => anyhow::bail!("JWT_SECRET is required in {env:?}"),
        }
    }
}

pub(crate) async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
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

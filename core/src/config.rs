//! Layered configuration shared by every process.
//!
//! Precedence: command-line flag > environment variable (clap reads both) >
//! `config/<APP_ENV>.toml` > built-in default. The three profiles in
//! `config/` are compiled into the binary; `ACTIVITY_CONFIG_DIR` points at a
//! directory of replacements (a mounted ConfigMap, say). The current directory
//! is never searched. Secrets come only from the environment or flags.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The deployment profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Dev,
    Staging,
    Prod,
}

impl AppEnv {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Staging => "staging",
            Self::Prod => "prod",
        }
    }

    fn builtin_profile(self) -> &'static str {
        match self {
            Self::Dev => include_str!("../../config/dev.toml"),
            Self::Staging => include_str!("../../config/staging.toml"),
            Self::Prod => include_str!("../../config/prod.toml"),
        }
    }
}

/// A value that must not appear in logs: its `Debug` prints `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, for a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Flags every subcommand takes (each also read from its environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Deployment profile; selects config/<APP_ENV>.toml.
    #[arg(
        long,
        env = "APP_ENV",
        value_enum,
        default_value = "dev",
        global = true
    )]
    pub app_env: AppEnv,
    /// Directory holding <APP_ENV>.toml; without it the profiles built into the binary are used.
    #[arg(long, env = "ACTIVITY_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,
    /// Events topic; the dead-letter topic is <topic>.dlq.
    #[arg(long, env = "KAFKA_TOPIC", global = true)]
    pub kafka_topic: Option<String>,
    /// Where cold partitions are archived: s3://bucket/prefix or file:///path.
    #[arg(long, env = "ARCHIVE_URL", global = true)]
    pub archive_url: Option<String>,
}

/// Kafka connection and topic layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// Partitions created by `migrate`: the most consumers that can share the work.
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "activities".into(),
            partitions: 12,
            replication_factor: 1,
        }
    }
}

/// The consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    pub group_id: String,
    /// Events per database transaction.
    pub batch_size: usize,
    /// How long a partial batch waits for more events, in milliseconds.
    pub batch_linger_ms: u64,
    /// Kafka group session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// librdkafka's `max.poll.interval.ms`: a member that does not poll for
    /// this long leaves its group. While a batch waits for the database the
    /// consumer pauses its partitions after a third of it and keeps polling.
    pub max_poll_interval_ms: u64,
    /// Database connections in the pool.
    pub pool_size: usize,
    /// Batches written to the database at once (their offsets are still
    /// committed in order).
    pub max_in_flight: usize,
    /// How long shutdown waits for the batch in hand, in milliseconds; keep it
    /// below the orchestrator's kill timeout (Kubernetes: 30 s).
    pub shutdown_grace_ms: u64,
    /// How often the rollup compactor looks for days to compact, in
    /// milliseconds.
    pub compact_interval_ms: u64,
}

impl ConsumerSettings {
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn max_poll_interval(&self) -> Duration {
        Duration::from_millis(self.max_poll_interval_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn compact_interval(&self) -> Duration {
        Duration::from_millis(self.compact_interval_ms.max(100))
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: "activity-consumer".into(),
            batch_size: 5000,
            batch_linger_ms: 200,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            pool_size: 4,
            max_in_flight: 2,
            shutdown_grace_ms: 25_000,
            compact_interval_ms: 15_000,
        }
    }
}

/// The producer library ([`Tracker`](../../activity_producer/struct.Tracker.html)).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// Most events buffered in memory waiting for the broker.
    pub queue_capacity: usize,
    /// How long the producer waits to fill a Kafka batch, in milliseconds.
    pub linger_ms: u64,
    /// How long a message may wait for the broker before it fails, in milliseconds.
    pub delivery_timeout_ms: u64,
    /// Most events in one Kafka record batch (librdkafka's
    /// `batch.num.messages`). Against Tansu, the test broker, 1: it cannot
    /// serve a fetch that starts inside a record batch (README: Known broker
    /// differences).
    pub batch_messages: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            linger_ms: 5,
            delivery_timeout_ms: 120_000,
            batch_messages: 10_000,
        }
    }
}

/// The most months `partitions.ahead` and `partitions ensure --ahead` take
/// (ten years: a typo must not create a thousand tables).
pub const MAX_PARTITIONS_AHEAD: u32 = 120;

/// PostgreSQL partitions of `activities`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionSettings {
    /// Monthly partitions kept created ahead of the current month (at
    /// most [`MAX_PARTITIONS_AHEAD`]).
    pub ahead: u32,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        Self { ahead: 3 }
    }
}

/// The HTTP collector's defaults per key (flags and `COLLECT_*` variables
/// override them; a key created with its own limits keeps them).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSettings {
    pub requests_per_second: u32,
    pub events_per_second: u32,
    /// Identical events (same key, user, type, entity) accepted per window.
    pub spam_threshold: u32,
    pub spam_window_ms: u64,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            events_per_second: 10_000,
            spam_threshold: 50,
            spam_window_ms: 10_000,
        }
    }
}

/// The data lifecycle (`activity retention run`): tiers by a partition's age
/// in whole months, the current month being 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Months younger than this are hot: every index.
    pub hot_months: u32,
    /// Months younger than this (and not hot) are warm: only the indexes the
    /// API reads old rows through. Older months are cold: archived, dropped.
    pub warm_months: u32,
    /// Rows per archived Parquet file.
    pub archive_part_rows: u32,
    /// Days a restored month is kept from being archived again.
    pub restore_hold_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            hot_months: 3,
            warm_months: 12,
            archive_part_rows: 200_000,
            restore_hold_days: 7,
        }
    }
}

/// Everything a process needs, resolved from all layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    #[serde(skip)]
    pub app_env: Option<AppEnv>,
    pub log_format: LogFormat,
    pub database_url: Secret,
    pub kafka: KafkaSettings,
    pub consumer: ConsumerSettings,
    pub producer: ProducerSettings,
    pub partitions: PartitionSettings,
    pub retention: RetentionSettings,
    pub collector: CollectorSettings,
    /// Where cold partitions are archived: `s3://bucket/prefix` (credentials
    /// and endpoint from the standard `AWS_*` variables) or `file:///path`.
    pub archive_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            app_env: None,
            log_format: LogFormat::Text,
            database_url: Secret::new("postgres://postgres@127.0.0.1:5432/activity"),
            kafka: KafkaSettings::default(),
            consumer: ConsumerSettings::default(),
            producer: ProducerSettings::default(),
            partitions: PartitionSettings::default(),
            retention: RetentionSettings::default(),
            collector: CollectorSettings::default(),
            archive_url: "file://./archive".to_owned(),
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {profile} profile: {source}")]
    Parse {
        profile: String,
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Settings {
    /// Resolves every layer for the given flags.
    pub fn load(args: &GlobalArgs) -> Result<Self, ConfigError> {
        let text = match &args.config_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.toml", args.app_env.name()));
                std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::Read { path, source })?
            }
            None => args.app_env.builtin_profile().to_owned(),
        };
        let mut settings = Self::from_toml(args.app_env.name(), &text)?;
        settings.app_env = Some(args.app_env);
        if let Some(url) = &args.database_url {
            settings.database_url = url.clone();
        }
        if let Some(brokers) = &args.kafka_brokers {
            settings.kafka.brokers = brokers.clone();
        }
        if let Some(topic) = &args.kafka_topic {
            settings.kafka.topic = topic.clone();
        }
        if let Some(url) = &args.archive_url {
            settings.archive_url = url.clone();
        }
        settings.check()?;
        Ok(settings)
    }

    /// Parses one profile over the built-in defaults.
    pub fn from_toml(profile: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            profile: profile.to_owned(),
            source,
        })
    }

    /// What `prod` refuses: the built-in database URL, and a database
    /// password that is missing or a well-known default. (`activity api`
    /// also refuses to start without `JWT_SECRET` outside `dev`.)
    fn check_prod(&self) -> Result<(), ConfigError> {
        let url = self.database_url.expose();
        if url == Settings::default().database_url.expose() {
            return Err(ConfigError::Invalid(
                "prod needs DATABASE_URL: the built-in default is for a laptop".into(),
            ));
        }
        check_prod_database_url("DATABASE_URL", url)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.consumer.batch_size == 0 {
            return Err(ConfigError::Invalid(
                "consumer.batch_size must be at least 1".into(),
            ));
        }
        if self.consumer.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "consumer.max_in_flight must be at least 1".into(),
            ));
        }
        if self.consumer.pool_size < self.consumer.max_in_flight {
            return Err(ConfigError::Invalid(
                "consumer.pool_size must be at least consumer.max_in_flight".into(),
            ));
        }
        check_topic(&self.kafka.topic)?;
        check_brokers(&self.kafka.brokers)?;
        if self.collector.requests_per_second == 0 || self.collector.events_per_second == 0 {
            return Err(ConfigError::Invalid(
                "collector.requests_per_second and collector.events_per_second must be at least 1"
                    .into(),
            ));
        }
        if self.producer.queue_capacity == 0 {
            return Err(ConfigError::Invalid(
                "producer.queue_capacity must be at least 1".into(),
            ));
        }
        if self.app_env == Some(AppEnv::Prod) {
            self.check_prod()?;
        }
        let retention = &self.retention;
        if retention.hot_months == 0 || retention.warm_months < retention.hot_months {
            return Err(ConfigError::Invalid(
                "retention needs 1 <= hot_months <= warm_months".into(),
            ));
        }
        if retention.archive_part_rows == 0 {
            return Err(ConfigError::Invalid(
                "retention.archive_part_rows must be at least 1".into(),
            ));
        }
        if self.partitions.ahead > MAX_PARTITIONS_AHEAD {
            return Err(ConfigError::Invalid(format!(
                "partitions.ahead must be at most {MAX_PARTITIONS_AHEAD} (months)"
            )));
        }
        Ok(())
    }
}

/// A topic name Kafka accepts, with room for the dead-letter topic's
/// `.dlq`: Kafka allows ASCII letters, digits, `.`, `_` and `-`, at most
/// 249 of them (Tansu created `bad topic!` without a word).
fn check_topic(topic: &str) -> Result<(), ConfigError> {
    if topic.is_empty() {
        return Err(ConfigError::Invalid(
            "the Kafka topic name (KAFKA_TOPIC) is empty".into(),
        ));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !topic.chars().all(legal) || topic.len() > 245 || topic == "." || topic == ".." {
        return Err(ConfigError::Invalid(format!(
            "KAFKA_TOPIC {topic:?} is not a Kafka topic name: ASCII letters, digits, '.', '_' \
             and '-', at most 245 characters (the dead-letter topic adds '.dlq')"
        )));
    }
    Ok(())
}

/// Bootstrap servers as `host:port`, comma separated (librdkafka took an
/// empty list, and a port that is not a number as port 0, and then waited
/// out every timeout without naming the setting).
fn check_brokers(brokers: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| {
        ConfigError::Invalid(format!(
            "KAFKA_BROKERS {brokers:?} {why}: give host:port, comma separated"
        ))
    };
    if brokers.trim().is_empty() {
        return Err(invalid("is empty"));
    }
    for broker in brokers.split(',').map(str::trim) {
        // An optional security-protocol prefix, as librdkafka allows.
        let address = broker.split_once("://").map_or(broker, |(_, rest)| rest);
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(invalid(&format!("has {broker:?} without a port")));
        };
        if host.is_empty() || !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(invalid(&format!("has {broker:?}, not host:port")));
        }
    }
    Ok(())
}

/// What `prod` refuses of a database URL (`name` says which setting it
/// is): no password or a well-known default one, unless the login is by
/// certificate (`sslmode=verify-full`) or over a Unix socket (peer
/// authentication). A URL that does not parse is left to its first use,
/// which names what is wrong with it.
pub fn check_prod_database_url(name: &str, url: &str) -> Result<(), ConfigError> {
    let Some(login) = crate::database::login(url) else {
        return Ok(());
    };
    const DEFAULTS: [&str; 6] = ["", "postgres", "password", "admin", "secret", "changeme"];
    if DEFAULTS.contains(&login.password.as_str()) && !login.verify_full && !login.sockets_only {
        return Err(ConfigError::Invalid(format!(
            "prod refuses a {name} without a password or with a default one \
             (postgres, password, admin, secret, changeme); certificate login needs \
             sslmode=verify-full, peer login a Unix socket (host=/var/run/postgresql)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn brokers_and_topics_are_checked_before_kafka_is_asked() {
        for good in [
            "127.0.0.1:9092",
            "a:1, b:2",
            "[::1]:9092",
            "SSL://kafka-0.kafka:9093",
        ] {
            assert!(check_brokers(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "notahost:abc",
            "host",
            "host:0",
            ":9092",
            "::::",
            "a:1,",
        ] {
            let error = check_brokers(bad).expect_err(bad).to_string();
            assert!(error.contains("KAFKA_BROKERS"), "{error}");
        }
        for good in ["activities", "team.events-v2_x"] {
            assert!(check_topic(good).is_ok(), "{good}");
        }
        for bad in ["", "bad topic!", "é", ".", "..", &"t".repeat(246)] {
            let error = check_topic(bad).expect_err(bad).to_string();
            assert!(error.contains("KAFKA_TOPIC"), "{error}");
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
    }

    #[test]
    fn every_builtin_profile_parses() {
        for env in [AppEnv::Dev, AppEnv::Staging, AppEnv::Prod] {
            Settings::from_toml(env.name(), env.builtin_profile()).unwrap();
        }
    }

    #[test]
    fn flags_override_the_profile_and_the_profile_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("activity-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("staging.toml"),
            "[kafka]\ntopic = \"from-file\"\n[consumer]\nbatch_size = 7\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "x",
            "--app-env",
            "staging",
            "--config-dir",
            dir.to_str().unwrap(),
            "--kafka-topic",
            "from-flag",
        ]);
        let settings = Settings::load(&cli.global).unwrap();
        assert_eq!(settings.kafka.topic, "from-flag");
        assert_eq!(settings.consumer.batch_size, 7);
        // Neither the flags nor the file name brokers: the environment does
        // if it has KAFKA_BROKERS (the test scripts export it), else the default.
        let expected =
            std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| KafkaSettings::default().brokers);
        assert_eq!(settings.kafka.brokers, expected);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Settings::from_toml("x", "[kafka]\ntopik = \"a\"\n").is_err());
        let mut settings = Settings::from_toml("x", "[consumer]\nbatch_size = 0\n").unwrap();
        assert!(settings.check().is_err());
        settings.consumer.batch_size = 1;
        assert!(settings.check().is_ok());
        settings.partitions.ahead = MAX_PARTITIONS_AHEAD + 1;
        assert!(settings.check().is_err());
        settings.partitions.ahead = MAX_PARTITIONS_AHEAD;
        assert!(settings.check().is_ok());
    }

    #[test]
    fn prod_names_the_database_url_it_refuses() {
        let refused =
            check_prod_database_url("DATABASE_READ_URL", "postgres://app@replica/activity")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(refused.contains("DATABASE_READ_URL"), "{refused}");
        assert!(check_prod_database_url(
            "DATABASE_READ_URL",
            "postgres://app:Xk9-long-1@replica/a"
        )
        .is_ok());
    }

    #[test]
    fn prod_refuses_unsafe_database_settings() {
        let prod = |url: &str| {
            let mut settings = Settings::from_toml("prod", AppEnv::Prod.builtin_profile()).unwrap();
            settings.app_env = Some(AppEnv::Prod);
            settings.database_url = Secret::new(url);
            settings.check()
        };
        assert!(prod("postgres://postgres@127.0.0.1:5432/activity").is_err());
        assert!(prod("postgres://app@db.internal/activity").is_err());
        assert!(prod("postgres://app:postgres@db.internal/activity").is_err());
        assert!(prod("postgres://app:password@db.internal/activity").is_err());
        assert!(prod("postgres://app:Xk9-long-random@db.internal/activity").is_ok());
        assert!(prod("postgres://app@db.internal/activity?sslmode=verify-full").is_ok());
        // The key=value form is read too: its password was not seen.
        assert!(prod("host=db.internal user=app password=Xk9-long-random dbname=a").is_ok());
        assert!(prod("host=db.internal user=app password=postgres dbname=a").is_err());
        assert!(prod("host=db.internal user=app dbname=a").is_err());
        // Peer login over a Unix socket needs no password.
        assert!(prod("postgres://app@%2Fvar%2Frun%2Fpostgresql/activity").is_ok());
        assert!(prod("host=/var/run/postgresql user=app dbname=a").is_ok());
        assert!(prod("host=/var/run/postgresql,db.internal user=app dbname=a").is_err());
        // dev takes the laptop defaults.
        let mut dev = Settings::from_toml("dev", AppEnv::Dev.builtin_profile()).unwrap();
        dev.app_env = Some(AppEnv::Dev);
        assert!(dev.check().is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("postgres://u:hunter2@db/x");
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}

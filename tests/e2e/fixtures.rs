//! Fresh databases, topics and consumers for one test each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use activity_consumer::{Consumer, Store, Totals};
use activity_core::config::Settings;
use activity_core::kafka::{client_config, dlq_topic};
use activity_core::ActivityEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Uuid::new_v4().simple().to_string().get(..12).unwrap_or("x")
    )
}

/// A database of its own, migrated, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on(&server_url()).await
    }

    /// On the server at `server` (`postgres://user@host:port`).
    pub async fn on(server: &str) -> Self {
        let name = unique("activity_test");
        let db = Self {
            url: format!("{server}/{name}"),
            name,
            server: server.to_owned(),
        };
        // Dropped (and its database with it) if this fails.
        activity_consumer::store::migrate::migrate(&db.url, 1)
            .await
            .expect("migrate a fresh database");
        db
    }

    /// The name and URL of a database of its own that does not exist yet
    /// (dropped when the test ends if something created it).
    pub fn not_created() -> Self {
        let server = server_url();
        let name = unique("activity_test");
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }

    /// A database as `activity migrate` left it when the last migration
    /// was `version`, for tests of what a later migration does to existing
    /// data.
    pub async fn at_version(version: i32) -> Self {
        let server = server_url();
        let name = unique("activity_test");
        let db = Self {
            url: format!("{server}/{name}"),
            name,
            server,
        };
        activity_consumer::store::migrate::migrate_through(&db.url, version, 1)
            .await
            .expect("migrate a fresh database that far");
        db
    }

    /// A connection to the server's `postgres` database, for what a test
    /// does to its database from outside (closing it, say).
    pub async fn admin() -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&format!("{}/postgres", server_url()), tokio_postgres::NoTls)
                .await
                .expect("connect to the server");
        tokio::spawn(connection);
        client
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    /// Waits until `activity_event_ids` holds `expected` rows.
    pub async fn wait_for_events(&self, expected: i64, timeout: Duration) -> i64 {
        let client = self.client().await;
        let started = Instant::now();
        loop {
            let stored: i64 = client
                .query_one("SELECT count(*) FROM activity_event_ids", &[])
                .await
                .expect("count")
                .get(0);
            if stored >= expected || started.elapsed() > timeout {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every stored event, by id.
    pub async fn stored(&self) -> HashMap<Uuid, StoredRow> {
        let rows = self
            .client()
            .await
            .query(
                "SELECT event_id, user_id, community_id, event_type, entity_type, entity_id,
                        metadata, ip_address, user_agent, created_at FROM activities",
                &[],
            )
            .await
            .expect("read activities");
        let mut stored = HashMap::new();
        for row in rows {
            let event = StoredRow {
                event_id: row.get(0),
                user_id: row.get(1),
                community_id: row.get(2),
                event_type: row.get(3),
                entity_type: row.get(4),
                entity_id: row.get(5),
                metadata: row.get(6),
                ip_address: row.get(7),
                user_agent: row.get(8),
                created_at: row.get(9),
            };
            let previous = stored.insert(event.event_id, event);
            assert!(previous.is_none(), "event_id stored twice");
        }
        stored
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = format!("{}/postgres", self.server);
        cleanup(async move {
            let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(connection);
            let statement: String = client
                .query_one(
                    "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)",
                    &[&name],
                )
                .await
                .ok()?
                .get(0);
            client.batch_execute(&statement).await.ok()
        });
    }
}

/// One row of `activities`, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub event_id: Uuid,
    pub user_id: Option<Uuid>,
    pub community_id: Option<Uuid>,
    pub event_type: String,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl StoredRow {
    /// The row an event must become.
    pub fn expected(event: &ActivityEvent) -> Self {
        Self {
            event_id: event.event_id().as_uuid(),
            user_id: event.user_id().map(|id| id.as_uuid()),
            community_id: event.community_id().map(|id| id.as_uuid()),
            event_type: event.event_type().to_string(),
            entity_type: event.entity_type().map(str::to_owned),
            entity_id: event.entity_id().map(str::to_owned),
            metadata: event.metadata().map(|m| m.clone().into_value()),
            ip_address: event.ip_address().map(|ip| ip.to_string()),
            user_agent: event.user_agent().map(str::to_owned),
            created_at: event.created_at(),
        }
    }
}

/// A topic (and its DLQ) of its own, deleted when the test ends.
pub struct TestTopic {
    pub name: String,
    pub brokers: String,
}

impl TestTopic {
    pub async fn new(partitions: i32) -> Self {
        Self::on(&brokers(), partitions).await
    }

    /// On the broker at `brokers`.
    pub async fn on(brokers: &str, partitions: i32) -> Self {
        let name = unique("t");
        let admin: AdminClient<DefaultClientContext> =
            client_config(brokers).create().expect("admin client");
        let dlq = dlq_topic(&name);
        let topics = [
            NewTopic::new(&name, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
        ];
        for result in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .expect("the broker at KAFKA_BROKERS answers (start it with scripts/kafka-test-broker)")
        {
            result.expect("create topic");
        }
        Self {
            name,
            brokers: brokers.to_owned(),
        }
    }

    pub fn dlq(&self) -> String {
        dlq_topic(&self.name)
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let topics = [self.name.clone(), self.dlq()];
        let brokers = self.brokers.clone();
        cleanup(async move {
            let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create().ok()?;
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            admin.delete_topics(&names, &AdminOptions::new()).await.ok()
        });
    }
}

/// Runs a best-effort cleanup to completion from `Drop`, which may run inside
/// a runtime we must not block: on a thread and a runtime of its own.
fn cleanup<T: Send + 'static>(work: impl std::future::Future<Output = Option<T>> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(work)
    })
    .join();
}

/// Settings pointing at this test's database and topic, with a group of its own.
pub fn settings(db: &TestDb, topic: &TestTopic) -> Settings {
    let mut settings = Settings {
        database_url: activity_core::config::Secret::new(db.url.clone()),
        ..Settings::default()
    };
    settings.kafka.brokers = topic.brokers.clone();
    settings.kafka.topic = topic.name.clone();
    settings.consumer.group_id = unique("g");
    settings.consumer.session_timeout_ms = 6000;
    settings.consumer.batch_linger_ms = 50;
    settings
}

/// A consumer running in this process, stopped (gracefully) on `stop` or drop.
pub struct InProcessConsumer {
    pub health: activity_consumer::health::Health,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<Totals, activity_consumer::ConsumerError>>>,
}

impl InProcessConsumer {
    pub fn start(settings: &Settings) -> Self {
        let store = Store::connect(settings.database_url.expose(), 2).expect("store");
        let consumer = Consumer::build(settings, store).expect("consumer");
        let health = consumer.health();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(consumer.run_until_stopped(shutdown.clone()));
        Self {
            health,
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn stop(mut self) -> Totals {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        handle
            .await
            .expect("consumer task")
            .expect("consumer result")
    }
}

impl Drop for InProcessConsumer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `activity consume` as a child process, killed when dropped.
pub struct ConsumerProcess {
    pub child: tokio::process::Child,
    /// Where it serves /healthz and /readyz.
    pub metrics: std::net::SocketAddr,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl ConsumerProcess {
    pub fn spawn(settings: &Settings, log_name: &str) -> Self {
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{log_name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .arg("consume")
            .env("DATABASE_URL", settings.database_url.expose())
            .env("KAFKA_BROKERS", &settings.kafka.brokers)
            .env("KAFKA_TOPIC", &settings.kafka.topic)
            .env("CONSUMER_GROUP_ID", &settings.consumer.group_id)
            .env(
                "CONSUMER_BATCH_SIZE",
                settings.consumer.batch_size.to_string(),
            )
            .env(
                "CONSUMER_BATCH_LINGER_MS",
                settings.consumer.batch_linger_ms.to_string(),
            )
            .env(
                "CONSUMER_MAX_POLL_INTERVAL_MS",
                settings.consumer.max_poll_interval_ms.to_string(),
            )
            .env("METRICS_LISTEN", metrics.to_string())
            .env("APP_ENV", "dev")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn activity consume");
        Self { child, metrics }
    }

    /// `GET /readyz`: the status code and the reasons, or None while the
    /// process does not answer yet.
    pub async fn readiness(&self) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("http://{}/readyz", self.metrics))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the consumer");
    }
}

/// The value on the line of Prometheus text `metrics` that starts with
/// `series` (name and labels, e.g. `x_total{kind="a"}`), or 0 if none.
pub fn sample(metrics: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The Prometheus text a process serves at `base` + `/metrics`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A plain producer, for bytes the Tracker would never send.
pub struct RawProducer(rdkafka::producer::FutureProducer);

impl RawProducer {
    pub fn new() -> Self {
        Self::on(&brokers())
    }

    pub fn on(brokers: &str) -> Self {
        Self::compressed(brokers, "none")
    }

    /// A producer compressing its record batches with `codec` (`gzip`,
    /// `snappy`, `lz4`, `zstd`), as any Kafka client may.
    pub fn compressed(brokers: &str, codec: &str) -> Self {
        Self(
            client_config(brokers)
                .set("enable.idempotence", "true")
                .set("compression.type", codec)
                // One message per record batch: Tansu cannot serve a fetch
                // that starts inside one (README: Known broker differences).
                .set("batch.num.messages", "1")
                .create()
                .expect("producer"),
        )
    }

    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        payload: &[u8],
    ) -> (i32, i64) {
        let mut record: rdkafka::producer::FutureRecord<'_, str, [u8]> =
            rdkafka::producer::FutureRecord::to(topic).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = self
            .0
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("broker acknowledged");
        (delivery.partition, delivery.offset)
    }
}

/// Sends events through the Tracker and waits for their delivery.
pub async fn track_all(
    settings: &Settings,
    events: impl IntoIterator<Item = activity_core::NewEvent>,
) -> activity_producer::DeliveryStats {
    let tracker = activity_producer::Tracker::new(settings).expect("tracker");
    for event in events {
        loop {
            match tracker.track_event(event.clone()) {
                Err(activity_producer::TrackError::QueueFull { .. }) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => {
                    other.expect("valid event");
                    break;
                }
            }
        }
    }
    tracker.flush(Duration::from_secs(60)).await.expect("flush")
}

/// Writes a record the way an independent client with only the schema file
/// would: the `uuid` logical type dropped (same canonical form, same
/// fingerprint), so any string can be written where a UUID belongs.
pub fn foreign_record(user_id: &str, event_type: &str, metadata: Option<&str>) -> Vec<u8> {
    let plain = activity_core::avro::SCHEMAS[0]
        .1
        .replace(r#", "logicalType": "uuid""#, "");
    let schema = apache_avro::Schema::parse_str(&plain).expect("schema");
    let codec = activity_core::avro::AvroCodec::new().expect("codec");
    assert_eq!(
        activity_core::avro::fingerprint(&schema),
        codec.writer_fingerprint()
    );
    let optional = |v: Option<apache_avro::types::Value>| match v {
        Some(v) => apache_avro::types::Value::Union(1, Box::new(v)),
        None => apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
    };
    let datum = apache_avro::to_avro_datum(
        &schema,
        apache_avro::types::Value::Record(vec![
            (
                "event_id".into(),
                apache_avro::types::Value::String(Uuid::new_v4().to_string()),
            ),
            (
                "user_id".into(),
                optional(Some(apache_avro::types::Value::String(user_id.into()))),
            ),
            ("community_id".into(), optional(None)),
            (
                "event_type".into(),
                apache_avro::types::Value::String(event_type.into()),
            ),
            ("entity_type".into(), optional(None)),
            ("entity_id".into(), optional(None)),
            (
                "metadata".into(),
                optional(metadata.map(|m| apache_avro::types::Value::String(m.into()))),
            ),
            ("ip_address".into(), optional(None)),
            ("user_agent".into(), optional(None)),
            (
                "created_at".into(),
                apache_avro::types::Value::TimestampMicros(chrono::Utc::now().timestamp_micros()),
            ),
        ]),
    )
    .expect("datum");
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&codec.writer_fingerprint().to_le_bytes());
    bytes.extend_from_slice(&datum);
    bytes
}

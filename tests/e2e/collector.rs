//! The HTTP collector as a process: keys, status codes, per-event
//! rejections, retries, tenants, rate limits across replicas, spam,
//! redaction. Real collector processes, broker, Redis and PostgreSQL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use activity_core::config::Settings;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::*;

/// `activity keys create …`: the key's secret (the last line of stdout).
fn create_key(db: &TestDb, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["keys", "create", "--name", "test"])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("APP_ENV", "dev")
        .output()
        .expect("run activity keys create");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let secret = stdout.lines().last().expect("a key").trim().to_owned();
    assert!(secret.starts_with("atk_"), "{stdout}");
    secret
}

fn key_id(db: &TestDb) -> Uuid {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["keys", "list"])
        .env("DATABASE_URL", &db.url)
        .env("APP_ENV", "dev")
        .output()
        .expect("run activity keys list");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().expect("a key")).expect("json");
    assert!(
        !stdout.contains("atk_") || last["prefix"].as_str().is_some_and(|p| p.len() < 12),
        "keys list never shows a whole key"
    );
    last["id"].as_str().expect("id").parse().expect("uuid")
}

fn revoke(db: &TestDb, id: Uuid) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["keys", "revoke", &id.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("APP_ENV", "dev")
        .output()
        .expect("run activity keys revoke");
    assert!(output.status.success(), "{output:?}");
}

/// `activity collect` on a free port, killed when dropped.
struct Collector {
    child: tokio::process::Child,
    url: String,
    /// Its stderr (JSON logs), one file per process.
    log: std::path::PathBuf,
}

impl Collector {
    /// Started and ready (`/readyz` 200).
    async fn spawn(settings: &Settings, env: &[(&str, &str)]) -> Self {
        let collector = Self::start(settings, env);
        let started = Instant::now();
        loop {
            let ready = reqwest::get(format!("{}/readyz", collector.url))
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "collector ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        collector
    }

    /// A raw connection that has sent `POST /v1/events` with `key`, the
    /// body's `framing` header and `body` (as much of it as the test wants).
    async fn send_raw(&self, key: &str, framing: &str, body: &str) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\n{framing}\r\n\r\n{body}"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        stream
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    }

    /// Started; ready or not.
    fn start(settings: &Settings, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("collector-{port}.log"));
        let stderr = std::fs::File::create(&log).expect("log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"));
        command
            .arg("collect")
            .env("DATABASE_URL", settings.database_url.expose())
            .env("KAFKA_BROKERS", &settings.kafka.brokers)
            .env("KAFKA_TOPIC", &settings.kafka.topic)
            .env("COLLECT_LISTEN", format!("127.0.0.1:{port}"))
            .env("APP_ENV", "dev")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(stderr))
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn activity collect");
        let url = format!("http://127.0.0.1:{port}");
        Self { child, url, log }
    }

    async fn post(
        &self,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value, Option<String>) {
        self.post_encoded(key, None, body).await
    }

    /// `post` with a `Content-Encoding` header.
    async fn post_encoded(
        &self,
        key: Option<&str>,
        encoding: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value, Option<String>) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/events", self.url))
            .header("content-type", "application/json")
            .header("user-agent", "collector-test/1.0")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the collector answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, retry_after)
    }
}

fn login(user: Uuid, community: Uuid) -> Value {
    json!({"event_type": "user.login", "user_id": user, "community_id": community})
}

/// A batch's `sent_at` moves its events by the client's clock error; an
/// event created after its batch was sent is refused with a reason that
/// names both clocks, and the rest of the batch is stored. An empty
/// `ip_address` or `user_agent` is filled from the request like a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_at_corrects_the_clients_clock_and_refuses_impossible_events() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::spawn(&settings, &[]).await;
    // The client's clock is an hour behind.
    let client_now = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let at = |offset_minutes: i64| {
        (client_now + chrono::TimeDelta::minutes(offset_minutes)).to_rfc3339()
    };
    let body = json!({
        "sent_at": at(0),
        "events": [
            {"event_type": "user.login", "created_at": at(-5), "metadata": {"case": "moved"}},
            {"event_type": "user.login", "created_at": at(120), "metadata": {"case": "after"}},
            {"event_type": "user.login", "metadata": {"case": "received"}, "ip_address": "", "user_agent": ""},
        ],
    })
    .to_string();
    let before = chrono::Utc::now();
    let (status, answer, _) = collector.post(Some(&key), body).await;
    let after = chrono::Utc::now();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let rejected = &answer["rejected"][0];
    assert_eq!(rejected["index"], 1, "{answer}");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("sent_at") && e.contains("created_at")),
        "{answer}"
    );
    // A User-Agent in UTF-8 (not ASCII) is kept, not dropped.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", collector.url))
        .bearer_auth(&key)
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes("Mozilla/5.0 (café)".as_bytes())
                .expect("header"),
        )
        .body(r#"{"events": [{"event_type": "user.login", "metadata": {"case": "utf-8 agent"}}]}"#)
        .send()
        .await
        .expect("the collector answers");
    assert_eq!(response.status().as_u16(), 202);
    let consumer = InProcessConsumer::start(&settings);
    assert_eq!(db.wait_for_events(3, Duration::from_secs(60)).await, 3);
    consumer.stop().await;
    let client = db.client().await;
    let agent: Option<String> = client
        .query_one(
            "SELECT user_agent FROM activities WHERE metadata->>'case' = 'utf-8 agent'",
            &[],
        )
        .await
        .expect("the event")
        .get(0);
    assert_eq!(agent.as_deref(), Some("Mozilla/5.0 (café)"));
    let created = |case: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT created_at FROM activities WHERE metadata->>'case' = $1",
                    &[&case],
                )
                .await
                .expect(case)
                .get::<_, chrono::DateTime<chrono::Utc>>(0)
        }
    };
    let slack = chrono::TimeDelta::seconds(1);
    let moved = created("moved").await;
    let five = chrono::TimeDelta::minutes(5);
    assert!(
        moved >= before - five - slack && moved <= after - five + slack,
        "{moved} is 5 minutes before the receive time ({before}..{after})"
    );
    let received = created("received").await;
    assert!(
        received >= before - slack && received <= after + slack,
        "{received}"
    );
    let row = client
        .query_one(
            "SELECT ip_address, user_agent FROM activities WHERE metadata->>'case' = 'received'",
            &[],
        )
        .await
        .expect("the received event");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("collector-test/1.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_of_the_collector() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::spawn(&settings, &[]).await;
    let community = Uuid::new_v4();
    let one = json!({"events": [login(Uuid::new_v4(), community)]}).to_string();

    let (status, body, _) = collector.post(Some(&key), one.clone()).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    assert_eq!(body["rejected"], json!([]));

    for bad in [
        "nope",
        "[1]",
        r#"{"events": 1}"#,
        r#"{"events": [], "sent_at": 5}"#,
    ] {
        let (status, body, _) = collector.post(Some(&key), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let (status, _, _) = collector.post(None, one.clone()).await;
    assert_eq!(status, 401);
    let (status, _, _) = collector.post(Some("atk_not_a_key"), one.clone()).await;
    assert_eq!(status, 401);

    let too_many = json!({"events": vec![login(Uuid::new_v4(), community); 501]}).to_string();
    let (status, body, _) = collector.post(Some(&key), too_many).await;
    assert_eq!(status, 413, "{body}");
    let huge = format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(1024 * 1024));
    let (status, _, _) = collector.post(Some(&key), huge.clone()).await;
    assert_eq!(status, 413);

    // gzip bodies: accepted, the limit holding for the body decompressed.
    let gzip = |text: &str| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).expect("compress");
        encoder.finish().expect("compress")
    };
    let (status, body, _) = collector
        .post_encoded(Some(&key), Some("gzip"), gzip(&one))
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    let bomb = gzip(&huge);
    assert!(bomb.len() < 16 * 1024);
    let (status, body, _) = collector.post_encoded(Some(&key), Some("gzip"), bomb).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("too_large")),
        "{body}"
    );
    let (status, body, _) = collector
        .post_encoded(Some(&key), Some("gzip"), one.clone())
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    let (status, body, _) = collector
        .post_encoded(Some(&key), Some("br"), one.clone())
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (415, &json!("unsupported_encoding")),
        "{body}"
    );
    // Two Content-Encoding lines are one list: gzip, then br.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", collector.url))
        .bearer_auth(&key)
        .header("content-encoding", "gzip")
        .header("content-encoding", "br")
        .body(gzip(&one))
        .send()
        .await
        .expect("the collector answers");
    assert_eq!(response.status().as_u16(), 415);

    // serde_json reads an object whose key is its private token as a
    // number or raw JSON: such an event is refused, however the key is
    // written, its neighbours kept. In a value the token is text (escaped,
    // it passed here and was dead-lettered by the consumer after a 202).
    let tokens = format!(
        r#"{{"events": [{}, {{"event_type": "user.login", "metadata": {{"x": 1, "$serde_json::private::RawValue": "1"}}}},
            {{"event_type": "user.login", "metadata": {{"n": {{"\u0024serde_json::private::Number": "1"}}}}}},
            {{"event_type": "user.login", "community_id": "{community}", "metadata": {{"note": "\u0024serde_json::private::Number"}}}}]}}"#,
        login(Uuid::new_v4(), community)
    );
    let (status, body, _) = collector.post(Some(&key), tokens).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(2)),
        "{body}"
    );
    for (rejected, index) in [(0, 1), (1, 2)] {
        assert_eq!(body["rejected"][rejected]["index"], index, "{body}");
        assert!(
            body["rejected"][rejected]["error"]
                .as_str()
                .is_some_and(|e| e.contains("reserved")),
            "{body}"
        );
    }

    // Other paths and methods get the error body.
    let client = reqwest::Client::new();
    for (request, status, code) in [
        (
            client.get(format!("{}/v1/events", collector.url)),
            405,
            "method_not_allowed",
        ),
        (
            client.post(format!("{}/v2/events", collector.url)),
            404,
            "not_found",
        ),
    ] {
        let response = request.send().await.expect("the collector answers");
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.expect("error body");
        assert_eq!(body["error"]["code"], code, "{body}");
    }

    let slow = create_key(&db, &["--all-communities", "--requests-per-second", "1"]);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // the replica reloads its keys
    let (first, _, _) = collector.post(Some(&slow), one.clone()).await;
    let (second, body, retry_after) = collector.post(Some(&slow), one.clone()).await;
    assert_eq!((first, second), (202, 429), "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    revoke(&db, key_id(&db));
    let started = Instant::now();
    loop {
        let (status, _, _) = collector.post(Some(&slow), one.clone()).await;
        if status == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "revoked within seconds"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broker that never answers: nothing accepted, 503, retry safely.
    let mut unreachable = settings.clone();
    unreachable.kafka.brokers = "127.0.0.1:1".into();
    let down = Collector::spawn(&unreachable, &[("COLLECT_DELIVERY_TIMEOUT_MS", "1000")]).await;
    let (status, body, retry_after) = down.post(Some(&key), one).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(retry_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_stores_exactly_the_valid_events_once_however_often_it_is_sent() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let mine = Uuid::new_v4();
    let theirs = Uuid::new_v4();
    let key = create_key(&db, &["--community", &mine.to_string()]);
    let collector = Collector::spawn(&settings, &[]).await;

    let user = Uuid::new_v4();
    let mut events = Vec::new();
    let mut invalid = HashSet::new();
    for i in 0..20 {
        let event = match i {
            3 => json!({"event_type": "Not A Type", "community_id": mine}),
            7 => json!({"event_type": "user.login", "user_id": "not-a-uuid", "community_id": mine}),
            9 => {
                json!({"event_type": "user.login", "community_id": mine, "metadata": {"a": "x\u{0}y"}})
            }
            12 => login(user, theirs),
            15 => {
                json!({"event_type": "user.login", "community_id": mine, "metadata": {"pad": "x".repeat(33 * 1024)}})
            }
            17 => json!("a string"),
            // jsonb would store 1e400 as 401 digits: refused, its neighbours kept.
            5 => json!({"event_type": "user.login", "community_id": mine,
                        "metadata": {"n": serde_json::from_str::<Value>("1e400").expect("number")}}),
            0 => json!({
                "event_type": "user.login", "user_id": user, "community_id": mine,
                "metadata": {"password": "hunter2", "note": "Bearer abcdefghijklmnopqrstuvwxyz0123456789", "plan": "pro",
                             "order": serde_json::from_str::<Value>("123456789012345678901234567890").expect("number")}
            }),
            _ => json!({"event_type": "post.viewed", "user_id": user, "community_id": mine,
                         "entity_type": "post", "entity_id": i}),
        };
        if matches!(i, 3 | 5 | 7 | 9 | 12 | 15 | 17) {
            invalid.insert(i);
        }
        events.push(event);
    }
    let body = json!({"events": events}).to_string();
    // First to a replica whose broker does not answer: 503, and the client
    // retries the same request, below, on a replica that works (the events
    // carry no ids: both replicas derive the same ones).
    let mut unreachable = settings.clone();
    unreachable.kafka.brokers = "127.0.0.1:1".into();
    let down = Collector::spawn(&unreachable, &[("COLLECT_DELIVERY_TIMEOUT_MS", "1000")]).await;
    let (status, answer, _) = down.post(Some(&key), body.clone()).await;
    assert_eq!(status, 503, "{answer}");
    drop(down);
    let (status, answer, _) = collector.post(Some(&key), body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 13);
    let rejected: HashSet<u64> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
            r["index"].as_u64().expect("index")
        })
        .collect();
    assert_eq!(rejected, invalid.iter().map(|&i| i as u64).collect());
    let foreign = answer["rejected"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["index"] == 12))
        .map(|r| r["error"].to_string())
        .unwrap_or_default();
    assert!(foreign.contains(&theirs.to_string()), "{foreign}");
    let number = answer["rejected"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["index"] == 5))
        .map(|r| r["error"].to_string())
        .unwrap_or_default();
    assert!(
        number.contains("1e+400") && number.contains("digits"),
        "{number}"
    );

    // The same request again (a client retrying after a timeout): same ids.
    let (status, _, _) = collector.post(Some(&key), body).await;
    assert_eq!(status, 202);
    // /metrics counts both requests: accepted, and rejected by kind.
    let metrics = metrics_text(&collector.url).await;
    assert!(
        metrics.contains("collector_events_accepted_total 26"),
        "{metrics}"
    );
    let rejected = |reason: &str| {
        sample(
            &metrics,
            &format!("collector_events_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    for reason in [
        "bad_event_type",
        "bad_uuid",
        "community_not_allowed",
        "event_too_large",
    ] {
        assert_eq!(rejected(reason), 2.0, "{reason}: {metrics}");
    }
    assert_eq!(rejected("bad_metadata"), 4.0, "{metrics}");
    let all: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("collector_events_rejected_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(all, 14, "{metrics}");
    assert_eq!(
        sample(&metrics, "collector_requests_total{status=\"202\"}"),
        2.0,
        "answered requests by status: {metrics}"
    );

    let consumer = InProcessConsumer::start(&settings);
    assert_eq!(db.wait_for_events(13, Duration::from_secs(60)).await, 13);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let totals = consumer.stop().await;
    assert_eq!(totals.stored, 13);
    assert_eq!(db.count("SELECT count(*) FROM activities").await, 13);
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT metadata, ip_address, user_agent, metadata->>'order' FROM activities WHERE metadata ? 'plan'",
            &[],
        )
        .await
        .expect("the event with secrets");
    let metadata: Value = row.get(0);
    assert_eq!(metadata["password"], "[REDACTED]");
    assert_eq!(metadata["note"], "[REDACTED]");
    assert_eq!(metadata["plan"], "pro");
    // Every digit of an integer beyond 64 bits, through Kafka into jsonb.
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("123456789012345678901234567890")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("collector-test/1.0")
    );
    let everything: String = client
        .query_one(
            "SELECT string_agg(metadata::text, ' ') FROM activities",
            &[],
        )
        .await
        .expect("metadata")
        .get(0);
    assert!(!everything.contains("hunter2") && !everything.contains("abcdefghij"));
    // Nor did the secrets reach Kafka.
    let raw: Vec<Vec<u8>> =
        read_topic(&settings.kafka.brokers, &topic.name, Duration::from_secs(2));
    assert_eq!(raw.len(), 26, "two requests of 13 events each");
    assert!(raw
        .iter()
        .all(|bytes| !String::from_utf8_lossy(bytes).contains("hunter2")));
}

/// Every message of `topic`, from the beginning.
fn read_topic(brokers: &str, topic: &str, idle: Duration) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message;
    let reader: BaseConsumer = activity_core::kafka::client_config(brokers)
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    reader.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let mut quiet = Instant::now();
    let started = Instant::now();
    while (messages.is_empty() && started.elapsed() < Duration::from_secs(30))
        || quiet.elapsed() < idle
    {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(100)) {
            messages.push(message.payload().unwrap_or_default().to_vec());
            quiet = Instant::now();
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_revocations_hold_across_two_replicas_and_spam_is_rejected() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities", "--requests-per-second", "5"]);
    let spam_env = [("COLLECT_SPAM_THRESHOLD", "10")];
    let replicas = [
        Collector::spawn(&settings, &spam_env).await,
        Collector::spawn(&settings, &spam_env).await,
    ];
    let community = Uuid::new_v4();

    // 30 requests, alternating between the replicas, as fast as they answer.
    let started = Instant::now();
    let mut allowed = 0u64;
    let mut limited = [0u64; 2];
    for i in 0..30 {
        let body = json!({"events": [login(Uuid::new_v4(), community)]}).to_string();
        match replicas[i % 2].post(Some(&key), body).await.0 {
            202 => allowed += 1,
            429 => limited[i % 2] += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // One bucket for both: its burst (5) plus what refilled meanwhile.
    let bound = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as u64;
    assert!(
        allowed >= 5 && allowed <= bound,
        "allowed {allowed}, bound {bound}"
    );
    assert!(limited[0] > 0 && limited[1] > 0, "{limited:?}");

    // Spam: the same user, type and entity 15 times in one batch: the 5 past
    // the threshold are rejected with the reason, the rest of the batch passes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = Uuid::new_v4();
    let mut events = vec![
        json!({"event_type": "post.liked", "user_id": user, "community_id": community,
                                 "entity_type": "post", "entity_id": "1"});
        15
    ];
    events.push(login(Uuid::new_v4(), community));
    let (status, body, _) = replicas[0]
        .post(Some(&key), json!({"events": events}).to_string())
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 11, "{body}");
    let spam: Vec<&Value> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .collect();
    assert_eq!(spam.len(), 5);
    assert!(spam
        .iter()
        .all(|r| r["error"].as_str().is_some_and(|e| e.starts_with("spam"))));
    let metrics = metrics_text(&replicas[0].url).await;
    assert!(
        metrics.contains("collector_spam_events_dropped_total 5"),
        "{metrics}"
    );
    // Invalid events are not counted: 12 identical ones refused for their
    // metadata, then the same event valid, is accepted (it was refused as
    // spam, though nothing had been accepted).
    let user = Uuid::new_v4();
    let same = |metadata: Value| {
        json!({"event_type": "post.liked", "user_id": user, "community_id": community,
               "entity_type": "post", "entity_id": "2", "metadata": metadata})
    };
    let mut events = vec![same(json!({"note": "nul \u{0} inside"})); 12];
    events.push(same(json!({"note": "fine"})));
    let (status, body, _) = replicas[0]
        .post(Some(&key), json!({"events": events}).to_string())
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let refused = body["rejected"].as_array().expect("rejected");
    assert_eq!(refused.len(), 12, "{body}");
    assert!(
        refused
            .iter()
            .all(|r| r["error"].as_str().is_some_and(|e| !e.starts_with("spam"))),
        "{body}"
    );

    // Revoked once, refused by both replicas within seconds.
    revoke(&db, key_id(&db));
    let started = Instant::now();
    for replica in &replicas {
        loop {
            let body = json!({"events": [login(Uuid::new_v4(), community)]}).to_string();
            if replica.post(Some(&key), body).await.0 == 403 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "revoked everywhere within seconds"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A collector that can reach no broker would answer every request 503:
/// `/readyz` takes it out of rotation and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_reaches_no_broker_is_not_ready() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let mut settings = settings(&db, &topic);
    let nowhere = format!("127.0.0.1:{}", free_port());
    settings.kafka.brokers = nowhere.clone();
    let collector = Collector::spawn(&settings, &[]).await;
    let started = Instant::now();
    let body = loop {
        let response = reqwest::get(format!("{}/readyz", collector.url))
            .await
            .expect("readyz");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        if status == 503 && body["reasons"].to_string().contains("no broker reachable") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never said so: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["ready"], false);
    assert!(body["reasons"].to_string().contains(&nowhere), "{body}");
    // Before its first event, every unlabelled series is there at 0, so an
    // alert's rate() sees it from the start.
    let metrics = metrics_text(&collector.url).await;
    for series in [
        "collector_events_accepted_total",
        "collector_spam_events_dropped_total",
        "collector_requests_rate_limited_total",
        "producer_delivery_failures_total",
        "producer_restarts_total",
    ] {
        assert!(
            metrics.lines().any(|line| line == format!("{series} 0")),
            "{series} at 0: {metrics}"
        );
    }
}

/// A topic that does not exist (a typo, a skipped `activity migrate`)
/// would make every request wait out the delivery timeout: `/readyz` says
/// so, a request's 503 names it, and both recover once the topic exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_topic_does_not_exist_is_not_ready_until_it_does() {
    let db = TestDb::new().await;
    let mut settings = settings(&db, &TestTopic::new(1).await);
    let missing = unique("t-missing");
    settings.kafka.topic = missing.clone();
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::start(&settings, &[("COLLECT_DELIVERY_TIMEOUT_MS", "2000")]);
    let readyz = || async {
        let response = reqwest::get(format!("{}/readyz", collector.url))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json::<Value>().await.ok()?))
    };
    let started = Instant::now();
    loop {
        if let Some((status, body)) = readyz().await {
            if status == 503 && body["reasons"].to_string().contains("does not exist") {
                assert!(body["reasons"].to_string().contains(&missing), "{body}");
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never said so");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body, _) = collector
        .post(
            Some(&key),
            json!({"events": [login(Uuid::new_v4(), Uuid::new_v4())]}).to_string(),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .to_string()
            .contains("does not exist"),
        "{body}"
    );

    activity_core::kafka::ensure_topics(&settings.kafka)
        .await
        .expect("create the topic");
    let _cleanup = TestTopic {
        name: missing,
        brokers: settings.kafka.brokers.clone(),
    };
    let started = Instant::now();
    loop {
        if readyz().await.is_some_and(|(status, _)| status == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Events that timed out leave the idempotent producer's sequence
    // behind: the broker may fence it, a fatal error for librdkafka. The
    // tracker then replaces it, so at most the first request fails.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (status, body, _) = collector
            .post(
                Some(&key),
                json!({"events": [login(Uuid::new_v4(), Uuid::new_v4())]}).to_string(),
            )
            .await;
        answers.push((status, body));
        if status == 202 {
            break;
        }
    }
    assert!(
        answers.len() <= 2 && answers.last().is_some_and(|(status, _)| *status == 202),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_collector_limits_locally_and_says_so() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities", "--requests-per-second", "2"]);
    // Nothing listens on port 1.
    let collector = Collector::spawn(&settings, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let ready: Value = reqwest::get(format!("{}/readyz", collector.url))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready["degraded"].to_string().contains("Redis"), "{ready}");
    let one = json!({"events": [login(Uuid::new_v4(), Uuid::new_v4())]}).to_string();
    let statuses: Vec<u16> =
        futures::future::join_all((0..4).map(|_| collector.post(Some(&key), one.clone())))
            .await
            .into_iter()
            .map(|(status, _, _)| status)
            .collect();
    // Still accepting, still limited: the burst of 2, then 429.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 202).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        2,
        "{statuses:?}"
    );
    let metrics = metrics_text(&collector.url).await;
    assert!(
        metrics.contains("collector_rate_limits_local 1"),
        "{metrics}"
    );
    // Unreachable is not invalid: a URL that is not Redis's (a typo) stops
    // the collector at start; it had run on local limits for good.
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(["collect", "--listen", "127.0.0.1:0"])
            .env("APP_ENV", "dev")
            .env("DATABASE_URL", &db.url)
            .env("KAFKA_BROKERS", brokers())
            .env("KAFKA_TOPIC", &topic.name)
            .env("REDIS_URL", "http://127.0.0.1:6379")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the collector stops at once")
    .expect("activity runs");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid REDIS_URL"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_requests_in_flight_then_stops() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let key = create_key(
        &db,
        &[
            "--all-communities",
            "--events-per-second",
            "1000000",
            "--requests-per-second",
            "10000",
        ],
    );
    let mut collector = Collector::spawn(&settings, &[]).await;
    let community = Uuid::new_v4();
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let ids: Vec<Uuid> = (0..500).map(|_| Uuid::now_v7()).collect();
            let events: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let mut event = login(Uuid::new_v4(), community);
                    event["event_id"] = json!(id);
                    event
                })
                .collect();
            let body = json!({ "events": events }).to_string();
            let (url, key) = (collector.url.clone(), key.clone());
            let answer = tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/events"))
                    .bearer_auth(key)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
            (ids, answer)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    collector.terminate();
    let mut sent = HashSet::new();
    let mut answered = HashSet::new();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for (ids, answer) in requests {
        sent.extend(ids.iter().copied());
        // A request the collector never read (connection refused, or closed
        // as it drained) was not answered: the client retries it.
        let Ok(status) = answer.await.expect("task") else {
            continue;
        };
        // 503 if the broker did not acknowledge in time (a busy broker):
        // the client retries that one too.
        assert!(status == 202 || status == 503, "answered {status}");
        answered.extend(ids.iter().copied());
        if status == 202 {
            accepted.extend(ids);
        } else {
            refused += 1;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), collector.child.wait())
        .await
        .expect("stopped within 30 s")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&collector.log).expect("the collector's log");
    let codec = activity_core::avro::AvroCodec::new().expect("codec");
    let raw = read_topic(&settings.kafka.brokers, &topic.name, Duration::from_secs(2));
    let stored: Vec<Uuid> = raw
        .iter()
        .map(|bytes| {
            codec
                .decode(bytes)
                .expect("the collector's own encoding")
                .event_id
                .expect("an event id")
        })
        .collect();
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    assert!(stored_set.is_subset(&sent), "only events sent are in Kafka");
    assert!(
        accepted.is_subset(&stored_set),
        "every accepted event is in Kafka ({} of {})",
        accepted.intersection(&stored_set).count(),
        accepted.len()
    );
    if log.contains("every request in flight answered") {
        // Drained in time: every request read was answered, so nothing of
        // an unanswered one reached Kafka.
        assert!(!answered.is_empty(), "requests were in flight: {log}");
        assert!(
            stored_set.is_subset(&answered),
            "only answered events are in Kafka"
        );
        if refused == 0 {
            assert_eq!(stored.len(), accepted.len(), "stored once, all answered");
        }
    } else {
        // The drain time (10 s) can run out when the broker is slower than
        // that to acknowledge (a starved machine): the connections left are
        // closed unanswered and their clients retry; what their handlers had
        // already handed to Kafka stays there (event ids dedupe the
        // retries), and nothing more is produced for them.
        assert!(
            log.contains("requests still in flight when the drain time ran out"),
            "the collector says how its drain ended: {log}"
        );
    }
}

/// A client trickling its body cannot hold a stopping collector past the
/// drain time (`activity_core::http::DRAIN_TIMEOUT`, 10 s): without it the
/// 30 s body timeout outlasted Kubernetes' grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_hold_a_stopping_collector() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let mut collector = Collector::spawn(&settings, &[]).await;
    let stream = collector.send_raw(&key, "Content-Length: 100", "{").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.terminate();
    let status = tokio::time::timeout(Duration::from_secs(25), collector.child.wait())
        .await
        .expect("stopped within 25 s (10 s of drain, then the producer's flush)")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_counts_a_real_run_on_its_metrics() {
    // The collector, a consumer and the API as processes; 500 events in
    // through HTTP; each /metrics says what happened.
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::spawn(&settings, &[]).await;
    let consumer = ConsumerProcess::spawn(&settings, "metrics-consumer");
    let api_port = free_port();
    let _api = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["api", "--listen", &format!("127.0.0.1:{api_port}")])
        .env("DATABASE_URL", &db.url)
        .env("APP_ENV", "dev")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn activity api");

    let communities: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for request in 0..5 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                login(
                    Uuid::new_v4(),
                    communities[(request + i) % communities.len()],
                )
            })
            .collect();
        let (status, body, _) = collector
            .post(Some(&key), json!({"events": events}).to_string())
            .await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(db.wait_for_events(500, Duration::from_secs(60)).await, 500);

    let collector_metrics = metrics_text(&collector.url).await;
    assert_eq!(
        sample(&collector_metrics, "collector_events_accepted_total"),
        500.0,
        "{collector_metrics}"
    );
    assert_eq!(
        sample(&collector_metrics, "producer_events_delivered_total"),
        500.0,
        "{collector_metrics}"
    );

    // The consumer: stored equals what was sent; lag on every partition
    // goes to 0 (librdkafka reports it every 10 s).
    let consumer_url = format!("http://{}", consumer.metrics);
    let deadline = Instant::now() + Duration::from_secs(45);
    let consumer_metrics = loop {
        let text = metrics_text(&consumer_url).await;
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("consumer_lag_messages{"))
            .collect();
        let drained = lags.len() == 3 && lags.iter().all(|l| l.ends_with(" 0"));
        if (drained && sample(&text, "consumer_events_stored_total") == 500.0)
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        sample(&consumer_metrics, "consumer_events_stored_total"),
        500.0,
        "{consumer_metrics}"
    );
    let lags: Vec<&str> = consumer_metrics
        .lines()
        .filter(|l| l.starts_with("consumer_lag_messages{"))
        .collect();
    assert_eq!(lags.len(), 3, "one lag per partition: {consumer_metrics}");
    // Batch sizes: a histogram whose observations sum to the events received.
    assert_eq!(
        sample(&consumer_metrics, "consumer_batch_events_sum"),
        500.0,
        "{consumer_metrics}"
    );
    assert!(lags.iter().all(|l| l.ends_with(" 0")), "{lags:?}");
    // Error counters are there from the start, at 0, for rate() and alerts.
    for kind in ["unavailable", "schema", "config", "refused"] {
        let series = format!("consumer_store_errors_total{{kind=\"{kind}\"}} 0");
        assert!(
            consumer_metrics.lines().any(|line| line == series),
            "{series} missing: {consumer_metrics}"
        );
    }

    // The API: a real request, then its counters.
    let token = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["token", "--role", "admin"])
        .env("APP_ENV", "dev")
        .output()
        .expect("activity token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let api = format!("http://127.0.0.1:{api_port}");
    let mut overview = Value::Null;
    for _ in 0..50 {
        if let Ok(response) = reqwest::Client::new()
            .get(format!("{api}/api/v1/analytics/overview"))
            .bearer_auth(&token)
            .send()
            .await
        {
            assert_eq!(response.status().as_u16(), 200);
            overview = response.json().await.expect("json");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(overview["total_events"], 500, "{overview}");
    let api_metrics = metrics_text(&api).await;
    assert_eq!(
        sample(
            &api_metrics,
            "api_requests_total{route=\"/api/v1/analytics/overview\",status=\"200\"}"
        ),
        1.0,
        "{api_metrics}"
    );
    assert!(
        sample(
            &api_metrics,
            "db_query_duration_seconds_count{query=\"totals\"}"
        ) >= 1.0,
        "{api_metrics}"
    );
}

/// A body trickled in (with a valid key: write keys are public, in
/// browsers) gets 408 after 30 s instead of holding its connection open for
/// as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_gets_408() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::spawn(&settings, &[]).await;
    let mut stream = collector.send_raw(&key, "Content-Length: 100", "{").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = [0u8; 1024];
        // A byte every 5 s: never idle long enough for any idle timeout.
        loop {
            tokio::select! {
                n = stream.read(&mut buffer) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => { answer.extend_from_slice(&buffer[..n]); break; }
                },
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if stream.write_all(b" ").await.is_err() { break; }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered within 60 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
}

/// A body that is not well-formed HTTP (bad chunked framing, a connection
/// closed before the declared length) is the client's mistake, 400, not
/// "too large"; a body declared over the limit is 413 before any of it is
/// read; a whole request followed by a half-close is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_oversized_declarations_413_at_once() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let key = create_key(&db, &["--all-communities"]);
    let collector = Collector::spawn(&settings, &[]).await;
    let whole = r#"{"events": [{"event_type": "user.login"}]}"#;
    let whole_length = format!("Content-Length: {}", whole.len());
    let cases = [
        (
            "a chunk size that is not hex",
            "Transfer-Encoding: chunked",
            "zz\r\n{}\r\n0\r\n\r\n",
            true,
            400,
        ),
        (
            "chunk data longer than its size",
            "Transfer-Encoding: chunked",
            "5\r\n{\"events\": []}\r\n0\r\n\r\n",
            true,
            400,
        ),
        (
            "fewer bytes than Content-Length, then the end of the stream",
            "Content-Length: 100",
            "{\"events\"",
            true,
            400,
        ),
        (
            "a whole valid request, then the client shuts down its side",
            whole_length.as_str(),
            whole,
            true,
            202,
        ),
        (
            "a declared 10 GB body, none of it sent",
            "Content-Length: 10000000000",
            "",
            false,
            413,
        ),
    ];
    for (case, framing, body, close_after, expected) in cases {
        let mut stream = collector.send_raw(&key, framing, body).await;
        if close_after {
            stream.shutdown().await.expect("half-close");
        }
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer within 5 s"))
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{case}: {answer}"
        );
    }
}

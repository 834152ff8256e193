//! Tracker → broker → consumer → PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use activity_core::avro::AvroCodec;
use activity_core::kafka::partition_key;
use activity_core::NewEvent;
use activity_producer::synthetic::{Generator, Shape};
use activity_producer::{TrackError, Tracker};
use chrono::{TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_are_stored_field_by_field() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let settings = settings(&db, &topic);
    let now = Utc::now();

    let mut generator = Generator::new(Shape {
        seed: 1,
        days: 60,
        ..Shape::default()
    });
    let mut events: Vec<NewEvent> = (0..9_990).map(|_| generator.next_event()).collect();
    // The corners of the event model, beside the synthetic mix.
    for i in 0..10 {
        let mut event = NewEvent::new("system.maintenance.finished")
            .event_id(Uuid::now_v7())
            .ip_address("2001:db8::42")
            .metadata(json!({"ünïcödé": "日本語 ✓", "nested": {"list": [1, 2.5, null, true]}, "i": i, "password": "hunter2"}))
            .created_at(now - chrono::TimeDelta::microseconds(123_457 * i));
        if i % 2 == 0 {
            event.user_agent = Some("x".repeat(600));
        }
        events.push(event);
    }
    let expected: Vec<_> = events
        .iter()
        .cloned()
        .map(|e| e.validate(now).expect("valid"))
        .collect();

    let consumer = InProcessConsumer::start(&settings);
    let stats = track_all(&settings, events).await;
    assert_eq!(stats.delivered, 10_000);
    assert_eq!(stats.failed, 0);
    assert_eq!(
        db.wait_for_events(10_000, Duration::from_secs(120)).await,
        10_000
    );
    let totals = consumer.stop().await;
    assert_eq!(totals.stored, 10_000);

    let stored = db.stored().await;
    assert_eq!(stored.len(), 10_000);
    for event in &expected {
        let row = stored
            .get(&event.event_id().as_uuid())
            .expect("every event stored");
        assert_eq!(row, &StoredRow::expected(event));
    }
    let system = stored
        .values()
        .find(|r| r.event_type == "system.maintenance.finished")
        .expect("system event");
    assert_eq!(
        system.metadata.as_ref().expect("metadata")["password"],
        "[REDACTED]"
    );
    assert_eq!(system.user_id, None);
}

/// Every compression codec a Kafka producer may use is read: the consumer's
/// librdkafka was built without zstd, and a zstd batch stalled its
/// partition forever (and every batch behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_with_every_kafka_codec_are_stored() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let codec = AvroCodec::new().expect("codec");
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let mut ids = HashSet::new();
    for name in codecs {
        let producer = RawProducer::compressed(&topic.brokers, name);
        for _ in 0..5 {
            let event = NewEvent::new("github.push")
                .event_id(Uuid::now_v7())
                .community(Uuid::new_v4())
                .metadata(json!({"codec": name, "padding": "x".repeat(500)}))
                .validate(Utc::now())
                .expect("valid");
            ids.insert(event.event_id());
            let bytes = codec.encode(&event).expect("encode");
            producer.send(&topic.name, Some(0), None, &bytes).await;
        }
    }
    let consumer = InProcessConsumer::start(&settings);
    let stored = db.wait_for_events(20, Duration::from_secs(60)).await;
    consumer.stop().await;
    assert_eq!(stored, 20, "5 events of each of {codecs:?}");
    let per_codec: Vec<(String, i64)> = db
        .client()
        .await
        .query(
            "SELECT metadata->>'codec', count(*) FROM activities GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("per codec")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut expected: Vec<(String, i64)> = codecs.iter().map(|c| (c.to_string(), 5)).collect();
    expected.sort();
    assert_eq!(per_codec, expected);
    assert_eq!(ids.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_three_times_through_different_partitions_is_stored_once() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let codec = AvroCodec::new().expect("codec");
    let producer = RawProducer::new();

    let community = Uuid::new_v4();
    let event = NewEvent::new("github.push")
        .event_id(Uuid::now_v7())
        .community(community)
        .user(Uuid::new_v4())
        .created_at(Utc::now())
        .validate(Utc::now())
        .expect("valid");
    // The same event_id, re-sent by a client whose retry stamped another
    // time: a different month, so a different partition of activities.
    let retried = NewEvent {
        created_at: Some(Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()),
        ..event.clone().into_new_event()
    }
    .validate(Utc::now())
    .expect("valid");
    let key = partition_key(event.community_id());
    let mut offsets = HashSet::new();
    for (partition, copy) in [(0, &event), (1, &event), (2, &retried)] {
        let bytes = codec.encode(copy).expect("encode");
        offsets.insert(
            producer
                .send(&topic.name, Some(partition), key.as_deref(), &bytes)
                .await,
        );
    }
    assert_eq!(offsets.len(), 3, "three different partitions/offsets");

    let consumer = InProcessConsumer::start(&settings);
    // Stored once, so the count stops at 1; wait for the consumer to have read all three.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut totals = None;
    while Instant::now() < deadline {
        if db.count("SELECT count(*) FROM activity_event_ids").await == 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            totals = Some(consumer.stop().await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let totals = totals.expect("stored within a minute");
    assert_eq!(totals.stored + totals.duplicates, 3, "{totals:?}");
    assert_eq!(db.count("SELECT count(*) FROM activities").await, 1);
    let stored = db.stored().await;
    assert_eq!(stored.len(), 1);
    assert!(stored.contains_key(&event.event_id().as_uuid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_load_test_one_hundred_thousand_events() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let settings = settings(&db, &topic);
    let mut generator = Generator::new(Shape {
        seed: 100,
        duplicates: 0.0,
        ..Shape::default()
    });
    let events: Vec<NewEvent> = (0..100_000).map(|_| generator.next_event()).collect();
    let ids: HashSet<Uuid> = events.iter().filter_map(|e| e.event_id).collect();

    let started = Instant::now();
    let consumer = InProcessConsumer::start(&settings);
    let stats = track_all(&settings, events).await;
    let produced = started.elapsed();
    assert_eq!(stats.delivered, 100_000);
    let stored = db
        .wait_for_events(ids.len() as i64, Duration::from_secs(600))
        .await;
    let took = started.elapsed();
    consumer.stop().await;
    eprintln!(
        "load test: 100000 events end to end in {:.1} s ({:.0} events/s; producing took {:.1} s)",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64(),
        produced.as_secs_f64()
    );
    assert_eq!(stored, ids.len() as i64);
    let stored_ids: HashSet<Uuid> = db.stored().await.into_keys().collect();
    assert_eq!(stored_ids, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_commits_and_leaves_the_group() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let settings = settings(&db, &topic);
    let codec = AvroCodec::new().expect("codec");
    let producer = RawProducer::new();
    let mut generator = Generator::new(Shape {
        seed: 5,
        ..Shape::default()
    });
    // Next offset to consume per partition once everything is read, from the
    // broker's own delivery reports.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for chunk in (0..3_000)
        .map(|_| generator.next_event().validate(Utc::now()).expect("valid"))
        .collect::<Vec<_>>()
        .chunks(500)
    {
        let sends = chunk.iter().map(|event| {
            let bytes = codec.encode(event).expect("encode");
            let key = partition_key(event.community_id());
            let topic = topic.name.clone();
            let producer = &producer;
            async move { producer.send(&topic, None, key.as_deref(), &bytes).await }
        });
        for (partition, offset) in futures::future::join_all(sends).await {
            let end = ends.entry(partition).or_default();
            *end = (*end).max(offset + 1);
        }
    }

    let mut process = ConsumerProcess::spawn(&settings, "sigterm");
    assert_eq!(
        db.wait_for_events(3_000, Duration::from_secs(60)).await,
        3_000
    );
    process.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .expect("stopped within the grace period")
        .expect("exit status");
    assert!(status.success(), "{status:?}");

    // Everything stored is committed: the group's offset is at the end of
    // every partition.
    let probe: BaseConsumer = activity_core::kafka::client_config(&settings.kafka.brokers)
        .set("group.id", &settings.consumer.group_id)
        .create()
        .expect("probe");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..3 {
        list.add_partition(&topic.name, partition);
    }
    let committed = probe
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    for element in committed.elements() {
        let end = ends.get(&element.partition()).copied().unwrap_or(0);
        let expected = if end == 0 {
            rdkafka::Offset::Invalid
        } else {
            rdkafka::Offset::Offset(end)
        };
        assert_eq!(
            element.offset(),
            expected,
            "partition {}",
            element.partition()
        );
    }
}

#[tokio::test]
async fn a_full_producer_queue_is_an_error_the_caller_sees() {
    let mut settings = activity_core::config::Settings::default();
    settings.kafka.brokers = "127.0.0.1:1".into(); // nothing listens: nothing leaves the queue
    settings.producer.queue_capacity = 10;
    let tracker = Tracker::new(&settings).expect("tracker");
    for _ in 0..10 {
        tracker
            .track_event(NewEvent::new("user.login"))
            .expect("room in the queue");
    }
    let full = tracker.track_event(NewEvent::new("user.login"));
    assert!(
        matches!(full, Err(TrackError::QueueFull { capacity: 10 })),
        "{full:?}"
    );
    assert_eq!(tracker.stats().enqueued, 10);
    let invalid = tracker.track_event(NewEvent::new("Not A Type"));
    assert!(matches!(invalid, Err(TrackError::Invalid(_))));
}

/// Holds the rollups locked for `hold` while a consumer starts on a 3,000-event
/// backlog, then releases them and expects every event stored. With
/// `max_poll_interval` short enough, the consumer pauses its partitions
/// meanwhile (and says so on /readyz).
async fn stall_the_database_then_drain(hold: Duration, max_poll_interval: Option<u64>) {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let mut settings = settings(&db, &topic);
    settings.consumer.batch_size = 200;
    // After a pause librdkafka fetches again from inside a record batch,
    // which Tansu cannot serve (README: Known broker differences).
    settings.producer.batch_messages = 1;
    if let Some(interval) = max_poll_interval {
        settings.consumer.max_poll_interval_ms = interval;
    }
    let mut generator = Generator::new(Shape {
        seed: 9,
        ..Shape::default()
    });
    let events: Vec<NewEvent> = (0..3_000).map(|_| generator.next_event()).collect();
    let stats = track_all(&settings, events).await;
    assert_eq!(stats.delivered, 3_000);

    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE rollup_events IN SHARE MODE")
        .await
        .expect("lock the rollups");
    let consumer = InProcessConsumer::start(&settings);
    tokio::time::sleep(hold).await;
    assert_eq!(
        db.count("SELECT count(*) FROM activities").await,
        0,
        "nothing is stored while the rollups are locked"
    );
    let readiness = consumer.health.readiness();
    let paused = readiness.reasons.iter().any(|r| r.contains("paused"));
    assert_eq!(paused, max_poll_interval.is_some(), "{readiness:?}");
    locker.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(
        db.wait_for_events(3_000, Duration::from_secs(60)).await,
        3_000
    );
    let totals = consumer.stop().await;
    assert_eq!(totals.stored, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_delays_events_and_loses_none() {
    // 10 s of waiting on a lock: batches wait, the consumer stops taking
    // more (no pause: that comes after 30 s), and once the lock is gone
    // every event is stored.
    stall_the_database_then_drain(Duration::from_secs(10), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_max_poll_interval_pauses_and_loses_nothing() {
    // max.poll.interval.ms 6 s: after 2 s of waiting the consumer pauses its
    // partitions and keeps polling, stays in its group through 12 s of
    // outage, and resumes when the lock is gone.
    stall_the_database_then_drain(Duration::from_secs(12), Some(6_000)).await;
}

/// Polls the consumer's `/readyz` until `wanted(status, body)` holds.
async fn wait_for_readiness(
    process: &ConsumerProcess,
    wanted: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let started = std::time::Instant::now();
    loop {
        if let Some((status, body)) = process.readiness().await {
            if wanted(status, &body) {
                return (status, body);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "readiness never reached the expected state; last: {status} {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reasons_mention(body: &serde_json::Value, text: &str) -> bool {
    body["reasons"].as_array().is_some_and(|reasons| {
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains(text)))
    })
}

/// A consumer that can reach no broker (a wrong `KAFKA_BROKERS`, the
/// cluster down) says so on `/readyz` rather than answering ready while it
/// reads nothing; the same consumer pointed at the broker is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_reaches_no_broker_is_not_ready() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let mut settings = settings(&db, &topic);
    let reachable = ConsumerProcess::spawn(&settings, "readyz-broker");
    wait_for_readiness(&reachable, |status, _| status == 200).await;
    settings.kafka.brokers = format!("127.0.0.1:{}", free_port());
    let lost = ConsumerProcess::spawn(&settings, "readyz-no-broker");
    let (_, body) = wait_for_readiness(&lost, |status, body| {
        status == 503 && reasons_mention(body, "no broker reachable")
    })
    .await;
    assert!(
        reasons_mention(&body, &settings.kafka.brokers),
        "names the brokers it tried: {body}"
    );
    // Still ready: it has not been told anything else.
    let (status, body) = reachable.readiness().await.expect("an answer");
    assert_eq!(status, 200, "{body}");
}

/// A consumer whose events topic does not exist (a typo in `KAFKA_TOPIC`,
/// `migrate` not run) is not ready and says which topic: it answered ready
/// before while it could read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_topic_does_not_exist_is_not_ready() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let mut settings = settings(&db, &topic);
    settings.kafka.topic = unique("missing");
    let process = ConsumerProcess::spawn(&settings, "readyz-no-topic");
    let (_, body) = wait_for_readiness(&process, |status, body| {
        status == 503 && reasons_mention(body, "does not exist")
    })
    .await;
    assert!(
        reasons_mention(&body, &settings.kafka.topic),
        "names the topic: {body}"
    );
}

/// A consumer whose database does not exist is not ready from the start,
/// though no batch has come to fail: it answered ready (and took its
/// partitions) until one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_database_does_not_exist_is_not_ready() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let mut settings = settings(&db, &topic);
    settings.database_url = activity_core::config::Secret::new(format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        unique("absent")
    ));
    let process = ConsumerProcess::spawn(&settings, "readyz-no-database");
    let (_, body) = wait_for_readiness(&process, |status, body| {
        status == 503 && reasons_mention(body, "does not exist")
    })
    .await;
    assert!(reasons_mention(&body, "database"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_schema_errors_show_on_readyz_and_lose_nothing() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let mut settings = settings(&db, &topic);
    settings.consumer.batch_size = 500;
    let mut generator = Generator::new(Shape {
        seed: 21,
        ..Shape::default()
    });
    let mut batch =
        |n: usize| -> Vec<NewEvent> { (0..n).map(|_| generator.next_event()).collect() };
    let admin = TestDb::admin().await;

    assert_eq!(track_all(&settings, batch(1_000)).await.delivered, 1_000);
    let process = ConsumerProcess::spawn(&settings, "readyz");
    assert_eq!(
        db.wait_for_events(1_000, Duration::from_secs(60)).await,
        1_000
    );
    wait_for_readiness(&process, |status, _| status == 200).await;

    // The database refuses every connection: an outage as the consumer sees it.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            db.name
        ))
        .await
        .expect("close the database");
    assert_eq!(track_all(&settings, batch(1_000)).await.delivered, 1_000);
    let (_, body) = wait_for_readiness(&process, |status, body| {
        status == 503 && reasons_mention(body, "database")
    })
    .await;
    assert_eq!(body["ready"], false);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .expect("reopen the database");
    assert_eq!(
        db.wait_for_events(2_000, Duration::from_secs(60)).await,
        2_000
    );
    wait_for_readiness(&process, |status, _| status == 200).await;

    // An operator's mistake (a table gone): retried and reported, never
    // dead-lettered.
    let client = db.client().await;
    client
        .batch_execute("ALTER TABLE rollup_events RENAME TO rollup_events_away")
        .await
        .expect("hide a table");
    assert_eq!(track_all(&settings, batch(500)).await.delivered, 500);
    wait_for_readiness(&process, |status, body| {
        status == 503 && reasons_mention(body, "schema or permission")
    })
    .await;
    client
        .batch_execute("ALTER TABLE rollup_events_away RENAME TO rollup_events")
        .await
        .expect("restore the table");
    assert_eq!(
        db.wait_for_events(2_500, Duration::from_secs(60)).await,
        2_500
    );
    wait_for_readiness(&process, |status, _| status == 200).await;
    let metrics = metrics_text(&format!("http://{}", process.metrics)).await;
    assert!(
        metrics.contains("consumer_events_stored_total 2500"),
        "{metrics}"
    );
    assert!(metrics.contains("consumer_ready 1"), "{metrics}");
    // The outage and the missing table were counted by kind.
    assert!(
        metrics.contains("consumer_store_errors_total{kind=\"unavailable\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consumer_store_errors_total{kind=\"schema\"}"),
        "{metrics}"
    );
    // Lag per partition (librdkafka's statistics, every 10 s) goes to 0 once
    // everything is stored and committed.
    let mut lags = Vec::new();
    for _ in 0..60 {
        let metrics = metrics_text(&format!("http://{}", process.metrics)).await;
        lags = metrics
            .lines()
            .filter(|line| line.starts_with("consumer_lag_messages{"))
            .map(str::to_owned)
            .collect();
        if !lags.is_empty() && lags.iter().all(|line| line.ends_with(" 0")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !lags.is_empty() && lags.iter().all(|line| line.ends_with(" 0")),
        "lag per partition after everything was stored: {lags:?}"
    );
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(db.count("SELECT count(*) FROM activities").await, 2_500);
    let letters = activity_consumer::dlq::read_letters(
        &brokers(),
        &topic.dlq(),
        Duration::from_secs(2),
        usize::MAX,
    )
    .await
    .expect("read the dead-letter topic");
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_produce_which_flushes_what_it_accepted() {
    let topic = TestTopic::new(3).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["produce", "--synthetic", "50000000"])
        .env("KAFKA_BROKERS", &topic.brokers)
        .env("KAFKA_TOPIC", &topic.name)
        .env("APP_ENV", "dev")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn activity produce");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stopped within 30 s")
        .expect("output");
    assert!(output.status.success(), "{:?}", output.status);
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["interrupted"], true, "{summary}");
    let sent = summary["sent"].as_u64().expect("sent");
    assert!(sent > 0 && sent < 50_000_000, "{summary}");
    assert_eq!(summary["delivered"].as_u64(), Some(sent), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

/// `produce --file` sends every valid line of a file that also holds lines
/// that are not JSON, not UTF-8, or not a valid event, names each bad line on
/// stderr, and exits non-zero so a script notices. A line that was not UTF-8
/// ended the whole run before, losing every line after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_file_sends_every_valid_line_and_fails_on_bad_ones() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(2).await;
    let settings = settings(&db, &topic);
    let community = Uuid::new_v4();
    let valid: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let line = |id: &Uuid| {
        json!({"event_id": id, "event_type": "user.login", "user_id": Uuid::new_v4(),
               "community_id": community})
        .to_string()
        .into_bytes()
    };
    let mut file = Vec::new();
    for (i, id) in valid.iter().enumerate() {
        file.extend(line(id));
        file.push(b'\n');
        match i {
            3 => file.extend(b"{not json\n"),
            7 => file.extend(b"{\"event_type\": \"user.login\", \"note\": \"\xff\xfe\"}\n"),
            11 => file.extend(b"{\"event_type\": \"Not A Type\"}\n"),
            13 => file.extend(
                b"{\"event_type\": \"user.login\", \"metadata\": {\"n\": {\"\\u0024serde_json::private::Number\": \"1\"}}}\n",
            ),
            15 => file.extend(b"   \n"),
            _ => {}
        }
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
        .args(["produce", "--file", "-"])
        .env("KAFKA_BROKERS", &topic.brokers)
        .env("KAFKA_TOPIC", &topic.name)
        .env("APP_ENV", "dev")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn activity produce");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        stdin.write_all(&file).await.expect("write the file");
        // Dropped here: the end of the input.
    });
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("finished within 60 s")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["sent"], 20, "{summary}");
    assert_eq!(summary["delivered"], 20, "{summary}");
    assert_eq!(summary["invalid"], 4, "{summary}");
    // Lines are numbered as in the file: valid lines 1-4, the bad JSON is 5.
    for bad in ["line 5:", "line 10: not UTF-8", "line 15:", "line 18:"] {
        assert!(stderr.contains(bad), "{bad} named in: {stderr}");
    }
    assert!(stderr.contains("reserved"), "{stderr}");
    assert!(stderr.contains("4 lines were invalid"), "{stderr}");

    let consumer = InProcessConsumer::start(&settings);
    assert_eq!(db.wait_for_events(20, Duration::from_secs(60)).await, 20);
    consumer.stop().await;
    let stored: HashSet<Uuid> = db.stored().await.into_keys().collect();
    assert_eq!(stored, valid.into_iter().collect::<HashSet<_>>());
}

/// The quick start's `activity dev --sample N --exit-after-sample`, twice
/// on one database: the second run's sample (the same seed, so the same
/// event ids) is all duplicates, and it still finishes and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_a_sample_finishes_again_on_a_database_that_has_it() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(3).await;
    let group = unique("dev");
    for run in 1..=2 {
        let (api, collect) = (free_port(), free_port());
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(["dev", "--sample", "300", "--exit-after-sample"])
            .args(["--group-id", &group])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--collect-listen", &format!("127.0.0.1:{collect}")])
            .env("DATABASE_URL", &db.url)
            .env("KAFKA_BROKERS", &topic.brokers)
            .env("KAFKA_TOPIC", &topic.name)
            .env("APP_ENV", "dev")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(180), output)
            .await
            .unwrap_or_else(|_| panic!("run {run} did not finish within 180 s"))
            .expect("run activity dev");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("GET http://"), "run {run}: {stdout}");
        assert!(stdout.contains("total_events"), "run {run}: {stdout}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM activity_event_ids").await,
        300,
        "the second run stored nothing twice"
    );
}

/// Offsets a partition's stream skips past what is stored (what Tansu does
/// after a fetch from inside a record batch; here the group's committed
/// offset is simply put ahead of the stored progress) are reported: an
/// error naming them and `consumer_offsets_skipped_total`, not passed over
/// in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_skipped_past_the_stored_progress_are_reported() {
    use rdkafka::consumer::CommitMode;
    use rdkafka::{Offset, TopicPartitionList};
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let mut settings = settings(&db, &topic);
    // One message per record batch: Tansu then fetches from any offset.
    settings.producer.batch_messages = 1;
    let stats = track_all(
        &settings,
        (0..100).map(|i| NewEvent::new("user.login").user(Uuid::from_u128(i + 1))),
    )
    .await;
    assert_eq!(stats.delivered, 100);
    // The database says offsets up to 10 are stored; the group will start
    // at 60.
    db.client()
        .await
        .execute(
            "INSERT INTO consumer_progress (topic, partition, next_offset, stored_at)
             VALUES ($1, 0, 10, now())",
            &[&topic.name],
        )
        .await
        .expect("progress");
    let committer: BaseConsumer = activity_core::kafka::client_config(&topic.brokers)
        .set("group.id", &settings.consumer.group_id)
        .create()
        .expect("a consumer to commit with");
    let mut position = TopicPartitionList::new();
    position
        .add_partition_offset(&topic.name, 0, Offset::Offset(60))
        .expect("offset");
    committer
        .commit(&position, CommitMode::Sync)
        .expect("commit the group's offset");
    drop(committer);

    let consumer = ConsumerProcess::spawn(&settings, "offsets-skipped");
    assert_eq!(db.wait_for_events(40, Duration::from_secs(60)).await, 40);
    let base = format!("http://{}", consumer.metrics);
    let started = Instant::now();
    loop {
        let metrics = metrics_text(&base).await;
        if sample(&metrics, "consumer_offsets_skipped_total") == 50.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "50 offsets (10 to 59) reported skipped: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

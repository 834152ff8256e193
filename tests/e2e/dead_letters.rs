//! Bad messages go to `<topic>.dlq` with their reason; the good ones beside
//! them are stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use activity_core::avro::AvroCodec;
use activity_core::kafka::dlq_headers;
use activity_core::NewEvent;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_event_is_dead_lettered_with_its_reason_and_the_rest_stored() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(2).await;
    let settings = settings(&db, &topic);
    let codec = AvroCodec::new().expect("codec");
    let producer = RawProducer::new();

    let valid = codec
        .encode(
            &NewEvent::new("user.login")
                .user(Uuid::new_v4())
                .validate(Utc::now())
                .expect("valid"),
        )
        .expect("encode");
    let mut unknown_fingerprint = valid.clone();
    unknown_fingerprint[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"\x00\x01garbage".to_vec(),
            "not Avro single-object encoding",
        ),
        (
            "json",
            br#"{"event_type":"user.login"}"#.to_vec(),
            "not Avro single-object encoding",
        ),
        (
            "fingerprint",
            unknown_fingerprint,
            "unknown writer schema fingerprint 0x0123456789abcdef",
        ),
        (
            "truncated",
            valid[..valid.len() - 4].to_vec(),
            "undecodable Avro datum",
        ),
        (
            "no-type",
            foreign_record(&Uuid::new_v4().to_string(), "", None),
            "missing required field `event_type`",
        ),
        (
            "bad-uuid",
            foreign_record("not-a-uuid", "user.login", None),
            "user_id",
        ),
        (
            "nul",
            foreign_record(
                &Uuid::new_v4().to_string(),
                "user.login",
                Some(r#"{"a":"x\u0000y"}"#),
            ),
            "NUL",
        ),
        ("empty", Vec::new(), "message has no value"),
    ];

    let mut good = Vec::new();
    let mut sent_bad = HashMap::new();
    for (i, (name, bytes, reason)) in bad.iter().enumerate() {
        for _ in 0..5 {
            let event = NewEvent::new("github.push")
                .user(Uuid::new_v4())
                .community(Uuid::new_v4())
                .validate(Utc::now())
                .expect("valid");
            producer
                .send(
                    &topic.name,
                    Some((i % 2) as i32),
                    None,
                    &codec.encode(&event).expect("encode"),
                )
                .await;
            good.push(event.event_id().as_uuid());
        }
        let (partition, offset) = producer
            .send(&topic.name, Some((i % 2) as i32), Some(name), bytes)
            .await;
        sent_bad.insert(
            name.to_string(),
            (partition, offset, bytes.clone(), *reason),
        );
    }

    let consumer = InProcessConsumer::start(&settings);
    assert_eq!(
        db.wait_for_events(good.len() as i64, Duration::from_secs(60))
            .await,
        good.len() as i64
    );

    let dlq: BaseConsumer = activity_core::kafka::client_config(&brokers())
        .set("group.id", format!("dlq-reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq reader");
    dlq.subscribe(&[&topic.dlq()]).expect("subscribe");
    let mut letters = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < sent_bad.len() && Instant::now() < deadline {
        let Some(message) = dlq.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("dlq message");
        let key = String::from_utf8(message.key().expect("key kept").to_vec()).expect("utf8 key");
        let mut headers = HashMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        letters.insert(
            key,
            (message.payload().unwrap_or_default().to_vec(), headers),
        );
    }
    let totals = consumer.stop().await;
    assert_eq!(totals.dead_lettered, sent_bad.len() as u64);
    assert_eq!(
        letters.len(),
        sent_bad.len(),
        "every bad message is in the DLQ"
    );
    for (name, (partition, offset, bytes, reason)) in &sent_bad {
        let (payload, headers) = letters.get(name).expect(name);
        assert_eq!(payload, bytes, "{name}: original bytes kept");
        assert!(
            headers[dlq_headers::ERROR].contains(reason),
            "{name}: {:?} lacks {reason:?}",
            headers[dlq_headers::ERROR]
        );
        assert_eq!(headers[dlq_headers::SOURCE_TOPIC], topic.name);
        assert_eq!(
            headers[dlq_headers::SOURCE_PARTITION],
            partition.to_string()
        );
        assert_eq!(headers[dlq_headers::SOURCE_OFFSET], offset.to_string());
    }
    let stored: Vec<Uuid> = db.stored().await.into_keys().collect();
    assert_eq!(stored.len(), good.len());
    assert!(good.iter().all(|id| stored.contains(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_inspect_shows_why_and_replay_sends_back_what_now_validates_once() {
    // Letters as a consumer would have written them: an event a database
    // bug once refused (valid today), the same event again, and garbage.
    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let codec = AvroCodec::new().expect("codec");
    let event = NewEvent::new("user.login")
        .user(Uuid::new_v4())
        .community(Uuid::new_v4())
        .validate(Utc::now())
        .expect("valid");
    let key = event.community_id().map(|c| c.to_string());
    let bytes = codec.encode(&event).expect("encode");
    let letter = |payload: &[u8], error: &str, offset: i64| {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: dlq_headers::ERROR,
                value: Some(error),
            })
            .insert(rdkafka::message::Header {
                key: dlq_headers::SOURCE_TOPIC,
                value: Some(topic.name.as_str()),
            })
            .insert(rdkafka::message::Header {
                key: dlq_headers::SOURCE_PARTITION,
                value: Some("0"),
            })
            .insert(rdkafka::message::Header {
                key: dlq_headers::SOURCE_OFFSET,
                value: Some(offset.to_string().as_str()),
            });
        (payload.to_vec(), headers)
    };
    let producer: rdkafka::producer::FutureProducer =
        activity_core::kafka::client_config(&brokers())
            .create()
            .expect("producer");
    let dlq = topic.dlq();
    for (payload, headers) in [
        letter(
            &bytes,
            "database refused the batch: value too long (22001)",
            7,
        ),
        letter(
            &bytes,
            "database refused the batch: value too long (22001)",
            8,
        ),
        letter(b"\x00\x01garbage", "not Avro single-object encoding", 9),
    ] {
        let mut record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&dlq)
            .payload(payload.as_slice())
            .headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_str());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("letter written");
    }

    // inspect: every letter, its reason and source, a count per reason.
    let dlq = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .arg("dlq")
            .args(args)
            .env("KAFKA_BROKERS", brokers())
            .env("KAFKA_TOPIC", &topic.name)
            .env("APP_ENV", "dev")
            .output()
            .expect("activity dlq");
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "dlq {args:?}: {out}");
        out
    };
    let out = dlq(&["inspect", "--idle-ms", "3000"]);
    assert!(out.contains("3 dead letters"), "{out}");
    assert!(out.contains(&format!("from {}[0]@9", topic.name)), "{out}");
    assert!(out.contains("not Avro single-object encoding"), "{out}");
    assert!(
        out.contains("       2  database refused the batch"),
        "{out}"
    );

    // replay: the valid two are sent back, the garbage is still refused.
    let letters = activity_consumer::dlq::read_letters(
        &brokers(),
        &topic.dlq(),
        Duration::from_secs(3),
        usize::MAX,
    )
    .await
    .expect("letters");
    assert_eq!(letters.len(), 3);
    let dry = activity_consumer::dlq::replay(&brokers(), &topic.name, &letters, true)
        .await
        .expect("dry run");
    assert_eq!(dry.sent.len(), 2);
    // The command's dry run names the letters it would send.
    let out = dlq(&["replay", "--dry-run", "--idle-ms", "3000"]);
    for (partition, offset) in &dry.sent {
        assert!(
            out.contains(&format!("would send {partition}@{offset}\n")),
            "{out}"
        );
    }
    assert!(
        out.contains("2 of 3 dead letters would be sent to"),
        "{out}"
    );
    let consumer = InProcessConsumer::start(&settings);
    assert_eq!(
        db.wait_for_events(1, Duration::from_secs(3)).await,
        0,
        "a dry run sends nothing"
    );
    for round in 0..2 {
        let done = activity_consumer::dlq::replay(&brokers(), &topic.name, &letters, false)
            .await
            .expect("replay");
        assert_eq!(done.sent, vec![(0, 0), (0, 1)], "round {round}");
        assert_eq!(done.still_bad.len(), 1);
        assert!(
            done.still_bad[0].2.contains("not Avro"),
            "{:?}",
            done.still_bad
        );
    }
    assert_eq!(db.wait_for_events(1, Duration::from_secs(60)).await, 1);
    // Four copies of one event were sent; once they are all through, it is
    // stored once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let counted = db
            .count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_progress")
            .await;
        if counted >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let totals = consumer.stop().await;
    assert_eq!(totals.stored, 1);
    assert_eq!(totals.duplicates, 3);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM activities WHERE event_id = '{}'",
            event.event_id().as_uuid()
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_dead_letter_topic_holds_back_every_commit_past_the_letter() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let db = TestDb::new().await;
    let topic = TestTopic::new(1).await;
    let settings = settings(&db, &topic);
    let admin: AdminClient<DefaultClientContext> =
        activity_core::kafka::client_config(&topic.brokers)
            .create()
            .expect("admin");
    // The dead-letter topic is gone (deleted by mistake, say).
    for result in admin
        .delete_topics(&[&topic.dlq()], &AdminOptions::new())
        .await
        .expect("delete the DLQ")
    {
        result.expect("deleted");
    }

    // Five good events, a poison message, five good events: one partition.
    let codec = AvroCodec::new().expect("codec");
    let producer = RawProducer::on(&topic.brokers);
    let poison = b"not avro at all".to_vec();
    for i in 0..11 {
        let payload = if i == 5 {
            poison.clone()
        } else {
            let event = NewEvent::new("user.login")
                .user(Uuid::new_v4())
                .validate(Utc::now())
                .expect("valid");
            codec.encode(&event).expect("encode")
        };
        producer.send(&topic.name, Some(0), None, &payload).await;
    }

    let process = ConsumerProcess::spawn(&settings, "dlq-down");
    // The valid events of the batch are stored; the letter cannot be sent.
    assert_eq!(db.wait_for_events(10, Duration::from_secs(60)).await, 10);
    let started = Instant::now();
    loop {
        if let Some((503, body)) = process.readiness().await {
            if body.to_string().contains("dead-letter topic") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "/readyz reports the dead-letter topic"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let committed = || {
        let probe: BaseConsumer = activity_core::kafka::client_config(&topic.brokers)
            .set("group.id", &settings.consumer.group_id)
            .create()
            .expect("probe");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(&topic.name, 0);
        probe
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets")
            .elements()[0]
            .offset()
    };
    assert_eq!(
        committed(),
        rdkafka::Offset::Invalid,
        "nothing committed while the letter waits"
    );

    // The topic is back: the letter goes, and everything is committed.
    for result in admin
        .create_topics(
            &[NewTopic::new(&topic.dlq(), 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create the DLQ")
    {
        result.expect("created");
    }
    let started = Instant::now();
    while committed() != rdkafka::Offset::Offset(11) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "committed once the letter is acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let letters = activity_consumer::dlq::read_letters(
        &topic.brokers,
        &topic.dlq(),
        Duration::from_secs(2),
        usize::MAX,
    )
    .await
    .expect("read the DLQ");
    assert!(!letters.is_empty());
    assert!(letters
        .iter()
        .all(|l| l.payload.as_deref() == Some(&poison[..])));
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(db.count("SELECT count(*) FROM activities").await, 10);
}

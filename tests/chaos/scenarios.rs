//! One fault each. Run with `scripts/chaos` (release build, one at a time).

use std::time::Duration;

use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};

use crate::fixtures::*;
use crate::servers::{OwnBroker, OwnPostgres};
use crate::stream::{prove, Recovery, Stream, EVENTS};

/// The sustained rate of every stream: a fault always lands mid-stream.
/// Against Tansu with one message per record batch, producing much faster
/// than this saturates the broker (the producer's messages time out and
/// Tansu fences it).
const RATE: usize = 2_500;

fn rng() -> rand::rngs::StdRng {
    let seed: u64 = rand::random();
    println!("random moments from seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Polls a consumer's `/readyz` until its status is `status`.
async fn wait_until_readiness(consumer: &ConsumerProcess, status: u16) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        if let Some((now, body)) = consumer.readiness().await {
            if now == status {
                return body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "/readyz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: scripts/chaos"]
async fn consumer_killed_five_times() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let settings = settings(&db, &topic);
    let stream = Stream::new(1, 0);
    let sending = stream.send(&settings, RATE);
    let mut rng = rng();
    let mut recovery = Recovery::start(&db).await;
    let mut consumer = ConsumerProcess::spawn(&settings, "chaos-kill");
    db.wait_for_events(1, Duration::from_secs(60)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..6_000))).await;
        consumer.signal(Signal::SIGKILL);
        drop(consumer);
        // Restarted once the group noticed (its session, 6 s, expired), as
        // Kubernetes' restart back-off does: on Tansu a member that joins
        // while a dead one is still in the group may get nothing and never
        // be told when the dead one is evicted (README: Known broker
        // differences).
        tokio::time::sleep(Duration::from_millis(
            settings.consumer.session_timeout_ms + 1_000,
        ))
        .await;
        consumer = ConsumerProcess::spawn(&settings, "chaos-kill");
        recovery.fault_over();
    }
    let sent = sending.await.expect("stream");
    prove(
        "consumer SIGKILL x5",
        &db,
        &topic,
        &stream,
        sent,
        &recovery,
        vec![consumer],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: scripts/chaos"]
async fn postgres_down_longer_than_max_poll_interval() {
    let postgres = OwnPostgres::start();
    let db = TestDb::on(&postgres.server_url()).await;
    let topic = TestTopic::new(6).await;
    let mut settings = settings(&db, &topic);
    // librdkafka's floor is session.timeout.ms; the outage lasts 2.5 times this.
    settings.consumer.max_poll_interval_ms = 6_000;
    let stream = Stream::new(2, 0);
    let sending = stream.send(&settings, RATE);
    let mut recovery = Recovery::start(&db).await;
    let consumer = ConsumerProcess::spawn(&settings, "chaos-postgres");
    db.wait_for_events(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    postgres.stop();
    let body = wait_until_readiness(&consumer, 503).await;
    println!("during the outage /readyz says {body}");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        consumer.child.id().is_some(),
        "the consumer outlives the outage"
    );
    postgres.restart();
    recovery.fault_over();
    wait_until_readiness(&consumer, 200).await;

    let sent = sending.await.expect("stream");
    prove(
        "PostgreSQL down 15 s",
        &db,
        &topic,
        &stream,
        sent,
        &recovery,
        vec![consumer],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: scripts/chaos"]
async fn broker_restarted_mid_stream() {
    let mut broker = OwnBroker::start();
    let db = TestDb::new().await;
    let topic = TestTopic::on(&broker.brokers(), 6).await;
    let settings = settings(&db, &topic);
    let stream = Stream::new(3, 0);
    let sending = stream.send(&settings, RATE);
    let mut recovery = Recovery::start(&db).await;
    let consumer = ConsumerProcess::spawn(&settings, "chaos-broker");
    db.wait_for_events(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    broker.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart();
    recovery.fault_over();

    let sent = sending.await.expect("stream");
    prove(
        "broker killed, restarted after 5 s",
        &db,
        &topic,
        &stream,
        sent,
        &recovery,
        vec![consumer],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: scripts/chaos"]
async fn scale_from_one_to_three_and_back_with_one_killed() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let settings = settings(&db, &topic);
    let stream = Stream::new(4, 0);
    let sending = stream.send(&settings, RATE);
    let mut recovery = Recovery::start(&db).await;
    let first = ConsumerProcess::spawn(&settings, "chaos-group-0");
    db.wait_for_events(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Scale out to three.
    let mut others: Vec<ConsumerProcess> = (1..3)
        .map(|i| ConsumerProcess::spawn(&settings, &format!("chaos-group-{i}")))
        .collect();
    recovery.fault_over();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // One dies; a replacement comes 8 s later (Kubernetes restarting it).
    let killed = others.remove(0);
    killed.signal(Signal::SIGKILL);
    drop(killed);
    recovery.fault_over();
    tokio::time::sleep(Duration::from_secs(8)).await;
    others.push(ConsumerProcess::spawn(&settings, "chaos-group-3"));
    recovery.fault_over();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Scale back in to one: SIGTERM, each leaves the group after its batch.
    for mut other in others {
        other.signal(Signal::SIGTERM);
        let stopped = tokio::time::timeout(Duration::from_secs(30), other.child.wait()).await;
        assert!(
            stopped.is_ok_and(|status| status.is_ok_and(|s| s.success())),
            "a consumer stops cleanly on SIGTERM"
        );
    }
    recovery.fault_over();

    let sent = sending.await.expect("stream");
    prove(
        "1 -> 3 consumers, 1 killed, 1 added, -> 1",
        &db,
        &topic,
        &stream,
        sent,
        &recovery,
        vec![first],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: scripts/chaos"]
async fn one_percent_poison() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let settings = settings(&db, &topic);
    let stream = Stream::new(5, 1);
    assert_eq!(stream.poison.len(), EVENTS / 100);
    let sending = stream.send(&settings, RATE);
    let recovery = Recovery::start(&db).await;
    let consumer = ConsumerProcess::spawn(&settings, "chaos-poison");
    let sent = sending.await.expect("stream");
    prove(
        "1% poison, 10 kinds",
        &db,
        &topic,
        &stream,
        sent,
        &recovery,
        vec![consumer],
    )
    .await;
}

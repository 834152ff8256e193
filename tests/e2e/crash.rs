//! The consumer killed without warning, again and again, while events stream in.

use std::collections::HashSet;
use std::time::Duration;

use activity_core::NewEvent;
use activity_producer::synthetic::{Generator, Shape};
use nix::sys::signal::Signal;
use uuid::Uuid;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_three_times_while_streaming_loses_and_doubles_nothing() {
    const EVENTS: usize = 100_000;
    let db = TestDb::new().await;
    let topic = TestTopic::new(6).await;
    let mut settings = settings(&db, &topic);
    // A restarted consumer fetches from its committed offset, which may lie
    // inside a record batch: Tansu cannot serve that (README: Known broker
    // differences).
    settings.producer.batch_messages = 1;
    let mut generator = Generator::new(Shape {
        seed: 9,
        duplicates: 0.05,
        ..Shape::default()
    });
    let events: Vec<NewEvent> = (0..EVENTS).map(|_| generator.next_event()).collect();
    let ids: HashSet<Uuid> = events.iter().filter_map(|e| e.event_id).collect();

    // Stream: 1,000 events every 100 ms, about ten seconds in all.
    let streaming = {
        let settings = settings.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            for chunk in events.chunks(1_000) {
                sent += track_all(&settings, chunk.iter().cloned()).await.delivered;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };

    let mut kills = 0;
    for threshold in [5_000, 30_000, 60_000] {
        let process = ConsumerProcess::spawn(&settings, "crash");
        let reached = db
            .wait_for_events(threshold, Duration::from_secs(180))
            .await;
        assert!(
            reached >= threshold,
            "consumer made progress before kill {kills}"
        );
        process.signal(Signal::SIGKILL);
        drop(process);
        kills += 1;
    }
    assert_eq!(kills, 3);
    let last = ConsumerProcess::spawn(&settings, "crash");
    assert_eq!(streaming.await.expect("producer task"), EVENTS as u64);
    let stored = db
        .wait_for_events(ids.len() as i64, Duration::from_secs(300))
        .await;
    // Let the last consumer read whatever redelivered tail remains, then check.
    tokio::time::sleep(Duration::from_secs(2)).await;
    last.signal(Signal::SIGTERM);
    assert_eq!(stored, ids.len() as i64, "nothing lost");
    assert_eq!(
        db.count("SELECT count(*) FROM activities").await,
        ids.len() as i64,
        "nothing doubled"
    );
    let stored_ids: HashSet<Uuid> = db.stored().await.into_keys().collect();
    assert_eq!(stored_ids, ids);
}

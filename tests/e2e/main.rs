//! End-to-end tests across crates, against the real PostgreSQL and the real
//! broker (`scripts/kafka-test-broker`; `KAFKA_BROKERS` names it). Each test
//! makes its own database and topic, so tests run in parallel and leave
//! nothing behind.

#![allow(unreachable_pub)] // a test binary exports nothing

mod fixtures;

mod analytics;
mod collector;
mod crash;
mod dead_letters;
mod pipeline;
mod retention;
mod storage;

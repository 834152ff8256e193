//! Rate limits per write key: requests per second and events per second,
//! shared by every collector replica through Redis.
//!
//! Each limit is a token bucket (refilled at the rate, holding one second of
//! it, and at least one whole request's worth of events). Both buckets of a
//! key are checked and charged in one Lua script, on Redis' own clock, so
//! replicas agree without talking to each other. When Redis does not answer,
//! the collector keeps accepting under the same buckets kept in its own
//! memory (each replica then allows the full rate: a degraded, not a closed,
//! mode), logs it, and reports it on `/readyz` and `/metrics` until Redis
//! answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The limits of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_second: u32,
    pub events_per_second: u32,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Retry after this long.
    Limited(Duration),
}

const SCRIPT: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local wait = 0
local state = {}
for i = 1, 2 do
  local rate = tonumber(ARGV[(i - 1) * 3 + 1])
  local burst = tonumber(ARGV[(i - 1) * 3 + 2])
  local cost = tonumber(ARGV[(i - 1) * 3 + 3])
  local saved = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(saved[1]) or burst
  local ts = tonumber(saved[2]) or now_ms
  tokens = math.min(burst, tokens + math.max(0, now_ms - ts) * rate / 1000)
  if tokens < cost then
    wait = math.max(wait, math.ceil((cost - tokens) * 1000 / rate))
  end
  state[i] = {tokens, rate, burst, cost}
end
for i = 1, 2 do
  local tokens = state[i][1]
  if wait == 0 then tokens = tokens - state[i][4] end
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'ts', now_ms)
  redis.call('PEXPIRE', KEYS[i], math.ceil(state[i][3] * 1000 / state[i][2]) + 1000)
end
return wait
";

/// One bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

fn shape(limits: Limits, events: u32, max_events: u32) -> [(f64, f64, f64); 2] {
    let requests = f64::from(limits.requests_per_second.max(1));
    let events_rate = f64::from(limits.events_per_second.max(1));
    [
        (requests, requests.max(1.0), 1.0),
        (
            events_rate,
            events_rate.max(f64::from(max_events)),
            f64::from(events),
        ),
    ]
}

/// The limiter of one collector replica.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Arc<Redis>,
    script: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<(Uuid, usize), Bucket>>>,
    max_events: u32,
}

/// How often a replica whose limits are local asks Redis again.
const REDIS_RETRY: Duration = Duration::from_secs(2);

/// The connection to Redis and what is known of it. While Redis is down,
/// requests do not wait on it: they are limited locally at once, and a
/// background probe (at most one at a time, every [`REDIS_RETRY`], on a
/// timer and on requests) connects
/// again (a replica that started without Redis) or pings it, and turns the
/// shared limits back on when it answers. Before, a replica that started
/// without Redis never used it again, and one that lost it spent about
/// 1.5 s of every request on a reconnect attempt.
struct Redis {
    client: redis::Client,
    manager: Mutex<Option<redis::aio::ConnectionManager>>,
    degraded: AtomicBool,
    probing: AtomicBool,
    retry_at: Mutex<Instant>,
}

impl Redis {
    fn manager(&self) -> Option<redis::aio::ConnectionManager> {
        self.manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn down(&self, error: &dyn std::fmt::Display) {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + REDIS_RETRY;
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis unavailable: rate limits are local to this replica");
        }
    }

    fn up(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: rate limits are shared");
        }
    }

    /// A connection, within 2 s.
    async fn connect(client: &redis::Client) -> Result<redis::aio::ConnectionManager, String> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            Duration::from_secs(2),
            redis::aio::ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(Ok(manager)) => Ok(manager),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("Redis did not answer within 2 s".into()),
        }
    }

    /// Starts a probe of Redis unless one runs or the last failed less than
    /// [`REDIS_RETRY`] ago.
    fn probe(self: &Arc<Self>) {
        let client = self.client.clone();
        if Instant::now() < *self.retry_at.lock().unwrap_or_else(|e| e.into_inner())
            || self.probing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let answered = match this.manager() {
                Some(mut manager) => tokio::time::timeout(
                    Duration::from_secs(1),
                    redis::cmd("PING").query_async::<String>(&mut manager),
                )
                .await
                .map_err(|_| "Redis did not answer within 1 s".to_owned())
                .and_then(|pong| pong.map(drop).map_err(|e| e.to_string())),
                None => Self::connect(&client).await.map(|manager| {
                    *this.manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(manager);
                }),
            };
            match answered {
                Ok(()) => this.up(),
                Err(error) => this.down(&error),
            }
            this.probing.store(false, Ordering::Release);
        });
    }
}

impl RateLimiter {
    /// Connects to Redis at `url`; without an answer the limiter starts in
    /// its local mode and keeps trying Redis in the background. A URL that
    /// is not a Redis URL is an error: a typo would otherwise leave every
    /// replica on local limits for good, behind a warning.
    pub async fn new(url: &str, max_events: u32) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let manager = match Redis::connect(&client).await {
            Ok(manager) => Some(manager),
            Err(error) => {
                tracing::warn!(%error, "Redis unavailable: rate limits are local to this replica");
                None
            }
        };
        let degraded = AtomicBool::new(manager.is_none());
        let redis = Arc::new(Redis {
            client,
            manager: Mutex::new(manager),
            degraded,
            probing: AtomicBool::new(false),
            retry_at: Mutex::new(Instant::now() + REDIS_RETRY),
        });
        // Probed on a timer too, so a replica that takes no request (or
        // one every few minutes) is back on Redis, and says so, without one.
        let watched = Arc::downgrade(&redis);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REDIS_RETRY).await;
                let Some(redis) = watched.upgrade() else {
                    break;
                };
                if redis.degraded.load(Ordering::Relaxed) {
                    redis.probe();
                }
            }
        });
        Ok(Self {
            redis,
            script: Arc::new(redis::Script::new(SCRIPT)),
            local: Arc::default(),
            max_events,
        })
    }

    /// Whether the limits are local to this replica right now (Redis down).
    pub fn degraded(&self) -> bool {
        self.redis.degraded.load(Ordering::Relaxed)
    }

    /// Checks and charges one request of `events` events for `key`.
    pub async fn check(&self, key: Uuid, limits: Limits, events: u32) -> Verdict {
        let buckets = shape(limits, events, self.max_events);
        match self.redis.manager() {
            Some(mut connection) if !self.degraded() => {
                let mut invocation = self.script.prepare_invoke();
                invocation
                    .key(format!("activity:ratelimit:{key}:requests"))
                    .key(format!("activity:ratelimit:{key}:events"));
                for (rate, burst, cost) in buckets {
                    invocation.arg(rate).arg(burst).arg(cost);
                }
                match invocation.invoke_async::<u64>(&mut connection).await {
                    Ok(wait) => return verdict(wait),
                    Err(error) => self.redis.down(&error),
                }
            }
            _ => self.redis.probe(),
        }
        self.check_locally(key, buckets)
    }

    fn check_locally(&self, key: Uuid, buckets: [(f64, f64, f64); 2]) -> Verdict {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait_ms: f64 = 0.0;
        let mut state = [(0.0, 0.0); 2];
        for (i, (rate, burst, cost)) in buckets.into_iter().enumerate() {
            let bucket = local.entry((key, i)).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            let tokens =
                (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
            if tokens < cost {
                wait_ms = wait_ms.max(((cost - tokens) * 1000.0 / rate).ceil());
            }
            state[i] = (tokens, cost);
        }
        for (i, (tokens, cost)) in state.into_iter().enumerate() {
            let charged = if wait_ms == 0.0 {
                tokens - cost
            } else {
                tokens
            };
            local.insert(
                (key, i),
                Bucket {
                    tokens: charged,
                    at: now,
                },
            );
        }
        verdict(wait_ms as u64)
    }
}

fn verdict(wait_ms: u64) -> Verdict {
    if wait_ms == 0 {
        Verdict::Allowed
    } else {
        Verdict::Limited(Duration::from_millis(wait_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_url_that_is_not_one_is_refused() {
        for url in [
            "redis//127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis://127.0.0.1:port",
            "",
        ] {
            let refused = RateLimiter::new(url, 500).await.err();
            assert!(refused.is_some(), "{url:?} is refused");
        }
        // Unreachable is not invalid: local limits until Redis answers.
        let limiter = RateLimiter::new("redis://127.0.0.1:1", 500).await;
        assert!(limiter.is_ok_and(|limiter| limiter.degraded()));
    }

    #[tokio::test]
    async fn local_buckets_allow_the_burst_then_limit() {
        // Nothing listens on port 1: the limiter is local from the start.
        let limiter = RateLimiter::new("redis://127.0.0.1:1", 500)
            .await
            .expect("a Redis URL");
        assert!(limiter.degraded());
        let key = Uuid::new_v4();
        let limits = Limits {
            requests_per_second: 3,
            events_per_second: 1_000,
        };
        for _ in 0..3 {
            assert_eq!(limiter.check(key, limits, 10).await, Verdict::Allowed);
        }
        match limiter.check(key, limits, 10).await {
            Verdict::Limited(wait) => assert!(wait <= Duration::from_millis(334), "{wait:?}"),
            Verdict::Allowed => panic!("the fourth request within a second is limited"),
        }
        // Another key has its own buckets.
        assert_eq!(
            limiter.check(Uuid::new_v4(), limits, 10).await,
            Verdict::Allowed
        );
    }

    /// A replica that started without Redis uses it once it answers (it
    /// never did), through a proxy started later on the port it was given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_started_without_redis_shares_limits_once_it_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let limiter = RateLimiter::new(&format!("redis://127.0.0.1:{port}"), 500)
            .await
            .expect("a Redis URL");
        assert!(limiter.degraded());
        let proxy = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the same port");
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = proxy.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut redis) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut redis).await;
                    }
                });
            }
        });
        let limits = Limits {
            requests_per_second: 1_000,
            events_per_second: 100_000,
        };
        // Without a request: the timer probes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while limiter.degraded() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!limiter.degraded(), "back on Redis");
        assert_eq!(
            limiter.check(Uuid::new_v4(), limits, 1).await,
            Verdict::Allowed
        );
        // And the limits are Redis': a key charged through this replica is
        // limited through another one that always had Redis.
        let other = RateLimiter::new("redis://127.0.0.1:6379", 500)
            .await
            .expect("a Redis URL");
        assert!(!other.degraded());
        let key = Uuid::new_v4();
        let two = Limits {
            requests_per_second: 2,
            events_per_second: 100_000,
        };
        assert_eq!(limiter.check(key, two, 1).await, Verdict::Allowed);
        assert_eq!(limiter.check(key, two, 1).await, Verdict::Allowed);
        assert!(matches!(
            other.check(key, two, 1).await,
            Verdict::Limited(_)
        ));
    }

    #[tokio::test]
    async fn events_are_limited_by_their_count() {
        let limiter = RateLimiter::new("redis://127.0.0.1:1", 500)
            .await
            .expect("a Redis URL");
        let key = Uuid::new_v4();
        let limits = Limits {
            requests_per_second: 1_000,
            events_per_second: 600,
        };
        assert_eq!(limiter.check(key, limits, 500).await, Verdict::Allowed);
        assert!(matches!(
            limiter.check(key, limits, 500).await,
            Verdict::Limited(_)
        ));
    }
}

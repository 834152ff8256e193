//! The analytics API against the real PostgreSQL: every number it returns is
//! checked against the same number computed here, independently, from the
//! events that were stored (in Rust, with chrono-tz for the zones); tenant
//! isolation is attacked through the API and through PostgreSQL alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_analytics_api::auth::Caller;
use activity_analytics_api::{ApiConfig, Application, Claims, Keys, Role};
use activity_consumer::Store;
use activity_core::{ActivityEvent, NewEvent};
use chrono::{
    DateTime, Datelike, Days, DurationRound, NaiveDate, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fixtures::*;

const SECRET: &[u8] = b"analytics-test-secret-0123456789abcdef";
const TYPES: [&str; 4] = [
    "user.login",
    "github.push",
    "member.created",
    "webhook.triggered",
];

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

/// One stored event, as the test remembers it.
#[derive(Debug, Clone)]
struct Ev {
    community: Option<Uuid>,
    user: Option<Uuid>,
    event_type: String,
    entity: Option<(String, String)>,
    at: DateTime<Utc>,
}

struct World {
    db: TestDb,
    communities: Vec<Uuid>,
    users: Vec<Uuid>,
    events: Vec<Ev>,
    base: String,
    keys: Keys,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Random events over two windows that hold the 2026 DST changes of the US
/// (Mar 8, Nov 1) and the EU (Mar 29, Oct 25), many of them in the small
/// hours where the changes happen; stored through the real storage path, some
/// twice.
async fn world(seed: u64, count: usize) -> World {
    let db = TestDb::new().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let communities: Vec<Uuid> = (0..4).map(|_| Uuid::from_u128(rng.gen())).collect();
    let users: Vec<Uuid> = (0..40).map(|_| Uuid::from_u128(rng.gen())).collect();
    let windows = [
        (utc("2026-03-01T00:00:00Z"), utc("2026-04-05T00:00:00Z")),
        (utc("2026-10-20T00:00:00Z"), utc("2026-11-05T00:00:00Z")),
    ];
    let hot = [
        utc("2026-03-08T05:00:00Z"), // 00:00 in New York, DST starts at 02:00
        utc("2026-03-29T00:00:00Z"), // EU DST starts at 01:00 UTC
        utc("2026-10-25T00:00:00Z"), // EU DST ends at 01:00 UTC
        utc("2026-11-01T04:00:00Z"), // New York, DST ends at 06:00 UTC; Havana at 05:00
        utc("2026-04-05T01:00:00Z"), // Santiago goes back from 00:00 to 23:00 at 03:00 UTC
    ];
    let now = Utc::now();
    let mut stored = Vec::new();
    let mut remembered = Vec::new();
    for i in 0..count {
        let at = if i % 3 == 0 {
            hot[rng.gen_range(0..hot.len())] + TimeDelta::seconds(rng.gen_range(0..4 * 3600))
        } else {
            let (from, to) = windows[rng.gen_range(0..windows.len())];
            from + TimeDelta::microseconds(
                rng.gen_range(0..(to - from).num_microseconds().unwrap_or(1)),
            )
        };
        // Skewed: the first community is the biggest.
        let community = match rng.gen_range(0..10) {
            0 => None,
            1..=5 => Some(communities[0]),
            n => Some(communities[(n as usize) % communities.len()]),
        };
        let event_type = TYPES[rng.gen_range(0..TYPES.len())];
        let user =
            (event_type != "webhook.triggered").then(|| users[rng.gen_range(0..users.len())]);
        let entity = (rng.gen_range(0..3) > 0).then(|| {
            let kind = if rng.gen_bool(0.5) {
                "repository"
            } else {
                "hackathon"
            };
            (
                kind.to_owned(),
                format!("{kind}{:02}", rng.gen_range(0..12)),
            )
        });
        let mut event = NewEvent::new(event_type)
            .created_at(at)
            .metadata(json!({"n": i}));
        if let Some(c) = community {
            event = event.community(c);
        }
        if let Some(u) = user {
            event = event.user(u);
        }
        if let Some((kind, id)) = &entity {
            event = event.entity(kind.clone(), id.clone());
        }
        let event: ActivityEvent = event.validate(now).expect("valid test event");
        remembered.push(Ev {
            community,
            user,
            event_type: event_type.to_owned(),
            entity,
            at: event.created_at(),
        });
        stored.push(event);
    }
    let store = Store::connect(&db.url, 2).expect("store");
    for chunk in stored.chunks(400) {
        store.insert_batch(chunk).await.expect("insert");
    }
    // Replays change nothing, rollups included.
    let again = store
        .insert_batch(&stored[..stored.len().min(300)])
        .await
        .expect("replay");
    assert_eq!(again.inserted, 0);

    let (base, shutdown) = serve_api(&db.url, 4).await;
    World {
        db,
        communities,
        users,
        events: remembered,
        base,
        keys: Keys::new(SECRET),
        http: reqwest::Client::new(),
        shutdown,
    }
}

/// An API on `url` with `pool_size` connections: its address, and the
/// token that stops it.
/// An admin token for an API served by [`serve_api`], valid for an hour.
fn admin_token() -> String {
    Keys::new(SECRET)
        .mint(&Claims {
            sub: "admin".into(),
            exp: (Utc::now() + TimeDelta::hours(1)).timestamp() as f64,
            role: Role::Admin,
            communities: None,
            nbf: None,
        })
        .expect("mint")
}

async fn serve_api(url: &str, pool_size: usize) -> (String, CancellationToken) {
    let app = Application::build(ApiConfig {
        listen: "127.0.0.1:0".into(),
        read_url: url.to_owned(),
        jwt_secret: SECRET.to_vec(),
        pool_size,
    })
    .await
    .expect("build the API");
    let base = format!("http://{}", app.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (base, shutdown)
}

impl World {
    fn token(&self, role: Role, sub: &str, communities: &[Uuid]) -> String {
        self.keys
            .mint(&Claims {
                sub: sub.into(),
                exp: (Utc::now() + TimeDelta::hours(1)).timestamp() as f64,
                role,
                communities: (role == Role::CommunityAdmin).then(|| communities.to_vec()),
                nbf: None,
            })
            .expect("mint")
    }

    fn admin(&self) -> String {
        self.token(Role::Admin, "admin", &[])
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.get_at(&self.base, token, path).await
    }

    /// A request to the API at `base` (another API on the same database).
    async fn get_at(&self, base: &str, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.get(token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

/// What the API should answer, computed from the remembered events.
struct Expected<'a> {
    events: Vec<&'a Ev>,
}

impl<'a> Expected<'a> {
    fn new(
        all: &'a [Ev],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        scope: Option<&[Uuid]>,
        event_type: Option<&str>,
    ) -> Self {
        let events = all
            .iter()
            .filter(|e| e.at >= from && e.at < to)
            .filter(|e| scope.is_none_or(|s| e.community.is_some_and(|c| s.contains(&c))))
            .filter(|e| event_type.is_none_or(|t| e.event_type == t))
            .collect();
        Self { events }
    }

    fn total(&self) -> i64 {
        self.events.len() as i64
    }

    fn unique_users(&self) -> i64 {
        self.events
            .iter()
            .filter_map(|e| e.user)
            .collect::<HashSet<_>>()
            .len() as i64
    }

    fn series(&self, interval: &str, tz: Tz) -> BTreeMap<String, (i64, i64)> {
        let mut buckets: HashMap<DateTime<Utc>, (i64, HashSet<Uuid>)> = HashMap::new();
        for e in &self.events {
            let entry = buckets.entry(slot(e.at, interval, tz)).or_default();
            entry.0 += 1;
            if let Some(u) = e.user {
                entry.1.insert(u);
            }
        }
        buckets
            .into_iter()
            .map(|(start, (n, users))| {
                (
                    start.with_timezone(&tz).to_rfc3339(),
                    (n, users.len() as i64),
                )
            })
            .collect()
    }

    fn by_type(&self) -> BTreeMap<String, (i64, i64)> {
        let mut types: HashMap<&str, (i64, HashSet<Uuid>)> = HashMap::new();
        for e in &self.events {
            let entry = types.entry(&e.event_type).or_default();
            entry.0 += 1;
            if let Some(u) = e.user {
                entry.1.insert(u);
            }
        }
        types
            .into_iter()
            .map(|(t, (n, u))| (t.to_owned(), (n, u.len() as i64)))
            .collect()
    }

    fn top<K: Ord + Clone + std::hash::Hash>(
        &self,
        key: impl Fn(&Ev) -> Option<K>,
        limit: usize,
    ) -> Vec<(K, i64)> {
        let mut counts: HashMap<K, i64> = HashMap::new();
        for e in &self.events {
            if let Some(k) = key(e) {
                *counts.entry(k).or_default() += 1;
            }
        }
        let mut counts: Vec<(K, i64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(limit);
        counts
    }
}

/// The first instant `tz`'s clock shows `date`: its midnight, the first of
/// two when clocks go back at midnight (America/Havana, Nov 1), the end of
/// the gap when midnight is skipped (America/Santiago, Sep 6).
fn midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut local = date.and_hms_opt(0, 0, 0).expect("midnight");
    loop {
        if let Some(at) = tz.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
        local += TimeDelta::minutes(15);
    }
}

/// The last instant at or before `at` at which `tz`'s clock shows a whole
/// hour (the repeated hour when clocks go back is two hours; an hour whose
/// part is skipped, as on Lord Howe Island, is shorter or longer).
fn hour_start(at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&tz).naive_local();
    let mut hour = local
        .date()
        .and_hms_opt(local.time().hour(), 0, 0)
        .expect("a whole hour");
    loop {
        let instants: Vec<DateTime<Utc>> = match tz.from_local_datetime(&hour) {
            chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            chrono::LocalResult::Ambiguous(a, b) => {
                vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
            }
            chrono::LocalResult::None => vec![],
        };
        if let Some(start) = instants.into_iter().filter(|t| *t <= at).max() {
            return start;
        }
        hour -= TimeDelta::hours(1);
    }
}

/// The start of the interval holding `at`, computed with chrono-tz.
fn slot(at: DateTime<Utc>, interval: &str, tz: Tz) -> DateTime<Utc> {
    let date = at.with_timezone(&tz).date_naive();
    match interval {
        "day" => midnight(tz, date),
        "week" => midnight(
            tz,
            date - Days::new(u64::from(date.weekday().num_days_from_monday())),
        ),
        "month" => midnight(tz, date.with_day(1).expect("first of month")),
        "hour" => hour_start(at, tz),
        other => panic!("unknown interval {other}"),
    }
}

fn series_of(body: &Value) -> BTreeMap<String, (i64, i64)> {
    let points = body["time_series"].as_array().expect("time_series");
    let labels: Vec<&str> = points.iter().filter_map(|p| p["start"].as_str()).collect();
    let unique: HashSet<&&str> = labels.iter().collect();
    assert_eq!(unique.len(), labels.len(), "no interval appears twice");
    points
        .iter()
        .filter(|p| p["events"].as_i64() != Some(0))
        .map(|p| {
            (
                p["start"].as_str().unwrap_or_default().to_owned(),
                (
                    p["events"].as_i64().unwrap_or(-1),
                    p["unique_users"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

fn by_type_of(body: &Value) -> BTreeMap<String, (i64, i64)> {
    body["events_by_type"]
        .as_array()
        .expect("events_by_type")
        .iter()
        .map(|t| {
            (
                t["event_type"].as_str().unwrap_or_default().to_owned(),
                (
                    t["events"].as_i64().unwrap_or(-1),
                    t["unique_users"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

fn query(from: DateTime<Utc>, to: DateTime<Utc>, interval: &str, tz: Tz) -> String {
    format!(
        "from={}&to={}&interval={interval}&tz={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        tz.name()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_equals_the_one_computed_from_raw_events() {
    let mut w = world(7, 3_000).await;
    // As stored: every day is dirty and read from its 15-minute rows.
    check_every_number(&w).await;

    // Compacted as a compactor running at 13:00 on Mar 29 would: the days
    // before from day rows; that day (dirty, over by now) from its
    // 15-minute rows, and the days after too.
    let store = Store::connect(&w.db.url, 1).expect("store");
    let midday = utc("2026-03-29T13:00:00Z");
    assert!(store.compact_rollups(midday).await.expect("compact") > 20);
    assert_eq!(
        w.db.count("SELECT count(*) FROM rollup_dirty_days WHERE day = '2026-03-29T00:00:00Z'")
            .await,
        1,
        "the day is still dirty"
    );
    check_every_number(&w).await;

    // Compacted: whole days from day rows, whole hours from hour rows.
    let compacted = store.compact_rollups(Utc::now()).await.expect("compact");
    assert!(compacted > 20, "compacted {compacted} days");
    let dirty_days = "SELECT count(*) FROM rollup_dirty_days";
    assert_eq!(
        w.db.count(dirty_days).await,
        0,
        "every past day is compacted"
    );
    // A day in a zone of rollup_zones is read as two rows (the tail of one
    // UTC day and the head of the next), a day in another zone as the
    // pieces of both UTC days: check_every_number compares both with the
    // raw events.
    let client = w.db.client().await;
    let tiles = |from: &str, to: &str| {
        let sql = format!(
            "SELECT grain::int FROM activity_tiles(ARRAY['{from}', '{to}']::timestamptz[], pieces => true, every_type => true)
             ORDER BY tile_from"
        );
        let client = &client;
        async move {
            client
                .query(&sql, &[])
                .await
                .expect("tiles")
                .iter()
                .map(|row| row.get::<_, i32>(0))
                .collect::<Vec<_>>()
        }
    };
    // Kolkata, +05:30: Mar 10 begins at 18:30 UTC on Mar 9.
    assert_eq!(
        tiles("2026-03-09T18:30:00Z", "2026-03-10T18:30:00Z").await,
        [-330, 1110]
    );
    // New York's 23-hour day when clocks spring forward: 05:00 to 04:00 UTC.
    assert_eq!(
        tiles("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z").await,
        [-1140, 240]
    );
    // Kathmandu, +05:45, is not listed: quarter-hour, half-hour, hour,
    // quarter-day and quarter-hour tiles, the quarter- and half-hours of
    // every type together (-15, 30).
    assert_eq!(
        tiles("2026-03-09T18:15:00Z", "2026-03-10T18:15:00Z").await,
        [-15, 30, 60, 360, -15]
    );
    // An hour in Kolkata: two half-hours of every type together (one tile:
    // [18:30, 19:30) of grain 30); a quarter-hour range is its one row.
    assert_eq!(
        tiles("2026-03-09T18:30:00Z", "2026-03-09T19:30:00Z").await,
        [30]
    );
    assert_eq!(
        tiles("2026-03-09T18:15:00Z", "2026-03-09T19:45:00Z").await,
        [-15, 30, -15]
    );
    assert_eq!(
        tiles("2026-03-09T18:15:00Z", "2026-03-09T18:30:00Z").await,
        [-15]
    );
    // Without pieces (the top lists' ranks have none), never a head or
    // tail; read per type, quarter-hours of each type.
    let plain: i64 =
        w.db.count(
            "SELECT count(*) FROM activity_tiles('{2026-03-09T18:30:00Z,2026-03-10T18:30:00Z}')
             WHERE grain NOT IN (15, 60, 360, 1440)",
        )
        .await;
    assert_eq!(plain, 0);
    // A week (from Monday 00:00 UTC) whose 7 days are whole clean days of
    // the range is one tile of its week rows, in a range in a zone too
    // (Kolkata: the tail of Mar 1, the week of Mar 2, the head of Mar 9).
    assert_eq!(
        tiles("2026-03-02T00:00:00Z", "2026-03-16T00:00:00Z").await,
        [10080, 10080]
    );
    assert_eq!(
        tiles("2026-03-01T18:30:00Z", "2026-03-09T18:30:00Z").await,
        [-330, 10080, 1110]
    );
    // 168 hours, whatever the session's zone: a New York week across the
    // end of DST is 169 (it read the next week's rows too).
    client
        .batch_execute("SET TimeZone = 'America/New_York'")
        .await
        .expect("zone");
    assert_eq!(
        tiles("2026-10-26T00:00:00Z", "2026-11-09T00:00:00Z").await,
        [10080, 10080]
    );
    let longer: i64 = client
        .query_one(
            "SELECT count(*) FROM activity_tiles('{2026-10-26T00:00:00Z,2026-11-09T00:00:00Z}')
             WHERE tile_to - tile_from <> interval '168 hours'",
            &[],
        )
        .await
        .expect("weeks")
        .get(0);
    assert_eq!(longer, 0, "weeks are 168 hours long");
    let late_week = ("2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z");
    assert_eq!(tiles(late_week.0, late_week.1).await, [10080]);
    // Each clean week's rows are the sums of its day rows.
    let weeks_off = "SELECT count(*) FROM (
             SELECT community_id, activity_week(bucket) AS week, event_type, sum(events) AS events,
                    hll_cardinality(hll_union_agg(users)) AS users
             FROM rollup_events AS d WHERE grain = 1440
               AND NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x
                               WHERE x.day >= activity_week(d.bucket) AND x.day < activity_week(d.bucket) + interval '168 hours')
             GROUP BY 1, 2, 3
         ) AS d
         FULL JOIN (SELECT community_id, bucket AS week, event_type, events, hll_cardinality(users) AS users
                    FROM rollup_events WHERE grain = 10080) AS w USING (community_id, week, event_type)
         WHERE d.events IS DISTINCT FROM w.events OR d.users IS DISTINCT FROM w.users";
    assert_eq!(w.db.count(weeks_off).await, 0, "week rows = their days");
    assert!(
        w.db.count("SELECT count(*) FROM rollup_community_ranks WHERE grain = 10080")
            .await
            > 0,
        "weeks' communities are ranked"
    );
    check_every_number(&w).await;

    // Late events dirty their days again: those are read from 15-minute
    // rows, the others still from their compacted rows.
    let user = w.users[0];
    let community = w.communities[0];
    let mut late = Vec::new();
    for at in [
        "2026-03-29T00:40:00Z",
        "2026-03-29T23:59:59Z",
        "2026-11-01T05:30:00Z",
    ] {
        let at = utc(at);
        let event: ActivityEvent = NewEvent::new("user.login")
            .created_at(at)
            .community(community)
            .user(user)
            .validate(Utc::now())
            .expect("valid late event");
        w.events.push(Ev {
            community: Some(community),
            user: Some(user),
            event_type: "user.login".to_owned(),
            entity: None,
            at: event.created_at(),
        });
        late.push(event);
    }
    store.insert_batch(&late).await.expect("late events");
    assert_eq!(
        w.db.count(dirty_days).await,
        2,
        "the late events' days are dirty again"
    );
    // Its Sunday dirty, the week of Mar 23 is read from its days again.
    assert!(!tiles(late_week.0, late_week.1).await.contains(&10080));
    // A series' intervals are the slots of one call: each gets exactly the
    // tiles a call of its own gives it (clean, dirty, cut and uncut days,
    // weeks, both DST changes, a half-hour and an unlisted zone).
    for tz in [
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Sydney",
    ] {
        for (interval, from, to) in [
            ("day", "2026-02-26T07:15:00Z", "2026-04-06T13:45:00Z"),
            ("hour", "2026-03-26T21:30:00Z", "2026-03-31T02:15:00Z"),
            ("week", "2026-02-20T00:00:00Z", "2026-04-20T00:00:00Z"),
            ("month", "2026-01-15T00:00:00Z", "2026-11-20T00:00:00Z"),
        ] {
            client
                .batch_execute(&format!("SET TimeZone = '{tz}'"))
                .await
                .expect("zone");
            let row = client
                .query_one(
                    "WITH starts AS (
                         SELECT row_number() OVER (ORDER BY s)::integer AS slot, s
                         FROM generate_series(date_trunc($3, $1::timestamptz), $2::timestamptz - interval '1 microsecond',
                                              ('1 ' || $3)::interval) AS s
                     ),
                     b AS (SELECT array_agg(greatest(s, $1::timestamptz) ORDER BY slot) || $2::timestamptz AS bounds
                           FROM starts),
                     together AS (SELECT t.* FROM b, activity_tiles(b.bounds, pieces => true, every_type => true) AS t),
                     alone AS (
                         SELECT i AS slot, t.grain, t.tile_from, t.tile_to
                         FROM b, generate_series(1, cardinality(b.bounds) - 1) AS i,
                              activity_tiles(ARRAY[b.bounds[i], b.bounds[i + 1]], pieces => true, every_type => true) AS t
                     )
                     SELECT (SELECT count(DISTINCT slot) FROM alone),
                            (SELECT count(*) FROM ((SELECT * FROM together EXCEPT ALL SELECT * FROM alone)
                                                   UNION ALL
                                                   (SELECT * FROM alone EXCEPT ALL SELECT * FROM together)) AS d)",
                    &[&utc(from), &utc(to), &interval],
                )
                .await
                .expect("series tiles");
            let (slots, differ): (i64, i64) = (row.get(0), row.get(1));
            assert!(slots >= 3, "{tz} {interval}: {slots} slots");
            assert_eq!(differ, 0, "{tz} {interval}: series tiles differ");
        }
    }
    check_every_number(&w).await;

    // Today, as it goes on: events in the hours up to now; the compactor
    // sums the hours of today that are over (hour rows), not the current
    // one, nor the day. check_every_number also asks for today's hours.
    let now = Utc::now();
    let mut recent = Vec::new();
    for k in 0..40 {
        let at = now - TimeDelta::minutes(7 * k);
        let event: ActivityEvent = NewEvent::new(TYPES[(k as usize) % TYPES.len()])
            .created_at(at)
            .community(w.communities[(k as usize) % 2])
            .user(w.users[(k as usize) % 5])
            .validate(Utc::now())
            .expect("valid recent event");
        w.events.push(Ev {
            community: Some(w.communities[(k as usize) % 2]),
            user: Some(w.users[(k as usize) % 5]),
            event_type: TYPES[(k as usize) % TYPES.len()].to_owned(),
            entity: None,
            at: event.created_at(),
        });
        recent.push(event);
    }
    store.insert_batch(&recent).await.expect("recent events");
    store.compact_rollups(Utc::now()).await.expect("compact");
    // Mar 29 compacted again: its week rewritten, with the late events.
    assert_eq!(tiles(late_week.0, late_week.1).await, [10080]);
    assert_eq!(w.db.count(weeks_off).await, 0, "week rows = their days");
    let hour = |at: DateTime<Utc>| at.duration_trunc(TimeDelta::hours(1)).expect("hour");
    let current = hour(Utc::now());
    let marked = |at: DateTime<Utc>| {
        format!(
            "SELECT count(*) FROM rollup_dirty_hours WHERE hour = '{}'",
            at.to_rfc3339()
        )
    };
    assert_eq!(
        w.db.count(&marked(current)).await,
        1,
        "the current hour is dirty"
    );
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .expect("today");
    if current > today {
        assert_eq!(
            w.db.count(&format!(
                "SELECT count(*) FROM rollup_dirty_hours WHERE hour >= '{}' AND hour < '{}'",
                today.to_rfc3339(),
                current.to_rfc3339()
            ))
            .await,
            0,
            "today's hours that are over are compacted"
        );
        assert!(
            w.db.count(&format!(
                "SELECT count(*) FROM rollup_events WHERE grain = 60 AND bucket = '{}'",
                (current - TimeDelta::hours(1)).to_rfc3339()
            ))
            .await
                > 0,
            "the hour before has hour rows"
        );
    }
    check_every_number(&w).await;
}

/// Every number of the overview, community and events endpoints, over ranges
/// and zones that cross DST changes, against the raw events.
async fn check_every_number(w: &World) {
    let admin = w.admin();
    let a_and_b = [w.communities[0], w.communities[1]];
    let community_admin = w.token(Role::CommunityAdmin, "ca", &a_and_b);
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .expect("today")
        .to_rfc3339();
    let yesterday = (Utc::now() - TimeDelta::days(1))
        .duration_trunc(TimeDelta::days(1))
        .expect("yesterday")
        .to_rfc3339();
    let tomorrow = (Utc::now() + TimeDelta::days(1))
        .duration_trunc(TimeDelta::days(1))
        .expect("tomorrow")
        .to_rfc3339();
    let cases = [
        (yesterday.as_str(), tomorrow.as_str(), "hour"),
        (today.as_str(), tomorrow.as_str(), "day"),
        ("2026-03-01T00:00:00Z", "2026-04-05T00:00:00Z", "day"),
        ("2026-03-01T00:00:00Z", "2026-04-05T00:00:00Z", "week"),
        ("2026-03-01T00:00:00Z", "2026-11-05T00:00:00Z", "month"),
        ("2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z", "hour"),
        ("2026-10-24T00:00:00Z", "2026-11-03T00:00:00Z", "day"),
        ("2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z", "hour"),
        ("2026-03-07T06:15:00Z", "2026-03-09T20:45:00Z", "hour"),
        ("2026-03-28T13:30:00Z", "2026-10-26T07:45:00Z", "week"),
        // Lord Howe Island's clocks go back 30 minutes at 15:00 UTC on Apr 4.
        ("2026-04-04T10:15:00Z", "2026-04-05T00:00:00Z", "hour"),
        // Clocks that change at midnight: Havana skips Mar 8's (then every
        // later day must still begin at 00:00) and has Nov 1's twice;
        // Santiago goes back from Apr 5's midnight to 23:00.
        ("2026-03-06T00:00:00Z", "2026-03-12T00:00:00Z", "day"),
        ("2026-04-02T00:00:00Z", "2026-04-08T00:00:00Z", "day"),
    ];
    let zones = [
        Tz::UTC,
        Tz::America__New_York,
        Tz::Europe__Berlin,
        Tz::Asia__Kolkata,
        Tz::Asia__Kathmandu,
        Tz::Australia__Lord_Howe,
        Tz::America__Havana,
        Tz::America__Santiago,
    ];
    for (from, to, interval) in cases {
        let (from, to) = (utc(from), utc(to));
        for tz in zones {
            let q = query(from, to, interval, tz);
            for (token, scope) in [(&admin, None), (&community_admin, Some(&a_and_b[..]))] {
                let body = w
                    .ok(token, &format!("/api/v1/analytics/overview?{q}&limit=3"))
                    .await;
                let expected = Expected::new(&w.events, from, to, scope, None);
                let what = format!("overview {q} scope {scope:?}");
                assert_eq!(
                    body["total_events"].as_i64(),
                    Some(expected.total()),
                    "{what}"
                );
                assert_eq!(
                    body["unique_users"].as_i64(),
                    Some(expected.unique_users()),
                    "{what}"
                );
                assert_eq!(series_of(&body), expected.series(interval, tz), "{what}");
                assert_eq!(by_type_of(&body), expected.by_type(), "{what}");
                let top: Vec<(Uuid, i64)> = body["top_communities"]
                    .as_array()
                    .expect("top_communities")
                    .iter()
                    .map(|c| {
                        (
                            c["community_id"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or_default(),
                            c["events"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect();
                assert_eq!(top, expected.top(|e| e.community, 3), "{what}");
                for (key, hours) in [("dau", 24), ("wau", 168), ("mau", 720)] {
                    let window =
                        Expected::new(&w.events, to - TimeDelta::hours(hours), to, scope, None);
                    assert_eq!(
                        body["active_users"][key].as_i64(),
                        Some(window.unique_users()),
                        "{what} {key}"
                    );
                }
            }
            let community = w.communities[0];
            let body = w
                .ok(
                    &community_admin,
                    &format!("/api/v1/analytics/community/{community}?{q}&limit=5"),
                )
                .await;
            let expected = Expected::new(&w.events, from, to, Some(&[community]), None);
            assert_eq!(body["total_events"].as_i64(), Some(expected.total()));
            assert_eq!(
                series_of(&body),
                expected.series(interval, tz),
                "community {q}"
            );
            let top_users: Vec<(Uuid, i64)> = body["top_users"]
                .as_array()
                .expect("top_users")
                .iter()
                .map(|u| {
                    (
                        u["user_id"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_default(),
                        u["events"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            assert_eq!(top_users, expected.top(|e| e.user, 5), "top users {q}");
            let top_entities: Vec<((String, String), i64)> = body["top_entities"]
                .as_array()
                .expect("top_entities")
                .iter()
                .map(|x| {
                    (
                        (
                            x["entity_type"].as_str().unwrap_or_default().to_owned(),
                            x["entity_id"].as_str().unwrap_or_default().to_owned(),
                        ),
                        x["events"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            assert_eq!(
                top_entities,
                expected.top(|e| e.entity.clone(), 5),
                "top entities {q}"
            );

            let b = w.communities[1];
            let body = w
                .ok(
                    &community_admin,
                    &format!("/api/v1/analytics/events?{q}&event_type=user.login&community_id={b}"),
                )
                .await;
            let expected = Expected::new(&w.events, from, to, Some(&[b]), Some("user.login"));
            assert_eq!(
                body["total_events"].as_i64(),
                Some(expected.total()),
                "events {q}"
            );
            assert_eq!(
                body["unique_users"].as_i64(),
                Some(expected.unique_users()),
                "events {q}"
            );
            assert_eq!(
                series_of(&body),
                expected.series(interval, tz),
                "events {q}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_have_their_real_length_across_dst_and_half_hour_zones() {
    let w = world(11, 600).await;
    let admin = w.admin();
    let days = |body: &Value| -> Vec<String> {
        body["time_series"]
            .as_array()
            .expect("series")
            .iter()
            .filter_map(|p| p["start"].as_str().map(str::to_owned))
            .collect()
    };
    // Spring forward in New York: the 8th has 23 hours, and each day is there once.
    let q = query(
        utc("2026-03-07T05:00:00Z"),
        utc("2026-03-10T04:00:00Z"),
        "day",
        Tz::America__New_York,
    );
    let body = w
        .ok(&admin, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(
        days(&body),
        [
            "2026-03-07T00:00:00-05:00",
            "2026-03-08T00:00:00-05:00",
            "2026-03-09T00:00:00-04:00"
        ]
    );
    // Fall back in Berlin: the 25th has 25 hours, and is one day.
    let q = query(
        utc("2026-10-23T22:00:00Z"),
        utc("2026-10-26T23:00:00Z"),
        "day",
        Tz::Europe__Berlin,
    );
    let body = w
        .ok(&admin, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(
        days(&body),
        [
            "2026-10-24T00:00:00+02:00",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00"
        ]
    );
    // The repeated hour in New York is two hours, not one.
    let q = query(
        utc("2026-11-01T04:00:00Z"),
        utc("2026-11-01T08:00:00Z"),
        "hour",
        Tz::America__New_York,
    );
    let body = w
        .ok(&admin, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(
        days(&body),
        [
            "2026-11-01T00:00:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
    // Lord Howe Island moves its clocks by 30 minutes: its 01:00 lasts 90
    // minutes on both days, and every hour starts on the clock's whole hour.
    for (from, to, starts) in [
        (
            "2026-10-03T14:30:00Z",
            "2026-10-03T18:00:00Z",
            &[
                "2026-10-04T01:00:00+10:30",
                "2026-10-04T03:00:00+11:00",
                "2026-10-04T04:00:00+11:00",
            ][..],
        ),
        (
            "2026-10-03T16:15:00Z",
            "2026-10-03T17:00:00Z",
            &["2026-10-04T03:00:00+11:00"][..],
        ),
        (
            "2026-04-04T13:00:00Z",
            "2026-04-04T16:30:00Z",
            &[
                "2026-04-05T00:00:00+11:00",
                "2026-04-05T01:00:00+11:00",
                "2026-04-05T02:00:00+10:30",
            ][..],
        ),
    ] {
        let q = query(utc(from), utc(to), "hour", Tz::Australia__Lord_Howe);
        let body = w
            .ok(&admin, &format!("/api/v1/analytics/overview?{q}"))
            .await;
        assert_eq!(days(&body), starts, "{q}");
    }
    // Kolkata's days start at 18:30 UTC.
    let q = query(
        utc("2026-03-01T18:30:00Z"),
        utc("2026-03-03T18:30:00Z"),
        "day",
        Tz::Asia__Kolkata,
    );
    let body = w
        .ok(&admin, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(
        days(&body),
        ["2026-03-02T00:00:00+05:30", "2026-03-03T00:00:00+05:30"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_rollups_equal_the_ones_kept_while_storing() {
    let w = world(13, 1_500).await;
    let client = w.db.client().await;
    let snapshot = || async {
        let mut rows = Vec::new();
        for sql in [
            "SELECT community_id::text, grain || ' ' || bucket::text, event_type, events::text || ' ' || coalesce(users::text, '-') FROM rollup_events ORDER BY 1, 2, 3",
            "SELECT community_id::text, bucket::text, user_id::text || event_type, events::text FROM rollup_users ORDER BY 1, 2, 3",
            "SELECT community_id::text, bucket::text, entity_type || '/' || entity_id, events::text FROM rollup_entities ORDER BY 1, 2, 3",
            "SELECT community_id::text, day::text, user_id::text, events::text FROM rollup_user_days ORDER BY 1, 2, 3",
            "SELECT community_id::text, day::text, entity_type || '/' || entity_id, events::text FROM rollup_entity_days ORDER BY 1, 2, 3",
            "SELECT community_id::text, grain || ' ' || bucket::text, 'rank', events::text FROM rollup_community_ranks ORDER BY 1, 2",
            "SELECT community_id::text, week::text, 'week ' || user_id::text, events::text FROM rollup_user_weeks ORDER BY 1, 2, 3",
            "SELECT community_id::text, week::text, 'week ' || entity_type || '/' || entity_id, events::text FROM rollup_entity_weeks ORDER BY 1, 2, 3",
            "SELECT day::text, '', '', '' FROM rollup_dirty_days ORDER BY 1",
            "SELECT day::text, 'cuts', cuts::text, '' FROM rollup_day_cuts ORDER BY 1",
        ] {
            for row in client.query(sql, &[]).await.expect(sql) {
                rows.push((0..4).map(|i| row.get::<_, String>(i)).collect::<Vec<_>>().join(" "));
            }
        }
        rows
    };
    let store = Store::connect(&w.db.url, 1).expect("store");
    store.compact_rollups(Utc::now()).await.expect("compact");
    let kept = snapshot().await;
    assert!(kept.len() > 1_000, "rollups were kept while storing");
    assert!(
        kept.iter().any(|row| row.contains(" 1440 ")),
        "compacted days are in the snapshot"
    );
    assert!(
        kept.iter().any(|row| row.contains(" -330 ")),
        "tails at Kolkata's midnight are in the snapshot"
    );
    assert!(
        kept.iter().any(|row| row.contains(" 10080 ")),
        "week rows are in the snapshot"
    );
    assert!(
        kept.iter().any(|row| row.contains(" cuts {")),
        "each day's cuts are in the snapshot"
    );
    assert!(
        kept.iter().any(|row| row.contains(" rank ")),
        "community ranks are in the snapshot"
    );
    assert!(
        kept.iter().any(|row| row.contains(" week ")),
        "user weeks are in the snapshot"
    );
    client
        .batch_execute(
            "UPDATE rollup_events SET events = events + 5;
             UPDATE rollup_user_days SET events = events + 5;
             DELETE FROM rollup_community_ranks WHERE grain = 360;
             UPDATE rollup_community_ranks SET events = 1 WHERE grain = 10080;
             UPDATE rollup_user_weeks SET events = events * 2;
             DELETE FROM rollup_entity_weeks WHERE events = 1;
             DELETE FROM rollup_entity_days WHERE events = 1;
             UPDATE rollup_day_cuts SET cuts = '{}'",
        )
        .await
        .expect("damage");
    let (from, to) = (utc("2026-01-01T00:00:00Z"), utc("2026-12-01T00:00:00Z"));
    let rebuilt = store.rebuild_rollups(from, to).await.expect("rebuild");
    assert_eq!(rebuilt.events, w.events.len() as i64);
    let rebuilt_rows = snapshot().await;
    let differ = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter()
            .filter(|row| !b.contains(row))
            .take(5)
            .cloned()
            .collect()
    };
    assert_eq!(
        rebuilt_rows,
        kept,
        "rebuilt from raw rows: only rebuilt {:?}, only kept {:?}",
        differ(&rebuilt_rows, &kept),
        differ(&kept, &rebuilt_rows)
    );
    store
        .rebuild_rollups(from, to)
        .await
        .expect("rebuild again");
    assert_eq!(snapshot().await, kept, "idempotent");
}

/// A rebuild commits week by week: while one week's rebuild waits (here
/// for that week's compaction lock, held by another session), the weeks
/// before it are rebuilt and visible, and the week itself is untouched, so
/// consumers wait for one week's rebuild rather than the whole range's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_commits_week_by_week() {
    let w = world(19, 600).await;
    let store = Store::connect(&w.db.url, 1).expect("store");
    store.compact_rollups(Utc::now()).await.expect("compact");
    let client = w.db.client().await;
    let (first, second) = (utc("2026-03-09T00:00:00Z"), utc("2026-03-16T00:00:00Z"));
    let week_total = |week: DateTime<Utc>| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT coalesce(sum(events), 0)::bigint FROM rollup_events
                     WHERE grain = 1440 AND bucket >= $1 AND bucket < $1 + interval '168 hours'",
                    &[&week],
                )
                .await
                .expect("week total")
                .get::<_, i64>(0)
        }
    };
    let (right_first, right_second) = (week_total(first).await, week_total(second).await);
    assert!(
        right_first > 0 && right_second > 0,
        "both weeks hold events"
    );
    client
        .execute(
            "UPDATE rollup_events SET events = events + 1000
             WHERE grain = 1440 AND bucket >= $1 AND bucket < $1 + interval '336 hours'",
            &[&first],
        )
        .await
        .expect("damage");
    let damaged_second = week_total(second).await;
    assert_ne!(damaged_second, right_second);

    // Another session holds the second week's compaction lock
    // (WEEK_LOCK_NAMESPACE in consumer/src/store/rollups.rs).
    let mut holder = w.db.client().await;
    let hold = holder.transaction().await.expect("transaction");
    hold.execute(
        "SELECT pg_advisory_xact_lock(1633907832, floor(extract(epoch FROM $1::timestamptz) / 604800)::integer)",
        &[&second],
    )
    .await
    .expect("week lock");
    let rebuild = tokio::spawn(async move {
        store
            .rebuild_rollups(first, second + TimeDelta::days(7))
            .await
    });
    let started = Instant::now();
    while week_total(first).await != right_first {
        assert!(
            started.elapsed() < Duration::from_secs(60) && !rebuild.is_finished(),
            "the first week is rebuilt and committed before the second"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        week_total(second).await,
        damaged_second,
        "the second week waits, untouched"
    );
    assert!(!rebuild.is_finished());
    hold.rollback().await.expect("release the week");
    rebuild.await.expect("task").expect("rebuild");
    assert_eq!(week_total(second).await, right_second);
    assert_eq!(week_total(first).await, right_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_crosses_its_tenant() {
    let w = world(17, 800).await;
    let (a, b) = (w.communities[0], w.communities[1]);
    let only_a = w.token(Role::CommunityAdmin, "ca", &[a]);
    let q = "from=2026-03-01T00:00:00Z&to=2026-11-05T00:00:00Z&interval=month";
    for path in [
        format!("/api/v1/analytics/community/{b}?{q}"),
        format!("/api/v1/analytics/events?{q}&community_id={b}"),
    ] {
        let (status, body) = w.get(&only_a, &path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let body = w
        .ok(
            &only_a,
            &format!("/api/v1/analytics/overview?{q}&limit=100"),
        )
        .await;
    let expected = Expected::new(
        &w.events,
        utc("2026-03-01T00:00:00Z"),
        utc("2026-11-05T00:00:00Z"),
        Some(&[a]),
        None,
    );
    assert_eq!(body["total_events"].as_i64(), Some(expected.total()));
    let tops: Vec<&str> = body["top_communities"]
        .as_array()
        .expect("tops")
        .iter()
        .filter_map(|c| c["community_id"].as_str())
        .collect();
    assert_eq!(tops, [a.to_string()]);

    // A user's timeline, for a community admin: only the rows inside its communities.
    let user = w.users[0];
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = w
            .ok(
                &only_a,
                &format!("/api/v1/analytics/user/{user}?{q}&limit=7{cursor}"),
            )
            .await;
        for item in body["timeline"]["items"].as_array().expect("items") {
            assert_eq!(
                item["community_id"].as_str(),
                Some(a.to_string().as_str()),
                "{item}"
            );
            seen.push(item["created_at"].as_str().unwrap_or_default().to_owned());
        }
        match body["timeline"]["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mine: Vec<&Ev> = w
        .events
        .iter()
        .filter(|e| e.user == Some(user) && e.community == Some(a))
        .collect();
    assert_eq!(seen.len(), mine.len(), "every page, no row twice");
    let times: Vec<DateTime<Utc>> = seen.iter().map(|t| utc(t)).collect();
    assert!(times.windows(2).all(|p| p[0] >= p[1]), "newest first");

    // A user reads only itself.
    let me = w.token(Role::User, &user.to_string(), &[]);
    let body = w
        .ok(&me, &format!("/api/v1/analytics/user/{user}?{q}"))
        .await;
    let all_mine = w.events.iter().filter(|e| e.user == Some(user)).count() as i64;
    assert_eq!(body["total_events"].as_i64(), Some(all_mine));
    for path in [
        format!("/api/v1/analytics/user/{}?{q}", w.users[1]),
        format!("/api/v1/analytics/overview?{q}"),
        format!("/api/v1/analytics/community/{a}?{q}"),
        format!("/api/v1/analytics/events?{q}"),
    ] {
        assert_eq!(w.get(&me, &path).await.0, 403, "{path}");
    }

    // Tokens that prove nothing.
    let expired = w
        .keys
        .mint(&Claims {
            sub: "admin".into(),
            exp: (Utc::now() - TimeDelta::minutes(5)).timestamp() as f64,
            role: Role::Admin,
            communities: None,
            nbf: None,
        })
        .expect("mint");
    let wrong_key = Keys::new(b"another-secret-another-secret-xx").mint(&Claims {
        sub: "admin".into(),
        exp: (Utc::now() + TimeDelta::hours(1)).timestamp() as f64,
        role: Role::Admin,
        communities: None,
        nbf: None,
    });
    let admin = w.admin();
    let parts: Vec<&str> = admin.split('.').collect();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    let alg_none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let reserved = w.token(Role::CommunityAdmin, "ca", &[a, Uuid::nil()]);
    let not_yet = {
        #[derive(serde::Serialize)]
        struct Early {
            sub: &'static str,
            exp: i64,
            nbf: i64,
            role: &'static str,
        }
        let claims = Early {
            sub: "admin",
            exp: (Utc::now() + TimeDelta::hours(2)).timestamp(),
            nbf: (Utc::now() + TimeDelta::hours(1)).timestamp(),
            role: "admin",
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("mint")
    };
    // Signed tokens whose `nbf` is in the future but not a whole number
    // that fits 64 bits (which `jsonwebtoken` alone takes as absent), or is
    // not a number; and one naming a critical header extension.
    let signed = |header: &str, claims: Value| {
        let head = base64_url(header.as_bytes());
        let body = base64_url(claims.to_string().as_bytes());
        let input = format!("{head}.{body}");
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
            jsonwebtoken::Algorithm::HS256,
        )
        .expect("sign");
        format!("{input}.{signature}")
    };
    let exp = (Utc::now() + TimeDelta::hours(2)).timestamp();
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let early: Vec<String> = [
        json!(1e30),
        serde_json::from_str(&format!("{}.5", exp - 600)).expect("a fraction"),
        json!(exp.to_string()),
    ]
    .into_iter()
    .map(|nbf| {
        signed(
            hs256,
            json!({"sub": "admin", "role": "admin", "exp": exp, "nbf": nbf}),
        )
    })
    .collect();
    let critical = signed(
        r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
        json!({"sub": "admin", "role": "admin", "exp": exp}),
    );
    // A community_admin token without its communities claim, and a
    // fractional `exp` a moment ago (rounded, it could pass).
    let no_communities = signed(
        hs256,
        json!({"sub": "ca", "role": "community_admin", "exp": exp}),
    );
    let no_exp = signed(hs256, json!({"sub": "admin", "role": "admin"}));
    let just_expired = signed(
        hs256,
        json!({"sub": "admin", "role": "admin", "exp": Utc::now().timestamp() as f64 - 0.4}),
    );
    // A fractional `exp` in the future is a NumericDate (`time.time() + 600`).
    let fractional = signed(
        hs256,
        json!({"sub": "admin", "role": "admin", "exp": exp as f64 + 0.25}),
    );
    let (status, body) = w
        .get(&fractional, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(status, 200, "a fractional exp: {body}");
    // The same forms, valid: a past fractional `nbf` is a NumericDate too.
    let past = signed(
        hs256,
        json!({"sub": "admin", "role": "admin", "exp": exp, "nbf": serde_json::from_str::<Value>(&format!("{}.5", exp - 86_400)).expect("a fraction")}),
    );
    let (status, body) = w
        .get(&past, &format!("/api/v1/analytics/overview?{q}"))
        .await;
    assert_eq!(status, 200, "a past fractional nbf: {body}");
    for token in early.into_iter().chain([
        no_communities,
        no_exp,
        just_expired,
        critical,
        reserved,
        not_yet,
        expired,
        wrong_key.expect("mint"),
        unsigned,
        alg_none,
        "garbage".into(),
        String::new(),
    ]) {
        let (status, body) = w
            .get(&token, &format!("/api/v1/analytics/overview?{q}"))
            .await;
        assert_eq!(status, 401, "{token}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let status = w
        .http
        .get(format!("{}/api/v1/analytics/overview", w.base))
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status.as_u16(), 401);
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_alone_keeps_tenants_apart() {
    let w = world(19, 500).await;
    let (a, b) = (w.communities[0], w.communities[1]);
    // Compacted, so that day rows exist too.
    let store = Store::connect(&w.db.url, 1).expect("store");
    assert!(store.compact_rollups(Utc::now()).await.expect("compact") > 0);
    // The API's own check bypassed: a scoped transaction for A asks for B
    // directly. Its scope also names the id of the every-community rollup
    // rows, which stay out of reach all the same.
    let all = Uuid::max();
    let caller = Caller {
        role: Role::CommunityAdmin,
        subject: "ca".into(),
        communities: Arc::new([a, all, Uuid::nil()].into_iter().collect()),
    };
    let pool = activity_core::database::pool(&w.db.url, 1).expect("pool");
    let mut client = pool.get().await.expect("connection");
    let tx = activity_analytics_api::db::scoped(&mut client, &caller, "UTC")
        .await
        .expect("scoped");
    for sql in [
        "SELECT count(*) FROM activities WHERE community_id = $1",
        "SELECT count(*) FROM rollup_events WHERE community_id = $1",
        "SELECT count(*) FROM rollup_users WHERE community_id = $1",
        "SELECT count(*) FROM rollup_entities WHERE community_id = $1",
        "SELECT count(*) FROM rollup_user_days WHERE community_id = $1",
        "SELECT count(*) FROM rollup_entity_days WHERE community_id = $1",
        "SELECT count(*) FROM communities WHERE id = $1",
    ] {
        let n: i64 = tx.query_one(sql, &[&b]).await.expect(sql).get(0);
        assert_eq!(n, 0, "{sql}");
        let n: i64 = tx.query_one(sql, &[&a]).await.expect(sql).get(0);
        assert!(n > 0, "A's own rows are readable: {sql}");
    }
    let everything: i64 = tx
        .query_one(
            "SELECT count(*) FROM rollup_events WHERE community_id = activity_all_communities()",
            &[],
        )
        .await
        .expect("sketches")
        .get(0);
    assert_eq!(
        everything, 0,
        "the every-community rollups are for admins only"
    );
    // Nor the rows of events without a community (the nil UUID's rollups).
    for sql in [
        "SELECT count(*) FROM rollup_events WHERE community_id = '00000000-0000-0000-0000-000000000000'",
        "SELECT count(*) FROM activities WHERE community_id IS NULL",
    ] {
        let n: i64 = tx.query_one(sql, &[]).await.expect(sql).get(0);
        assert_eq!(n, 0, "{sql}");
    }
    assert!(
        w.db.count("SELECT count(*) FROM activities WHERE community_id IS NULL")
            .await
            > 0,
        "the world has events without a community"
    );
    let others: i64 = tx
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("users")
        .get(0);
    assert_eq!(others, 0, "no user rows (emails) for a community admin");
    // Each policy reads the caller's scope once per query (a scalar
    // subquery, an InitPlan), never once per row: parsing a long
    // communities list for every row took a 1,000-community token's
    // community report past the statement timeout.
    let policies =
        w.db.client()
            .await
            .query(
                "SELECT tablename::text, qual FROM pg_policies WHERE 'activity_api' = ANY (roles)",
                &[],
            )
            .await
            .expect("policies");
    assert!(policies.len() >= 10, "the API's policies are there");
    for row in &policies {
        let (table, qual): (String, String) = (row.get(0), row.get(1));
        assert_eq!(
            qual.matches("activity_scope_").count(),
            2 * qual.matches("SELECT activity_scope_").count(),
            "{table}: every scope call is a subquery: {qual}"
        );
    }
    // A's rows are still exactly A's under a scope of a thousand communities.
    let wide = Caller {
        role: Role::CommunityAdmin,
        subject: "ca".into(),
        communities: Arc::new(
            std::iter::once(a)
                .chain((0..999).map(|_| Uuid::new_v4()))
                .collect(),
        ),
    };
    let expected: i64 =
        w.db.count(&format!(
            "SELECT count(*) FROM activities WHERE community_id = '{a}'"
        ))
        .await;
    tx.commit().await.expect("commit");
    let tx = activity_analytics_api::db::scoped(&mut client, &wide, "UTC")
        .await
        .expect("scoped");
    for (community, want) in [(a, expected), (b, 0)] {
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM activities WHERE community_id = $1",
                &[&community],
            )
            .await
            .expect("wide scope")
            .get(0);
        assert_eq!(n, want, "{community} under a 1,000-community scope");
    }
    tx.commit().await.expect("commit");
    let tx = activity_analytics_api::db::scoped(&mut client, &caller, "UTC")
        .await
        .expect("scoped");
    // A partition read by name, where no policy applies, is refused.
    let error = tx
        .query_one("SELECT count(*) FROM activities_p2026_03", &[])
        .await
        .expect_err("partition by name");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

/// A connection that never finishes its request's headers (or never sends
/// one) is closed: unclosed, 20,000 of them used up the API's file
/// descriptors until `/healthz` went unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_whole_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new().await;
    let (base, shutdown) = serve_api(&db.url, 1).await;
    let address = base.trim_start_matches("http://").to_owned();
    let mut half = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    half.write_all(b"GET /api/v1/analytics/overview HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    let mut silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let mut kept = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("a whole request");
    let mut buffer = [0u8; 4096];
    let n = kept.read(&mut buffer).await.expect("an answer");
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buffer[..n])
    );
    // Each is closed (EOF) once the header timeout has passed; the bound
    // here only keeps a failing test from hanging.
    let wait = activity_core::http::HEADER_READ_TIMEOUT * 3;
    for (name, stream) in [
        ("half a request", &mut half),
        ("nothing sent", &mut silent),
        ("idle after a response", &mut kept),
    ] {
        let read = tokio::time::timeout(wait, stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{name}: still open after {wait:?}"));
        assert!(matches!(read, Ok(0) | Err(_)), "{name}: {read:?}");
    }
    // And the server answers as before.
    let answer = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(answer.status(), 200);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_never_500() {
    let w = world(23, 50).await;
    let admin = w.admin();
    let user = w.users[0];
    for path in [
        "/api/v1/analytics/overview?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z".to_owned(),
        "/api/v1/analytics/overview?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
        "/api/v1/analytics/overview?interval=fortnight".to_owned(),
        "/api/v1/analytics/overview?tz=Not/AZone".to_owned(),
        "/api/v1/analytics/overview?tz=UTC';DROP%20TABLE%20activities;--".to_owned(),
        "/api/v1/analytics/overview?from=1%27%20OR%201=1".to_owned(),
        "/api/v1/analytics/overview?limit=1000000".to_owned(),
        "/api/v1/analytics/overview?limit=-3".to_owned(),
        "/api/v1/analytics/community/not-a-uuid".to_owned(),
        "/api/v1/analytics/community/1%27%20OR%20%271%27=%271".to_owned(),
        "/api/v1/analytics/user/42".to_owned(),
        format!("/api/v1/analytics/user/{user}?cursor=abc"),
        "/api/v1/analytics/events?event_type=Robert');DROP".to_owned(),
        "/api/v1/analytics/events?community_id=everyone".to_owned(),
        "/api/v1/analytics/overview?interval=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z".to_owned(),
        "/api/v1/analytics/overview?to=2999-01-01T00:00:00Z".to_owned(),
        // The reserved ids: no community, and every community together.
        "/api/v1/analytics/community/00000000-0000-0000-0000-000000000000".to_owned(),
        "/api/v1/analytics/events?community_id=ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned(),
        "/api/v1/analytics/overview?community_id=00000000-0000-0000-0000-000000000000".to_owned(),
        "/api/v1/analytics/user/ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned(),
        // A parameter the endpoint does not take is refused, whatever its value.
        "/api/v1/analytics/events?limit=abc".to_owned(),
        "/api/v1/analytics/events?limit=5".to_owned(),
        "/api/v1/analytics/overview?event_type=user.login".to_owned(),
        "/api/v1/analytics/overview?cursor=1.2".to_owned(),
        format!("/api/v1/analytics/community/{}?community_id={}", Uuid::new_v4(), Uuid::new_v4()),
        format!("/api/v1/analytics/user/{user}?event_type=user.login"),
    ] {
        let (status, body) = w.get(&admin, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}");
    }
    // The tables are still there.
    assert_eq!(w.db.count("SELECT count(*) FROM activities").await, 50);
    let (status, _) = w
        .get(
            &admin,
            &format!("/api/v1/analytics/community/{}", Uuid::new_v4()),
        )
        .await;
    assert_eq!(status, 404);
    // Unknown paths and methods: the error body too.
    for (method, path, status) in [
        (reqwest::Method::GET, "/api/v1/analytics/overview/", 404),
        (reqwest::Method::GET, "/api/v1/nothing", 404),
        (reqwest::Method::POST, "/api/v1/analytics/overview", 405),
        (reqwest::Method::DELETE, "/api/v1/analytics/events", 405),
    ] {
        let response = w
            .http
            .request(method.clone(), format!("{}{path}", w.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let body: Value = response.json().await.expect("an error body");
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    }
    // Each endpoint documents the query parameters it takes, and only those.
    let spec = w.ok(&admin, "/api/v1/openapi.json").await;
    for (path, takes) in [
        (
            "overview",
            &["from", "to", "interval", "tz", "limit", "community_id"][..],
        ),
        (
            "community/{id}",
            &["from", "to", "interval", "tz", "limit"][..],
        ),
        (
            "user/{id}",
            &[
                "from",
                "to",
                "interval",
                "tz",
                "limit",
                "cursor",
                "community_id",
            ][..],
        ),
        (
            "events",
            &["from", "to", "interval", "tz", "event_type", "community_id"][..],
        ),
    ] {
        let operation = &spec["paths"][format!("/api/v1/analytics/{path}")]["get"];
        let mut names: Vec<&str> = operation["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        names.sort_unstable();
        let mut takes = takes.to_vec();
        takes.sort_unstable();
        assert_eq!(names, takes, "{path}");
        // And what a valid value is, so that a client generated from the
        // document (or a schema-driven fuzzer) sends valid requests.
        for parameter in operation["parameters"].as_array().expect("parameters") {
            let schema = &parameter["schema"];
            let name = parameter["name"].as_str().unwrap_or_default();
            match name {
                "from" | "to" => assert_eq!(schema["format"], "date-time", "{path} {name}"),
                "community_id" | "id" => assert_eq!(schema["format"], "uuid", "{path} {name}"),
                "limit" => {
                    assert_eq!(schema["minimum"], 1, "{path} {name}");
                    assert_eq!(schema["maximum"], 100, "{path} {name}");
                }
                "interval" => assert_eq!(
                    schema["enum"],
                    json!(["hour", "day", "week", "month"]),
                    "{path} {name}: {schema}"
                ),
                "event_type" => assert_eq!(schema["maxLength"], 64, "{path} {name}"),
                _ => {}
            }
        }
    }
    // /metrics counts the requests by route template and status (never by
    // the ids in the path), with a latency histogram. Other tests of this
    // process share the recorder, so only lower bounds hold.
    let metrics = metrics_text(&w.base).await;
    let count = |route: &str, status: u16| {
        sample(
            &metrics,
            &format!("api_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert!(
        count("/api/v1/analytics/community/{id}", 400) >= 2.0,
        "{metrics}"
    );
    assert!(
        count("/api/v1/analytics/community/{id}", 404) >= 1.0,
        "{metrics}"
    );
    assert!(count("/api/v1/openapi.json", 200) >= 1.0, "{metrics}");
    assert!(
        metrics.contains("api_request_duration_seconds_bucket{route=\"/api/v1/analytics/events\",status=\"400\",le=\"0.005\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(&user.to_string()), "no id as a label");
    // Each database query is timed by name.
    assert!(
        metrics.contains("db_query_duration_seconds_count{query=\"community\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sketched_unique_users_stay_close_to_exact_at_scale() {
    // 20,000 distinct users (beyond the ~1,000 a sketch keeps exactly), two
    // events each, in one community over one day.
    let db = TestDb::new().await;
    let community = Uuid::new_v4();
    let start = utc("2026-06-10T00:00:00Z");
    let now = Utc::now();
    let mut rng = StdRng::seed_from_u64(29);
    let users: Vec<Uuid> = (0..20_000).map(|_| Uuid::from_u128(rng.gen())).collect();
    let events: Vec<ActivityEvent> = users
        .iter()
        .chain(users.iter())
        .map(|user| {
            NewEvent::new("user.login")
                .user(*user)
                .community(community)
                .created_at(start + TimeDelta::seconds(rng.gen_range(0..86_400)))
                .validate(now)
                .expect("valid")
        })
        .collect();
    let store = Store::connect(&db.url, 2).expect("store");
    for chunk in events.chunks(1_000) {
        store.insert_batch(chunk).await.expect("insert");
    }
    let (base, shutdown) = serve_api(&db.url, 2).await;
    let token = admin_token();
    let q = "from=2026-06-09T00:00:00Z&to=2026-06-12T00:00:00Z";
    for path in [
        format!("/api/v1/analytics/overview?{q}"),
        format!("/api/v1/analytics/community/{community}?{q}"),
    ] {
        let body: Value = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(
            body["total_events"].as_i64(),
            Some(40_000),
            "counts stay exact"
        );
        let estimate = body["unique_users"].as_i64().expect("unique_users") as f64;
        let error = (estimate - 20_000.0).abs() / 20_000.0;
        eprintln!(
            "{path}: {estimate} unique users for 20000 ({:.2}% off)",
            error * 100.0
        );
        // Standard error 0.81%: 2.5 of them.
        assert!(
            error <= 0.0203,
            "{path}: {estimate} is {:.2}% off",
            error * 100.0
        );
    }
    shutdown.cancel();
    // activity_unique_users() (0011) gives exactly the extension's own
    // hll_cardinality(hll_union_agg(...)), for groups of every size (one
    // sketch, a few, all of them; explicit, sparse and full ones), and NULL
    // over no rows as it does.
    let differ = db
        .count(
            "SELECT count(*) FROM (
                 SELECT activity_unique_users(users) AS ours,
                        hll_cardinality(hll_union_agg(users)) AS theirs
                 FROM rollup_events
                 GROUP BY GROUPING SETS ((community_id, grain, bucket, event_type),
                                         (community_id, grain, date_bin('1 hour', bucket, '2000-01-01')),
                                         (community_id), ())
                 UNION ALL
                 SELECT activity_unique_users(users), hll_cardinality(hll_union_agg(users))
                 FROM rollup_events WHERE false
             ) AS g
             WHERE ours IS DISTINCT FROM theirs",
        )
        .await;
    assert_eq!(
        differ, 0,
        "activity_unique_users() = hll_cardinality(hll_union_agg())"
    );
    let groups = db
        .count("SELECT count(*) FROM rollup_events WHERE grain = 15")
        .await;
    assert!(groups > 90, "{groups} quarter-hour rows compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_writers_loses_nothing() {
    // Writers keep storing events in two past days while a compactor sums
    // those days again and again; afterwards the compacted rollups equal the
    // ones rebuilt from the raw rows.
    let db = TestDb::new().await;
    let store = Store::connect(&db.url, 6).expect("store");
    let days = [utc("2026-02-10T00:00:00Z"), utc("2026-02-11T00:00:00Z")];
    let writing = CancellationToken::new();
    let compactor = {
        let store = store.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut rounds = 0;
            while !writing.is_cancelled() {
                rounds += store.compact_rollups(Utc::now()).await.expect("compact");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rounds
        })
    };
    let writers: Vec<_> = (0..3u64)
        .map(|seed| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut stored = 0;
                for _ in 0..40 {
                    let batch: Vec<ActivityEvent> = (0..50)
                        .map(|_| {
                            let day = days[rng.gen_range(0..days.len())];
                            NewEvent::new(TYPES[rng.gen_range(0..TYPES.len())])
                                .created_at(day + TimeDelta::seconds(rng.gen_range(0..86_400)))
                                .community(Uuid::from_u128(rng.gen_range(1..4)))
                                .user(Uuid::from_u128(rng.gen_range(1..400)))
                                .entity("repository", format!("r{}", rng.gen_range(0..30)))
                                .validate(Utc::now())
                                .expect("valid event")
                        })
                        .collect();
                    stored += store.insert_batch(&batch).await.expect("insert").inserted;
                    tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(0..8))).await;
                }
                stored
            })
        })
        .collect();
    // Meanwhile, in every snapshot, a day that is not marked dirty has day
    // rows that sum its 15-minute rows.
    let checker = {
        let client = db.client().await;
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut checks = 0;
            while !writing.is_cancelled() {
                let stale: Vec<String> = client
                    .query(
                        "SELECT d.day::text FROM (SELECT DISTINCT activity_day(bucket) AS day                                                   FROM rollup_events WHERE grain = 15) AS d                          WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x WHERE x.day = d.day)                            AND (SELECT coalesce(sum(events), 0) FROM rollup_events WHERE grain = 15                                 AND bucket >= d.day AND bucket < d.day + interval '24 hours')                             <> (SELECT coalesce(sum(events), 0) FROM rollup_events WHERE grain = 1440                                 AND bucket = d.day AND event_type = '*')",
                        &[],
                    )
                    .await
                    .expect("check")
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                assert!(stale.is_empty(), "clean but stale days: {stale:?}");
                checks += 1;
            }
            checks
        })
    };
    let mut stored = 0;
    for writer in writers {
        stored += writer.await.expect("writer");
    }
    writing.cancel();
    let rounds = compactor.await.expect("compactor");
    assert!(rounds > 0, "the compactor ran while events were written");
    assert!(checker.await.expect("no clean day was stale") > 0);
    store.compact_rollups(Utc::now()).await.expect("compact");

    let client = db.client().await;
    let snapshot = || async {
        client
            .query(
                "SELECT community_id::text || ' ' || grain || ' ' || bucket::text || ' ' || event_type \
                 || ' ' || events || ' ' || coalesce(users::text, '-') FROM rollup_events \
                 UNION ALL SELECT 'rank ' || community_id::text || ' ' || grain || ' ' || bucket::text \
                 || ' ' || events FROM rollup_community_ranks \
                 UNION ALL SELECT 'week ' || community_id::text || ' ' || week::text || ' ' \
                 || user_id::text || ' ' || events FROM rollup_user_weeks \
                 UNION ALL SELECT 'week ' || community_id::text || ' ' || week::text || ' ' \
                 || entity_type || '/' || entity_id || ' ' || events FROM rollup_entity_weeks ORDER BY 1",
                &[],
            )
            .await
            .expect("rollups")
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let compacted = snapshot().await;
    assert!(
        compacted.iter().any(|row| row.contains(" 1440 ")),
        "the days were compacted"
    );
    assert!(
        compacted.iter().any(|row| row.starts_with("rank ")),
        "and their communities ranked"
    );
    assert!(
        compacted.iter().any(|row| row.contains(" 10080 ")),
        "and their week summed"
    );
    assert!(
        compacted
            .iter()
            .any(|row| row.starts_with("week ") && !row.contains("/r")),
        "and their week's users summed"
    );
    assert!(
        compacted
            .iter()
            .any(|row| row.starts_with("week ") && row.contains("/r")),
        "and their week's entities"
    );
    let rebuilt = store
        .rebuild_rollups(days[0], days[1] + TimeDelta::days(1))
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.events, stored as i64);
    assert_eq!(
        snapshot().await,
        compacted,
        "compacted while written = rebuilt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_one_snapshot_while_events_stream_in() {
    // Writers keep storing events into the range while the overview and a
    // community are read: each response's parts (totals, series, events by
    // type, top communities) must count the same events, i.e. come from one
    // snapshot, not from a moment each.
    let w = world(23, 300).await;
    let store = Store::connect(&w.db.url, 3).expect("store");
    let writing = CancellationToken::new();
    let first = utc("2026-06-01T00:00:00Z");
    let writers: Vec<_> = (0..2u64)
        .map(|seed| {
            let (store, writing) = (store.clone(), writing.clone());
            let communities = w.communities.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut batches = 0;
                while !writing.is_cancelled() {
                    let batch: Vec<ActivityEvent> = (0..20)
                        .map(|_| {
                            NewEvent::new(TYPES[rng.gen_range(0..TYPES.len())])
                                .created_at(
                                    first + TimeDelta::seconds(rng.gen_range(0..3 * 86_400)),
                                )
                                .community(communities[rng.gen_range(0..communities.len())])
                                .user(Uuid::from_u128(rng.gen_range(1..50)))
                                .validate(Utc::now())
                                .expect("valid event")
                        })
                        .collect();
                    store.insert_batch(&batch).await.expect("insert");
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    let admin = w.admin();
    let q = "from=2026-06-01T00:00:00Z&to=2026-06-04T00:00:00Z&interval=hour&tz=Asia/Kolkata";
    let sum = |body: &Value, list: &str| -> i64 {
        body[list]
            .as_array()
            .expect(list)
            .iter()
            .map(|item| item["events"].as_i64().expect("events"))
            .sum()
    };
    // The world's API has connections to spare, so each report runs on two
    // transactions sharing one snapshot; this one has a single connection,
    // so each runs on one transaction.
    let (single, single_shutdown) = serve_api(&w.db.url, 1).await;
    let mut grew = Vec::new();
    for round in 0..40 {
        let base = if round % 4 < 2 { &w.base } else { &single };
        let path = if round % 2 == 0 {
            format!("/api/v1/analytics/overview?{q}&limit=100")
        } else {
            let id = w.communities[0];
            format!("/api/v1/analytics/community/{id}?{q}")
        };
        let (status, body) = w.get_at(base, &admin, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let total = body["total_events"].as_i64().expect("total");
        assert_eq!(sum(&body, "time_series"), total, "series vs total: {round}");
        assert_eq!(
            sum(&body, "events_by_type"),
            total,
            "by type vs total: {round}"
        );
        if round % 2 == 0 {
            assert_eq!(
                sum(&body, "top_communities"),
                total,
                "top vs total: {round}"
            );
            grew.push(total);
        }
    }
    writing.cancel();
    single_shutdown.cancel();
    let mut batches = 0;
    for writer in writers {
        batches += writer.await.expect("writer");
    }
    assert!(
        batches > 40,
        "events streamed in while reading ({batches} batches)"
    );
    assert!(
        grew.first() < grew.last(),
        "the answers saw new events arrive: {grew:?}"
    );
}

/// A top list as PostgreSQL returns it, with whether the threshold rule
/// proved it (sql/migrations/0003_top_lists.sql) or every count was summed.
async fn top_list(
    client: &tokio_postgres::Client,
    sql: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    communities: Option<Vec<Uuid>>,
    limit: i64,
    direct: bool,
) -> (Vec<(String, i64)>, bool) {
    let none: Option<String> = None;
    let rows = client
        .query(sql, &[&from, &to, &communities, &none, &limit, &direct])
        .await
        .expect("top list");
    let list = rows
        .iter()
        .map(|row| {
            let key = match row.columns()[0].name() {
                "entity_type" => format!("{}/{}", row.get::<_, String>(0), row.get::<_, String>(1)),
                _ => row.get::<_, Uuid>(0).to_string(),
            };
            (key, row.get::<_, i64>("events"))
        })
        .collect();
    let proven = rows.iter().all(|row| row.get::<_, bool>("proven"));
    (list, proven && !rows.is_empty())
}

/// The `limit` largest counts of `keys` (ties: smaller key first).
fn expected_top(keys: impl Iterator<Item = String>, limit: usize) -> Vec<(String, i64)> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    let mut list: Vec<_> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(limit);
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_lists_are_exact_whether_pruned_or_summed() {
    // Community `skewed` has a few users and entities far more active than
    // the rest (the threshold rule proves its lists from each day's first
    // few); in `flat` everyone is as active as everyone else (it cannot, and
    // every count is summed). Both must equal the lists computed from the
    // events, compacted or not, and with a late event dirtying a day.
    let db = TestDb::new().await;
    let store = Store::connect(&db.url, 2).expect("store");
    let mut rng = StdRng::seed_from_u64(11);
    let skewed = Uuid::from_u128(rng.gen());
    let flat = Uuid::from_u128(rng.gen());
    let small: Vec<Uuid> = (0..12).map(|_| Uuid::from_u128(rng.gen())).collect();
    let users: Vec<Uuid> = (0..300).map(|_| Uuid::from_u128(rng.gen())).collect();
    let first_day = utc("2026-05-01T00:00:00Z");
    let mut events: Vec<Ev> = Vec::new();
    for day in 0..20 {
        let start = first_day + TimeDelta::days(day);
        let mut picks: Vec<(Uuid, usize)> = Vec::new();
        for k in 0..30 {
            picks.extend((0..30 / (k + 1)).map(|_| (skewed, k)));
        }
        picks.extend((0..15).map(|_| (skewed, rng.gen_range(30..users.len()))));
        picks.extend((0..50).map(|k| (flat, k)));
        for (k, community) in small.iter().enumerate() {
            if (day as usize + k).is_multiple_of(3) {
                picks.push((*community, k));
            }
        }
        for (community, k) in picks {
            // Flat: everyone once a day, at noon.
            let at = if community == flat {
                start + TimeDelta::hours(12) + TimeDelta::seconds(k as i64)
            } else {
                start + TimeDelta::seconds(rng.gen_range(0..86_400))
            };
            events.push(Ev {
                community: Some(community),
                user: Some(users[k]),
                event_type: "github.push".to_owned(),
                entity: Some(("repository".to_owned(), format!("r{k:03}"))),
                at,
            });
        }
    }
    let store_all = |events: &[Ev]| -> Vec<ActivityEvent> {
        events
            .iter()
            .map(|e| {
                let (kind, id) = e.entity.clone().expect("entity");
                NewEvent::new(&e.event_type)
                    .created_at(e.at)
                    .community(e.community.expect("community"))
                    .user(e.user.expect("user"))
                    .entity(kind, id)
                    .validate(Utc::now())
                    .expect("valid event")
            })
            .collect()
    };
    for chunk in store_all(&events).chunks(2_000) {
        store.insert_batch(chunk).await.expect("store");
    }

    let client = db.client().await;
    // As the API's transactions run them (analytics-api/src/db.rs).
    client
        .batch_execute("SET jit = off")
        .await
        .expect("jit off");
    let users_sql = include_str!("../../sql/queries/analytics/top_users.sql");
    let entities_sql = include_str!("../../sql/queries/analytics/top_entities.sql");
    let communities_sql = include_str!("../../sql/queries/analytics/top_communities.sql");
    let range = (utc("2026-05-03T10:15:00Z"), utc("2026-05-18T07:30:00Z"));
    let small = &small;
    let client = &client;
    // compacted: whether whole days have day rows (the skewed lists must
    // then be proven; before, they may be proven from the 15-minute rows).
    let check = |events: Vec<Ev>, compacted: bool| {
        async move {
            let inside: Vec<&Ev> = events
                .iter()
                .filter(|e| e.at >= range.0 && e.at < range.1)
                .collect();
            for (community, limit, proven) in [(skewed, 5, true), (flat, 5, false)] {
                let of = || inside.iter().filter(|e| e.community == Some(community));
                let scope = || Some(vec![community]);
                let (list, was) = top_list(client, users_sql, range, scope(), limit, false).await;
                let want = expected_top(of().filter_map(|e| e.user.map(|u| u.to_string())), 5);
                assert_eq!(list, want, "top users of {community}");
                if compacted || !proven {
                    assert_eq!(was, proven, "users of {community} proven");
                }
                // Summed at once (a range with few events): the same list.
                let (list, was) = top_list(client, users_sql, range, scope(), limit, true).await;
                assert_eq!((list, was), (want, false), "users of {community} summed");
                let (list, was) =
                    top_list(client, entities_sql, range, scope(), limit, false).await;
                let want = expected_top(
                    of().filter_map(|e| e.entity.as_ref().map(|(t, i)| format!("{t}/{i}"))),
                    5,
                );
                assert_eq!(list, want, "top entities of {community}");
                if compacted || !proven {
                    assert_eq!(was, proven, "entities of {community} proven");
                }
                let (list, was) = top_list(client, entities_sql, range, scope(), limit, true).await;
                assert_eq!((list, was), (want, false), "entities of {community} summed");
            }
            let all = || {
                inside
                    .iter()
                    .filter_map(|e| e.community.map(|c| c.to_string()))
            };
            let (list, was) = top_list(client, communities_sql, range, None, 3, false).await;
            assert_eq!(list, expected_top(all(), 3), "top communities");
            if compacted {
                assert!(was, "top communities proven");
            }
            let (list, was) = top_list(client, communities_sql, range, None, 3, true).await;
            assert_eq!(
                (list, was),
                (expected_top(all(), 3), false),
                "top communities summed"
            );
            // A caller limited to some communities: their counts, summed.
            let scope = vec![flat, small[0], small[1]];
            let (list, was) = top_list(
                client,
                communities_sql,
                range,
                Some(scope.clone()),
                2,
                false,
            )
            .await;
            let scoped = all().filter(|c| scope.iter().any(|s| s.to_string() == *c));
            assert_eq!(list, expected_top(scoped, 2), "top of some communities");
            assert!(!was, "a scoped list is summed");
        }
    };
    // As stored, every day is dirty and read from its 15-minute rows.
    check(events.clone(), false).await;
    // Compacted: whole days through their first few.
    let compacted = store.compact_rollups(Utc::now()).await.expect("compact");
    assert_eq!(compacted, 20, "every day compacted");
    check(events.clone(), true).await;
    // A late event for a flat user in the skewed community dirties a day in
    // the middle of the range: that day is summed from its 15-minute rows.
    let late = Ev {
        community: Some(skewed),
        user: Some(users[200]),
        event_type: "github.push".to_owned(),
        entity: Some(("repository".to_owned(), "r200".to_owned())),
        at: utc("2026-05-10T12:00:00Z"),
    };
    events.push(late.clone());
    store
        .insert_batch(&store_all(&[late]))
        .await
        .expect("late event");
    check(events, true).await;
}

/// Upgrading to `0014_half_hours.sql`: the days compacted before it get
/// their half-hours of every type, summed from their quarter-hours of every
/// type (events and sketches), so an hour in Kolkata reads the same after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_hours_are_summed_for_days_compacted_before_them() {
    let db = TestDb::at_version(13).await;
    let client = db.client().await;
    // Six quarter-hours of every type together (18:00 to 19:30 UTC on a
    // compacted day), each with its own users and 2^k events.
    client
        .batch_execute(
            "INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
             SELECT activity_all_communities(), -15,
                    TIMESTAMPTZ '2026-03-09T18:00:00Z' + k * interval '15 minutes', '*', 1 << k,
                    hll_add_agg(hll_hash_integer(100 * k + u), 14)
             FROM generate_series(0, 5) AS k CROSS JOIN generate_series(1, 10 + k) AS u
             GROUP BY k",
        )
        .await
        .expect("rows of version 13");
    let hour = "SELECT sum(events)::bigint, round(activity_unique_users(users))::bigint FROM rollup_events
                WHERE grain = $1 AND bucket >= '2026-03-09T18:30:00Z' AND bucket < '2026-03-09T19:30:00Z'";
    let before = client.query_one(hour, &[&-15i16]).await.expect("quarters");
    activity_consumer::store::migrate::migrate(&db.url, 1)
        .await
        .expect("migrate to the latest version");
    let halves = client
        .query(
            "SELECT bucket, events FROM rollup_events WHERE grain = 30 ORDER BY bucket",
            &[],
        )
        .await
        .expect("half-hours")
        .iter()
        .map(|row| (row.get::<_, DateTime<Utc>>(0), row.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(
        halves,
        [
            (utc("2026-03-09T18:00:00Z"), 1 + 2),
            (utc("2026-03-09T18:30:00Z"), 4 + 8),
            (utc("2026-03-09T19:00:00Z"), 16 + 32),
        ]
    );
    let after = client.query_one(hour, &[&30i16]).await.expect("halves");
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, i64>(1)),
        (before.get::<_, i64>(0), before.get::<_, i64>(1))
    );
    assert_eq!(
        after.get::<_, i64>(1),
        12 + 13 + 14 + 15,
        "exact below 1,000 users"
    );
}

/// Eight quarter-hours of two types on Mar 9 (18:00 to 20:00 UTC) for every
/// community together, one event and one user each, as a consumer writes them.
const MAR_9_QUARTER_HOURS: &str =
    "INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
     SELECT activity_all_communities(), 15,
            TIMESTAMPTZ '2026-03-09T18:00:00Z' + k * interval '15 minutes', t, 1,
            hll_add_agg(hll_hash_integer(k), 14)
     FROM generate_series(0, 7) AS k CROSS JOIN (VALUES ('user.login'), ('github.push')) AS x (t)
     GROUP BY k, t";

/// A compactor of a version before `0014_half_hours.sql` running after the
/// migration (during a rollout) compacts a day without its half-hours: the
/// compactor of this version marks such a day dirty and compacts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_compacted_without_half_hours_are_compacted_again() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // Eight quarter-hours of two types on Mar 9 (18:00 to 20:00 UTC), as a
    // consumer writes them, and the day marked dirty.
    client
        .batch_execute(&format!(
            "{MAR_9_QUARTER_HOURS};
             INSERT INTO rollup_dirty_days (day) VALUES ('2026-03-09T00:00:00Z')"
        ))
        .await
        .expect("quarter-hours");
    let store = Store::connect(&db.url, 1).expect("store");
    assert_eq!(store.compact_rollups(Utc::now()).await.expect("compact"), 1);
    let halves = "SELECT count(*) FROM rollup_events WHERE grain = 30";
    assert_eq!(db.count(halves).await, 4, "18:00, 18:30, 19:00, 19:30");
    // What an earlier compactor leaves: the day compacted, no half-hours.
    client
        .batch_execute("DELETE FROM rollup_events WHERE grain = 30")
        .await
        .expect("an earlier compactor");
    assert_eq!(
        store.compact_rollups(Utc::now()).await.expect("compact"),
        1,
        "the day is compacted again"
    );
    assert_eq!(db.count(halves).await, 4);
    assert_eq!(
        db.count(
            "SELECT sum(events)::bigint FROM rollup_events
             WHERE grain = 30 AND bucket >= '2026-03-09T18:30:00Z' AND bucket < '2026-03-09T19:30:00Z'"
        )
        .await,
        8,
        "an hour in Kolkata: four quarter-hours of two types"
    );
    // Nothing to do once every compacted day has them.
    assert_eq!(store.compact_rollups(Utc::now()).await.expect("compact"), 0);
}

/// Upgrading to `0008_zone_days.sql`: a day compacted before it has no
/// heads, tails nor quarter-hours of every type, so the migration marks it
/// dirty and the compactor compacts it again, after which it is read the new
/// way and counts the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_compacted_before_zone_days_are_compacted_again() {
    let db = TestDb::at_version(7).await;
    let client = db.client().await;
    // What a consumer and a compactor of version 7 left: eight quarter-hours
    // of two types on Mar 9 (18:00 to 20:00 UTC), and the day's row.
    client
        .batch_execute(&format!(
            "{MAR_9_QUARTER_HOURS};
             INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
             VALUES (activity_all_communities(), 1440, '2026-03-09T00:00:00Z', '*', 16, NULL)"
        ))
        .await
        .expect("rows of version 7");
    activity_consumer::store::migrate::migrate(&db.url, 1)
        .await
        .expect("migrate to the latest version");
    assert_eq!(
        db.count("SELECT count(*) FROM rollup_dirty_days WHERE day = '2026-03-09T00:00:00Z'")
            .await,
        1,
        "the compacted day is dirty again"
    );
    let store = Store::connect(&db.url, 1).expect("store");
    assert!(store.compact_rollups(Utc::now()).await.expect("compact") >= 1);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM rollup_day_cuts WHERE day = '2026-03-09T00:00:00Z' AND 1110 = ANY (cuts)"
        )
        .await,
        1,
        "the day is cut at Kolkata's midnight"
    );
    let read = |from: &str, to: &str, grains: &str| {
        format!(
            "SELECT coalesce(sum(r.events), 0)::bigint FROM activity_tiles(ARRAY['{from}', '{to}']::timestamptz[], pieces => true, every_type => true) AS t
             CROSS JOIN LATERAL activity_tile_rows(NULL, t.grain, t.tile_from, t.tile_to, NULL) AS r
             WHERE t.grain IN ({grains})"
        )
    };
    // An hour in Kolkata, 18:30 to 19:30 UTC: four quarter-hours of both
    // types, from the two half-hours of every type together.
    assert_eq!(
        db.count(&read("2026-03-09T18:30:00Z", "2026-03-09T19:30:00Z", "30"))
            .await,
        8
    );
    // Kolkata's Mar 10, from 18:30 UTC on Mar 9: six quarter-hours of both
    // types, all in the tail of Mar 9.
    assert_eq!(
        db.count(&read(
            "2026-03-09T18:30:00Z",
            "2026-03-10T18:30:00Z",
            "-330"
        ))
        .await,
        12
    );
}

/// Upgrading to `0009_week_rows.sql`: the weeks of the days compacted before
/// it get their week rows (and ranks) from those day rows, but not a week
/// with a dirty day, which its next compaction writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weeks_of_days_compacted_before_week_rows_are_summed() {
    let db = TestDb::at_version(8).await;
    let client = db.client().await;
    let community = "'00000000-0000-0000-0000-00000000000a'::uuid";
    // Day rows of version 8: every day of the weeks of Mar 2 and Mar 9, two
    // events of one user a day ('*' and per type); Mar 12 dirty.
    client
        .batch_execute(&format!(
            "INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
             SELECT c, 1440, TIMESTAMPTZ '2026-03-02T00:00:00Z' + k * interval '1 day', t, 2,
                    hll_add_agg(hll_hash_integer(k), 14)
             FROM generate_series(0, 13) AS k
             CROSS JOIN (VALUES ({community}), (activity_all_communities())) AS x (c)
             CROSS JOIN (VALUES ('*'), ('user.login')) AS y (t)
             GROUP BY c, k, t;
             INSERT INTO rollup_dirty_days (day) VALUES ('2026-03-12T00:00:00Z');"
        ))
        .await
        .expect("rows of version 8");
    activity_consumer::store::migrate::migrate(&db.url, 1)
        .await
        .expect("migrate to the latest version");
    let week = |event_type: &str| {
        format!(
            "SELECT events || ' ' || round(hll_cardinality(users)) FROM rollup_events
             WHERE community_id = {community} AND grain = 10080 AND event_type = '{event_type}'
             ORDER BY bucket"
        )
    };
    for event_type in ["*", "user.login"] {
        let rows: Vec<String> = client
            .query(&week(event_type), &[])
            .await
            .expect("week rows")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(rows, ["14 7"], "{event_type}: only the clean week");
    }
    assert_eq!(
        db.count(&format!(
            "SELECT events FROM rollup_community_ranks
             WHERE grain = 10080 AND bucket = '2026-03-02T00:00:00Z' AND community_id = {community}"
        ))
        .await,
        14,
        "the week's community is ranked"
    );
}

/// Migration 0012 rebuilds the 15-minute user and entity rows' keys with
/// `events` included: every row is kept, and the top lists read a range's
/// ends (the 15-minute rows of a day they do not cover whole) from the keys
/// alone, without visiting the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_lists_read_the_ends_of_a_range_from_the_keys() {
    let db = TestDb::at_version(11).await;
    let client = db.client().await;
    // Rows of version 11: 200 quarter-hours of Mar 2-4, one user and one
    // entity each, k events in the k-th.
    client
        .batch_execute(
            "INSERT INTO rollup_users (community_id, bucket, user_id, event_type, events)
             SELECT '00000000-0000-0000-0000-00000000000a',
                    TIMESTAMPTZ '2026-03-02T00:00:00Z' + k * interval '15 minutes',
                    md5(k::text)::uuid, 'user.login', k
             FROM generate_series(1, 200) AS k;
             INSERT INTO rollup_entities (community_id, bucket, entity_type, entity_id, events)
             SELECT '00000000-0000-0000-0000-00000000000a',
                    TIMESTAMPTZ '2026-03-02T00:00:00Z' + k * interval '15 minutes',
                    'repository', 'r' || k, k
             FROM generate_series(1, 200) AS k;",
        )
        .await
        .expect("rows of version 11");
    activity_consumer::store::migrate::migrate(&db.url, 1)
        .await
        .expect("migrate to the latest version");
    for table in ["rollup_users", "rollup_entities"] {
        assert_eq!(
            db.count(&format!("SELECT sum(events)::bigint FROM {table}"))
                .await,
            20_100,
            "{table}: every row kept"
        );
    }
    // All-visible, as autovacuum leaves rows no longer written to. The
    // tables are tiny, so the planner is held to index paths: the question
    // is whether the key alone answers.
    client
        .batch_execute("VACUUM ANALYZE rollup_users, rollup_entities")
        .await
        .expect("vacuum");
    client
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off; SET jit = off")
        .await
        .expect("index paths only");
    let from = utc("2026-03-02T06:00:00Z");
    let to = utc("2026-03-03T00:00:00Z");
    let communities = vec![Uuid::from_u128(0xa)];
    let none: Option<String> = None;
    for (table, sql) in [
        (
            "rollup_users",
            include_str!("../../sql/queries/analytics/top_users.sql"),
        ),
        (
            "rollup_entities",
            include_str!("../../sql/queries/analytics/top_entities.sql"),
        ),
    ] {
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"),
                &[&from, &to, &communities, &none, &10_i64, &false],
            )
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains(&format!("Index Only Scan using {table}_pkey on {table}")),
            "{table} read from its key:\n{plan}"
        );
        assert!(
            plan.lines()
                .filter(|line| line.contains("Heap Fetches:"))
                .all(|line| line.trim_end().ends_with("Heap Fetches: 0")),
            "{table} read without visiting the table:\n{plan}"
        );
        assert!(
            plan.contains("Heap Fetches: 0"),
            "the scan reported its heap fetches:\n{plan}"
        );
    }
}

/// An API whose database refuses it (here: the database does not exist)
/// is not ready and says why and where, and a report asked of it is 503 `unavailable`
/// (it was 500 `internal`, and `/readyz` an empty 503 with nothing logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_whose_database_refuses_it_is_not_ready_and_answers_503() {
    let missing = format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        crate::fixtures::unique("absent")
    );
    let (base, shutdown) = serve_api(&missing, 1).await;
    let response = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["ready"], false, "{body}");
    assert!(
        body["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("database:") && r.contains("does not exist")),
        "{body}"
    );
    // Which of the process's databases it is (DATABASE_READ_URL here).
    assert!(
        body["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains(&format!("cannot connect to {missing}:"))),
        "{body}"
    );
    let token = admin_token();
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/analytics/overview"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.expect("the error body");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    shutdown.cancel();
}

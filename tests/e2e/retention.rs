//! The data lifecycle, through the `activity` binary: partitions ahead,
//! tiers, archive → verify → drop → restore, a crash mid-archive, a real
//! S3-compatible server, and the Parquet files read by another tool.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use activity_consumer::Store;
use activity_core::{ActivityEvent, NewEvent};
use chrono::{DateTime, Months, TimeDelta, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;

/// A database, an archive location and a profile for one test.
struct Lifecycle {
    db: TestDb,
    dir: PathBuf,
    archive_url: String,
    env: Vec<(String, String)>,
}

impl Lifecycle {
    async fn new(part_rows: u32) -> Self {
        let db = TestDb::new().await;
        let dir = std::env::temp_dir().join(&db.name);
        std::fs::create_dir_all(dir.join("config")).expect("temp dir");
        std::fs::write(
            dir.join("config/dev.toml"),
            format!(
                "[partitions]\nahead = 2\n[retention]\nhot_months = 3\nwarm_months = 12\n\
                 archive_part_rows = {part_rows}\nrestore_hold_days = 7\n"
            ),
        )
        .expect("profile");
        let archive_url = format!("file://{}", dir.join("archive").display());
        Self {
            db,
            dir,
            archive_url,
            env: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity"));
        command
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env("ARCHIVE_URL", &self.archive_url)
            .env("ACTIVITY_CONFIG_DIR", self.dir.join("config"))
            .env("APP_ENV", "dev")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run activity")
    }

    /// Runs and expects success; returns stdout parsed as JSON.
    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "activity {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "activity {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs `rollups rebuild` over `[from, to)`, expects it refused, and
    /// returns what it said.
    async fn refused_rebuild(&self, from: &str, to: &str) -> String {
        let rebuild = self
            .run(&["rollups", "rebuild", "--from", from, "--to", to])
            .await;
        assert!(!rebuild.status.success(), "a rebuild of {from}..{to} ran");
        String::from_utf8_lossy(&rebuild.stderr).into_owned()
    }

    async fn store(&self, events: &[ActivityEvent]) {
        let store = Store::connect(&self.db.url, 2).expect("store");
        for chunk in events.chunks(2000) {
            store.insert_batch(chunk).await.expect("insert");
        }
    }

    async fn exists(&self, table: &str) -> bool {
        self.db
            .count(&format!(
                "SELECT count(*) FROM pg_class WHERE relname = '{table}'"
            ))
            .await
            == 1
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn month(year: i32, month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("date")
}

/// `n` varied events spread over `[from, to)`: users and communities or
/// none, nested and non-ASCII metadata, IPv4 and IPv6, timestamps to the
/// microsecond (the first and last instants of the range included).
fn events(n: usize, from: DateTime<Utc>, to: DateTime<Utc>, seed: u64) -> Vec<ActivityEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let users: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let communities: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let span = (to - from).num_microseconds().expect("span");
    let types = [
        "user.login",
        "event.created",
        "github.push",
        "member.created",
    ];
    (0..n)
        .map(|i| {
            let at = match i {
                0 => from,
                1 => to - TimeDelta::microseconds(1),
                _ => from + TimeDelta::microseconds(rng.gen_range(0..span)),
            };
            let mut event = NewEvent::new(types[i % types.len()]).created_at(at);
            if i % 7 != 0 {
                event = event.user(users[rng.gen_range(0..users.len())]);
            }
            if i % 5 != 0 {
                event = event.community(communities[rng.gen_range(0..communities.len())]);
            }
            if i % 3 == 0 {
                event = event.entity("repository", format!("repo-{}", rng.gen_range(0..100)));
            }
            if i % 4 != 1 {
                event = event.metadata(json!({
                    "i": i,
                    "ratio": rng.gen_range(0.0..1.0),
                    "big": 9_007_199_254_740_993u64,
                    "text": "Grüße, 東京 🚀 \"quoted\" \\ back",
                    "nested": {"list": [1, null, true, {"deep": "x"}], "empty": {}},
                }));
            }
            if i % 2 == 0 {
                event = event.ip_address(if i % 4 == 0 {
                    "203.0.113.7"
                } else {
                    "2001:db8::42"
                });
                event = event.user_agent("Mozilla/5.0 (X11; Linux x86_64) Tracker/1.0");
            }
            event.validate(Utc::now()).expect("valid event")
        })
        .collect()
}

/// Every column of every row with `created_at` in `[from, to)`, as text
/// where PostgreSQL has its own canonical form (metadata), by event_id.
async fn snapshot(db: &TestDb, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Vec<Option<String>>> {
    db.client()
        .await
        .query(
            "SELECT id::text, event_id::text, user_id::text, community_id::text, event_type,
                    entity_type, entity_id, metadata::text, ip_address, user_agent,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
             FROM activities WHERE created_at >= $1 AND created_at < $2
             ORDER BY event_id",
            &[&from, &to],
        )
        .await
        .expect("snapshot")
        .iter()
        .map(|row| (0..11).map(|i| row.get::<_, Option<String>>(i)).collect())
        .collect()
}

/// Events of every community together in the rollups (15-minute rows).
async fn rolled_up(db: &TestDb) -> i64 {
    db.count(
        "SELECT coalesce(sum(events), 0)::bigint FROM rollup_events
         WHERE grain = 15 AND community_id = activity_all_communities()",
    )
    .await
}

/// The rows of `month` still in PostgreSQL (attached or detached for
/// archiving) and the rows its recorded archives hold.
async fn accounted(life: &Lifecycle, month: DateTime<Utc>) -> (i64, i64) {
    let suffix = month.format("%Y_%m");
    let mut in_database = 0;
    for table in [
        format!("activities_p{suffix}"),
        format!("activities_archiving_p{suffix}"),
    ] {
        if life.exists(&table).await {
            in_database += life
                .db
                .count(&format!("SELECT count(*) FROM {table}"))
                .await;
        }
    }
    let archived = life
        .db
        .count(&format!(
            "SELECT coalesce(sum(rows), 0)::bigint FROM activity_archives
             WHERE month = '{}'",
            month.to_rfc3339()
        ))
        .await;
    (in_database, archived)
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_verify_drop_restore_round_trip_is_exact() {
    let life = Lifecycle::new(700).await;
    let (jan, feb, mar) = (month(2021, 1), month(2021, 2), month(2021, 3));
    let mut sent = events(3000, jan, mar, 1);
    sent.extend(events(200, mar, month(2021, 4), 2)); // a month that stays
    life.store(&sent).await;
    let before = snapshot(&life.db, jan, mar).await;
    assert_eq!(before.len(), 3000);
    let kept = snapshot(&life.db, mar, month(2021, 4)).await;
    let rollups = rolled_up(&life.db).await;
    assert_eq!(rollups, 3200);

    let archived = life.json(&["archive", "--before", "2021-03-01"]).await;
    let archived = archived.as_array().expect("a list of archives");
    assert_eq!(archived.len(), 2, "{archived:?}");
    let rows: u64 = archived.iter().filter_map(|a| a["rows"].as_u64()).sum();
    assert_eq!(rows, 3000);
    assert!(!life.exists("activities_p2021_01").await);
    assert!(!life.exists("activities_p2021_02").await);
    assert!(life.exists("activities_p2021_03").await);
    assert_eq!(snapshot(&life.db, jan, mar).await, Vec::<Vec<_>>::new());
    assert_eq!(snapshot(&life.db, mar, month(2021, 4)).await, kept);
    // Rollups outlive the raw rows: the counts of archived months stay.
    assert_eq!(rolled_up(&life.db).await, rollups);
    let files = parquet_files(&life.dir.join("archive"));
    assert!(files.len() >= 5, "parts of at most 700 rows: {files:?}");

    // Their rollups cannot be rebuilt from raw rows that are gone.
    let stderr = life
        .refused_rebuild("2021-01-10T00:00:00Z", "2021-01-11T00:00:00Z")
        .await;
    assert!(
        stderr.contains("2021-01") && stderr.contains("archived"),
        "{stderr}"
    );
    assert_eq!(rolled_up(&life.db).await, rollups);

    // Archiving again finds nothing more to do.
    let again = life.json(&["archive", "--before", "2021-03-01"]).await;
    assert_eq!(again.as_array().map(Vec::len), Some(0), "{again}");
    // Never the month being written, nor one to come.
    let next_month = activity_consumer::store::month_start(Utc::now())
        .checked_add_months(Months::new(1))
        .expect("next month");
    let too_late = life
        .run(&[
            "archive",
            "--before",
            &next_month.format("%Y-%m-%d").to_string(),
        ])
        .await;
    assert!(!too_late.status.success());
    let stderr = String::from_utf8_lossy(&too_late.stderr);
    assert!(stderr.contains("month being written"), "{stderr}");
    assert!(life.exists("activities_p2021_03").await);
    assert_eq!(snapshot(&life.db, mar, month(2021, 4)).await, kept);

    // A late event for an archived month is stored (its partition comes
    // back) and counted; the next archive takes it in an archive of its own.
    let late = events(3, feb + TimeDelta::days(3), feb + TimeDelta::days(4), 3);
    life.store(&late).await;
    assert!(life.exists("activities_p2021_02").await);
    assert_eq!(rolled_up(&life.db).await, rollups + 3);
    let second = life.json(&["archive", "--before", "2021-03-01"]).await;
    assert_eq!(second[0]["rows"], 3, "{second}");

    // A month one of whose recorded archives is missing is not restored
    // (it would look whole, and a rebuild would count it short).
    let late_manifest = life
        .dir
        .join("archive")
        .join(second[0]["manifest"].as_str().expect("a manifest key"));
    let hidden = late_manifest.with_extension("hidden");
    std::fs::rename(&late_manifest, &hidden).expect("hide a manifest");
    let incomplete = life
        .run(&["restore", "--from", "2021-02-01", "--to", "2021-03-01"])
        .await;
    assert!(!incomplete.status.success());
    let stderr = String::from_utf8_lossy(&incomplete.stderr);
    assert!(
        stderr.contains("2021-02") && stderr.contains("manifest"),
        "{stderr}"
    );
    assert_eq!(snapshot(&life.db, feb, mar).await.len(), 0);
    std::fs::rename(&hidden, &late_manifest).expect("put it back");

    // Restore: every row back, field by field, ids and microseconds included.
    let restored = life
        .json(&["restore", "--from", "2021-01-01", "--to", "2021-03-01"])
        .await;
    assert_eq!(restored["inserted"], 3003, "{restored}");
    let after = snapshot(&life.db, jan, mar).await;
    assert_eq!(after.len(), 3003);
    let originals: Vec<_> = after
        .iter()
        .filter(|row| before.iter().any(|b| b[1] == row[1]))
        .cloned()
        .collect();
    assert_eq!(originals, before, "restored rows equal the originals");
    for event in &late {
        let id = Some(event.event_id().as_uuid().to_string());
        assert!(after.iter().any(|row| row[1] == id), "late event restored");
    }
    assert_eq!(
        rolled_up(&life.db).await,
        rollups + 3,
        "rollups not counted twice"
    );
    assert!(life.exists("activities_p2021_01").await);

    // A second restore inserts nothing; the rebuild is allowed again.
    let twice = life
        .json(&["restore", "--from", "2021-01-01", "--to", "2021-03-01"])
        .await;
    assert_eq!(twice["inserted"], 0, "{twice}");
    assert_eq!(twice["already_present"], 3003, "{twice}");
    assert_eq!(snapshot(&life.db, jan, mar).await, after);
    let rebuild = life
        .run(&[
            "rollups",
            "rebuild",
            "--from",
            "2021-01-01T00:00:00Z",
            "--to",
            "2021-03-01T00:00:00Z",
        ])
        .await;
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert_eq!(rolled_up(&life.db).await, rollups + 3);

    // Another tool reads the files with the right column types.
    pyarrow_reads(&files, 3000).await;

    // Restored months are held back from archiving, unless asked.
    let held = life.json(&["archive", "--before", "2021-03-01"]).await;
    assert_eq!(held.as_array().map(Vec::len), Some(0), "{held}");
    assert!(life.exists("activities_p2021_01").await);
    let forced = life
        .json(&["archive", "--before", "2021-03-01", "--include-held"])
        .await;
    assert_eq!(forced.as_array().map(Vec::len), Some(2), "{forced}");
    assert!(!life.exists("activities_p2021_01").await);
    assert_eq!(
        life.db.count("SELECT count(*) FROM retention_holds").await,
        0,
        "an archived month is held no more"
    );
    assert_eq!(rolled_up(&life.db).await, rollups + 3);
}

/// pyarrow (PyPI) opens every part: the schema's types, and `rows` rows in
/// all, with event ids as 16-byte UUIDs and timestamps in µs UTC.
async fn pyarrow_reads(files: &[PathBuf], rows: usize) {
    let script = r#"
import sys, pyarrow.parquet as pq
total = 0
for path in sys.argv[1:]:
    table = pq.read_table(path)
    types = {f.name: str(f.type) for f in table.schema}
    assert types["id"] == "int64", types
    assert types["created_at"] == "timestamp[us, tz=UTC]", types
    assert types["event_type"] in ("string", "large_string"), types
    assert types["event_id"] in ("extension<arrow.uuid>", "uuid", "fixed_size_binary[16]"), types
    meta = pq.ParquetFile(path).schema.column(1).logical_type
    assert str(meta).upper().startswith("UUID"), meta
    total += table.num_rows
print(total)
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .await
        .expect("python3");
    assert!(
        output.status.success(),
        "pyarrow could not read the archive (scripts/test installs pyarrow): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let total: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(total, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_archiving_loses_nothing_and_doubles_nothing() {
    let life = Lifecycle::new(200).await;
    let may = month(2020, 5);
    let sent = events(20_000, may, month(2020, 6), 4);
    life.store(&sent).await;
    let before = snapshot(&life.db, may, month(2020, 6)).await;

    // Kill the archiver at later and later points of its work until a run
    // finishes by itself; after each kill, every row is either still in
    // PostgreSQL or in a recorded archive, never both, never neither.
    let mut delay = Duration::from_millis(150);
    let mut killed_mid_write = 0;
    loop {
        let mut child = life
            .command(&["archive", "--before", "2020-06-01"])
            .spawn()
            .expect("spawn archive");
        tokio::time::sleep(delay).await;
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        child.start_kill().expect("kill");
        let _ = child.wait().await;
        if life.exists("activities_archiving_p2020_05").await {
            killed_mid_write += 1;
            // Its rows are out of `activities` but not archived yet: a
            // rebuild must not take the month for empty.
            let stderr = life
                .refused_rebuild("2020-05-10T00:00:00Z", "2020-05-11T00:00:00Z")
                .await;
            assert!(
                stderr.contains("2020-05") && stderr.contains("did not finish"),
                "{stderr}"
            );
            assert_eq!(rolled_up(&life.db).await, 20_000);
        }
        let (in_database, archived) = accounted(&life, may).await;
        assert_eq!(
            (in_database + archived, in_database.min(archived)),
            (20_000, 0),
            "after a kill at {delay:?}: {in_database} rows in PostgreSQL, {archived} in recorded archives"
        );
        delay = delay.mul_f64(1.5);
        assert!(
            delay < Duration::from_secs(120),
            "the archive never finished"
        );
    }
    assert!(
        killed_mid_write > 0,
        "no kill landed while parts were being written"
    );
    let done = life.json(&["archive", "--before", "2020-06-01"]).await;
    assert!(done.as_array().is_some(), "{done}");
    assert_eq!(accounted(&life, may).await, (0, 20_000));
    assert!(!life.exists("activities_archiving_p2020_05").await);
    assert_eq!(
        life.db
            .count("SELECT count(*) FROM activity_archives WHERE rows > 0")
            .await,
        1,
        "one archive, however many runs it took"
    );

    let restored = life
        .json(&["restore", "--from", "2020-05-01", "--to", "2020-06-01"])
        .await;
    assert_eq!(restored["inserted"], 20_000, "{restored}");
    assert_eq!(snapshot(&life.db, may, month(2020, 6)).await, before);
}

/// An S3-compatible server on loopback (`s3s-fs`, installed by
/// scripts/test), with its own root directory and port.
struct S3Server {
    child: tokio::process::Child,
    port: u16,
}

impl S3Server {
    async fn start(root: &Path, bucket: &str) -> Self {
        std::fs::create_dir_all(root.join(bucket)).expect("bucket dir");
        let port = free_port();
        let binary = which("s3s-fs");
        let child = tokio::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test-access", "--secret-key", "test-secret"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary:?} (scripts/test installs it): {e}"));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self { child, port };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("s3s-fs did not listen on {port}");
    }
}

fn which(name: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .chain([PathBuf::from(home).join(".cargo/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_round_trip_through_an_s3_compatible_server() {
    let mut life = Lifecycle::new(400).await;
    let server = S3Server::start(&life.dir.join("s3"), "archive-bucket").await;
    life.archive_url = "s3://archive-bucket/tracker/prod".to_owned();
    life.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "test-access".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test-secret".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", server.port),
        ),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
    ];
    let (jun, jul) = (month(2019, 6), month(2019, 7));
    let sent = events(1500, jun, jul, 5);
    life.store(&sent).await;
    let before = snapshot(&life.db, jun, jul).await;

    let archived = life.json(&["archive", "--before", "2019-07-01"]).await;
    assert_eq!(archived[0]["rows"], 1500, "{archived}");
    let manifest = archived[0]["manifest"].as_str().expect("manifest key");
    assert!(
        manifest.starts_with("tracker/prod/activities/month=2019-06/"),
        "{manifest}"
    );
    // The objects are in the server's bucket, under the prefix.
    let files = parquet_files(&life.dir.join("s3/archive-bucket/tracker/prod"));
    assert_eq!(files.len(), 4, "1500 rows in parts of 400: {files:?}");
    assert!(!life.exists("activities_p2019_06").await);

    let restored = life
        .json(&["restore", "--from", "2019-06-01", "--to", "2019-07-01"])
        .await;
    assert_eq!(restored["inserted"], 1500, "{restored}");
    assert_eq!(snapshot(&life.db, jun, jul).await, before);

    // A damaged object is refused, never restored half right.
    std::fs::write(&files[0], b"not parquet").expect("damage a part");
    life.db
        .client()
        .await
        .batch_execute("DELETE FROM activities WHERE created_at < '2019-07-01'")
        .await
        .expect("delete");
    let damaged = life
        .run(&["restore", "--from", "2019-06-01", "--to", "2019-07-01"])
        .await;
    assert!(!damaged.status.success());
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(
        snapshot(&life.db, jun, jul).await.len(),
        0,
        "nothing half restored"
    );
    drop(server.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_run_ensures_partitions_moves_tiers_and_archives_cold_months() {
    let life = Lifecycle::new(1000).await;
    let now = Utc::now();
    let this_month = activity_consumer::store::month_start(now);
    let warm = this_month.checked_sub_months(Months::new(5)).expect("date");
    let cold = this_month
        .checked_sub_months(Months::new(14))
        .expect("date");
    // A month that had no partition: the batch creates it.
    let old = month(2015, 3);
    let mut sent = events(300, this_month, this_month + TimeDelta::hours(1), 6);
    sent.extend(events(300, warm, warm + TimeDelta::days(1), 7));
    sent.extend(events(300, cold, cold + TimeDelta::days(1), 8));
    sent.extend(events(10, old, old + TimeDelta::days(1), 9));
    life.store(&sent).await;
    assert_eq!(life.db.count("SELECT count(*) FROM activities").await, 910);

    let hot_indexes = |name: String| {
        let db = &life.db;
        async move {
            db.count(&format!(
                "SELECT count(*) FROM pg_indexes WHERE tablename = '{name}'
                 AND indexname IN ('{name}_community_type_created_idx',
                                   '{name}_type_created_idx', '{name}_metadata_gin')"
            ))
            .await
        }
    };
    let name = |m: DateTime<Utc>| format!("activities_p{}", m.format("%Y_%m"));
    assert_eq!(hot_indexes(name(warm)).await, 3, "a new partition is hot");

    let summary = life.json(&["retention", "run"]).await;
    let archived: Vec<String> = summary["archived"]
        .as_array()
        .expect("archived")
        .iter()
        .map(|a| a["partition"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(archived.contains(&name(cold)), "{summary}");
    assert!(archived.contains(&name(old)), "{summary}");
    assert!(!archived.contains(&name(warm)), "{summary}");
    assert_eq!(hot_indexes(name(this_month)).await, 3);
    assert_eq!(
        hot_indexes(name(warm)).await,
        0,
        "warm: hot-only indexes dropped"
    );
    assert!(!life.exists(&name(cold)).await);
    // Two months ahead (the profile's partitions.ahead) exist.
    let ahead = this_month.checked_add_months(Months::new(2)).expect("date");
    assert!(life.exists(&name(ahead)).await);
    assert_eq!(life.db.count("SELECT count(*) FROM activities").await, 600);

    // The listing shows each partition's tier and each archive.
    let listing = life
        .json(&["partitions", "list", "--exact", "--json"])
        .await;
    let tier_of = |n: &str| {
        listing["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == n)
            .map(|p| (p["tier"].clone(), p["rows"].clone()))
    };
    assert_eq!(tier_of(&name(this_month)), Some((json!("hot"), json!(300))));
    assert_eq!(tier_of(&name(warm)), Some((json!("warm"), json!(300))));
    assert_eq!(
        listing["archives"].as_array().map(Vec::len),
        Some(2),
        "{listing}"
    );

    // Run again: nothing to do; the run pushes its metrics to a Pushgateway.
    let pushgateway = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let push_url = format!("http://{}", pushgateway.local_addr().expect("address"));
    let pushed = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = pushgateway.accept().await.expect("a push");
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        // Until the body announced by Content-Length has arrived.
        loop {
            let n = socket.read(&mut buffer).await.expect("read");
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .expect("answer");
                    return text;
                }
            }
        }
    });
    let again = life
        .json(&["retention", "run", "--pushgateway-url", &push_url])
        .await;
    let push = pushed.await.expect("push received");
    assert!(
        push.starts_with("PUT /metrics/job/activity_retention "),
        "{push}"
    );
    assert!(push.contains("retention_last_run_success 1"), "{push}");
    assert!(
        push.contains("retention_last_run_archived_partitions 0"),
        "{push}"
    );
    assert_eq!(again["archived"], json!([]), "{again}");
    assert_eq!(again["tier_changes"], json!([]), "{again}");

    // A restored month is held back from the next run's archiving.
    life.json(&["restore", "--from", "2015-03-01", "--to", "2015-04-01"])
        .await;
    let held = life.json(&["retention", "run"]).await;
    assert_eq!(held["archived"], json!([]), "{held}");
    assert_eq!(life.db.count("SELECT count(*) FROM activities").await, 610);

    // Two runs at once: the second is refused, not interleaved.
    let lock = life.db.client().await;
    lock.query_one("SELECT pg_advisory_lock(x'726574656e74696f'::bigint)", &[])
        .await
        .expect("take the retention lock");
    let busy = life.run(&["retention", "run"]).await;
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("retention lock"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
}

//! What the store guarantees: rows for unknown users and communities, and a
//! partition for any month.

use std::time::Duration;

use activity_core::NewEvent;
use chrono::{TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_communities_are_created_and_filled_in() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(2).await;
    let settings = settings(&db, &topic);
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (dave, erin) = (Uuid::new_v4(), Uuid::new_v4());
    // An email too long for users_email_key's index (over 2,704 bytes) had
    // failed every batch it was in, forever; and a redacted one.
    let long_email = format!("{}@example.com", "d".repeat(3000));
    let (guild, club) = (Uuid::new_v4(), Uuid::new_v4());
    let events = vec![
        NewEvent::new("user.login").user(alice).community(guild),
        NewEvent::new("user.signup")
            .user(bob)
            .community(guild)
            .metadata(json!({"email": "bob@example.com"})),
        // Another user claiming the same email later (same community, so the
        // same partition and a defined order): the event is stored, the email is not.
        NewEvent::new("user.signup")
            .user(carol)
            .community(guild)
            .created_at(Utc::now() + chrono::TimeDelta::seconds(1))
            .metadata(json!({"email": "bob@example.com"})),
        NewEvent::new("community.created")
            .user(alice)
            .community(club)
            .metadata(json!({"name": "Rust Club"})),
        NewEvent::new("webhook.triggered").community(club),
        NewEvent::new("user.signup")
            .user(dave)
            .community(club)
            .metadata(json!({ "email": long_email })),
        NewEvent::new("user.signup")
            .user(erin)
            .community(club)
            .metadata(json!({"email": "4111 1111 1111 1111"})),
    ];
    let consumer = InProcessConsumer::start(&settings);
    track_all(&settings, events).await;
    assert_eq!(db.wait_for_events(7, Duration::from_secs(60)).await, 7);
    consumer.stop().await;

    let client = db.client().await;
    let kept: String = client
        .query_one(
            "SELECT metadata->>'email' FROM activities WHERE user_id = $1",
            &[&dave],
        )
        .await
        .expect("dave's signup")
        .get(0);
    assert_eq!(kept, long_email, "the event keeps what it carried");
    let users = client
        .query("SELECT id, email FROM users ORDER BY email NULLS LAST", &[])
        .await
        .expect("users");
    assert_eq!(users.len(), 5);
    let emails: Vec<(Uuid, Option<String>)> = users.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(emails.contains(&(bob, Some("bob@example.com".into()))));
    assert!(emails.contains(&(alice, None)));
    assert!(emails.contains(&(carol, None)));
    assert!(emails.contains(&(dave, None)), "not an address: too long");
    assert!(emails.contains(&(erin, None)), "not an address: redacted");
    let names: Vec<(Uuid, Option<String>)> = client
        .query("SELECT id, name FROM communities", &[])
        .await
        .expect("communities")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&(club, Some("Rust Club".into()))));
    assert!(names.contains(&(guild, None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_months_without_a_partition_are_stored() {
    let db = TestDb::new().await;
    let topic = TestTopic::new(2).await;
    let settings = settings(&db, &topic);
    let months_before: i64 = db
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'activities'::regclass")
        .await;
    let at = |y, m, d, h, min, s| Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap();
    let events = vec![
        NewEvent::new("user.login").created_at(at(2003, 5, 10, 12, 0, 0)), // old
        NewEvent::new("user.login").created_at(at(2019, 1, 1, 0, 0, 0)), // exactly a month's first instant
        NewEvent::new("user.login").created_at(at(2018, 12, 31, 23, 59, 59)), // the instant before
        NewEvent::new("user.login"),                                     // now: partition exists
    ];
    let consumer = InProcessConsumer::start(&settings);
    track_all(&settings, events).await;
    assert_eq!(db.wait_for_events(4, Duration::from_secs(60)).await, 4);
    consumer.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM activities").await, 4);
    let months_after = db
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'activities'::regclass")
        .await;
    assert_eq!(months_after, months_before + 3);
    for (partition, expected) in [
        ("activities_p2003_05", 1),
        ("activities_p2019_01", 1),
        ("activities_p2018_12", 1),
    ] {
        let rows = db.count(&format!("SELECT count(*) FROM {partition}")).await;
        assert_eq!(rows, expected, "{partition}");
    }
    // No DEFAULT partition quietly catching rows.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_creates_partitions_ahead() {
    let db = TestDb::new().await;
    activity_consumer::store::migrate::migrate(&db.url, 3)
        .await
        .expect("second run");
    activity_consumer::store::migrate::migrate(&db.url, 3)
        .await
        .expect("third run");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/migrations"))
        .expect("sql/migrations")
        .count();
    assert!(files >= 3, "{files} migrations");
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations").await,
        files as i64,
        "each migration applied once"
    );
    // Last month, this month and three ahead.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'activities'::regclass")
            .await,
        5
    );
    let next = activity_consumer::store::month_start(Utc::now())
        .checked_add_months(chrono::Months::new(3))
        .expect("date");
    let name = format!("activities_p{}", next.format("%Y_%m"));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{name}'"
        ))
        .await,
        1
    );
}

/// `activity migrate` started several times at once on a database that does
/// not exist yet (a deploy's jobs, say): every run succeeds, and the
/// migrations are applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_started_together_on_a_new_database_all_succeed() {
    let db = TestDb::not_created();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { activity_consumer::store::migrate::migrate(&url, 1).await })
        })
        .collect();
    for run in runs {
        run.await.expect("joined").expect("every run succeeds");
    }
    let applied = db.count("SELECT count(*) FROM schema_migrations").await;
    let distinct = db
        .count("SELECT count(DISTINCT version) FROM schema_migrations")
        .await;
    assert_eq!(applied, distinct, "each migration applied once");
    assert!(applied >= 16, "{applied} migrations");
}

/// Every process reaches PostgreSQL over TLS as the URL's `sslmode` says,
/// with libpq's meanings: it had no TLS at all (`sslmode=require` failed,
/// `verify-full` was refused as an invalid URL). This machine's server
/// (Debian's) has TLS on with a self-signed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_tls_as_sslmode_says() {
    use activity_core::database::Target;
    let db = TestDb::new().await;
    let with = |options: &str| format!("{}?{options}", db.url);
    async fn encrypted(url: &str) -> Result<bool, String> {
        let target: Target = url.parse()?;
        let client = target.connect().await.map_err(|e| format!("{e:?}"))?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }
    let server = db.client().await;
    let ssl: String = server.query_one("SHOW ssl", &[]).await.expect("ssl").get(0);
    assert_eq!(encrypted(&with("sslmode=disable")).await, Ok(false));
    if ssl != "on" {
        let refused = encrypted(&with("sslmode=require")).await;
        assert!(
            refused.is_err(),
            "require without TLS on the server: {refused:?}"
        );
        return;
    }
    assert_eq!(encrypted(&db.url).await, Ok(true), "prefer is the default");
    assert_eq!(encrypted(&with("sslmode=require")).await, Ok(true));
    let cert: String = server
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("cert file")
        .get(0);
    // Its own certificate as the root: the chain holds.
    assert_eq!(
        encrypted(&with(&format!("sslmode=verify-ca&sslrootcert={cert}"))).await,
        Ok(true)
    );
    // verify-full checks the name too: the certificate names localhost.
    let wrong_name = encrypted(&with(&format!("sslmode=verify-full&sslrootcert={cert}"))).await;
    assert!(
        wrong_name
            .as_ref()
            .is_err_and(|e| e.contains("NotValidForName")),
        "{wrong_name:?}"
    );
    let by_name = db.url.replacen("127.0.0.1", "localhost", 1);
    assert_eq!(
        encrypted(&format!("{by_name}?sslmode=verify-full&sslrootcert={cert}")).await,
        Ok(true)
    );
    // Roots that did not sign it: the public CAs' bundle.
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let unknown = encrypted(&with(&format!("sslmode=verify-ca&sslrootcert={bundle}"))).await;
    assert!(
        unknown.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "{unknown:?}"
    );
    // The pools every process uses take the same options.
    let pool = activity_core::database::pool(
        &format!("{by_name}?sslmode=verify-full&sslrootcert={cert}"),
        1,
    )
    .expect("a pool");
    let client = pool.get().await.expect("a verified connection");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("ssl")
        .get(0);
    assert!(ssl);
    let pool =
        activity_core::database::pool(&with(&format!("sslmode=verify-ca&sslrootcert={bundle}")), 1)
            .expect("a pool");
    assert!(
        pool.get().await.is_err(),
        "verify-ca refuses a certificate no root signed"
    );
}

/// A Unix socket, as a sidecar or a local server offers it, is reached
/// whatever `sslmode` says, without TLS, as with libpq: every socket URL
/// failed with "invalid dns name" before any query (rustls was asked for a
/// connector named "").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_a_unix_socket() {
    use activity_core::database::Target;
    let directories: String = TestDb::admin()
        .await
        .query_one("SHOW unix_socket_directories", &[])
        .await
        .expect("socket directories")
        .get(0);
    let directory = directories
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.starts_with('@'))
        .expect("the server listens on a socket in a directory")
        .to_owned();
    let encoded = directory.replace('/', "%2F");
    // `activity migrate` creates the database and migrates it over the socket.
    let db = TestDb::not_created();
    let url = format!("postgres://postgres@{encoded}/{}", db.name);
    let activity = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("APP_ENV", "dev")
            .output()
            .expect("activity runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    activity(&["migrate", "--skip-topics"]);
    async fn over_a_socket(url: &str) -> Result<(bool, bool), String> {
        let target: Target = url.parse()?;
        let client = target.connect().await.map_err(|e| format!("{e:?}"))?;
        let row = client
            .query_one(
                "SELECT a.client_addr IS NULL, s.ssl FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((row.get(0), row.get(1)))
    }
    for url in [
        format!("postgres://postgres@{encoded}/{}", db.name),
        format!("postgres://postgres@{encoded}/{}?sslmode=require", db.name),
        format!("postgres://postgres@{encoded}/{}?sslmode=disable", db.name),
        format!("postgres:///{}?user=postgres&host={directory}", db.name),
        format!(
            "host={directory} user=postgres dbname={} sslmode=verify-full",
            db.name
        ),
    ] {
        assert_eq!(
            over_a_socket(&url).await,
            Ok((true, false)),
            "{url}: a socket connection, without TLS"
        );
    }
    // The pools every process uses, and a process: `activity partitions list`.
    let pool = activity_core::database::pool(&url, 1).expect("a pool");
    let client = pool.get().await.expect("a socket connection from the pool");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("a query")
        .get(0);
    assert_eq!(one, 1);
    let listed = activity(&["partitions", "list"]);
    assert!(
        listed.contains("activities_p"),
        "the partitions are listed: {listed}"
    );
}

/// `rollups rebuild` works only where events can be (2000-01-01 to now):
/// a mistyped year had spent minutes on a century of empty weeks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_is_cut_to_where_events_can_be() {
    let db = TestDb::new().await;
    let rebuild = |from: &str, to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(["rollups", "rebuild", "--from", from, "--to", to])
            .env("DATABASE_URL", &db.url)
            .env("APP_ENV", "dev")
            .output()
            .expect("run activity rollups rebuild")
    };
    let cut = rebuild("1900-01-01", "2000-01-15");
    assert!(cut.status.success(), "{cut:?}");
    let said = String::from_utf8_lossy(&cut.stdout);
    assert!(
        said.contains("from 2000-01-01T00:00:00+00:00 to 2000-01-15T00:00:00+00:00"),
        "{said}"
    );
    for (from, to) in [("1900-01-01", "1999-12-31"), ("2300-01-01", "2301-01-01")] {
        let refused = rebuild(from, to);
        assert!(!refused.status.success(), "{from}..{to} ran");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("no event can be stored in that range"),
            "{said}"
        );
    }
}

/// Where logs are JSON (`staging`, `prod`), the error that ends a process
/// is a JSON line at level ERROR too, so a log pipeline that parses every
/// line (and alerts on ERROR) sees it; it was anyhow's plain `Error: …`.
#[test]
fn a_fatal_error_is_a_json_line_where_logs_are_json() {
    let run = |app_env: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(["partitions", "list"])
            // Nothing listens on port 1.
            .env(
                "DATABASE_URL",
                "postgres://app:Xk9-long-random@127.0.0.1:1/activity",
            )
            .env("APP_ENV", app_env)
            .env_remove("RUST_LOG")
            .output()
            .expect("activity runs")
    };
    let output = run("staging");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().expect("a line");
    let line: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is JSON ({e}): {stderr}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    let error = line["error"].as_str().expect("the error");
    assert!(error.contains("Connection refused"), "{error}");
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "every line is JSON: {line}"
        );
    }
    // A terminal's text where logs are text.
    let output = run("dev");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("Connection refused"),
        "{stderr}"
    );
}

/// A database that cannot be reached is named in the error, as a URL
/// without its password (a process may have two: `DATABASE_URL` and
/// `DATABASE_READ_URL`), and the cause is told once. It read
/// `Error occurred while creating a new object: error connecting to server:
/// error connecting to server: Connection refused`, naming no host.
#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let run = |args: &[&str], url: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_activity"))
            .args(args)
            .env("DATABASE_URL", url)
            .env("APP_ENV", "dev")
            .env_remove("RUST_LOG")
            .output()
            .expect("activity runs");
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let secret = "Xk9-long-random";
    // Nothing listens on port 1; the pool (partitions) and a single
    // connection (migrate) say the same.
    for args in [&["partitions", "list"][..], &["migrate", "--skip-topics"]] {
        let stderr = run(
            args,
            &format!("postgres://app:{secret}@127.0.0.1:1/activity"),
        );
        assert!(
            stderr.contains("cannot connect to postgres://app@127.0.0.1:1/"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("Connection refused").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains(secret), "{args:?}: {stderr}");
    }
    // The key=value form, several hosts with their ports, and a login the
    // server refuses: its own message, with its SQLSTATE.
    let stderr = run(
        &["partitions", "list"],
        &format!("host=127.0.0.1,localhost port=1,2 user=app password={secret} dbname=activity"),
    );
    assert!(
        stderr.contains("cannot connect to postgres://app@127.0.0.1:1,localhost:2/activity: "),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");
    let absent = crate::fixtures::unique("absent");
    let stderr = run(
        &["partitions", "list"],
        &format!("postgres://postgres@127.0.0.1:5432/{absent}"),
    );
    assert!(
        stderr.contains(&format!(
            "cannot connect to postgres://postgres@127.0.0.1:5432/{absent}: database \"{absent}\" does not exist (3D000)"
        )),
        "{stderr}"
    );
}

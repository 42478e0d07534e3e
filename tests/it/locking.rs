//! The advisory lock between runs and the lock_timeout retries against the live workload.

use std::time::Duration;

use crate::harness::*;

const KEY: &str = "4242";
/// pg_locks is cluster-wide; other tests hold locks in their own databases.
pub const ADVISORY_LOCKS_HERE: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

#[test]
fn lock_held_elsewhere_times_out_with_exit_5_naming_the_holder() {
    let db = TestDb::new();
    let mut holder = db.client();
    let holder_pid: i32 =
        holder.query_one("SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4242)) l", &[]).expect("lock").get(0);
    let run = db.migrun().dir(&example_sql()).args(["up", "--lock-key", KEY, "--lock-wait", "1s"]).run();
    run.assert_code(5);
    let result = run.result();
    assert_eq!(result["outcome"], "lock_wait_timeout");
    assert_eq!(result["retryable"], true);
    let waiting = run
        .events()
        .into_iter()
        .find(|e| e["message"] == "waiting for the lock held by another session")
        .expect("a holder report");
    assert_eq!(waiting["holder_pid"], holder_pid);
    assert_eq!(waiting["holder_application"], "migrun-test");
    assert!(result["error"].as_str().unwrap_or_default().contains(&format!("held by pid {holder_pid}")), "{result}");
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), 0);
    holder.batch_execute("SELECT pg_advisory_unlock_all()").expect("unlock");
}

#[test]
fn waiting_run_proceeds_once_the_holder_releases() {
    let db = TestDb::new();
    let mut holder = db.client();
    holder.batch_execute("SELECT pg_advisory_lock(4242)").expect("lock");
    let mut live =
        LiveRun::start(db.migrun().dir(&example_sql()).args(["up", "--lock-key", KEY, "--lock-wait", "60s"]).spawn());
    live.wait_for_line("waiting for the lock", Duration::from_secs(30));
    holder.batch_execute("SELECT pg_advisory_unlock(4242)").expect("unlock");
    let run = live.finish();
    run.assert_code(0);
    assert_eq!(run.applied_files().len(), 4);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0, "migrun released its lock");
}

/// A run with nothing to do ends its session instead of sending an unlock: the server releases
/// the lock as the backend exits, so the next run gets it at once.
#[test]
fn a_run_that_changed_nothing_releases_the_lock_with_its_session() {
    let db = TestDb::new();
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    for _ in 0..3 {
        let run = db.migrun().dir(&example_sql()).args(["up", "--log-level", "debug"]).run();
        run.assert_code(0);
        assert!(run.events().iter().any(|e| e["message"] == "lock released with the session"), "{}", run.stderr);
        wait_until(Duration::from_secs(5), "the backend released the lock", || db.count(ADVISORY_LOCKS_HERE) == 0);
    }
    let mut other = db.client();
    let taken: bool = other.query_one("SELECT pg_try_advisory_lock(-4028659133243882200)", &[]).expect("try").get(0);
    assert!(taken, "nobody holds migrun's lock after a no-op");
}

fn busy_table(db: &TestDb) -> postgres::Client {
    let mut blocker = db.client();
    blocker.batch_execute("CREATE TABLE busy (id int)").expect("create");
    blocker.batch_execute("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE").expect("hold a lock like a long read");
    blocker
}

#[test]
fn lock_timeout_is_retried_until_the_blocker_goes_away() {
    let db = TestDb::new();
    let mut blocker = busy_table(&db);
    let args = ["up", "--lock-timeout", "100ms", "--retry-backoff", "50ms", "--lock-retries", "100"];
    let mut live = LiveRun::start(db.migrun().dir(&fixture("lock_retry")).args(args).spawn());
    let retry = live.wait_for_line("lock_timeout: rolled back", Duration::from_secs(30));
    assert!(retry.contains("55P03"), "{retry}");
    blocker.batch_execute("COMMIT").expect("release the table");
    let run = live.finish();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'added_by_migration'"), 1);
}

#[test]
fn exhausted_lock_timeout_retries_exit_8_with_nothing_applied() {
    let db = TestDb::new();
    let mut blocker = busy_table(&db);
    let run = db
        .migrun()
        .dir(&fixture("lock_retry"))
        .args(["up", "--lock-timeout", "50ms", "--retry-backoff", "10ms", "--lock-retries", "2"])
        .run();
    run.assert_code(8);
    let result = run.result();
    assert_eq!(result["outcome"], "lock_retries_exhausted");
    assert_eq!(result["sqlstate"], "55P03");
    assert_eq!(
        run.events().iter().filter(|e| e["message"].as_str().unwrap_or_default().starts_with("lock_timeout")).count(),
        2
    );
    blocker.batch_execute("COMMIT").expect("release");
    assert_eq!(db.count("SELECT count(*) FROM information_schema.columns WHERE column_name = 'added_by_migration'"), 0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 0);
}

/// Sets a server-side timeout on the test database, as a DBA may set it on a database or role.
fn set_on_database(db: &TestDb, setting: &str) {
    server().connect("postgres").batch_execute(&format!("ALTER DATABASE {} SET {setting}", db.name)).expect("set");
}

#[test]
fn a_run_waiting_for_the_lock_outlives_idle_session_timeout() {
    let db = TestDb::new();
    set_on_database(&db, "idle_session_timeout = '500ms'");
    let mut holder = db.client();
    holder.batch_execute("SET idle_session_timeout = 0; SELECT pg_advisory_lock(4242)").expect("lock");
    let mut live =
        LiveRun::start(db.migrun().dir(&example_sql()).args(["up", "--lock-key", KEY, "--lock-wait", "60s"]).spawn());
    live.wait_for_line("waiting for the lock", Duration::from_secs(20));
    // The server enforces the timeout on idle sessions, one after another, while the waiter's
    // pauses between attempts grow past it.
    server_ends_idle_sessions(&db, 3);
    holder.batch_execute("SELECT pg_advisory_unlock(4242)").expect("unlock");
    live.finish().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
}

#[test]
fn exec_lock_keeps_its_lock_through_idle_session_timeout() {
    let db = TestDb::new();
    set_on_database(&db, "idle_session_timeout = '500ms'");
    let marker = tempfile::tempdir().expect("dir");
    let done = marker.path().join("done");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", done.display());
    let mut live = LiveRun::start(
        db.migrun().args(["exec", "--lock", "--no-sql", "--lock-key", KEY, "--", "sh", "-c", &script]).spawn(),
    );
    live.wait_for_line("\"started\"", Duration::from_secs(20));
    // The server enforces its idle limit on other sessions meanwhile...
    server_ends_idle_sessions(&db, 2);
    // ...and the lock session stays, holding the lock.
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 1, "the lock is held while the command runs");
    std::fs::write(&done, "").expect("marker");
    let run = live.finish();
    run.assert_code(0);
    assert!(!run.stderr.contains("lock release failed") && !run.stderr.contains("lock lost"), "{}", run.stderr);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
}

/// Waits until the server has ended `count` idle sessions of `db`, one after another.
fn server_ends_idle_sessions(db: &TestDb, count: usize) {
    let mut admin = server().connect("postgres");
    for _ in 0..count {
        let mut victim = db.client();
        let idle: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).expect("pid").get(0);
        wait_until(Duration::from_secs(20), "the server ends an idle session", || {
            admin.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&idle]).is_ok_and(|rows| rows.is_empty())
        });
        drop(victim);
    }
}

#[test]
fn exec_lock_stops_the_command_when_its_lock_is_lost() {
    let db = TestDb::new();
    let marker = tempfile::tempdir().expect("dir");
    let script =
        format!("trap 'echo stopped > {}/term; exit 143' TERM; while :; do sleep 0.1; done", marker.path().display());
    let mut live = LiveRun::start(
        db.migrun().args(["exec", "--lock", "--no-sql", "--lock-key", KEY, "--", "sh", "-c", &script]).spawn(),
    );
    live.wait_for_line("\"started\"", Duration::from_secs(20));
    // The server ends migrun's lock session (a restart or failover does the same).
    let terminated = db.count(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.objid = {KEY} AND d.datname = '{}') t",
        db.name
    ));
    assert_eq!(terminated, 1);
    let run = live.finish();
    run.assert_code(5);
    let result = run.result();
    assert!(result["error"].as_str().unwrap_or_default().contains("was lost while the command ran"), "{result}");
    assert!(marker.path().join("term").exists(), "the command got SIGTERM");
}

#[test]
fn the_command_under_exec_lock_dies_with_migrun() {
    let db = TestDb::new();
    let mut live = LiveRun::start(
        db.migrun().args(["exec", "--lock", "--no-sql", "--lock-key", KEY, "--", "sleep", "60"]).spawn(),
    );
    let started: serde_json::Value =
        serde_json::from_str(&live.wait_for_line("\"started\"", Duration::from_secs(20))).expect("json");
    let child = started["pid"].as_i64().expect("pid");
    send(live.pid(), libc::SIGKILL);
    live.finish();
    wait_until(Duration::from_secs(10), "the command is gone", || {
        match std::fs::read_to_string(format!("/proc/{child}/stat")) {
            // Gone, or a zombie waiting for its new parent to reap it.
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    });
}

/// Every wait lasts its whole limit: the last try is made at the deadline, not skipped because
/// the next backoff step would pass it (`--lock-wait 3s` gave up after 1.6 s).
#[test]
fn waits_last_their_whole_limit() {
    let limit = Duration::from_secs(3);
    let db = TestDb::new();
    let mut holder = db.client();
    holder.batch_execute("SELECT pg_advisory_lock(4242)").expect("lock");
    let started = std::time::Instant::now();
    let run = db.migrun().dir(&example_sql()).args(["up", "--lock-key", KEY, "--lock-wait", "3s"]).run();
    run.assert_code(5);
    assert!(started.elapsed() >= limit, "gave up after {:?}", started.elapsed());
    holder.batch_execute("SELECT pg_advisory_unlock_all()").expect("unlock");

    let started = std::time::Instant::now();
    let run = db.migrun().dir(&example_sql()).args(["wait", "--wait-timeout", "3s"]).run();
    run.assert_code(9);
    assert!(started.elapsed() >= limit, "gave up after {:?}", started.elapsed());
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("not ready after 3s"), "{}", run.stderr);

    let port = crate::services::free_port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let started = std::time::Instant::now();
    let run =
        Migrun::new().env("DATABASE_URL", &nowhere).dir(&example_sql()).args(["up", "--connect-timeout", "3s"]).run();
    run.assert_code(4);
    assert!(started.elapsed() >= limit, "gave up after {:?}", started.elapsed());
}

//! A real PgBouncer between migrun and Postgres, in every pool mode: session mode works (with
//! PgBouncer's default settings too), transaction and statement modes are refused with exit 2
//! before anything is locked, read-only commands work through any of them, and every case
//! leaves no advisory lock on any server connection and PgBouncer running.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::locking::ADVISORY_LOCKS_HERE;
use crate::platform::SESSION;
use crate::services::{pgbouncer, PoolerConfig};

const REFUSED: [PoolerConfig; 5] = [
    PoolerConfig { mode: "transaction", ignore_options: false, round_robin: false },
    PoolerConfig { mode: "transaction", ignore_options: true, round_robin: false },
    PoolerConfig { mode: "transaction", ignore_options: true, round_robin: true },
    PoolerConfig { mode: "statement", ignore_options: false, round_robin: false },
    PoolerConfig { mode: "statement", ignore_options: true, round_robin: true },
];

fn through(db: &TestDb, config: PoolerConfig) -> Migrun {
    let mut m = Migrun::new();
    m.env("DATABASE_URL", &db.pooled_url(pgbouncer(config)));
    m
}

#[track_caller]
fn assert_refused(run: &Run, config: PoolerConfig) {
    run.assert_code(2);
    let result = run.result();
    assert_eq!(result["outcome"], "invalid_input");
    assert_eq!(result["retryable"], false);
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("pool_mode = {}", config.mode)), "{config:?}: {error}");
}

#[track_caller]
fn assert_nothing_left(db: &TestDb, config: PoolerConfig) {
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0, "{config:?}: an advisory lock is left on a server connection");
    assert!(pgbouncer(config).answers(), "{config:?}: PgBouncer stopped answering");
}

#[test]
fn transaction_and_statement_pools_are_refused_before_anything_is_locked() {
    for config in REFUSED {
        let db = TestDb::new();
        for _ in 0..3 {
            let run = through(&db, config).dir(&example_sql()).args(["up"]).run();
            assert_refused(&run, config);
            assert_nothing_left(&db, config);
        }
        assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'migrun_history')"), 0);
        for args in [vec!["exec", "--lock", "--no-sql", "--", "true"], vec!["baseline", "1"]] {
            let run = through(&db, config).dir(&example_sql()).args(&args).run();
            assert_refused(&run, config);
            assert_nothing_left(&db, config);
        }
        // Four at once.
        let runs: Vec<_> =
            (0..4).map(|_| LiveRun::start(through(&db, config).dir(&example_sql()).args(["up"]).spawn())).collect();
        for live in runs {
            assert_refused(&live.finish(), config);
        }
        assert_nothing_left(&db, config);
        // A no-op through the pool leaks nothing either: the next direct run gets the lock.
        db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
        assert_refused(&through(&db, config).dir(&example_sql()).args(["up"]).run(), config);
        assert_nothing_left(&db, config);
        db.migrun().dir(&example_sql()).args(["up", "--lock-wait", "0s"]).run().assert_code(0);
        assert!(db.server_log_errors().is_empty(), "{config:?}: {:?}", db.server_log_errors());
    }
}

/// `wait` and `status` only read, one statement at a time, with no session state: they work
/// through any pool (the ENTRYPOINT gate often gets the app's pooled URL).
#[test]
fn read_only_commands_work_through_every_pool() {
    let db = TestDb::new();
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    for config in REFUSED.into_iter().chain([SESSION]) {
        for _ in 0..3 {
            let wait = through(&db, config).dir(&example_sql()).args(["wait", "--wait-timeout", "10s"]).run();
            wait.assert_code(0);
            let status = through(&db, config).dir(&example_sql()).args(["status"]).run();
            status.assert_code(0);
        }
        assert_nothing_left(&db, config);
    }
    assert!(db.server_log_errors().is_empty(), "{:?}", db.server_log_errors());
}

/// Through a session pool, whether PgBouncer refuses the start-up options (its default) or
/// drops them (`ignore_startup_parameters = options`), a migration runs with migrun's session
/// settings, not the database's, and the log says once how they were made.
#[test]
fn session_settings_hold_through_a_session_pool() {
    let file = "CREATE TABLE seen AS SELECT current_setting('idle_in_transaction_session_timeout') AS idle;";
    let dir = sql_dir(&[("0001_seen.sql", file)]);
    let seen = |setup: &dyn Fn(&TestDb) -> Migrun| {
        let db = TestDb::new();
        server()
            .connect("postgres")
            .batch_execute(&format!("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '3s'", db.name))
            .expect("set");
        let run = setup(&db).dir(dir.path()).args(["up"]).run();
        run.assert_code(0);
        let idle = db.query_strings("SELECT idle FROM seen").concat();
        assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
        (idle, run)
    };
    let (direct, _) = seen(&|db| db.migrun());
    assert_ne!(direct, "3s", "migrun's own setting wins over the database's");
    let ignoring = PoolerConfig { ignore_options: true, ..SESSION };
    for config in [SESSION, ignoring] {
        let (pooled, run) = seen(&|db| through(db, config));
        assert_eq!(pooled, direct, "{config:?}");
        let said = |text: &str| {
            run.events().iter().filter(|e| e["message"].as_str().unwrap_or_default().contains(text)).count()
        };
        assert_eq!(said("connected through a pooler in session mode"), 1, "{}", run.stderr);
        assert_eq!(said("refuses start-up options"), usize::from(!config.ignore_options), "{}", run.stderr);
        assert!(pgbouncer(config).answers());
    }
}

/// SIGTERM mid-statement through PgBouncer: the cancel reaches the server every time, within
/// a second or two, and PgBouncer keeps running (1.18 exits with `bad client state` when the
/// cancel connection is closed under it).
#[test]
fn sigterm_through_pgbouncer_cancels_every_time() {
    let pooler = pgbouncer(SESSION);
    for attempt in 0..5 {
        let db = TestDb::new();
        through(&db, SESSION).dir(&fixture("sleepy")).args(["up", "--target", "1"]).run().assert_code(0);
        db.client().batch_execute("INSERT INTO sleep_control VALUES (60)").expect("make 0002 sleep");
        let mut live = LiveRun::start(through(&db, SESSION).dir(&fixture("sleepy")).args(["up"]).spawn());
        live.wait_for_line("0002_slow.sql", Duration::from_secs(30));
        wait_until(Duration::from_secs(30), "the statement runs", || {
            db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()") == 1
        });
        let sent = Instant::now();
        send(live.pid(), libc::SIGTERM);
        let run = live.finish();
        run.assert_code(143);
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "attempt {attempt}: exited {:?} after SIGTERM",
            sent.elapsed()
        );
        assert!(pooler.answers(), "attempt {attempt}: PgBouncer stopped answering");
        wait_until(Duration::from_secs(5), "no lock is left", || db.count(ADVISORY_LOCKS_HERE) == 0);
    }
    let log = std::fs::read_to_string(&pooler.log).unwrap_or_default();
    assert!(!log.contains("bad client state"), "{log}");
}

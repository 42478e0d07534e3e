//! The core set, on every setup migrun supports: as a superuser on a direct connection, as an
//! RDS-shaped role (NOSUPERUSER, database owner, no pg_read_all_stats, SCRAM, role and database
//! timeouts), and through PgBouncer in session mode with its default settings. scripts/test
//! runs this module on every supported major (13 to 18) besides the whole suite on Debian's.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::locking::ADVISORY_LOCKS_HERE;
use crate::services::{pgbouncer, PoolerConfig};

/// The key of migrun's default lock (the history table `migrun_history` in `public`).
const DEFAULT_KEY: i64 = -4_028_659_133_243_882_200;

/// PgBouncer in session mode, as installed: `options` in the start-up packet is refused.
pub const SESSION: PoolerConfig = PoolerConfig { mode: "session", ignore_options: false, round_robin: false };

#[derive(Debug, Clone, Copy)]
pub enum Setup {
    Direct,
    RdsRole,
    PgBouncerSession,
}

/// A fresh database and the connection string migrun gets for it in one setup.
pub struct Target {
    pub db: TestDb,
    pub url: String,
}

impl Setup {
    pub fn target(self) -> Target {
        match self {
            Setup::Direct => {
                let db = TestDb::new();
                let url = db.url();
                Target { db, url }
            }
            Setup::RdsRole => {
                let db = TestDb::owned_by_rds_role();
                let url = db.rds_url();
                Target { db, url }
            }
            Setup::PgBouncerSession => {
                let db = TestDb::new();
                let url = db.pooled_url(pgbouncer(SESSION));
                Target { db, url }
            }
        }
    }
}

impl Target {
    pub fn migrun(&self) -> Migrun {
        let mut m = Migrun::new();
        m.env("DATABASE_URL", &self.url);
        m
    }

    /// A session as migrun's role, over migrun's path (through the pooler, say).
    pub fn client(&self) -> postgres::Client {
        self.url
            .parse::<postgres::Config>()
            .expect("target URL")
            .connect(postgres::NoTls)
            .expect("connect as the target")
    }

    /// Once migrun's run ended: no advisory lock is left on any backend of this database (a
    /// pooled server connection included), and the server logged no error for it.
    pub fn assert_clean(&self) {
        self.assert_clean_except(&[]);
    }

    /// As `assert_clean`, with the errors a test caused on purpose (a cancelled statement).
    pub fn assert_clean_except(&self, expected: &[&str]) {
        wait_until(Duration::from_secs(5), "no advisory lock is left in the database", || {
            self.db.count(ADVISORY_LOCKS_HERE) == 0
        });
        let errors = self.db.server_log_errors_except(expected);
        assert!(errors.is_empty(), "the server logged errors for this database:\n{}", errors.join("\n"));
    }
}

fn active_sleepers(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()")
}

/// `up`, the no-op `up` after it, and `status`.
fn up_no_op_and_status(setup: Setup) {
    let target = setup.target();
    let first = target.migrun().dir(&example_sql()).args(["up"]).run();
    first.assert_code(0);
    assert_eq!(first.applied_files().len(), 4);
    for _ in 0..2 {
        let again = target.migrun().dir(&example_sql()).args(["up"]).run();
        again.assert_code(0);
        assert_eq!(again.applied_files().len(), 0);
        target.assert_clean();
    }
    let status = target.migrun().dir(&example_sql()).args(["status", "--json"]).run();
    status.assert_code(0);
    let listed: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    let states: Vec<&str> =
        listed["files"].as_array().expect("files").iter().map(|f| f["state"].as_str().unwrap_or_default()).collect();
    assert_eq!(states, ["applied"; 4], "{listed}");
    target.assert_clean();
}

/// `wait` started before the migration polls a database without a history table, then returns
/// once `up` has run.
fn wait_returns_once_migrated(setup: Setup) {
    let target = setup.target();
    let mut live = LiveRun::start(target.migrun().dir(&example_sql()).args(["wait", "--wait-timeout", "60s"]).spawn());
    live.wait_for_line("waiting for migrations to be applied", Duration::from_secs(30));
    // A few polls of the missing table.
    std::thread::sleep(Duration::from_millis(1200));
    target.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    let run = live.finish();
    run.assert_code(0);
    assert_eq!(run.result()["outcome"], "success");
    target.assert_clean();
}

/// SIGTERM during a long statement cancels it at once, rolls back, releases the lock; the next
/// run converges.
fn sigterm_cancels_and_the_next_run_converges(setup: Setup) {
    let target = setup.target();
    target.migrun().dir(&fixture("sleepy")).args(["up", "--target", "1"]).run().assert_code(0);
    target.db.client().batch_execute("INSERT INTO sleep_control VALUES (60)").expect("make 0002 sleep");
    let mut live = LiveRun::start(target.migrun().dir(&fixture("sleepy")).args(["up"]).spawn());
    live.wait_for_line("0002_slow.sql", Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "the statement is running", || active_sleepers(&target.db) == 1);
    let sent = Instant::now();
    send(live.pid(), libc::SIGTERM);
    let run = live.finish();
    run.assert_code(143);
    assert!(sent.elapsed() < Duration::from_secs(3), "exited {:?} after SIGTERM: the cancel was lost", sent.elapsed());
    assert_eq!(run.result()["outcome"], "interrupted");
    assert_eq!(active_sleepers(&target.db), 0, "the statement was cancelled");
    assert_eq!(target.db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'made_before_the_sleep'"), 0);
    target.db.client().batch_execute("DELETE FROM sleep_control").expect("no more sleeping");
    let next = target.migrun().dir(&fixture("sleepy")).args(["up"]).run();
    next.assert_code(0);
    assert_eq!(next.applied_files(), vec!["0002_slow.sql"]);
    target.assert_clean_except(&["canceling statement due to user request"]);
}

/// SIGKILL mid-file: nothing of migrun runs any more; the server (or the pooler) ends the
/// session and the next run converges.
fn sigkill_then_the_next_run_converges(setup: Setup) {
    let target = setup.target();
    target.migrun().dir(&fixture("sleepy")).args(["up", "--target", "1"]).run().assert_code(0);
    // Short: PostgreSQL 13 cannot notice a dead client before the statement ends.
    target.db.client().batch_execute("INSERT INTO sleep_control VALUES (2)").expect("make 0002 sleep");
    let mut live = LiveRun::start(target.migrun().dir(&fixture("sleepy")).args(["up"]).spawn());
    live.wait_for_line("0002_slow.sql", Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "the statement is running", || active_sleepers(&target.db) == 1);
    send(live.pid(), libc::SIGKILL);
    let killed = live.finish();
    assert_eq!(killed.code, -1, "killed by the signal");
    let next = target.migrun().dir(&fixture("sleepy")).args(["up", "--lock-wait", "30s"]).run();
    next.assert_code(0);
    assert_eq!(next.applied_files(), vec!["0002_slow.sql"]);
    assert_eq!(target.db.count("SELECT count(*) FROM migrun_history"), 2);
    target.assert_clean();
}

/// Eight runs at once: every file body runs exactly once.
fn eight_concurrent_runs_apply_each_file_once(setup: Setup) {
    let target = setup.target();
    let children: Vec<_> = (0..8)
        .map(|_| LiveRun::start(target.migrun().dir(&fixture("concurrent")).args(["up", "--lock-wait", "60s"]).spawn()))
        .collect();
    let mut applied = 0;
    for child in children {
        let run = child.finish();
        run.assert_code(0);
        applied += run.applied_files().len();
    }
    assert_eq!(applied, 6);
    assert_eq!(target.db.count("SELECT count(*) FROM body_runs"), 6, "each body ran once");
    target.assert_clean();
}

/// Another role holds migrun's lock: a run as this setup's role waits, names the holder as far
/// as it may see it, times out with exit 5, and a run started later proceeds once it is free.
fn lock_held_by_another_role_is_waited_for(setup: Setup) {
    let target = setup.target();
    let mut holder = server().connect_as(&target.db.name, OTHER_ROLE);
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1)) l", &[&DEFAULT_KEY])
        .expect("lock")
        .get(0);
    let timed_out = target.migrun().dir(&example_sql()).args(["up", "--lock-wait", "1500ms"]).run();
    timed_out.assert_code(5);
    let result = timed_out.result();
    assert_eq!(result["outcome"], "lock_wait_timeout");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("held by pid {holder_pid}")), "{error}");
    let mut live = LiveRun::start(target.migrun().dir(&example_sql()).args(["up", "--lock-wait", "60s"]).spawn());
    live.wait_for_line("waiting for the lock", Duration::from_secs(30));
    holder.batch_execute("SELECT pg_advisory_unlock_all()").expect("unlock");
    let run = live.finish();
    run.assert_code(0);
    assert_eq!(run.applied_files().len(), 4);
    target.assert_clean();
}

/// `baseline` records what exists without running it; `up` runs the rest.
fn baseline_adopts_and_up_runs_the_rest(setup: Setup) {
    let target = setup.target();
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (id int);"),
        ("0002_b.sql", "CREATE TABLE b (id int);"),
        ("0003_c.sql", "CREATE TABLE c (id int);"),
    ]);
    target.client().batch_execute("CREATE TABLE a (id int); CREATE TABLE b (id int)").expect("the existing schema");
    target.migrun().dir(dir.path()).args(["baseline", "2"]).run().assert_code(0);
    let up = target.migrun().dir(dir.path()).args(["up"]).run();
    up.assert_code(0);
    assert_eq!(up.applied_files(), vec!["0003_c.sql"]);
    target.assert_clean();
}

/// `exec --lock`: the tool's session is not ended by the database's own timeouts
/// (`idle_session_timeout` from 14, `transaction_timeout` from 17), which migrun clears for it
/// as for itself.
fn exec_lock_tool_outlives_the_database_timeouts(setup: Setup) {
    let target = setup.target();
    let major: i32 = target
        .db
        .client()
        .query_one("SELECT current_setting('server_version_num')::int / 10000", &[])
        .expect("major")
        .get(0);
    let mut admin = server().connect("postgres");
    if major >= 14 {
        admin
            .batch_execute(&format!("ALTER DATABASE {} SET idle_session_timeout = '1s'", target.db.name))
            .expect("set");
    }
    if major >= 17 {
        admin.batch_execute(&format!("ALTER DATABASE {} SET transaction_timeout = '1s'", target.db.name)).expect("set");
    }
    let tool = [
        "psql",
        "-X",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "SELECT pg_sleep(1.5)",
        "-c",
        "\\! sleep 1.5",
        "-c",
        "SELECT 42",
    ];
    let run = target.migrun().args(["exec", "--lock", "--no-sql", "--"]).args(tool).run();
    run.assert_code(0);
    assert!(run.stdout.lines().any(|l| l == "42"), "{}\n{}", run.stdout, run.stderr);
    target.assert_clean();
}

/// `diff` on this setup: none after `up`, each change by hand after it (by the superuser:
/// a column, a grant, a policy, a function) named, `up --check-drift` refusing with nothing
/// applied, `diff --accept` recording the live schema.
fn drift_is_seen_and_gated(setup: Setup) {
    let target = setup.target();
    let dir = sql_dir(&[
        (
            "0001_items.sql",
            "CREATE TABLE items (id int PRIMARY KEY, note text);
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
",
        ),
        (
            "0002_more.sql",
            "CREATE TABLE more (id int);
",
        ),
    ]);
    target.migrun().dir(dir.path()).args(["up", "--target", "1"]).run().assert_code(0);
    target.migrun().dir(dir.path()).args(["diff"]).run().assert_code(0);
    target
        .db
        .client()
        .batch_execute(&format!(
            "ALTER TABLE items ADD COLUMN by_hand text; GRANT SELECT ON items TO {OTHER_ROLE};
             ALTER TABLE items ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON items USING (true);
             CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'"
        ))
        .expect("change by hand");
    let diff = target.migrun().dir(dir.path()).args(["diff"]).run();
    diff.assert_code(19);
    for needle in [
        "+ column public.items.by_hand text",
        "+ grant SELECT on table public.items to migrun_other",
        "+ policy public.items p",
        "function public.f()",
    ] {
        assert!(
            diff.stdout.contains(needle),
            "{needle}:
{}",
            diff.stdout
        );
    }
    target.migrun().dir(dir.path()).args(["up", "--check-drift"]).run().assert_code(19);
    assert_eq!(target.db.count("SELECT count(*) FROM migrun_history"), 1, "nothing was applied");
    target.migrun().dir(dir.path()).args(["diff", "--accept"]).run().assert_code(0);
    target.migrun().dir(dir.path()).args(["up", "--check-drift"]).run().assert_code(0);
    target.migrun().dir(dir.path()).args(["diff"]).run().assert_code(0);
    target.assert_clean();
}

/// `verify` on a scratch server of the same major, with a no-transaction file (its
/// interruption cases copy a template database).
fn verify_on_a_scratch_server_of_this_major() {
    let dir = sql_dir(&[
        ("0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY, note text);"),
        (
            "0002_index.sql",
            "-- migrun:no-transaction\nINSERT INTO items VALUES (1, 'a') ON CONFLICT DO NOTHING;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note);\n",
        ),
    ]);
    let run = Migrun::offline(dir.path()).args(["verify"]).run();
    run.assert_code(0);
    assert!(run.stdout.contains("interruption case"), "{}", run.stdout);
    // The committed schema file, built on a scratch server of this major.
    let file = dir.path().join("schema.txt");
    Migrun::offline(dir.path()).args(["schema", "--write"]).arg_path(&file).run().assert_code(0);
    Migrun::offline(dir.path()).args(["schema", "--check"]).arg_path(&file).run().assert_code(0);
    assert!(std::fs::read_to_string(&file).unwrap_or_default().contains("index CREATE INDEX items_note"));
}

fn lint_runs() {
    let run = Migrun::offline(&example_sql()).args(["lint"]).run();
    run.assert_code(0);
}

macro_rules! core_set {
    ($module:ident, $setup:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn up_no_op_and_status() {
                super::up_no_op_and_status($setup);
            }

            #[test]
            fn wait_returns_once_migrated() {
                super::wait_returns_once_migrated($setup);
            }

            #[test]
            fn sigterm_cancels_and_the_next_run_converges() {
                super::sigterm_cancels_and_the_next_run_converges($setup);
            }

            #[test]
            fn sigkill_then_the_next_run_converges() {
                super::sigkill_then_the_next_run_converges($setup);
            }

            #[test]
            fn eight_concurrent_runs_apply_each_file_once() {
                super::eight_concurrent_runs_apply_each_file_once($setup);
            }

            #[test]
            fn lock_held_by_another_role_is_waited_for() {
                super::lock_held_by_another_role_is_waited_for($setup);
            }

            #[test]
            fn baseline_adopts_and_up_runs_the_rest() {
                super::baseline_adopts_and_up_runs_the_rest($setup);
            }

            #[test]
            fn drift_is_seen_and_gated() {
                super::drift_is_seen_and_gated($setup);
            }
        }
    };
}

#[test]
fn exec_lock_tool_outlives_the_database_timeouts_direct() {
    exec_lock_tool_outlives_the_database_timeouts(Setup::Direct);
}

#[test]
fn exec_lock_tool_outlives_the_database_timeouts_as_the_rds_role() {
    exec_lock_tool_outlives_the_database_timeouts(Setup::RdsRole);
}

core_set!(direct, Setup::Direct);
core_set!(rds_role, Setup::RdsRole);
core_set!(pgbouncer_session, Setup::PgBouncerSession);

#[test]
fn verify_runs_on_this_major() {
    verify_on_a_scratch_server_of_this_major();
}

#[test]
fn lint_runs_on_this_platform() {
    lint_runs();
}

/// scripts/test names the major each run is for; the server must be that major (a PATH that
/// still finds another major's binaries first would test the wrong one in silence).
#[test]
fn the_test_server_is_the_major_asked_for() {
    let expected: u32 = match std::env::var("MIGRUN_TEST_PG_MAJOR") {
        Ok(major) => major.parse().expect("MIGRUN_TEST_PG_MAJOR is a number"),
        Err(_) => crate::services::binary_major("postgres"),
    };
    let version: String =
        server().connect("postgres").query_one("SHOW server_version_num", &[]).expect("version").get(0);
    let major = version.parse::<u32>().expect("server_version_num") / 10000;
    assert_eq!(major, expected, "the test server runs PostgreSQL {major}");
    // verify's scratch server comes from the same binaries.
    assert_eq!(crate::services::binary_major("initdb"), expected);
}

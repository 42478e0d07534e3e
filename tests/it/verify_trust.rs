//! `verify` is stoppable and leaves nothing behind: SIGTERM cancels it at once and cleans up,
//! a later run sweeps what a killed one left, cluster-wide statements neither leak nor fake an
//! upgrade difference, and it judges every file as `up` does.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A temp folder of its own for a run's scratch clusters, open to the `postgres` user.
fn temp_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    dir
}

fn scratch_dirs(temp: &Path) -> Vec<String> {
    std::fs::read_dir(temp)
        .expect("temp folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("migrun-verify-"))
        .collect()
}

fn scratch_databases(pid: u32) -> i64 {
    server()
        .connect("postgres")
        .query_one(
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE 'migrun\\_verify\\_%\\_{pid}\\_%'"),
            &[],
        )
        .expect("count")
        .get(0)
}

fn slow_folder() -> tempfile::TempDir {
    sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n"), ("0002_slow.sql", "SELECT pg_sleep(60);\n")])
}

/// SIGTERM while a file runs on the scratch cluster: verify stops at once (not after the
/// grace), exits 143, and its scratch cluster is gone from the temp folder.
#[test]
fn sigterm_stops_verify_at_once_and_removes_its_scratch_cluster() {
    let temp = temp_folder();
    let dir = slow_folder();
    let mut migrun = Migrun::new();
    migrun.dir(dir.path()).env("TMPDIR", &temp.path().display().to_string()).args(["verify"]);
    let mut live = LiveRun::start(migrun.spawn());
    live.wait_for_line("scratch Postgres started", Duration::from_secs(30));
    assert_eq!(scratch_dirs(temp.path()).len(), 1);
    let asked = Instant::now();
    send(live.pid(), libc::SIGTERM);
    let run = live.finish_within(Duration::from_secs(30));
    run.assert_code(143);
    assert!(asked.elapsed() < Duration::from_secs(10), "verify took {:?} to stop", asked.elapsed());
    assert_eq!(scratch_dirs(temp.path()), Vec::<String>::new(), "the scratch cluster was left behind");
}

/// The same on a server someone named: its scratch databases are dropped, and the statement
/// that ran in one ends with it.
#[test]
fn sigterm_stops_verify_on_a_named_server_and_drops_its_databases() {
    let db = TestDb::new();
    let dir = slow_folder();
    let mut migrun = Migrun::new();
    migrun.dir(dir.path()).args(["verify", "--database-url", &db.url()]);
    let live = LiveRun::start(migrun.spawn());
    let pid = live.pid();
    // This run's own scratch databases only: another test's may sleep too.
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND datname LIKE 'migrun\\_verify\\_%\\_{pid}\\_%'"
    );
    wait_until(Duration::from_secs(30), "the slow file runs", || db.count(&sleeping) > 0);
    send(pid, libc::SIGTERM);
    let run = live.finish_within(Duration::from_secs(30));
    run.assert_code(143);
    assert_eq!(scratch_databases(pid), 0, "scratch databases left on the server");
    assert_eq!(db.count(&sleeping), 0, "the statement still runs");
}

/// A verify killed by SIGKILL cleans nothing; the next run on this host sweeps what it left:
/// the scratch cluster in the temp folder and the databases on a named server.
#[test]
fn the_next_verify_sweeps_what_a_killed_one_left() {
    let temp = temp_folder();
    let dir = slow_folder();
    let quick = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n")]);
    let tmpdir = temp.path().display().to_string();
    let mut migrun = Migrun::new();
    migrun.dir(dir.path()).env("TMPDIR", &tmpdir).args(["verify"]);
    let mut live = LiveRun::start(migrun.spawn());
    live.wait_for_line("scratch Postgres started", Duration::from_secs(30));
    send(live.pid(), libc::SIGKILL);
    live.finish();
    wait_until(Duration::from_secs(20), "the killed run's server stopped", || {
        scratch_dirs(temp.path()).iter().all(|d| !temp.path().join(d).join("data").join("postmaster.pid").exists())
    });
    assert_eq!(scratch_dirs(temp.path()).len(), 1, "the killed run left its cluster");
    Migrun::offline(quick.path()).env("TMPDIR", &tmpdir).args(["verify"]).run().assert_code(0);
    assert_eq!(scratch_dirs(temp.path()), Vec::<String>::new(), "swept");

    let db = TestDb::new();
    let mut migrun = Migrun::new();
    migrun.dir(dir.path()).args(["verify", "--database-url", &db.url()]);
    let live = LiveRun::start(migrun.spawn());
    let pid = live.pid();
    wait_until(Duration::from_secs(30), "its scratch database exists", || scratch_databases(pid) > 0);
    send(pid, libc::SIGKILL);
    live.finish();
    // (Another test's verify on this server may sweep it first: either way it must go.)
    Migrun::new().dir(quick.path()).args(["verify", "--database-url", &db.url()]).run().assert_code(0);
    assert_eq!(scratch_databases(pid), 0, "the dead run's databases were swept");
}

/// A role a folder creates: `verify --from` an identical folder is no upgrade difference, and
/// on a named server the role is gone afterwards, so verify runs again.
#[test]
fn roles_a_folder_creates_are_dropped_after_each_pass() {
    let role = format!("verify_reporting_{}", std::process::id());
    let dir = sql_dir(&[
        ("0001_role.sql", &format!("CREATE ROLE {role};\n")),
        ("0002_t.sql", &format!("CREATE TABLE t (id int);\nGRANT SELECT ON t TO {role};\n")),
    ]);
    let from = dir.path().display().to_string();
    let run = Migrun::offline(dir.path()).args(["verify", "--from", &from]).run();
    run.assert_code(0);
    let db = TestDb::new();
    for _ in 0..2 {
        Migrun::new()
            .dir(dir.path())
            .args(["verify", "--database-url", &db.url(), "--from", &from])
            .run()
            .assert_code(0);
        assert_eq!(db.count(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")), 0, "the role stayed");
    }
}

/// On a server someone named, a statement that changes the whole server is refused before
/// anything runs; on migrun's own scratch cluster it is fine.
#[test]
fn server_wide_statements_are_refused_on_a_named_server() {
    let db = TestDb::new();
    for statement in [
        "ALTER SYSTEM SET work_mem = '7MB'",
        "alter role postgres set work_mem = '7MB'",
        "DROP TABLESPACE IF EXISTS nowhere",
    ] {
        let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n"), ("0002_b.sql", &format!("{statement};\n"))]);
        let run = Migrun::new().dir(dir.path()).args(["verify", "--database-url", &db.url()]).run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("0002_b.sql") && error.contains("changes the whole server"), "{statement}: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM pg_file_settings WHERE name = 'work_mem' AND setting = '7MB'"), 0);
    assert_eq!(db.count("SELECT count(*) FROM pg_db_role_setting WHERE 'work_mem=7MB' = ANY (setconfig)"), 0);
    let dir = sql_dir(&[("0001_a.sql", "ALTER SYSTEM SET work_mem = '7MB';\n")]);
    // ALTER SYSTEM cannot run in a transaction block.
    std::fs::write(dir.path().join("0001_a.sql"), "-- migrun:no-transaction\nALTER SYSTEM SET work_mem = '7MB';\n")
        .expect("write");
    Migrun::offline(dir.path()).args(["verify"]).run().assert_code(0);
}

/// `lint` and `verify` judge every file as `up` does: a file with no statement (empty, or
/// only comments) is refused by all three, naming it.
#[test]
fn lint_verify_and_up_refuse_the_same_files() {
    let db = TestDb::new();
    for (name, text) in [("0002_empty.sql", ""), ("0002_comments.sql", "-- nothing yet\n/* later */\n")] {
        let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n"), (name, text)]);
        for args in [vec!["up"], vec!["lint"], vec!["verify"]] {
            let run = db.migrun().dir(dir.path()).args(&args).run();
            run.assert_code(2);
            assert!(run.result()["error"].as_str().unwrap_or_default().contains(name), "{args:?}: {}", run.stderr);
        }
    }
}

/// A database that holds views, materialized views or sequences is an application's too.
#[test]
fn a_named_database_with_views_or_sequences_is_refused() {
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n")]);
    for object in
        ["CREATE VIEW v AS SELECT 1 AS one", "CREATE MATERIALIZED VIEW m AS SELECT 1 AS one", "CREATE SEQUENCE s"]
    {
        let db = TestDb::new();
        db.client().batch_execute(object).expect("object");
        let run = Migrun::new().dir(dir.path()).args(["verify", "--database-url", &db.url()]).run();
        run.assert_code(2);
        assert!(
            run.result()["error"].as_str().unwrap_or_default().contains("is not empty"),
            "{object}: {}",
            run.stderr
        );
    }
}

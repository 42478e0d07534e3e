//! The readiness gate survives what RDS does to a database: a restart (fast, or a crash and
//! recovery), and a terminated session. `wait` and `exec --wait` reconnect and keep polling
//! until `--wait-timeout`; the schema applied after the restart lets them through.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::services::Restartable;

fn folder() -> tempfile::TempDir {
    sql_dir(&[("0001_users.sql", "CREATE TABLE users (id int);\n")])
}

fn waiting(cluster: &Restartable, dir: &std::path::Path, command: &[&str]) -> LiveRun {
    let mut migrun = Migrun::new();
    migrun.dir(dir).env("DATABASE_URL", &cluster.url()).args(command);
    let mut live = LiveRun::start(migrun.spawn());
    live.wait_for_line("waiting for migrations to be applied", Duration::from_secs(30));
    live
}

fn wait_session_gone(cluster: &Restartable) -> i64 {
    let mut client = postgres::Client::connect(&cluster.url(), postgres::NoTls).expect("connect");
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'migrun%' AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate");
    row.get(0)
}

#[test]
fn wait_and_exec_wait_survive_restarts_and_a_terminated_session() {
    let dir = folder();
    let wait = ["wait", "--wait-timeout", "60s"];
    let exec = ["exec", "--wait-timeout", "60s", "--", "sh", "-c", "echo app-started"];
    for (case, command) in [
        ("fast restart", &wait[..]),
        ("crash", &wait[..]),
        ("terminated session", &wait[..]),
        ("fast restart", &exec[..]),
    ] {
        let cluster = Restartable::start();
        let live = waiting(&cluster, dir.path(), command);
        let disrupted = Instant::now();
        match case {
            "fast restart" => {
                cluster.stop(libc::SIGINT);
                cluster.start_again();
            }
            "crash" => {
                cluster.stop(libc::SIGQUIT);
                cluster.start_again();
            }
            _ => assert!(wait_session_gone(&cluster) > 0, "no wait session to terminate"),
        }
        let up = Migrun::new().dir(dir.path()).env("DATABASE_URL", &cluster.url()).args(["up"]).run();
        up.assert_code(0);
        let run = live.finish_within(Duration::from_secs(60));
        run.assert_code(0);
        println!("{case} ({}): ready {:?} after the disruption", command[0], disrupted.elapsed());
        assert!(run.stderr.contains("schema ready"), "{case}: {}", run.stderr);
        if command[0] == "exec" {
            assert!(run.stdout.contains("app-started"), "{case}: the app did not start");
        }
    }
}

/// A database down for the whole rest of the wait ends it as unreachable (exit 4, retryable),
/// at the deadline, not seconds after the outage began.
#[test]
fn a_database_down_until_the_deadline_is_unreachable_at_the_deadline() {
    let dir = folder();
    let cluster = Restartable::start();
    let live = waiting(&cluster, dir.path(), &["wait", "--wait-timeout", "6s"]);
    let started = Instant::now();
    cluster.stop(libc::SIGINT);
    let run = live.finish_within(Duration::from_secs(40));
    run.assert_code(4);
    assert!(started.elapsed() >= Duration::from_secs(3), "gave up after {:?}", started.elapsed());
    assert_eq!(run.result()["retryable"], true);
    assert!(run.stderr.contains("reconnecting until the wait ends"), "{}", run.stderr);
    cluster.start_again();
}

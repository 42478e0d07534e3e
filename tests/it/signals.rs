//! SIGTERM and SIGINT while migrating: real signals sent to the real binary.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::locking::ADVISORY_LOCKS_HERE;

const CASES: [(i32, i32); 2] = [(libc::SIGTERM, 143), (libc::SIGINT, 130)];

fn active_sleepers(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()")
}

#[test]
fn signal_during_a_long_statement_cancels_rolls_back_and_unlocks() {
    for (signal, code) in CASES {
        let db = TestDb::new();
        db.migrun().dir(&fixture("sleepy")).args(["up", "--target", "1"]).run().assert_code(0);
        db.client().batch_execute("INSERT INTO sleep_control VALUES (60)").expect("make 0002 sleep");
        let mut live = LiveRun::start(db.migrun().dir(&fixture("sleepy")).args(["up"]).spawn());
        live.wait_for_line("0002_slow.sql", Duration::from_secs(30));
        wait_until(Duration::from_secs(30), "the statement is running", || active_sleepers(&db) == 1);
        let sent = Instant::now();
        send(live.pid(), signal);
        let run = live.finish();
        let took = sent.elapsed();
        run.assert_code(code);
        assert!(took < Duration::from_secs(3), "exited {took:?} after the signal");
        let result = run.result();
        assert_eq!(result["outcome"], "interrupted");
        assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0002_slow.sql", "{result}");
        assert_eq!(active_sleepers(&db), 0, "the statement was cancelled");
        wait_until(Duration::from_secs(5), "migrun's backend is gone", || {
            db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'migrun/%'") == 0
        });
        assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0, "no advisory lock left");
        assert_eq!(
            db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'made_before_the_sleep'"),
            0,
            "rolled back"
        );
        assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 1);

        db.client().batch_execute("DELETE FROM sleep_control").expect("no more sleeping");
        let next = db.migrun().dir(&fixture("sleepy")).args(["up"]).run();
        next.assert_code(0);
        assert_eq!(next.applied_files(), vec!["0002_slow.sql"], "the next run converges");
    }
}

#[test]
fn signal_while_waiting_for_the_lock_stops_at_once() {
    for (signal, code) in CASES {
        let db = TestDb::new();
        let mut holder = db.client();
        holder.batch_execute("SELECT pg_advisory_lock(4242)").expect("lock");
        let mut live = LiveRun::start(db.migrun().dir(&example_sql()).args(["up", "--lock-key", "4242"]).spawn());
        live.wait_for_line("waiting for the lock", Duration::from_secs(30));
        let sent = Instant::now();
        send(live.pid(), signal);
        let run = live.finish();
        run.assert_code(code);
        assert!(sent.elapsed() < Duration::from_secs(2));
        assert_eq!(run.result()["outcome"], "interrupted");
        assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), 0);
    }
}

#[test]
fn signal_during_connect_retries_stops_at_once() {
    for (signal, code) in CASES {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let url = format!("postgres://nobody@127.0.0.1:{port}/x");
        let mut live = LiveRun::start(
            Migrun::new()
                .env("DATABASE_URL", &url)
                .dir(&example_sql())
                .args(["up", "--connect-timeout", "60s"])
                .spawn(),
        );
        live.wait_for_line("retrying", Duration::from_secs(30));
        let sent = Instant::now();
        send(live.pid(), signal);
        let run = live.finish();
        run.assert_code(code);
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
}

/// When the clean stop takes longer than --shutdown-grace, migrun exits at once anyway (ECS
/// would SIGKILL it soon) and the server rolls the open transaction back.
#[test]
fn shutdown_grace_passing_exits_at_once_and_the_server_rolls_back() {
    for format in ["json", "human"] {
        let db = TestDb::new();
        db.migrun().dir(&fixture("sleepy")).args(["up", "--target", "1"]).run().assert_code(0);
        db.client().batch_execute("INSERT INTO sleep_control VALUES (60)").expect("make 0002 sleep");
        let mut live = LiveRun::start(
            db.migrun()
                .dir(&fixture("sleepy"))
                .env("MIGRUN_LOG_FORMAT", format)
                .args(["up", "--shutdown-grace", "0"])
                .spawn(),
        );
        live.wait_for_line("0002_slow.sql", Duration::from_secs(30));
        wait_until(Duration::from_secs(30), "the statement is running", || active_sleepers(&db) == 1);
        send(live.pid(), libc::SIGTERM);
        let run = live.finish();
        run.assert_code(143);
        if format == "json" {
            let result = run.result();
            assert_eq!(result["outcome"], "interrupted");
            assert_eq!((result["exit_code"].as_i64(), result["retryable"].as_bool()), (Some(143), Some(true)));
            assert_eq!(result["command"], "up", "the abort event has the same schema as any result: {result}");
            assert!(result["message"].as_str().unwrap_or_default().contains("grace period passed"), "{result}");
        } else {
            let last = run.stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("result: interrupted (exit 143)") && last.contains("grace period passed"),
                "{last}"
            );
        }
        wait_until(Duration::from_secs(10), "the server ended the orphaned statement", || active_sleepers(&db) == 0);
        wait_until(Duration::from_secs(10), "the lock died with the session", || db.count(ADVISORY_LOCKS_HERE) == 0);
        assert_eq!(
            db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'made_before_the_sleep'"),
            0,
            "rolled back"
        );
    }
}

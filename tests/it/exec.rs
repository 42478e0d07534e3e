//! `migrun exec` and `migrun wait`: a real child process, real signals, exit statuses.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn exec_forwards_every_signal_to_the_child_and_exits_with_its_code() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals.log");
    let script = fixture("child").join("record_signals.sh");
    let mut migrun = Migrun::new();
    migrun.args(["exec", "--no-db", "--"]).args([&script, &out]);
    let live = LiveRun::start(migrun.spawn());
    wait_until(Duration::from_secs(10), "the child is ready", || lines(&out).contains(&"ready".to_string()));
    let forwarded = [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
        // Not handled before: each of these killed migrun and orphaned the child.
        (libc::SIGALRM, "ALRM"),
        (libc::SIGURG, "URG"),
        (libc::SIGPROF, "PROF"),
        (libc::SIGVTALRM, "VTALRM"),
        (libc::SIGXCPU, "XCPU"),
        (libc::SIGXFSZ, "XFSZ"),
        (libc::SIGPWR, "PWR"),
        (libc::SIGIO, "IO"),
    ];
    for (signal, name) in forwarded {
        send(live.pid(), signal);
        wait_until(Duration::from_secs(10), &format!("the child got {name}"), || {
            lines(&out).contains(&name.to_string())
        });
    }
    std::fs::write(dir.path().join("signals.log.stop"), "").expect("stop the child");
    let run = live.finish();
    run.assert_code(3);
    let result = run.result();
    assert_eq!(result["command"], "exec");
    assert_eq!(result["exit_code"], 3);
}

#[test]
fn exec_passes_on_exit_codes_and_deaths_by_signal() {
    let cases: [(&str, i32); 4] = [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 143), ("kill -KILL $$", 137)];
    for (script, code) in cases {
        let run = Migrun::new().args(["exec", "--no-db", "--", "sh", "-c", script]).run();
        run.assert_code(code);
    }
}

#[test]
fn exec_reports_missing_and_unexecutable_commands_as_shells_do() {
    let missing = Migrun::new().args(["exec", "--no-db", "--", "/nonexistent/app"]).run();
    missing.assert_code(127);
    assert!(missing.stderr.contains("command not found"), "{}", missing.stderr);
    let dir = tempfile::tempdir().expect("dir");
    let not_executable = dir.path().join("app.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").expect("write");
    let run = Migrun::new().args(["exec", "--no-db", "--"]).args([&not_executable]).run();
    run.assert_code(126);
    // A script whose interpreter is missing: the script is there, its #! line is wrong.
    let bad_interpreter = dir.path().join("tool.sh");
    std::fs::write(&bad_interpreter, "#!/usr/bin/no-such-shell -e\nexit 0\n").expect("write");
    std::fs::set_permissions(&bad_interpreter, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let run = Migrun::new().args(["exec", "--no-db", "--"]).args([&bad_interpreter]).run();
    run.assert_code(126);
    assert!(run.stderr.contains("bad interpreter /usr/bin/no-such-shell"), "{}", run.stderr);
    // Found on PATH the same way.
    let run = Migrun::new()
        .env("PATH", &format!("{}:/usr/bin:/bin", dir.path().display()))
        .args(["exec", "--no-db", "--", "tool.sh"])
        .run();
    run.assert_code(126);
    assert!(run.stderr.contains("bad interpreter /usr/bin/no-such-shell"), "{}", run.stderr);
}

#[test]
fn exec_wait_starts_the_child_only_once_another_run_applied_the_migrations() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("started");
    let mut waiting = db.migrun();
    waiting.dir(&example_sql()).args(["exec", "--wait", "--wait-timeout", "60s", "--", "touch"]).args([&marker]);
    let mut live = LiveRun::start(waiting.spawn());
    live.wait_for_line("waiting for migrations to be applied", Duration::from_secs(30));
    assert!(!marker.exists(), "the child must not start before the schema is ready");
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    let run = live.finish();
    run.assert_code(0);
    assert!(marker.exists());
    assert!(run.stderr.contains("schema ready"), "{}", run.stderr);
}

#[test]
fn wait_times_out_with_exit_9_naming_what_is_missing() {
    let db = TestDb::new();
    db.migrun().dir(&example_sql()).args(["up", "--target", "1"]).run().assert_code(0);
    let run = db.migrun().dir(&example_sql()).args(["wait", "--wait-timeout", "1s"]).run();
    run.assert_code(9);
    let result = run.result();
    assert_eq!(result["outcome"], "wait_timeout");
    assert!(result["error"].as_str().unwrap_or_default().contains("2, 3"), "{result}");
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    db.migrun().dir(&example_sql()).args(["wait"]).run().assert_code(0);
}

#[test]
fn wait_accepts_a_database_ahead_of_the_image() {
    let db = TestDb::new();
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    let older = fixture_copy("ordering");
    for entry in std::fs::read_dir(older.path()).expect("dir").flatten() {
        std::fs::remove_file(entry.path()).expect("clear");
    }
    std::fs::copy(example_sql().join("0001_create_users.sql"), older.path().join("0001_create_users.sql"))
        .expect("copy");
    let run = db.migrun().dir(older.path()).args(["wait", "--wait-timeout", "5s"]).run();
    run.assert_code(0);
    assert!(run.stderr.contains("the database has versions these files do not"), "{}", run.stderr);
}

#[test]
fn exec_migrate_applies_then_starts_the_child() {
    let db = TestDb::new();
    let run = db.migrun().dir(&example_sql()).args(["exec", "--migrate", "--", "sh", "-c", "exit 0"]).run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
    let other = TestDb::new();
    let failed =
        other.migrun().dir(&fixture("broken")).args(["exec", "--migrate", "--", "sh", "-c", "echo must-not-run"]).run();
    failed.assert_code(6);
    assert!(!failed.stdout.contains("must-not-run"), "the child must not start after a failed migration");
}

/// As PID 1 (in a new PID namespace), orphans re-parented to migrun are reaped.
#[test]
fn exec_as_pid_1_reaps_orphaned_grandchildren() {
    let probe = std::process::Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("skipped: `unshare --pid --fork --mount-proc` is not available here");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let done = dir.path().join("orphan-done");
    // The inner sh starts a background job and exits at once: the job is orphaned to PID 1.
    let script = format!("sh -c '(sleep 0.2; touch {}) &'; sleep 30", done.display());
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            env!("CARGO_BIN_EXE_migrun"),
            "exec",
            "--no-db",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("MIGRUN_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let unshare = command.spawn().expect("spawn unshare");
    let migrun_pid = children_of(unshare.id()).first().copied().expect("migrun inside the namespace");
    wait_until(Duration::from_secs(10), "the orphan finished", || done.exists());
    wait_until(Duration::from_secs(10), "no zombie is left under migrun", || {
        let kids = children_of(migrun_pid);
        kids.len() == 1 && kids.iter().all(|k| state_of(*k) != Some('Z'))
    });
    send(migrun_pid, libc::SIGTERM);
    let run = Run::from(unshare.wait_with_output().expect("wait"));
    run.assert_code(143);
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    wait_until(Duration::from_secs(10), "the process has children", || {
        kids = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect();
        !kids.is_empty()
    });
    kids
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn exec_lock_wraps_a_libpq_tool_with_the_lock_held_and_timeouts_passed() {
    let db = TestDb::new();
    let script = fixture("wrapped_tool").join("check_and_create.sql");
    let run = db
        .migrun()
        .args(["exec", "--lock", "--no-sql", "--lock-timeout", "3s", "--", "psql", "-X", "-q", "-f"])
        .args([&script])
        .run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'made_by_the_tool'"), 1);
    assert_eq!(db.count(crate::locking::ADVISORY_LOCKS_HERE), 0, "released after the tool exited");
    let started = run.events().into_iter().find(|e| e["message"] == "started").expect("started event");
    assert!(started["exported"].as_str().unwrap_or_default().contains("PGOPTIONS"), "{started}");
}

/// The wrapped tool connects with the TLS migrun used, even if its own default (here
/// PGSSLMODE=disable in the environment) is no TLS, through the libpq variables and through
/// DATABASE_URL alike; the server accepts only TLS.
#[test]
fn exec_lock_hands_the_tool_the_tls_settings_migrun_used() {
    let server = crate::services::tls_server();
    let url = format!("postgres://postgres@localhost:{}/postgres", server.port);
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let script = format!("psql -X -At -c '{ssl}' && PGSSLMODE=disable psql -X -At \"$DATABASE_URL\" -c '{ssl}'");
    let run = Migrun::new()
        .env("DATABASE_URL", &url)
        .env("PGSSLMODE", "disable")
        .env("MIGRUN_SSLMODE", "verify-full")
        .env("MIGRUN_SSLROOTCERT", &server.ca.display().to_string())
        .args(["exec", "--lock", "--no-sql", "--lock-key", "7171", "--", "sh", "-c", &script])
        .run();
    run.assert_code(0);
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), ["t", "t"], "{}", run.stderr);
}

#[test]
fn exec_lock_forwards_sigterm_to_the_tool_and_releases_the_lock() {
    let db = TestDb::new();
    let mut migrun = db.migrun();
    migrun.args(["exec", "--lock", "--no-sql", "--", "psql", "-X", "-q", "-c", "SELECT pg_sleep(60)"]);
    let live = LiveRun::start(migrun.spawn());
    wait_until(Duration::from_secs(30), "the tool's statement runs", || {
        db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'") == 1
    });
    assert_eq!(db.count(crate::locking::ADVISORY_LOCKS_HERE), 1, "the lock is held while the tool runs");
    send(live.pid(), libc::SIGTERM);
    let run = live.finish();
    run.assert_code(143);
    assert_eq!(db.count(crate::locking::ADVISORY_LOCKS_HERE), 0);
}

#[test]
fn one_ctrl_c_in_a_terminal_reaches_the_child_once() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("signals.log");
    for _ in 0..5 {
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(dir.path().join("signals.log.stop"));
        let status = std::process::Command::new("python3")
            .arg(fixture("child").join("ctrl_c.py"))
            .arg(env!("CARGO_BIN_EXE_migrun"))
            .arg(&out)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MIGRUN_LOG_FORMAT", "json")
            .status()
            .expect("run the terminal helper");
        assert_eq!(status.code(), Some(7), "migrun exits with the child's code");
        assert_eq!(
            lines(&out).iter().filter(|l| *l == "INT").count(),
            1,
            "one keypress, one SIGINT: {:?}",
            lines(&out)
        );
    }
}

//! `exec`'s command is a process tree, not one process: wrappers (`sh -c`, `npm run`, `make`)
//! start the real tool as a grandchild. Every stop reaches the whole tree, migrun exits only
//! when none of it is left, and under `--lock` the lock outlives the last of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;
use crate::locking::ADVISORY_LOCKS_HERE;

/// The stand-in tool (writes its pid, then sleeps), as a shell word.
fn tool() -> String {
    fixture("child").join("tool.sh").display().to_string()
}

/// The wrappers the tool is started through: each leaves the tool as a grandchild (or
/// further down) of migrun.
fn wrappers(pidfile: &Path) -> Vec<(&'static str, String)> {
    let (tool, pidfile) = (tool(), pidfile.display().to_string());
    vec![
        ("sh -c with a command after", format!("{tool} {pidfile}; echo after")),
        ("nested shells", format!("sh -c '{tool} {pidfile}; true'; true")),
        ("a background job", format!("{tool} {pidfile} & wait")),
        ("a new session (setsid)", format!("setsid {tool} {pidfile} & wait")),
    ]
}

fn pid_in(pidfile: &Path) -> i32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(20), "the tool wrote its pid", || {
        pid = std::fs::read_to_string(pidfile).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        pid > 0
    });
    pid
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().map(str::trim_start).and_then(|s| s.chars().next()), Some('Z')),
        Err(_) => false,
    }
}

fn lock_exec(db: &TestDb, script: &str, grace: &str) -> LiveRun {
    let mut migrun = db.migrun();
    migrun.args(["exec", "--lock", "--no-sql", "--shutdown-grace", grace, "--", "sh", "-c", script]);
    LiveRun::start(migrun.spawn())
}

/// Each way the lock session ends while the command runs: SIGTERM (the ECS stop path) and
/// the server ending the session. The tool is gone by the time migrun exits, whatever wrapper
/// started it.
#[test]
fn exec_lock_stops_the_whole_tree_before_it_exits() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    for (n, (wrapper, script)) in wrappers(&dir.path().join("tool.pid")).into_iter().enumerate() {
        for stop in ["SIGTERM", "pg_terminate_backend"] {
            let pidfile = dir.path().join("tool.pid");
            let _ = std::fs::remove_file(&pidfile);
            let live = lock_exec(&db, &script, "10s");
            let tool = pid_in(&pidfile);
            assert_eq!(db.count(ADVISORY_LOCKS_HERE), 1, "{wrapper}: the lock is held while the tool runs");
            let expected = if stop == "SIGTERM" {
                send(live.pid(), libc::SIGTERM);
                143
            } else {
                db.count("SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
                5
            };
            let run = live.finish_within(Duration::from_secs(30));
            assert!(!alive(tool), "{wrapper} ({n}), {stop}: the tool (pid {tool}) outlived migrun:\n{}", run.stderr);
            run.assert_code(expected);
            assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0, "{wrapper}, {stop}");
        }
    }
}

/// A tool that ignores SIGTERM is killed when the grace period ends, and the lock is held
/// for as long as it runs: every sample taken while the tool was alive saw the lock.
#[test]
fn exec_lock_holds_the_lock_until_a_tool_that_ignores_sigterm_is_killed() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("tool.pid");
    let live = lock_exec(&db, &format!("{} {} ignore-term; echo after", tool(), pidfile.display()), "2s");
    let tool = pid_in(&pidfile);
    send(live.pid(), libc::SIGTERM);
    let mut samples = 0;
    loop {
        let locks = db.count(ADVISORY_LOCKS_HERE);
        if !alive(tool) {
            break;
        }
        assert_eq!(locks, 1, "the lock was released while the tool still ran");
        samples += 1;
    }
    assert!(samples > 0, "the tool was gone before the first sample");
    let run = live.finish_within(Duration::from_secs(30));
    assert!(run.stderr.contains("outlived the shutdown grace"), "{}", run.stderr);
    assert!(run.stderr.contains("the command was stopped"), "{}", run.stderr);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
}

/// migrun killed by SIGKILL: nothing of migrun runs, yet the tool dies with it (its watchdog
/// kills the group), and the lock is held until the tool is gone.
#[test]
fn exec_lock_killed_by_sigkill_takes_the_tool_with_it_and_holds_the_lock_till_then() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    for (wrapper, script) in wrappers(&dir.path().join("tool.pid")).into_iter().take(3) {
        let pidfile = dir.path().join("tool.pid");
        let _ = std::fs::remove_file(&pidfile);
        let live = lock_exec(&db, &script, "10s");
        let tool = pid_in(&pidfile);
        send(live.pid(), libc::SIGKILL);
        wait_until(Duration::from_secs(10), &format!("{wrapper}: the tool died with migrun"), || {
            let locks = db.count(ADVISORY_LOCKS_HERE);
            let running = alive(tool);
            assert!(!running || locks == 1, "{wrapper}: the lock was gone while the tool ran");
            !running
        });
        live.finish();
        wait_until(Duration::from_secs(10), "the lock is released", || db.count(ADVISORY_LOCKS_HERE) == 0);
    }
}

/// Plain `exec`, as tini -g: a command that ignores SIGTERM is killed when the grace ends.
#[test]
fn exec_kills_a_command_that_ignores_sigterm_when_the_grace_ends() {
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("tool.pid");
    let mut migrun = Migrun::new();
    migrun.args([
        "exec",
        "--no-db",
        "--shutdown-grace",
        "1s",
        "--",
        &tool(),
        &pidfile.display().to_string(),
        "ignore-term",
    ]);
    let live = LiveRun::start(migrun.spawn());
    let tool = pid_in(&pidfile);
    send(live.pid(), libc::SIGTERM);
    let run = live.finish_within(Duration::from_secs(20));
    run.assert_code(137);
    assert!(!alive(tool));
    assert_eq!(run.result()["outcome"], "child_failed");
}

/// Plain `exec`: grandchildren do not outlive the command, whether migrun is stopped or the
/// command exits and leaves them behind.
#[test]
fn exec_leaves_no_process_of_the_command_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let pidfile: PathBuf = dir.path().join("tool.pid");
    for (wrapper, script) in wrappers(&pidfile) {
        let _ = std::fs::remove_file(&pidfile);
        let mut migrun = Migrun::new();
        migrun.args(["exec", "--no-db", "--", "sh", "-c", &script]);
        let live = LiveRun::start(migrun.spawn());
        let tool = pid_in(&pidfile);
        send(live.pid(), libc::SIGTERM);
        let run = live.finish_within(Duration::from_secs(20));
        assert!(!alive(tool), "{wrapper}: the tool outlived migrun");
        run.assert_code(143);
    }
    let wait = format!("while [ ! -s {0} ]; do sleep 0.01; done; exit 3", pidfile.display());
    let left_behind = [
        ("a background job", format!("{} {} & {wait}", tool(), pidfile.display())),
        ("a new session", format!("setsid {} {} & {wait}", tool(), pidfile.display())),
    ];
    for (wrapper, script) in left_behind {
        let _ = std::fs::remove_file(&pidfile);
        // The command exits once its job runs, and leaves the job behind.
        let run = Migrun::new().args(["exec", "--no-db", "--", "sh", "-c", &script]).run();
        run.assert_code(3);
        let tool = pid_in(&pidfile);
        assert!(!alive(tool), "{wrapper}: left running after the command exited:\n{}", run.stderr);
        assert!(run.stderr.contains("processes it started still run"), "{}", run.stderr);
    }
}

/// The command's exit code is the command's: `retryable` is false for every code it exits
/// with, even those that mean "retry" when migrun exits with them.
#[test]
fn a_commands_exit_code_is_never_called_retryable() {
    for code in [5, 8, 130, 143] {
        let run = Migrun::new().args(["exec", "--no-db", "--", "sh", "-c", &format!("exit {code}")]).run();
        run.assert_code(code);
        let result = run.result();
        assert_eq!((result["outcome"].as_str(), result["retryable"].as_bool()), (Some("child_failed"), Some(false)));
    }
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md")).expect("docs");
    assert!(
        docs.contains("`retryable` is `false` whatever the code"),
        "the reference states the rule for a command's exit code"
    );
}

/// `exec --lock` as PID 1 (the container's entrypoint): orphans are PID 1's own, so a watchdog
/// forked there would be migrun's child and keep the tree from ever being empty. The command
/// exits, and migrun with it, at once, with the lock released.
#[test]
fn exec_lock_as_pid_1_ends_when_the_command_does() {
    let probe = std::process::Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("skipped: `unshare --pid --fork --mount-proc` is not available here");
        return;
    }
    let db = TestDb::new();
    let started = std::time::Instant::now();
    let output = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", env!("CARGO_BIN_EXE_migrun")])
        .args(["exec", "--lock", "--no-sql", "--shutdown-grace", "15s", "--", "sh", "-c", "exit 3"])
        .env("DATABASE_URL", db.url())
        .env("MIGRUN_LOG_FORMAT", "json")
        .output()
        .expect("run unshare");
    let run = Run::from(output);
    run.assert_code(3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: it waited for a process of its own",
        started.elapsed()
    );
    assert!(!run.stderr.contains("outlived the shutdown grace"), "{}", run.stderr);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
}

//! `migrun fanout`: identical workers with no index share 100 databases (or schemas) through
//! the coordination database: no double applies, none missed, a killed worker's targets taken
//! over, per-server connection limits kept, and each failure class with its exit code.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{send, server, sql_dir, LiveRun, Migrun, Run, TestDb};

/// `count` databases of their own, dropped at the end.
pub struct Fleet {
    pub prefix: String,
    pub count: usize,
    pub coord: TestDb,
}

impl Fleet {
    pub fn new(count: usize) -> Fleet {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!("fan{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let mut admin = server().connect("postgres");
        for i in 0..count {
            admin.batch_execute(&format!("CREATE DATABASE {prefix}_{i}")).expect("create target database");
        }
        Fleet { prefix, count, coord: TestDb::new() }
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}_{i}", self.prefix)
    }

    pub fn url(&self, i: usize) -> String {
        let s = server();
        format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, self.name(i))
    }

    pub fn targets_file(&self) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("targets file");
        let lines: Vec<String> = (0..self.count).map(|i| self.url(i)).collect();
        std::fs::write(file.path(), format!("# tenants\n{}\n", lines.join("\n"))).expect("write targets");
        file
    }

    /// Every target ran each of its files exactly once: `applied_once` holds `rows` rows.
    pub fn assert_each_applied_once(&self, rows: i64) {
        for i in 0..self.count {
            assert_eq!(self.query(i, "SELECT count(*) FROM applied_once"), Some(rows), "{}", self.name(i));
        }
    }

    pub fn query(&self, i: usize, sql: &str) -> Option<i64> {
        server().connect(&self.name(i)).query_one(sql, &[]).ok().map(|r| r.get(0))
    }

    pub fn worker(&self, dir: &std::path::Path, targets: &std::path::Path, args: &[&str]) -> Migrun {
        let mut m = Migrun::new();
        m.dir(dir)
            .args([
                "fanout",
                "up",
                "--targets",
                &format!("file:{}", targets.display()),
                "--coord-url",
                &self.coord.url(),
            ])
            .args(args);
        m
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut admin = server().connect("postgres");
        for i in 0..self.count {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name(i)));
        }
    }
}

/// Two files; the first counts its own runs, so a double apply shows.
pub fn migrations() -> tempfile::TempDir {
    sql_dir(&[
        ("0001_counter.sql", "CREATE TABLE applied_once (n int);\nINSERT INTO applied_once VALUES (1);\n"),
        ("0002_more.sql", "INSERT INTO applied_once VALUES (2);\n"),
    ])
}

/// Runs the workers at once, each drained by a thread of its own: a worker blocked on a full
/// stderr pipe would stall the run.
pub fn run_all(workers: Vec<Migrun>) -> Vec<Run> {
    let children: Vec<_> = workers.into_iter().map(|mut w| w.spawn()).collect();
    let waiting: Vec<_> =
        children.into_iter().map(|c| std::thread::spawn(move || c.wait_with_output().expect("worker"))).collect();
    waiting.into_iter().map(|t| Run::from(t.join().expect("worker thread"))).collect()
}

/// Samples migrun's sessions on the test server every `every` (this fleet's databases and its
/// coordination database only), keeping the most seen at once.
pub fn sample_connections(
    fleet: &Fleet,
    every: Duration,
) -> (Arc<AtomicBool>, Arc<AtomicI64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicI64::new(0));
    let (prefix, coord) = (format!("{}_%", fleet.prefix), fleet.coord.name.clone());
    let (stop2, most2) = (stop.clone(), most.clone());
    let handle = std::thread::spawn(move || {
        let mut admin = server().connect("postgres");
        while !stop2.load(Ordering::SeqCst) {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'migrun%' AND (datname LIKE $1 OR datname = $2)",
                    &[&prefix, &coord],
                )
                .map(|r| r.get(0))
                .unwrap_or(0);
            most2.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(every);
        }
    });
    (stop, most, handle)
}

#[test]
fn four_workers_share_100_databases_once_each_within_the_connection_limit() {
    let fleet = Fleet::new(100);
    let targets = fleet.targets_file();
    let dir = migrations();
    let (stop, most, sampler) = sample_connections(&fleet, Duration::from_millis(100));
    let k = 6;
    let workers = (0..4)
        .map(|_| {
            fleet.worker(
                dir.path(),
                targets.path(),
                &["--concurrency", "4", "--max-conns-per-server", &k.to_string(), "--workers", "4"],
            )
        })
        .collect();
    let runs = run_all(workers);
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    for run in &runs {
        run.assert_code(0);
        assert_eq!(run.result()["fanout"]["current"], 100, "{}", run.stderr.lines().last().unwrap_or_default());
    }
    let processed: u64 =
        runs.iter().map(|r| r.result()["fanout"]["this_worker"]["processed"].as_u64().unwrap_or(0)).sum();
    // A worker that starts after its peers finished is a re-run: it visits each target again
    // (a no-op), so the sum may exceed 100; what may never happen is a second apply (below).
    assert!(processed >= 100, "every target visited: {processed}");
    for i in 0..fleet.count {
        assert_eq!(fleet.query(i, "SELECT count(*) FROM applied_once"), Some(2), "{}", fleet.name(i));
        assert_eq!(fleet.query(i, "SELECT count(DISTINCT version) FROM migrun_history"), Some(2));
    }
    let seen = most.load(Ordering::SeqCst);
    assert!(seen > 0 && seen <= k, "at most {k} migrun connections at once, saw {seen}");
    // Per-target lines and the same target-list hash in every worker's result, and in every
    // line: at the top, or in the span of the run or of the target the line comes from.
    let hashes: Vec<_> = runs.iter().map(|r| r.result()["fanout"]["targets_hash"].clone()).collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    for event in runs.iter().flat_map(Run::events) {
        let hash = [&event["targets_hash"], &event["span"]["targets_hash"], &event["fanout"]["targets_hash"]]
            .into_iter()
            .find(|h| h.is_string());
        assert_eq!(hash, Some(&hashes[0]), "a line without the list's hash: {event}");
        if event["message"] == "lock acquired" {
            assert!(event["span"]["target"].as_str().is_some_and(|t| t.contains(&fleet.prefix)), "{event}");
        }
    }
    let lines = runs.iter().map(|r| r.stderr.matches("\"message\":\"target done\"").count()).sum::<usize>();
    assert_eq!(lines as u64, processed, "one `target done` line per target visited");

    // A re-run of the same run visits each target once (one no-op each) and exits 0.
    let again = fleet.worker(dir.path(), targets.path(), &[]).run();
    again.assert_code(0);
    assert_eq!(again.result()["fanout"]["this_worker"]["processed"], 100);
    assert_eq!(fleet.query(7, "SELECT count(*) FROM applied_once"), Some(2));
    let status = Migrun::new()
        .dir(dir.path())
        .args(["fanout", "status", "--targets", &format!("file:{}", targets.path().display()), "--json"])
        .run();
    status.assert_code(0);
    assert!(status.stdout.contains("\"current\": 100"), "{}", status.stdout);
}

/// A worker that starts while the others fill every slot connects before it can learn that:
/// with `--workers`, a slot is kept for its coordination session, so even then the server
/// never sees more than K. Sampled as fast as the server answers, to catch a short probe.
#[test]
fn a_worker_joining_a_full_run_stays_within_the_connection_limit() {
    let fleet = Fleet::new(16);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE applied_once (n int);\nINSERT INTO applied_once VALUES (1);\nSELECT pg_sleep(0.2);\n",
    )]);
    let (stop, most, sampler) = sample_connections(&fleet, Duration::from_millis(1));
    let k = 6;
    let args = ["--concurrency", "4", "--max-conns-per-server", "6", "--workers", "4"];
    let early: Vec<_> = (0..3).map(|_| fleet.worker(dir.path(), targets.path(), &args).spawn()).collect();
    // 3 coordination sessions and the K - W target sessions the coordination server allows.
    let full = std::time::Instant::now();
    while most.load(Ordering::SeqCst) < 5 {
        assert!(full.elapsed() < Duration::from_secs(30), "the early workers never filled their slots");
        std::thread::sleep(Duration::from_millis(5));
    }
    let late = fleet.worker(dir.path(), targets.path(), &args).spawn();
    let runs: Vec<Run> = early
        .into_iter()
        .chain([late])
        .map(|c| std::thread::spawn(move || c.wait_with_output().expect("worker")))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| Run::from(t.join().expect("worker thread")))
        .collect();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    for run in &runs {
        run.assert_code(0);
        assert_eq!(run.result()["fanout"]["current"], 16);
    }
    let seen = most.load(Ordering::SeqCst);
    assert!(seen <= k, "at most {k} migrun connections at once, saw {seen}");
    fleet.assert_each_applied_once(1);
}

/// With K, a server other than the coordination one has its free connections read on its
/// first target's own session: a server with too few for K gets none of its targets touched
/// (they are listed as refused), the others go on, and a lower K on a re-run takes them.
#[test]
fn a_server_with_too_few_free_connections_for_k_is_left_untouched() {
    let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n";
    let port = crate::services::start_cluster(hba, "127.0.0.1", &[("max_connections", "20".to_string())]).port;
    let small = |db: &str| format!("postgres://postgres@127.0.0.1:{port}/{db}");
    let mut admin = postgres::Client::connect(&small("postgres"), postgres::NoTls).expect("the small server");
    for i in 0..3 {
        admin.batch_execute(&format!("CREATE DATABASE small_{i}")).expect("create a database");
    }
    let fleet = Fleet::new(3);
    let targets = tempfile::NamedTempFile::new().expect("targets");
    let lines: Vec<String> = (0..3).map(|i| fleet.url(i)).chain((0..3).map(|i| small(&format!("small_{i}")))).collect();
    std::fs::write(targets.path(), lines.join("\n")).expect("write targets");
    let dir = migrations();

    // 17 free connections on the small server: K = 10 is more than half of them.
    let run = fleet.worker(dir.path(), targets.path(), &["--max-conns-per-server", "10"]).run();
    run.assert_code(13);
    let result = run.result();
    assert_eq!(result["fanout"]["current"], 3, "{}", run.stderr);
    let refused: Vec<String> = result["fanout"]["failed_targets"]
        .as_array()
        .expect("failed targets")
        .iter()
        .map(|t| format!("{} {}", t["target"].as_str().unwrap_or_default(), t["outcome"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused.iter().all(|t| t.contains(&format!(":{port}/small_")) && t.ends_with("invalid_input")),
        "{refused:?}"
    );
    assert!(run.stderr.contains(&format!("free connections on 127.0.0.1:{port}; lower it")), "{}", run.stderr);
    for i in 0..3 {
        let mut db = postgres::Client::connect(&small(&format!("small_{i}")), postgres::NoTls).expect("connect");
        let tables: i64 =
            db.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).expect("count").get(0);
        assert_eq!(tables, 0, "small_{i} was touched");
    }

    let again = fleet.worker(dir.path(), targets.path(), &["--max-conns-per-server", "5", "--retry-failed"]).run();
    again.assert_code(0);
    for i in 0..3 {
        let mut db = postgres::Client::connect(&small(&format!("small_{i}")), postgres::NoTls).expect("connect");
        let rows: i64 = db.query_one("SELECT count(*) FROM applied_once", &[]).expect("count").get(0);
        assert_eq!(rows, 2, "small_{i}");
    }
}

/// A target that runs out of lock retries (the live app holds its table) is tried once more at
/// the end of the queue, not more; then it is listed, and `--result-file` has every target.
#[test]
fn a_target_out_of_lock_retries_is_requeued_once_then_listed() {
    let fleet = Fleet::new(3);
    let targets = fleet.targets_file();
    let mut app = server().connect(&fleet.name(1));
    app.batch_execute("CREATE TABLE busy (n int); BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")
        .expect("hold the table");
    let dir = sql_dir(&[(
        "0001_busy.sql",
        "CREATE TABLE IF NOT EXISTS busy (n int);\nALTER TABLE busy ADD COLUMN IF NOT EXISTS m int;\n",
    )]);
    let result_file = tempfile::NamedTempFile::new().expect("result file");
    let run = fleet
        .worker(dir.path(), targets.path(), &["--concurrency", "1"])
        .args(["--lock-timeout", "50ms", "--retry-backoff", "10ms", "--lock-retries", "1"])
        .args(["--result-file"])
        .arg_path(result_file.path())
        .run();
    app.batch_execute("COMMIT").expect("let the table go");
    run.assert_code(13);
    let busy = format!("/{}", fleet.name(1));
    let requeued: Vec<_> =
        run.events().into_iter().filter(|e| e["message"] == "requeued once").map(|e| e["target"].clone()).collect();
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0].as_str().unwrap_or_default().ends_with(&busy), "{requeued:?}");
    let failed = &run.result()["fanout"]["failed_targets"];
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!(failed[0]["outcome"], "lock_retries_exhausted");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result_file.path()).expect("read")).expect("json");
    let outcomes: Vec<(String, String)> = written["targets"]
        .as_array()
        .expect("every target in the result file")
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap_or_default().to_string(),
                t["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for (target, outcome) in &outcomes {
        let expected = if target.ends_with(&busy) { "lock_retries_exhausted" } else { "success" };
        assert_eq!(outcome, expected, "{target}");
    }
}

/// While a slow target runs, progress still comes every 10 s, naming it and its age.
#[test]
fn progress_names_the_slowest_target_in_flight() {
    let fleet = Fleet::new(1);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[("0001_slow.sql", "SELECT pg_sleep(10.5);\n")]);
    let run = fleet.worker(dir.path(), targets.path(), &[]).run();
    run.assert_code(0);
    let progress: Vec<_> = run.events().into_iter().filter(|e| e["message"] == "fanout progress").collect();
    let during =
        progress.iter().find(|e| e["done"] == 0).unwrap_or_else(|| panic!("no progress while it ran: {progress:?}"));
    assert_eq!(during["total"], 1);
    assert!(during["slowest"].as_str().unwrap_or_default().ends_with(&format!("/{}", fleet.name(0))), "{during}");
    assert!(during["slowest_ms"].as_u64().unwrap_or(0) >= 9_900, "{during}");
}

/// SIGTERM: the worker takes no new target; the targets in flight are cancelled and rolled
/// back, left unrecorded (not failures of theirs); it exits 143, and the same run then
/// finishes every target, each applied once.
#[test]
fn a_stopped_worker_leaves_its_targets_unrecorded_for_the_next_run() {
    let fleet = Fleet::new(8);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE applied_once (n int);\nINSERT INTO applied_once VALUES (1);\nSELECT pg_sleep(1);\n",
    )]);
    let mut worker = LiveRun::start(fleet.worker(dir.path(), targets.path(), &["--concurrency", "2"]).spawn());
    worker.wait_for_line("\"message\":\"target done\"", Duration::from_secs(60));
    send(worker.pid(), libc::SIGTERM);
    let stopped = worker.finish();
    stopped.assert_code(143);
    let recorded = |outcome: &str| {
        fleet.coord.count(&format!(
            "SELECT count(*) FROM migrun_fanout WHERE target <> '#wave' AND (outcome = 'success') = ('{outcome}' = 'success')"
        ))
    };
    assert_eq!(recorded("failed"), 0, "an interrupted target was recorded as failed: {}", stopped.stderr);
    let done = recorded("success");
    assert!((1..8).contains(&done), "stopped after {done} of 8");

    let again = fleet.worker(dir.path(), targets.path(), &[]).run();
    again.assert_code(0);
    assert_eq!(again.result()["fanout"]["current"], 8);
    fleet.assert_each_applied_once(1);
}

/// The coordination session ends mid-run (a failover, an administrator): the worker takes
/// no more targets, lets the ones in flight finish under their own locks (unrecorded), and
/// exits 4, retryable; the next run finishes the rest, each applied once.
#[test]
fn a_lost_coordination_session_lets_the_targets_in_flight_finish() {
    let fleet = Fleet::new(8);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE applied_once (n int);\nINSERT INTO applied_once VALUES (1);\nSELECT pg_sleep(1);\n",
    )]);
    let mut worker = LiveRun::start(fleet.worker(dir.path(), targets.path(), &["--concurrency", "2"]).spawn());
    worker.wait_for_line("\"message\":\"target done\"", Duration::from_secs(60));
    let ended: i64 = server()
        .connect("postgres")
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'migrun%'",
            &[&fleet.coord.name],
        )
        .expect("end the coordination session")
        .get(0);
    assert_eq!(ended, 1);
    let lost = worker.finish();
    lost.assert_code(4);
    let said_done = lost.events().iter().filter(|e| e["message"] == "target done" && e["outcome"] == "success").count();
    let migrated = (0..fleet.count).filter(|i| fleet.query(*i, "SELECT count(*) FROM applied_once") == Some(1)).count();
    assert_eq!(migrated, said_done, "the targets that say done are migrated, and only those: {}", lost.stderr);
    assert!((3..8).contains(&migrated), "the targets in flight when the session ended finished: {migrated}");

    let again = fleet.worker(dir.path(), targets.path(), &[]).run();
    again.assert_code(0);
    assert_eq!(again.result()["fanout"]["current"], 8);
    fleet.assert_each_applied_once(1);
}

#[test]
fn a_killed_worker_leaves_its_targets_to_the_others() {
    let fleet = Fleet::new(40);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE applied_once (n int);\nINSERT INTO applied_once VALUES (1);\nSELECT pg_sleep(0.1);\n",
    )]);
    let mut victim = LiveRun::start(fleet.worker(dir.path(), targets.path(), &["--concurrency", "2"]).spawn());
    let others: Vec<_> =
        (0..2).map(|_| fleet.worker(dir.path(), targets.path(), &["--concurrency", "2"]).spawn()).collect();
    victim.wait_for_line("\"message\":\"target done\"", Duration::from_secs(60));
    send(victim.pid(), libc::SIGKILL);
    let _ = victim.finish();
    let others: Vec<_> =
        others.into_iter().map(|c| std::thread::spawn(move || c.wait_with_output().expect("worker"))).collect();
    for other in others {
        let run = Run::from(other.join().expect("worker thread"));
        run.assert_code(0);
        assert_eq!(run.result()["fanout"]["current"], 40);
    }
    fleet.assert_each_applied_once(1);
}

#[test]
fn failures_are_listed_and_each_class_has_its_exit_code() {
    let fleet = Fleet::new(30);
    let targets = fleet.targets_file();
    // Broken on 5 tenants: those that have a marker table.
    for i in [3, 8, 13, 21, 29] {
        server().connect(&fleet.name(i)).batch_execute("CREATE TABLE broken_marker ()").expect("marker");
    }
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE applied_once (n int);\n"),
        ("0002_b.sql", "DO $$ BEGIN IF to_regclass('broken_marker') IS NOT NULL THEN RAISE EXCEPTION 'tenant is broken'; END IF; END $$;\n"),
    ]);
    let runs = run_all((0..2).map(|_| fleet.worker(dir.path(), targets.path(), &[])).collect());
    for run in &runs {
        run.assert_code(13);
        assert_eq!(run.result()["outcome"], "partial_failure");
        assert_eq!(run.result()["fanout"]["current"], 25);
        let failed: Vec<String> = run.result()["fanout"]["failed_targets"]
            .as_array()
            .expect("failed targets")
            .iter()
            .filter_map(|t| t["target"].as_str().map(str::to_string))
            .collect();
        assert_eq!(failed.len(), 5, "{failed:?}");
        assert!(
            failed.iter().all(|t| [3, 8, 13, 21, 29].iter().any(|i| t.ends_with(&format!("/{}", fleet.name(*i))))),
            "{failed:?}"
        );
    }
    // The same run again skips its recorded failures; --retry-failed tries them.
    let again = fleet.worker(dir.path(), targets.path(), &[]).run();
    again.assert_code(13);
    assert_eq!(again.result()["fanout"]["this_worker"]["processed"], 25);
    let retried = fleet.worker(dir.path(), targets.path(), &["--retry-failed"]).run();
    retried.assert_code(13);
    assert_eq!(retried.result()["fanout"]["this_worker"]["processed"], 30);
}

#[test]
fn a_broken_canary_stops_the_run_before_any_other_target() {
    let fleet = Fleet::new(20);
    let targets = fleet.targets_file();
    let dir =
        sql_dir(&[("0001_a.sql", "CREATE TABLE applied_once (n int);\nSELECT no_such_column FROM applied_once;\n")]);
    let runs = run_all((0..2).map(|_| fleet.worker(dir.path(), targets.path(), &["--canary", "3"])).collect());
    for run in &runs {
        run.assert_code(14);
        assert_eq!(run.result()["outcome"], "canary_failed");
    }
    let touched = (0..fleet.count)
        .filter(|i| fleet.query(*i, "SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'") == Some(1))
        .count();
    assert_eq!(touched, 3, "only the 3 canary targets were touched");
}

#[test]
fn a_worker_stops_when_its_failure_rate_is_exceeded() {
    let fleet = Fleet::new(60);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[("0001_a.sql", "SELECT no_such_column FROM no_such_table;\n")]);
    let runs = run_all(
        (0..2)
            .map(|_| fleet.worker(dir.path(), targets.path(), &["--max-failure-rate", "0.5", "--concurrency", "2"]))
            .collect(),
    );
    for run in &runs {
        run.assert_code(15);
        let processed = run.result()["fanout"]["this_worker"]["processed"].as_u64().unwrap_or(99);
        assert!((20..=25).contains(&processed), "stopped after {processed} targets");
    }
}

#[test]
fn a_deadline_ends_the_run_incomplete_and_safe_to_retry() {
    let fleet = Fleet::new(12);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[("0001_a.sql", "SELECT pg_sleep(0.3);\n")]);
    let run = fleet.worker(dir.path(), targets.path(), &["--deadline", "500ms", "--concurrency", "1"]).run();
    run.assert_code(16);
    assert_eq!(run.result()["outcome"], "incomplete");
    assert_eq!(run.result()["retryable"], true);
    // Retrying finishes it.
    fleet.worker(dir.path(), targets.path(), &["--concurrency", "4"]).run().assert_code(0);
}

#[test]
fn schemas_of_one_database_are_targets_with_their_own_history_and_lock() {
    let db = TestDb::new();
    let schemas: Vec<String> = (0..200).map(|i| format!("tenant_{i}")).collect();
    db.client()
        .batch_execute(&schemas.iter().map(|s| format!("CREATE SCHEMA {s};")).collect::<String>())
        .expect("schemas");
    let targets = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(targets.path(), schemas.iter().map(|s| format!("schema:{s}\n")).collect::<String>()).expect("write");
    let dir = migrations();
    let workers = (0..3)
        .map(|_| {
            let mut m = db.migrun();
            m.dir(dir.path()).args(["fanout", "up", "--targets", &format!("file:{}", targets.path().display())]);
            m
        })
        .collect();
    for run in run_all(workers) {
        run.assert_code(0);
        assert_eq!(run.result()["fanout"]["current"], 200);
    }
    for schema in &schemas {
        assert_eq!(db.count(&format!("SELECT count(*) FROM {schema}.applied_once")), 2, "{schema}");
        assert_eq!(db.count(&format!("SELECT count(*) FROM {schema}.migrun_history")), 2, "{schema}");
    }
    // Each tenant's snapshot holds its own schema, not the 199 others (a read of every tenant
    // for every tenant would grow with the square of their number).
    let text =
        db.query_strings("SELECT schema FROM tenant_7.migrun_history_snapshots ORDER BY id DESC LIMIT 1").join("");
    assert!(text.contains("schema tenant_7\n") && text.contains("table tenant_7.applied_once"), "{text}");
    assert!(!text.contains("tenant_8"), "{text}");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'applied_once'"),
        0
    );
}

#[test]
fn bad_target_lists_are_refused_before_anything_runs() {
    let dir = migrations();
    let empty = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(empty.path(), "# nobody yet\n").expect("write");
    let run = Migrun::new()
        .dir(dir.path())
        .args(["fanout", "up", "--targets", &format!("file:{}", empty.path().display())])
        .run();
    run.assert_code(2);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("holds no target"), "{}", run.stderr);
    Migrun::offline(dir.path()).args(["fanout", "up", "--targets", "ftp://x"]).run().assert_code(2);
    let schemas = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(schemas.path(), "schema:acme\n").expect("write");
    let run = Migrun::new()
        .dir(dir.path())
        .args(["fanout", "up", "--targets", &format!("file:{}", schemas.path().display())])
        .run();
    run.assert_code(2);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("need a database"), "{}", run.stderr);
}

#[test]
fn targets_come_from_a_catalog_query_too() {
    let fleet = Fleet::new(5);
    let catalog = TestDb::new();
    let urls: Vec<String> = (0..fleet.count).map(|i| format!("('{}')", fleet.url(i))).collect();
    catalog
        .client()
        .batch_execute(&format!(
            "CREATE TABLE tenants (url text); INSERT INTO tenants VALUES {}, ('# a comment row')",
            urls.join(", ")
        ))
        .expect("catalog");
    let dir = migrations();
    let run = Migrun::new()
        .dir(dir.path())
        .args([
            "fanout",
            "up",
            "--targets",
            &format!("sql:{}", catalog.url()),
            "--targets-query",
            "SELECT url FROM tenants",
        ])
        .args(["--coord-url", &fleet.coord.url()])
        .run();
    run.assert_code(0);
    assert_eq!(run.result()["fanout"]["current"], 5);
    fleet.assert_each_applied_once(2);
    // Without the query, sql: is refused before anything runs.
    Migrun::new()
        .dir(dir.path())
        .args(["fanout", "up", "--targets", &format!("sql:{}", catalog.url())])
        .run()
        .assert_code(2);
}

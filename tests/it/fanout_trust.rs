//! `fanout`'s target list, taken at its word: one line is one tenant and the tenant it names,
//! no error quotes a password, and the deadline bounds the targets in flight.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fanout::{migrations, run_all, sample_connections, Fleet};
use crate::harness::*;

/// Every way the target source can be wrong, with a password in the value: the log lines, the
/// result event (the harness checks both for every registered secret) and the result file
/// never show it.
#[test]
fn target_source_errors_never_print_a_password() {
    let secret = "tgt-Pw-4d1f";
    register_secret(secret);
    let catalog = TestDb::new();
    catalog
        .client()
        .batch_execute("CREATE TABLE tenants (url text); CREATE TABLE bad (url text); INSERT INTO bad VALUES ('postgres://a:b@h:notaport/x')")
        .expect("catalog");
    let s = server();
    let sql = format!("sql:postgres://{}:{secret}@{}:{}/{}", s.user, s.host, s.port, catalog.name);
    let bare = format!("postgres://app:{secret}@{}:{}/tenant", s.host, s.port);
    let cases: [(&str, Vec<&str>); 5] = [
        ("no source prefix", vec!["--targets", &bare]),
        ("sql: without --targets-query", vec!["--targets", &sql]),
        ("a failing --targets-query", vec!["--targets", &sql, "--targets-query", "SELECT nope FROM nowhere"]),
        ("a query with no rows", vec!["--targets", &sql, "--targets-query", "SELECT url FROM tenants"]),
        ("a bad row", vec!["--targets", &sql, "--targets-query", "SELECT url FROM bad"]),
    ];
    let dir = migrations();
    let out = tempfile::tempdir().expect("dir");
    for (case, args) in cases {
        let result_file = out.path().join("result.json");
        let run = Migrun::new()
            .dir(dir.path())
            .args(["fanout", "up", "--result-file", &result_file.display().to_string()])
            .args(args)
            .run();
        run.assert_code(2);
        let written = std::fs::read_to_string(&result_file).expect("the result file");
        assert!(!written.contains(secret), "{case}: the result file shows the password: {written}");
        assert!(run.result()["error"].as_str().is_some_and(|e| e.contains("--targets")), "{case}: {}", run.stderr);
    }
}

/// Two lines naming one `host:port/db` but writing to different places (another role,
/// another search_path) are refused before anything runs, naming both lines.
#[test]
fn lines_that_name_one_target_but_write_elsewhere_are_refused() {
    let db = TestDb::new();
    let s = server();
    let (host, port, name) = (&s.host, s.port, &db.name);
    let lists = [
        ("another role", format!("postgres://{}@{host}:{port}/{name}\npostgres://{OTHER_ROLE}@{host}:{port}/{name}\n", s.user)),
        (
            "another search_path",
            format!(
                "host={host} port={port} dbname={name} user={0} options='-c search_path=tenant_a'\n# and\nhost={host} port={port} dbname={name} user={0} options='-c search_path=tenant_b'\n",
                s.user
            ),
        ),
    ];
    let dir = migrations();
    for (case, list) in lists {
        let file = tempfile::NamedTempFile::new().expect("targets");
        std::fs::write(file.path(), list).expect("write");
        let run = Migrun::new()
            .dir(dir.path())
            .args(["fanout", "up", "--targets", &format!("file:{}", file.path().display()), "--coord-url", &db.url()])
            .run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("lines 1 and ") && error.contains(&format!("{host}:{port}/{name}")), "{case}: {error}");
        assert_eq!(
            db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'applied_once'"),
            0,
            "{case}: nothing ran"
        );
    }
}

/// `#` in a key=value password is part of the password, not a comment: the line keeps its
/// `dbname`, and the tenant it names is the one migrated.
#[test]
fn a_hash_in_a_password_does_not_cut_the_line() {
    let db = TestDb::new();
    db.client().batch_execute(&format!("GRANT ALL ON SCHEMA public TO {OTHER_ROLE}")).expect("grant");
    let s = server();
    register_secret("ab#cd");
    // Trust auth for this role: the password is not checked, only carried.
    let line = format!("host={} port={} user={OTHER_ROLE} password=ab#cd dbname={}\n", s.host, s.port, db.name);
    let file = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(file.path(), format!("  # the tenant\n{line}")).expect("write");
    let coord = TestDb::new();
    let run = Migrun::new()
        .dir(migrations().path())
        .args(["fanout", "up", "--targets", &format!("file:{}", file.path().display()), "--coord-url", &coord.url()])
        .run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM applied_once"), 2, "the named database was migrated");
}

/// `--deadline` bounds the targets already running: at the deadline they are cancelled (as a
/// SIGTERM cancels them), left unrecorded, and the run exits 16; the next run converges.
#[test]
fn the_deadline_cancels_targets_in_flight() {
    let fleet = Fleet::new(2);
    let targets = fleet.targets_file();
    let dir = sql_dir(&[("0001_slow.sql", "CREATE TABLE slow (n int);\nSELECT pg_sleep(30);\n")]);
    let started = Instant::now();
    let run = fleet.worker(dir.path(), targets.path(), &["--deadline", "2s", "--concurrency", "2"]).run();
    let took = started.elapsed();
    run.assert_code(16);
    assert!(took < Duration::from_secs(15), "the run went on for {took:?} after a 2 s deadline");
    for i in 0..fleet.count {
        assert_eq!(fleet.query(i, "SELECT count(*) FROM pg_tables WHERE tablename = 'slow'"), Some(0), "rolled back");
        assert_eq!(
            fleet.query(i, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"),
            Some(0)
        );
    }
    let recorded = fleet.coord.count("SELECT count(*) FROM migrun_fanout WHERE target NOT LIKE '#%'");
    let rows = fleet
        .coord
        .query_strings("SELECT concat_ws(' ', target, outcome, message) FROM migrun_fanout WHERE target NOT LIKE '#%'");
    assert_eq!(recorded, 0, "a cancelled target is not recorded: {rows:?}\n{}", run.stderr);
}

/// `--max-conns-per-server` counts a server once however the lines spell it (`localhost` and
/// `127.0.0.1`).
#[test]
fn the_connection_limit_counts_a_server_once_whatever_its_spelling() {
    let fleet = Fleet::new(8);
    let file = tempfile::NamedTempFile::new().expect("targets");
    let s = server();
    let lines: Vec<String> = (0..fleet.count)
        .map(|i| {
            let host = if i % 2 == 0 { "localhost" } else { s.host.as_str() };
            format!("postgres://{}@{host}:{}/{}", s.user, s.port, fleet.name(i))
        })
        .collect();
    std::fs::write(file.path(), lines.join("\n")).expect("write");
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE applied_once (n int);\nSELECT pg_sleep(0.4);\n")]);
    let (stop, most, sampler) = sample_connections(&fleet, Duration::from_millis(20));
    let k = 4;
    let runs = run_all(vec![fleet.worker(
        dir.path(),
        file.path(),
        &["--concurrency", "8", "--max-conns-per-server", &k.to_string()],
    )]);
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    runs[0].assert_code(0);
    let seen = most.load(Ordering::SeqCst);
    assert!(seen > 1 && seen <= k, "at most {k} migrun sessions at once on the one server, saw {seen}");
}

/// Targets with passwords, one of them refused at login and one failing a file: the run
/// table (`migrun_fanout`), the result file and every line name them without the password.
#[test]
fn the_run_table_and_the_result_file_never_hold_a_password() {
    let fleet = Fleet::new(2);
    let wrong = "wrong-Pw-7e2a";
    register_secret(wrong);
    let ok = TestDb::new();
    let refused = TestDb::new();
    let file = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(file.path(), format!("{}\n{}\n", ok.password_url(PASSWORD), refused.password_url(wrong)))
        .expect("write");
    let out = tempfile::tempdir().expect("dir");
    let result_file = out.path().join("result.json");
    let run =
        fleet.worker(migrations().path(), file.path(), &["--result-file", &result_file.display().to_string()]).run();
    run.assert_code(13);
    let table = fleet.coord.query_strings("SELECT concat_ws(' ', target, outcome, message) FROM migrun_fanout");
    let written = std::fs::read_to_string(&result_file).expect("result file");
    for secret in secrets() {
        assert!(table.iter().all(|row| !row.contains(&secret)), "the run table holds a password: {table:?}");
        assert!(!written.contains(&secret), "the result file holds a password: {written}");
    }
    assert!(table.iter().any(|row| row.contains("database_unreachable") || row.contains("28P01")), "{table:?}");
}

//! Bad input: invalid files and settings fail with exit 2 before any statement is sent; connection
//! failures exit 4; passwords never show.

use std::time::{Duration, Instant};

use crate::harness::*;

/// A URL nothing listens on: a run that tried to connect would fail with 4, not 2.
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    format!("postgres://app:{}@127.0.0.1:{port}/app", encode(PASSWORD))
}

#[test]
fn invalid_files_exit_2_naming_the_file_before_any_statement() {
    type Files<'a> = &'a [(&'a str, &'a [u8])];
    let cases: &[(Files, &str)] = &[
        (&[("init.sql", b"SELECT 1;")], "init.sql: not a migration file name"),
        (&[("0001_a.sql", b"SELECT 1;"), ("1_b.sql", b"SELECT 2;")], "both have version 1"),
        (
            &[("0001_a.sql", b"-- migrun:no-transation\nSELECT 1;")],
            "0001_a.sql: unknown directive `no-transation` (line 1)",
        ),
        (
            &[("0001_a.sql", b"-- migrun:lock-timeout=soon\nSELECT 1;")],
            "0001_a.sql: directive `lock-timeout=soon` (line 1) needs",
        ),
        (
            &[("0001_a.sql", b"-- MIGRUN:no-transaction\nSELECT 1;")],
            "0001_a.sql: `-- MIGRUN:no-transaction` (line 1) looks like a migrun directive",
        ),
        (
            &[("0001_a.sql", b"-- header\n-- migrun no-transaction\nSELECT 1;")],
            "0001_a.sql: `-- migrun no-transaction` (line 2) looks like a migrun directive",
        ),
        (
            &[("0001_a.sql", b"/* migrun:no-transaction */\nSELECT 1;")],
            "0001_a.sql: `/* migrun:no-transaction */` (line 1) looks like a migrun directive",
        ),
        (
            &[("0001_a.sql", b"/*\n * Adds an index.\n * Migrun:no-transaction\n */\nSELECT 1;")],
            "0001_a.sql: `* Migrun:no-transaction` (line 3) looks like a migrun directive",
        ),
        (
            &[("0001_a.sql", b"-- migrun:lock-timeout=25d\nSELECT 1;")],
            "0001_a.sql: directive `lock-timeout=25d` (line 1) needs at most 2147483647ms",
        ),
        (&[("0001_a.sql", b"SELECT '\xff';")], "0001_a.sql: not valid UTF-8 (line 1)"),
        (&[("0001_a.sql", b"  -- nothing here\n")], "0001_a.sql: holds no SQL statement"),
        (&[("0001_a.sql", b"\xff\xfeS\0E\0L\0")], "0001_a.sql: is UTF-16 (little-endian byte-order mark)"),
        (&[("0001_a.sql", b"\xfe\xff\0S\0E\0L")], "0001_a.sql: is UTF-16 (big-endian byte-order mark)"),
        (&[("0001_a.sql", b"-- header\rCREATE TABLE t (x int);\r")], "0001_a.sql: has CR-only line endings"),
        (
            &[("0001_a.sql", b"BEGIN;\nCREATE TABLE x ();\nCOMMIT;\n")],
            "0001_a.sql: `BEGIN` (line 1) controls the transaction",
        ),
    ];
    for (files, expected) in cases {
        let dir = tempfile::tempdir().expect("dir");
        for (name, body) in *files {
            std::fs::write(dir.path().join(name), body).expect("write");
        }
        let run = Migrun::new()
            .env("DATABASE_URL", &unreachable_url())
            .dir(dir.path())
            .args(["up", "--connect-timeout", "30s"])
            .run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(expected), "expected {expected:?} in {error:?}");
        assert_eq!(run.result()["outcome"], "invalid_input");
    }
}

#[test]
fn missing_directory_exits_2() {
    let run =
        Migrun::new().env("DATABASE_URL", &unreachable_url()).env("MIGRUN_DIR", "/nonexistent/sql").args(["up"]).run();
    run.assert_code(2);
    assert!(run.stderr.contains("/nonexistent/sql: cannot read the migrations directory"), "{}", run.stderr);
}

#[test]
fn invalid_settings_exit_2_naming_flag_and_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("MIGRUN_LOCK_WAIT", "ten minutes", "--lock-wait / MIGRUN_LOCK_WAIT: `ten minutes` is not a usable duration"),
        (
            "MIGRUN_LOCK_TIMEOUT",
            "25d",
            "--lock-timeout / MIGRUN_LOCK_TIMEOUT: `25d` is not a usable duration; expected at most 2147483647ms",
        ),
        ("MIGRUN_TABLE", "a;b", "--table / MIGRUN_TABLE: `a;b` is not valid"),
        ("MIGRUN_LOCK_RETRIES", "-1", "--lock-retries / MIGRUN_LOCK_RETRIES"),
        ("DATABASE_URL", "", "no database given: set one of DATABASE_URL / --database-url"),
    ];
    for (key, value, expected) in cases {
        let mut migrun = Migrun::new();
        migrun.env("DATABASE_URL", &unreachable_url()).dir(&example_sql()).env(key, value);
        let run = migrun.args(["up"]).run();
        run.assert_code(2);
        assert!(run.stderr.contains(expected), "expected {expected:?} in\n{}", run.stderr);
    }
}

#[test]
fn invalid_url_exits_2_without_printing_the_password() {
    let url = format!("postgres://app:{}@127.0.0.1/app?sslmode=sometimes", encode(PASSWORD));
    let run = Migrun::new().env("DATABASE_URL", &url).dir(&example_sql()).args(["up"]).run();
    run.assert_code(2);
    assert!(run.stderr.contains("sslmode `sometimes`"), "{}", run.stderr);
}

#[test]
fn a_connection_string_that_does_not_parse_is_never_echoed() {
    let pw = encode(PASSWORD);
    let cases = [
        format!("postgres:/app:{pw}@h/x"),
        format!("postgres;//app:{pw}@h/x"),
        format!("postgresql//app:{pw}@h/x"),
        format!("postgres:app:{pw}@h/x"),
        PASSWORD.to_string(),
        format!(" postgres://app:{pw}@127.0.0.1:1/x?{pw}=1"),
        format!("{pw}=b"),
        format!("host=h password='{pw}"),
        format!("postgres://app:{pw}@h:notaport/x"),
    ];
    for url in &cases {
        // The harness fails the run if the password shows anywhere in its output.
        let out = tempfile::tempdir().expect("dir");
        let result_file = out.path().join("result.json");
        let run = Migrun::new()
            .env("DATABASE_URL", url)
            .dir(&example_sql())
            .args(["up", "--result-file"])
            .arg_path(&result_file)
            .run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.starts_with("the database connection string is not valid: "), "{error}");
        let written = std::fs::read_to_string(&result_file).expect("result file");
        assert!(!written.contains(PASSWORD) && !written.contains(&pw), "{written}");
    }
}

#[test]
fn a_connection_string_with_surrounding_whitespace_is_trimmed() {
    let db = TestDb::new();
    for url in [format!("{}\n", db.url()), format!("  {} ", db.url()), format!("\t{}\r\n", db.url())] {
        db.migrun().env("DATABASE_URL", &url).dir(&example_sql()).args(["plan"]).run().assert_code(0);
    }
}

#[test]
fn unreachable_database_is_retried_until_connect_timeout_then_exits_4() {
    let started = Instant::now();
    let run = Migrun::new()
        .env("DATABASE_URL", &unreachable_url())
        .dir(&example_sql())
        .args(["up", "--connect-timeout", "2s"])
        .run();
    run.assert_code(4);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.result()["outcome"], "database_unreachable");
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("attempts"), "{}", run.stderr);
    // The reason once, saying for how long and which setting changes it; not a line per attempt.
    let warnings: Vec<serde_json::Value> = run.events().into_iter().filter(|e| e["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    let first = warnings[0]["message"].as_str().unwrap_or_default();
    assert!(first.contains("retrying for up to 2s (--connect-timeout / MIGRUN_CONNECT_TIMEOUT)"), "{first}");
    assert!(warnings[0]["error"].as_str().unwrap_or_default().contains("Connection refused"), "{}", run.stderr);
}

#[test]
fn wrong_password_exits_4_at_once_and_is_never_printed() {
    let db = TestDb::new();
    let run = Migrun::new()
        .env("DATABASE_URL", &db.password_url("not-the-password"))
        .dir(&example_sql())
        .args(["up", "--connect-timeout", "60s"])
        .run();
    run.assert_code(4);
    assert!(run.stderr.contains("28P01"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-password"));
    assert!(!run.stderr.contains("retrying"), "authentication failures are not retried");
}

#[test]
fn password_login_works_and_the_password_never_shows() {
    let db = TestDb::new();
    let run = Migrun::new()
        .env("DATABASE_URL", &db.password_url(PASSWORD))
        .dir(&example_sql())
        .args(["up", "--log-level", "debug"])
        .run();
    run.assert_code(0);
    assert!(run.stderr.contains("migrun_pw:***@"), "debug log shows the redacted URL:\n{}", run.stderr);
    let status =
        Migrun::new().env("DATABASE_URL", &db.password_url(PASSWORD)).dir(&example_sql()).args(["status"]).run();
    status.assert_code(0);
}

/// The files are read while the connection opens, but a bad file still fails before migrun
/// sends any statement: nothing is created, and the session closes politely.
#[test]
fn a_bad_file_sends_no_statement_even_when_the_database_is_reachable() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("0001_a.sql"), "CREATE TABLE a (x int);").expect("write");
    std::fs::write(dir.path().join("0002_b.sql"), "-- migrun:no-transation\nSELECT 1;").expect("write");
    for _ in 0..5 {
        let run = db.migrun().dir(dir.path()).args(["up"]).run();
        run.assert_code(2);
        assert!(run.result()["error"].as_str().unwrap_or_default().contains("0002_b.sql: unknown directive"));
        assert!(!run.stderr.contains("\"connected\""), "no statement, so no backend pid: {}", run.stderr);
    }
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'migrun_history')"), 0);
    assert_eq!(db.count(crate::locking::ADVISORY_LOCKS_HERE), 0);
}

#[test]
fn every_bad_file_name_is_named_in_one_run() {
    let dir = sql_dir(&[
        ("0001_ok.sql", "SELECT 1;"),
        ("0002-dash.sql", "SELECT 1;"),
        ("init.sql", "SELECT 1;"),
        ("1234567890123456789_too_long.sql", "SELECT 1;"),
        ("0003_bad-description.sql", "SELECT 1;"),
        ("V4__flyway.sql", "SELECT 1;"),
    ]);
    let run = Migrun::new()
        .env("DATABASE_URL", &unreachable_url())
        .dir(dir.path())
        .args(["up", "--connect-timeout", "30s"])
        .run();
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("5 files are not migration file names: "), "{error}");
    for (name, why) in [
        ("0002-dash.sql", "no _ between version and description"),
        ("init.sql", "no _ between version and description"),
        ("1234567890123456789_too_long.sql", "the version has more than 18 digits"),
        ("0003_bad-description.sql", "the description may hold letters, digits and _ only"),
        ("V4__flyway.sql", "the version must be digits"),
    ] {
        assert!(error.contains(&format!("{name} ({why}")), "{name}: {error}");
    }
    // In order, so a long list reads like the folder.
    let at = |name: &str| error.find(name).unwrap_or(usize::MAX);
    assert!(at("0002-dash.sql") < at("0003_bad-description.sql") && at("1234567890123456789") < at("V4__flyway.sql"));
    assert!(!error.contains("0001_ok.sql"), "{error}");
}

#[test]
fn a_statement_that_cannot_run_in_a_transaction_says_how_to_fix_the_file() {
    for (text, marker) in [
        ("CREATE INDEX CONCURRENTLY t_x ON t (x);", None),
        ("VACUUM t;", None),
        ("-- no-transaction\nCREATE INDEX CONCURRENTLY t_x ON t (x);", Some("`-- no-transaction` (sqlx's marker)")),
        ("-- migrate:up transaction:false\nVACUUM t;", Some("`-- migrate:up transaction:false` (dbmate's marker)")),
        ("-- migrate:no-transaction\nVACUUM t;", Some("`-- migrate:no-transaction` (dbmate's marker)")),
    ] {
        let db = TestDb::new();
        let dir = sql_dir(&[("0001_t.sql", "CREATE TABLE t (x int);"), ("0002_concurrently.sql", text)]);
        let run = db.migrun().dir(dir.path()).args(["up"]).run();
        run.assert_code(6);
        let result = run.result();
        let error = result["error"].as_str().unwrap_or_default();
        assert_eq!(result["sqlstate"], "25001");
        assert!(error.contains("put `-- migrun:no-transaction` on the file's first line"), "{error}");
        match marker {
            Some(marker) => {
                assert!(error.contains(&format!("the file has {marker}, which migrun does not read")), "{error}")
            }
            None => assert!(!error.contains("which migrun does not read"), "{error}"),
        }
    }
}

#[test]
fn a_block_comment_before_the_directives_is_a_comment() {
    let db = TestDb::new();
    let file = "/*\n * Builds the index without blocking writes.\n */\n-- migrun:no-transaction\nCREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\n";
    let dir = sql_dir(&[("0001_index.sql", file)]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM pg_class WHERE relname = 't_x'"), 1);
}

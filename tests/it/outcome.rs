//! Every run ends with exactly one result event, in the configured format, whose exit code is
//! the process's: usage errors, early failures and a result file that cannot be written
//! included. `--result-file` is written on every exit that prints the event.

use crate::harness::*;

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("result file {}: {e}", path.display()));
    serde_json::from_str(&text).expect("result file is JSON")
}

#[test]
fn a_result_file_that_cannot_be_written_is_found_before_anything_is_done() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases =
        [(dir.path().join("missing/result.json"), "does not exist"), (dir.path().to_path_buf(), "it is a directory")];
    for (path, says) in cases {
        let db = TestDb::new();
        let run = db.migrun().dir(&example_sql()).args(["up", "--result-file"]).args([&path]).run();
        run.assert_code(2);
        let result = run.result();
        assert_eq!(result["outcome"], "invalid_input", "{result}");
        let error = result["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("--result-file / MIGRUN_RESULT_FILE: cannot write") && error.contains(says),
            "{error}"
        );
        assert!(!run.stderr.contains("\"connected\""), "no connection was made");
        assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 0);
    }
    // A writable path passes the check, and a run that fails later still writes its result.
    let fresh = dir.path().join("fresh.json");
    let run = Migrun::new()
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .args(["up", "--dir", "/nonexistent", "--result-file"])
        .args([&fresh])
        .run();
    run.assert_code(2);
    assert!(fresh.exists(), "the failed run's result is written");
}

#[test]
fn usage_errors_end_with_a_result_event_and_the_result_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 8] = [
        (&["up", "--no-such-flag"], &[]),
        (&["up", "--log-level", "loud"], &[]),
        (&[], &[]),
        (&["frobnicate"], &[]),
        (&["exec"], &[]),
        (&["up"], &[("MIGRUN_LOG_LEVEL", "loud")]),
        (&["up"], &[("MIGRUN_LOCK_WAIT", "forever")]),
        (&["up"], &[("MIGRUN_ALLOW_DRIFT", "maybe")]),
    ];
    for (n, (args, env)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("result-{n}.json"));
        let mut migrun = Migrun::new();
        migrun.env("DATABASE_URL", "postgres://127.0.0.1:1/x").env("MIGRUN_RESULT_FILE", &path.display().to_string());
        for (key, value) in env.iter() {
            migrun.env(key, value);
        }
        let run = migrun.args(args.iter()).run();
        run.assert_code(2);
        let result = run.result();
        assert_eq!(result["exit_code"], 2, "{args:?} {env:?}: {result}");
        assert_eq!(result["outcome"], "invalid_input", "{result}");
        assert_eq!(result["retryable"], false, "{result}");
        assert!(!result["error"].as_str().unwrap_or_default().is_empty(), "{result}");
        let written = read_json(&path);
        assert_eq!(written["exit_code"], 2, "{written}");
        assert_eq!(written["error"], result["error"]);
    }
}

#[test]
fn a_usage_error_speaks_the_configured_format() {
    let run = Migrun::new().env("MIGRUN_LOG_FORMAT", "human").args(["up", "--no-such-flag"]).run();
    run.assert_code(2);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("result: invalid_input (exit 2)"), "{last}");

    let flag = Migrun::new().args(["--log-format=human", "up", "--no-such-flag"]).run();
    flag.assert_code(2);
    assert!(flag.stderr.lines().last().unwrap_or_default().starts_with("result: invalid_input (exit 2)"));

    let help = Migrun::new().args(["--help"]).run();
    help.assert_code(0);
    assert!(help.stdout.contains("Usage"), "{}", help.stdout);
    assert!(!help.stderr.contains("\"event\":\"result\""), "help is not a run: {}", help.stderr);
}

#[test]
fn early_failures_write_the_result_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new();
    let bad_url = format!("postgres://{PASSWORD_ROLE}:{}@127.0.0.1:notaport/x", encode(PASSWORD));
    let cases: [(&str, Option<&str>, std::path::PathBuf, i32); 4] = [
        ("a connection string that does not parse", Some(bad_url.as_str()), example_sql(), 2),
        ("no database at all", None, example_sql(), 2),
        ("a migrations directory that does not exist", Some(""), dir.path().join("nope"), 2),
        ("a broken migration file", Some(""), fixture("broken"), 6),
    ];
    for (n, (what, url, sql, code)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("result-{n}.json"));
        let mut migrun = Migrun::new();
        match url {
            Some("") => migrun.env("DATABASE_URL", &db.url()),
            Some(url) => migrun.env("DATABASE_URL", url),
            None => &mut migrun,
        };
        let run = migrun.dir(&sql).args(["up", "--result-file"]).args([&path]).run();
        run.assert_code(code);
        let written = read_json(&path);
        assert_eq!(written["exit_code"], code, "{what}: {written}");
        assert_eq!(written["error"], run.result()["error"], "{what}");
        assert!(!written.to_string().contains(&encode(PASSWORD)), "{what}: {written}");
    }
}

#[test]
fn the_result_line_lists_the_first_and_last_files_and_the_result_file_lists_all() {
    let db = TestDb::new();
    let files: Vec<(String, String)> =
        (1..=30).map(|v| (format!("{v:04}_step_{v}.sql"), format!("CREATE TABLE step_{v} (x int);"))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let dir = sql_dir(&refs);
    let out = tempfile::tempdir().expect("dir");
    let result_file = out.path().join("result.json");
    let run = db.migrun().dir(dir.path()).args(["up", "--result-file"]).arg_path(&result_file).run();
    run.assert_code(0);
    let line = run.result();
    assert_eq!(line["applied_count"], 30);
    assert_eq!(line["applied_omitted"], 20);
    assert_eq!(run.applied_files().first().map(String::as_str), Some("0001_step_1.sql"));
    assert_eq!(run.applied_files().last().map(String::as_str), Some("0030_step_30.sql"));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result_file).expect("result file")).expect("json");
    assert_eq!(written["applied"].as_array().map(Vec::len), Some(30));
    assert_eq!(written["applied_count"], 30);
}

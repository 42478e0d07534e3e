//! The entrypoint's secrets keep their contracts: checked before the wait, a PATH a secret
//! sets is the one the command is looked up on, a value too large to pass is named, a busy
//! Secrets Manager is retryable, and every error names the field and is said once.

use std::time::{Duration, Instant};

use crate::connections::{secret, unique, with_moto};
use crate::harness::*;
use crate::services::serve_aws_error;

fn error_lines(run: &Run) -> usize {
    run.events().iter().filter(|e| e["level"] == "ERROR").count()
}

/// A broken `--env-from-secret` fails at once with exit 3, before the wait (which would run
/// to its timeout and then say exit 9, "did the migration run?").
#[test]
fn exec_wait_checks_the_commands_secret_before_waiting() {
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n")]);
    let missing = unique("no-such-secret");
    let started = Instant::now();
    let mut m = db.migrun();
    m.dir(dir.path());
    let run = with_moto(&mut m)
        .args(["exec", "--wait-timeout", "20s", "--env-from-secret", &missing, "--", "sh", "-c", "echo must-not-run"])
        .run();
    run.assert_code(3);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}: it waited first", started.elapsed());
    assert!(!run.stdout.contains("must-not-run"));
    assert_eq!(error_lines(&run), 1, "one error, said once:\n{}", run.stderr);
}

/// A secret that sets PATH: the command is looked up on that PATH, so one not found there is
/// 127 (not found), not 126 (cannot execute).
#[test]
fn a_command_missing_from_the_secrets_path_is_127() {
    let name = unique("env-path");
    let arn = secret(&name, r#"{"PATH": "/nonexistent/bin"}"#);
    let mut m = Migrun::new();
    let run = with_moto(&mut m).args(["exec", "--no-db", "--env-from-secret", &arn, "--", "true"]).run();
    run.assert_code(127);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("127"), "{}", run.stderr);
}

/// A value too large for one environment variable fails before the command, exit 3, naming
/// the key (not 126 "check that it is an executable file").
#[test]
fn a_secret_value_too_large_to_pass_is_named() {
    let name = unique("env-large");
    let big = "x".repeat(200 * 1024);
    let arn = secret(&name, &format!(r#"{{"CERT_BUNDLE": "{big}", "SMALL": "ok"}}"#));
    let mut m = Migrun::new();
    let run = with_moto(&mut m).args(["exec", "--no-db", "--env-from-secret", &arn, "--", "true"]).run();
    run.assert_code(3);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("CERT_BUNDLE") && error.contains("bytes"), "{error}");
}

/// Throttling and 5xx answers (after the SDK's retries) are a busy service, not a wrong
/// secret or IAM: exit 17, retryable.
#[test]
fn a_throttled_or_failing_secrets_manager_is_retryable() {
    for (status, code) in
        [("400 Bad Request", "ThrottlingException"), ("500 Internal Server Error", "InternalServiceError")]
    {
        let endpoint = serve_aws_error(status, code);
        let db = TestDb::new();
        let run = Migrun::new()
            .dir(&example_sql())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "2")
            .env("HOME", "/nonexistent")
            .env("MIGRUN_SECRET_ID", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123")
            .args(["status"])
            .run();
        run.assert_code(17);
        let result = run.result();
        assert_eq!(
            (result["outcome"].as_str(), result["retryable"].as_bool()),
            (Some("secrets_manager_busy"), Some(true)),
            "{code}"
        );
        assert!(result["error"].as_str().unwrap_or_default().contains(code), "{}", run.stderr);
        drop(db);
    }
}

/// An RDS-shaped secret with one field wrong says which field.
#[test]
fn an_rds_secret_with_a_bad_field_names_it() {
    let cases = [
        (
            r#"{"engine":"postgres","host":"h","username":"app","password":"pw-rds-1","port":"abc"}"#,
            "field `port` is not a port number",
        ),
        (r#"{"engine":"postgres","host":"h","username":"app","port":5432}"#, "field `password` is missing"),
    ];
    for (value, says) in cases {
        let arn = secret(&unique("rds-field"), value);
        let mut m = Migrun::new();
        m.dir(&example_sql()).env("MIGRUN_SECRET_ID", &arn);
        let run = with_moto(&mut m).args(["status"]).run();
        run.assert_code(3);
        assert!(run.result()["error"].as_str().unwrap_or_default().contains(says), "{says}: {}", run.stderr);
        assert_eq!(error_lines(&run), 1, "said once:\n{}", run.stderr);
    }
}

/// Under `exec --lock` too, the command's secrets are checked before the lock and before our
/// own files run: a broken one leaves the database as it was.
#[test]
fn exec_lock_checks_the_commands_secret_before_taking_the_lock() {
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n")]);
    let reserved = secret(&unique("env-reserved"), r#"{"PGHOST": "elsewhere"}"#);
    let mut m = db.migrun();
    m.dir(dir.path());
    let run = with_moto(&mut m).args(["exec", "--lock", "--env-from-secret", &reserved, "--", "true"]).run();
    run.assert_code(2);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'migrun_history')"), 0, "nothing ran");
}

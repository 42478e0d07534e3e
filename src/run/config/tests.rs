use std::collections::HashMap;
use std::ffi::OsString;

use clap::Parser;

use super::reporting::log_format;
use super::*;
use crate::db::endpoint::Source;
use crate::run::log::LogFormat;

fn resolve_with(args: &[&str], vars: &[(&str, &str)]) -> (Reporting, Result<Config, ConfigError>) {
    let cli = Cli::try_parse_from(std::iter::once("migrun").chain(args.iter().copied())).expect("parses");
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    resolve(cli, &|name: &str| vars.get(name).cloned(), Vec::new())
}

fn config(args: &[&str], vars: &[(&str, &str)]) -> Config {
    resolve_with(args, vars).1.expect("valid configuration")
}

fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
    resolve_with(args, vars).1.expect_err("invalid configuration").to_string()
}

const URL: (&str, &str) = ("DATABASE_URL", "postgres://app@db/app");

#[test]
fn flags_win_over_variables_which_win_over_defaults() {
    let defaults = config(&["up"], &[URL]);
    assert_eq!(defaults.db.lock_wait, Duration::from_secs(600));
    assert_eq!(defaults.db.dir, PathBuf::from("sql"));
    assert_eq!(defaults.db.history_table.to_string(), "migrun_history");
    assert_eq!(defaults.db.retry.lock_retries, 10);
    let from_env = config(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "30s"), ("MIGRUN_DIR", "db/migrations")]);
    assert_eq!(from_env.db.lock_wait, Duration::from_secs(30));
    assert_eq!(from_env.db.dir, PathBuf::from("db/migrations"));
    let from_flag = config(&["up", "--lock-wait", "5s", "--dir", "other"], &[URL, ("MIGRUN_LOCK_WAIT", "30s")]);
    assert_eq!(from_flag.db.lock_wait, Duration::from_secs(5));
    assert_eq!(from_flag.db.dir, PathBuf::from("other"));
    // An empty variable (a blank field in a task definition) counts as unset.
    assert_eq!(config(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "")]).db.lock_wait, Duration::from_secs(600));
}

#[test]
fn subcommand_settings_read_their_variables_too() {
    let wait = config(&["wait"], &[URL, ("MIGRUN_WAIT_TIMEOUT", "2s")]);
    assert!(matches!(wait.command, Command::Wait { timeout } if timeout == Duration::from_secs(2)));
    let exec = config(&["exec", "--", "true"], &[URL, ("MIGRUN_ENV_FROM_SECRET", "a,b")]);
    let Command::Exec(ExecRequest { env_from, mode, .. }) = exec.command else { panic!("exec") };
    assert_eq!(env_from.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(matches!(mode, ExecMode::Wait { .. }));
    let dry = config(&["up", "--dry-run", "--target", "3"], &[URL]);
    assert!(matches!(dry.command, Command::Plan { up_to: Some(UpTo(3)), format: Format::Human }));
}

#[test]
fn switches_read_common_spellings() {
    for on in ["1", "true", "YES", "on"] {
        assert!(config(&["up"], &[URL, ("MIGRUN_ALLOW_DRIFT", on)]).db.policy.allow_drift, "{on}");
    }
    for off in ["0", "false", "no", "OFF"] {
        assert!(!config(&["up"], &[URL, ("MIGRUN_ALLOW_DRIFT", off)]).db.policy.allow_drift, "{off}");
    }
    assert!(config(&["up", "--allow-missing"], &[URL, ("MIGRUN_ALLOW_MISSING", "false")]).db.policy.allow_missing);
    let bad = error(&["up"], &[URL, ("MIGRUN_ALLOW_OUT_OF_ORDER", "maybe")]);
    assert!(bad.starts_with("--allow-out-of-order / MIGRUN_ALLOW_OUT_OF_ORDER: `maybe`"), "{bad}");
}

#[test]
fn the_first_connection_source_set_wins() {
    let libpq = ("PGHOST", "pg.internal");
    let secret = ("MIGRUN_SECRET_ID", "prod/db");
    let source = |vars: &[(&str, &str)]| config(&["status"], vars).db.connection.expect("a connection").source;
    assert!(matches!(source(&[URL, secret, libpq]), Source::Url { .. }));
    assert!(matches!(source(&[secret, libpq]), Source::Secret(s) if s.id == "prod/db"));
    assert!(matches!(source(&[libpq]), Source::Libpq));
    let arn = ("DATABASE_URL", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db:url::");
    assert!(matches!(source(&[arn]), Source::Secret(s) if s.json_key.as_deref() == Some("url")));
    assert!(error(&["up"], &[]).starts_with("no database given"));
    // Commands that never connect need no connection.
    assert!(config(&["new", "x"], &[]).db.connection.is_none());
    assert!(config(&["exec", "--no-db", "--", "true"], &[]).db.connection.is_none());
}

#[test]
fn invalid_settings_name_flag_and_variable() {
    let duration = error(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "forever")]);
    assert!(duration.starts_with("--lock-wait / MIGRUN_LOCK_WAIT: `forever` is not a usable duration"), "{duration}");
    let table = error(&["up", "--table", "a.b.c"], &[URL]);
    assert!(table.starts_with("--table / MIGRUN_TABLE: `a.b.c` is not valid"), "{table}");
    let sslmode = error(&["up"], &[URL, ("MIGRUN_SSLMODE", "verify_full")]);
    assert!(sslmode.contains("verify_full") && sslmode.contains("verify-full"), "{sslmode}");
    let url = error(&["up"], &[("DATABASE_URL", "postgres://app:hunter2@db:port/app")]);
    assert!(url.contains("invalid value for option `port`") && !url.contains("hunter2"), "{url}");
}

#[test]
fn fanout_workers_come_from_the_flag_or_a_batch_array_and_leave_slots_for_targets() {
    let workers = |args: &[&str], vars: &[(&str, &str)]| match config(args, vars).command {
        Command::Fanout(request) => request.settings.capacity.workers,
        other => panic!("not fanout: {other:?}"),
    };
    let up = ["fanout", "up", "--targets", "file:t", "--max-conns-per-server", "8"];
    assert_eq!(workers(&up, &[]), None);
    assert_eq!(workers(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "6")]), Some(6));
    assert_eq!(workers(&[&up[..], &["--workers", "3"]].concat(), &[("AWS_BATCH_JOB_ARRAY_SIZE", "6")]), Some(3));
    let full = error(&[&up[..], &["--workers", "8"]].concat(), &[]);
    assert!(full.starts_with("--workers: `8`") && full.contains("fewer than --max-conns-per-server"), "{full}");
    let batch = error(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "10")]);
    assert!(batch.starts_with("AWS_BATCH_JOB_ARRAY_SIZE (--workers): `10`"), "{batch}");
    let bad = error(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "many")]);
    assert!(bad.contains("AWS_BATCH_JOB_ARRAY_SIZE") && bad.contains("`many`"), "{bad}");
}

#[test]
fn reporting_settles_even_when_the_rest_is_invalid() {
    let (reporting, config) = resolve_with(
        &["up", "--result-file", "/tmp/r.json"],
        &[("MIGRUN_LOG_FORMAT", "human"), ("MIGRUN_LOG_LEVEL", "warn"), ("MIGRUN_RELEASE", "v7")],
    );
    assert!(config.is_err(), "no database");
    assert_eq!(reporting.format, LogFormat::Human);
    assert_eq!(reporting.level, tracing::Level::WARN);
    assert_eq!(reporting.result_file, Some(PathBuf::from("/tmp/r.json")));
    assert_eq!(reporting.release.as_deref(), Some("v7"));
    assert_eq!(reporting.command, Some(CommandKind::Up));
    let (reporting, config) = resolve_with(&["status", "--log-format", "json"], &[("MIGRUN_LOG_FORMAT", "human")]);
    assert_eq!(reporting.format, LogFormat::Json, "the flag wins");
    assert!(config.is_err());
    let (reporting, config) = resolve_with(&["up"], &[URL, ("MIGRUN_LOG_FORMAT", "xml")]);
    assert!(config.err().is_some_and(|e| e.to_string().contains("MIGRUN_LOG_FORMAT: `xml`")));
    assert_eq!(reporting.format, log_format("auto").unwrap_or(LogFormat::Json));
}

#[test]
fn reporting_of_a_command_line_that_does_not_parse() {
    let args: Vec<OsString> =
        ["migrun", "--log-format=human", "up", "--dry-run", "--bogus", "--result-file", "/tmp/x.json"]
            .iter()
            .map(OsString::from)
            .collect();
    let reporting = Reporting::from_args(&args, &|_| None);
    assert_eq!(reporting.format, LogFormat::Human);
    assert_eq!(reporting.command, Some(CommandKind::Plan));
    assert_eq!(reporting.result_file, Some(PathBuf::from("/tmp/x.json")));
    let env = |name: &str| (name == "MIGRUN_RESULT_FILE").then(|| "/tmp/env.json".to_string());
    let bare = Reporting::from_args(&[OsString::from("migrun")], &env);
    assert_eq!(bare.command_name(), "migrun");
    assert_eq!(bare.result_file, Some(PathBuf::from("/tmp/env.json")));
}

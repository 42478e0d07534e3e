//! `status`, `plan`, `new`, `--dry-run` and the result file.

use crate::harness::*;

#[test]
fn plan_lists_pending_files_with_modes_and_changes_nothing() {
    let db = TestDb::new();
    let run = db.migrun().dir(&example_sql()).args(["plan"]).run();
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines[0].contains("0001_create_users.sql")
            && lines[0].contains("in a transaction")
            && lines[0].contains("lock_timeout 5s"),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains("0003_index_users_email.sql")
            && lines[2].contains("no transaction")
            && lines[2].contains("lock_timeout 2s"),
        "{}",
        lines[2]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'migrun_history')"),
        0,
        "plan is read only"
    );

    let dry = db.migrun().dir(&example_sql()).args(["up", "--dry-run"]).run();
    dry.assert_code(0);
    assert_eq!(dry.stdout, run.stdout);

    let json = db.migrun().dir(&example_sql()).args(["plan", "--json"]).run();
    let steps: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan --json");
    assert_eq!(steps[2]["transaction"], false);
    assert_eq!(steps[3]["kind"], "repeatable");
}

#[test]
fn status_shows_applied_pending_and_drift() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    std::fs::remove_file(dir.path().join("20261125120000_timestamped.sql")).expect("remove");
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    std::fs::copy(
        fixture("ordering").join("20261125120000_timestamped.sql"),
        dir.path().join("20261125120000_timestamped.sql"),
    )
    .expect("add");
    let status = db.migrun().dir(dir.path()).args(["status", "--json"]).run();
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    let states: Vec<&str> =
        report["files"].as_array().expect("files").iter().map(|f| f["state"].as_str().unwrap_or_default()).collect();
    assert_eq!(states, vec!["applied", "applied", "applied", "applied", "pending"]);
    assert_eq!(report["pending"], 1);

    std::fs::write(dir.path().join("0002_second.sql"), "SELECT 'edited';\n").expect("edit");
    let drifted = db.migrun().dir(dir.path()).args(["status"]).run();
    drifted.assert_code(7);
    assert!(drifted.stdout.contains("DRIFTED"), "{}", drifted.stdout);
}

#[test]
fn status_on_an_empty_database_does_not_create_the_history_table() {
    let db = TestDb::new();
    let status = db.migrun().dir(&example_sql()).args(["status"]).run();
    status.assert_code(0);
    assert!(status.stdout.contains("4 pending"), "{}", status.stdout);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 0);
}

#[test]
fn new_creates_a_timestamped_file_that_must_be_filled_in() {
    let dir = tempfile::tempdir().expect("dir");
    let sql_dir = dir.path().join("sql");
    let run = Migrun::offline(&sql_dir).args(["new", "add_orders"]).run();
    run.assert_code(0);
    let created = std::path::PathBuf::from(run.stdout.trim());
    let name = file_name(run.stdout.trim());
    assert!(name.ends_with("_add_orders.sql") && name.len() == "20261125120000_add_orders.sql".len(), "{name}");
    assert!(created.starts_with(&sql_dir) && created.is_file());
    let bad = Migrun::offline(&sql_dir).args(["new", "add-orders"]).run();
    bad.assert_code(2);
    // An unfilled template is refused rather than recorded as applied.
    let up = Migrun::new().env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x").dir(&sql_dir).args(["up"]).run();
    up.assert_code(2);
    assert!(up.stderr.contains("holds no SQL statement"), "{}", up.stderr);
}

#[test]
fn new_never_repeats_a_version_and_can_number_sequentially() {
    let dir = tempfile::tempdir().expect("dir");
    // Five files in (nearly always) the same second: five versions.
    let names: Vec<String> = (0..5)
        .map(|i| {
            let run = Migrun::offline(dir.path()).args(["new", &format!("step_{i}")]).run();
            run.assert_code(0);
            file_name(run.stdout.trim())
        })
        .collect();
    let mut versions: Vec<&str> = names.iter().map(|n| n.split('_').next().unwrap_or_default()).collect();
    versions.dedup();
    assert_eq!(versions.len(), 5, "{names:?}");
    let sequential = tempfile::tempdir().expect("dir");
    std::fs::write(sequential.path().join("0007_seven.sql"), "SELECT 7;").expect("write");
    let run = Migrun::offline(sequential.path()).args(["new", "--sequential", "eight"]).run();
    run.assert_code(0);
    assert_eq!(file_name(run.stdout.trim()), "0008_eight.sql");
}

#[test]
fn result_file_holds_the_result_event() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("result.json");
    let run = db.migrun().dir(&fixture("broken")).args(["up", "--result-file"]).args([&path]).run();
    run.assert_code(6);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("result file")).expect("json");
    assert_eq!(written["outcome"], "migration_failed");
    assert_eq!(written["exit_code"], 6);
    assert_eq!(written["line"], run.result()["line"]);
}

#[test]
fn json_logs_have_one_event_per_line_with_named_fields() {
    let db = TestDb::new();
    let run = db.migrun().dir(&example_sql()).args(["up"]).run();
    run.assert_code(0);
    let events = run.events();
    assert_eq!(events.len(), run.stderr.lines().count(), "every stderr line is JSON:\n{}", run.stderr);
    let messages: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap_or_default()).collect();
    for phase in ["configuration resolved", "connected", "lock acquired", "history read", "applying", "applied"] {
        assert!(messages.contains(&phase), "no {phase:?} event in {messages:?}");
    }
    let resolved = events.iter().find(|e| e["message"] == "configuration resolved").expect("resolved event");
    assert_eq!(
        (&resolved["command"], &resolved["files"]),
        (&serde_json::json!("up"), &serde_json::json!(4)),
        "{resolved}"
    );
    let applied = events.iter().find(|e| e["message"] == "applied").expect("applied event");
    assert!(
        applied["file"].is_string()
            && applied["duration_ms"].is_number()
            && applied["timestamp"].is_string()
            && applied["level"] == "INFO",
        "{applied}"
    );
}

#[test]
fn a_typo_in_a_command_or_flag_gets_a_suggestion() {
    for (args, says) in [
        (vec!["stauts"], "unrecognized subcommand 'stauts'; a similar subcommand exists: 'status'"),
        (vec!["up", "--dryrun"], "unexpected argument '--dryrun' found; a similar argument exists: '--dry-run'"),
    ] {
        let run = Migrun::new().args(&args).run();
        run.assert_code(2);
        let message = run.result()["message"].as_str().unwrap_or_default().to_string();
        assert!(message.starts_with(says), "{args:?}: {message}");
    }
}

#[test]
fn env_file_supplies_settings_for_a_local_run_and_the_environment_wins() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!(
            "# local settings\nexport DATABASE_URL=\"{}\"\nMIGRUN_DIR={}\nMIGRUN_TABLE=from_file_history\nAPP_GREETING='hello from the file'\n",
            db.url(),
            example_sql().display()
        ),
    )
    .expect("write .env");
    // Not read unless given.
    Migrun::new().args(["up"]).run().assert_code(2);
    // The file's settings, with the environment's MIGRUN_TABLE winning over the file's.
    let run = Migrun::new().env("MIGRUN_TABLE", "env_history").args(["up", "--env-file"]).arg_path(&env_file).run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM env_history"), 4);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'from_file_history'"), 0);
    // exec's command sees the file's variables.
    let run = Migrun::new()
        .args(["exec", "--no-db", "--env-file"])
        .arg_path(&env_file)
        .args(["--", "sh", "-c", r#"test "$APP_GREETING" = "hello from the file""#])
        .run();
    run.assert_code(0);
    // A line that is not KEY=VALUE is named by number, never shown.
    std::fs::write(&env_file, format!("DATABASE_URL={}\npostgres://app:{}@h/x\n", db.url(), encode(PASSWORD)))
        .expect("write");
    let run = Migrun::new().args(["up", "--env-file"]).arg_path(&env_file).run();
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("line 2 is not KEY=VALUE"), "{error}");
    let missing = Migrun::new().args(["up", "--env-file", "/nonexistent/.env"]).run();
    missing.assert_code(2);
    assert!(missing.result()["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("--env-file /nonexistent/.env: cannot read"));
}

#[test]
fn a_fresh_empty_file_is_listed_by_status_and_plan_and_refused_by_up() {
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (x int);")]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let created = Migrun::offline(dir.path()).args(["new", "--sequential", "b"]).run();
    created.assert_code(0);
    let status = db.migrun().dir(dir.path()).args(["status", "--json"]).run();
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(report["files"][1]["state"], "empty", "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    let plan = db.migrun().dir(dir.path()).args(["plan"]).run();
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("0002_b.sql") && plan.stdout.contains("empty (holds no statement yet"),
        "{}",
        plan.stdout
    );
    let up = db.migrun().dir(dir.path()).args(["up"]).run();
    up.assert_code(2);
    assert!(
        up.result()["error"].as_str().unwrap_or_default().contains("0002_b.sql: holds no SQL statement"),
        "{}",
        up.stderr
    );
    db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "1s"]).run().assert_code(2);
}

#[test]
fn help_of_a_command_without_a_database_lists_only_what_it_reads() {
    for (command, own) in [("new", "--sequential"), ("convert", "--from")] {
        for flag in ["--help", "-h"] {
            let run = crate::harness::Migrun::new().args([command, flag]).run();
            run.assert_code(0);
            assert!(run.stdout.contains(own) && run.stdout.contains("--log-format"), "{}", run.stdout);
            assert!(!run.stdout.contains("--database-url") && !run.stdout.contains("--lock-timeout"), "{}", run.stdout);
        }
    }
    assert!(crate::harness::Migrun::new().args(["new", "--help"]).run().stdout.contains("--dir"));
    let up = crate::harness::Migrun::new().args(["up", "--help"]).run();
    assert!(up.stdout.contains("--database-url") && up.stdout.contains("--lock-timeout"), "{}", up.stdout);
}

//! The history against the files: drift, missing versions, out-of-order files, repeatable
//! files, unfinished no-transaction files.

use crate::harness::*;

fn up(db: &TestDb, dir: &std::path::Path, extra: &[&str]) -> Run {
    db.migrun().dir(dir).args(["up"]).args(extra).run()
}

#[test]
fn edited_applied_file_is_drift_and_stops_with_both_checksums() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    up(&db, dir.path(), &[]).assert_code(0);
    let file = dir.path().join("0002_second.sql");
    std::fs::write(&file, "INSERT INTO applied_order (version) VALUES (2); -- edited\n").expect("edit");
    std::fs::write(dir.path().join("20261125120001_new.sql"), "CREATE TABLE must_not_apply (id int);\n").expect("add");
    let run = up(&db, dir.path(), &[]);
    run.assert_code(7);
    let recorded = db.query_strings("SELECT checksum FROM migrun_history WHERE version = 2").remove(0);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("0002_second.sql") && error.contains(&recorded), "{error}");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'must_not_apply'"),
        0,
        "nothing applied on drift"
    );

    let allowed = up(&db, dir.path(), &["--allow-drift"]);
    allowed.assert_code(0);
    assert_eq!(allowed.applied_files(), vec!["20261125120001_new.sql"]);
}

#[test]
fn crlf_and_bom_checkout_is_not_drift() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    up(&db, dir.path(), &[]).assert_code(0);
    let file = dir.path().join("0002_second.sql");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("\u{feff}{}", text.replace('\n', "\r\n"))).expect("rewrite");
    up(&db, dir.path(), &[]).assert_code(0);
}

#[test]
fn version_missing_from_the_files_goes_ahead_only_when_known_compatible_or_allowed() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    up(&db, dir.path(), &[]).assert_code(0);
    std::fs::remove_file(dir.path().join("9_ninth.sql")).expect("remove");
    // 9 was recorded expand-only (an INSERT): the older files run on it under any policy.
    let run = up(&db, dir.path(), &["--on-newer-schema", "refuse"]);
    run.assert_code(0);
    assert!(run.stderr.contains("all expand-only"), "{}", run.stderr);
    // Not known (as an older migrun leaves it): the policy decides.
    db.client().batch_execute("DELETE FROM migrun_history_rollback WHERE version = 9").expect("forget");
    let run = up(&db, dir.path(), &["--on-newer-schema", "refuse"]);
    run.assert_code(7);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("version(s) 9"), "{}", run.stderr);
    let warned = up(&db, dir.path(), &[]);
    warned.assert_code(0);
    assert!(warned.events().iter().any(|e| e["level"] == "WARN" && e["version"] == 9), "{}", warned.stderr);
    up(&db, dir.path(), &["--on-newer-schema", "refuse", "--allow-missing"]).assert_code(0);
}

#[test]
fn out_of_order_version_stops_unless_allowed() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    std::fs::remove_file(dir.path().join("9_ninth.sql")).expect("remove");
    up(&db, dir.path(), &[]).assert_code(0);
    std::fs::copy(fixture("ordering").join("9_ninth.sql"), dir.path().join("9_ninth.sql")).expect("restore");
    let run = up(&db, dir.path(), &[]);
    run.assert_code(7);
    assert!(run.stderr.contains("lower than the highest applied version 20261125120000"), "{}", run.stderr);
    let allowed = up(&db, dir.path(), &["--allow-out-of-order"]);
    allowed.assert_code(0);
    assert_eq!(allowed.applied_files(), vec!["9_ninth.sql"]);
}

#[test]
fn repeatable_file_is_reapplied_only_when_it_changes() {
    let db = TestDb::new();
    let dir = fixture_copy("repeatable");
    up(&db, dir.path(), &[]).assert_code(0);
    up(&db, dir.path(), &[]).assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM view_applies"), 1);
    std::fs::write(
        dir.path().join("R__base_view.sql"),
        "CREATE OR REPLACE VIEW base_view AS SELECT id, name FROM base;\nINSERT INTO view_applies DEFAULT VALUES;\n",
    )
    .expect("edit");
    let changed = up(&db, dir.path(), &[]);
    changed.assert_code(0);
    assert_eq!(changed.applied_files(), vec!["R__base_view.sql"]);
    assert_eq!(db.count("SELECT count(*) FROM view_applies"), 2);
    assert_eq!(db.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'base_view'"), 2);
    up(&db, dir.path(), &[]).assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM view_applies"), 2);
}

#[test]
fn target_stops_at_a_version_and_holds_back_repeatables() {
    let db = TestDb::new();
    let run = db.migrun().dir(&example_sql()).args(["up", "--target", "2"]).run();
    run.assert_code(0);
    assert_eq!(run.applied_files(), vec!["0001_create_users.sql", "0002_add_users_display_name.sql"]);
    let rest = db.migrun().dir(&example_sql()).args(["up"]).run();
    assert_eq!(rest.applied_files(), vec!["0003_index_users_email.sql", "R__active_users.sql"]);
}

/// An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS would
/// keep forever; the re-run must drop it and build a valid one.
#[test]
fn unfinished_concurrent_index_is_dropped_and_rebuilt_on_rerun() {
    let db = TestDb::new();
    let mut client = db.client();
    client.batch_execute("CREATE TABLE codes (code text); INSERT INTO codes VALUES ('a'), ('a')").expect("setup");
    // Fails on the duplicate and leaves the index INVALID, as an interrupted build would.
    assert!(client.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY codes_code_key ON codes (code)").is_err());
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'codes_code_key'::regclass AND NOT indisvalid"),
        1
    );
    // A first migrun run fails the same way, leaving its history row `started`.
    let failed = db.migrun().dir(&fixture("unfinished")).args(["up"]).run();
    failed.assert_code(6);
    assert_eq!(db.query_strings("SELECT state FROM migrun_history"), vec!["started"]);
    client.batch_execute("DELETE FROM codes WHERE ctid <> (SELECT min(ctid) FROM codes)").expect("dedupe");

    let rerun = db.migrun().dir(&fixture("unfinished")).args(["up"]).run();
    rerun.assert_code(0);
    assert!(rerun.stderr.contains("did not finish"), "{}", rerun.stderr);
    assert!(rerun.stderr.contains("dropping the INVALID index"), "{}", rerun.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'codes_code_key'::regclass AND indisvalid"),
        1
    );
    assert_eq!(db.query_strings("SELECT state FROM migrun_history"), vec!["applied"]);
}

#[test]
fn every_history_problem_is_reported_in_one_run() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    up(&db, dir.path(), &[]).assert_code(0);
    // Drift (2 edited), missing (9 removed), out of order (5 added below the highest).
    std::fs::write(dir.path().join("0002_second.sql"), "SELECT 'edited';\n").expect("edit");
    std::fs::remove_file(dir.path().join("9_ninth.sql")).expect("remove");
    std::fs::write(dir.path().join("5_fifth.sql"), "CREATE TABLE fifth (id int);\n").expect("add");
    db.client().batch_execute("DELETE FROM migrun_history_rollback WHERE version = 9").expect("unknown");
    for command in ["up", "status"] {
        let run = db.migrun().dir(dir.path()).args([command, "--on-newer-schema", "refuse"]).run();
        run.assert_code(7);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        for part in ["were edited", "version(s) 9", "pending version(s) 5"] {
            assert!(error.contains(part), "{command}: {part} in {error}");
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'fifth'"), 0);
}

#[test]
fn a_target_that_names_no_file_or_lies_below_the_history_is_refused() {
    let db = TestDb::new();
    let sql = example_sql();
    for (args, says) in [
        (vec!["up", "--target", "7"], "--target 7: no migration file has this version (nearest: 3 below, none above)"),
        (
            vec!["plan", "--target", "0"],
            "--target 0: no migration file has this version (nearest: none below, 1 above)",
        ),
        (vec!["up", "--target", "abc"], "--target: `abc` is not a migration version"),
    ] {
        let run = db.migrun().dir(&sql).args(&args).run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.starts_with(says), "{args:?}: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), 0);
    db.migrun().dir(&sql).args(["up", "--target", "3"]).run().assert_code(0);
    let run = db.migrun().dir(&sql).args(["up", "--target", "2"]).run();
    run.assert_code(2);
    assert!(
        run.result()["error"].as_str().unwrap_or_default().contains("below the highest applied version 3"),
        "{}",
        run.stderr
    );
    db.migrun().dir(&sql).args(["up", "--target", "3"]).run().assert_code(0);
}

#[test]
fn repair_accepts_an_intentional_edit_and_settles_started_rows_with_an_audit() {
    let db = TestDb::new();
    let dir = fixture_copy("ordering");
    up(&db, dir.path(), &[]).assert_code(0);
    let recorded = db.query_strings("SELECT checksum FROM migrun_history WHERE version = 2").remove(0);
    std::fs::write(
        dir.path().join("0002_second.sql"),
        "INSERT INTO applied_order (version) VALUES (2); -- a comment\n",
    )
    .expect("edit");
    up(&db, dir.path(), &[]).assert_code(7);
    // A dry run says what it would do and changes nothing.
    let dry = db.migrun().dir(dir.path()).args(["repair", "--accept-checksum", "2", "--dry-run", "--json"]).run();
    dry.assert_code(0);
    let printed: serde_json::Value = serde_json::from_str(dry.stdout.trim()).expect("json");
    assert_eq!(printed["dry_run"], true);
    assert_eq!(printed["change"]["old_checksum"], recorded.as_str());
    up(&db, dir.path(), &[]).assert_code(7);
    // The repair records the file's checksum, and an audit row keeps the old one.
    let run = db.migrun().dir(dir.path()).args(["repair", "--accept-checksum", "2"]).run();
    run.assert_code(0);
    assert!(run.stdout.starts_with("repair did accept-checksum: "), "{}", run.stdout);
    up(&db, dir.path(), &[]).assert_code(0);
    assert_eq!(
        db.query_strings("SELECT action || ' ' || version || ' ' || old_checksum FROM migrun_history_repairs"),
        vec![format!("accept-checksum 2 {recorded}")]
    );
    // Nothing else is ever repaired: a version without a row, and two flags at once, are refused.
    db.migrun().dir(dir.path()).args(["repair", "--accept-checksum", "77"]).run().assert_code(2);
    db.migrun()
        .dir(dir.path())
        .args(["repair", "--accept-checksum", "2", "--forget-started", "9"])
        .run()
        .assert_code(2);
    db.migrun().dir(dir.path()).args(["repair", "--forget-started", "2"]).run().assert_code(2);

    // A no-transaction file's `started` row, finished by hand: marked applied.
    db.client()
        .batch_execute("INSERT INTO migrun_history (version, description, kind, checksum, state, applied_by, migrun_version) VALUES (30, 'manual', 'versioned', 'x', 'started', 'someone', '0')")
        .expect("started row");
    db.migrun().dir(dir.path()).args(["repair", "--mark-applied", "30"]).run().assert_code(0);
    assert_eq!(db.query_strings("SELECT state FROM migrun_history WHERE version = 30"), vec!["applied"]);
    db.client().batch_execute("UPDATE migrun_history SET state = 'started' WHERE version = 30").expect("again");
    db.migrun().dir(dir.path()).args(["repair", "--forget-started", "30"]).run().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history WHERE version = 30"), 0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history_repairs"), 3);
}

//! Applying migrations: fresh apply, no-op, ordering, no-transaction files, failures,
//! concurrent runs.

use crate::harness::*;

#[test]
fn fresh_apply_then_second_run_is_a_no_op() {
    let db = TestDb::new();
    let first = db.migrun().dir(&example_sql()).args(["up"]).run();
    first.assert_code(0);
    assert_eq!(
        first.applied_files(),
        vec![
            "0001_create_users.sql",
            "0002_add_users_display_name.sql",
            "0003_index_users_email.sql",
            "R__active_users.sql"
        ]
    );
    let result = first.result();
    assert_eq!(result["outcome"], "success");
    assert_eq!(result["pending_before"], 4);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history WHERE state = 'applied'"), 4);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'users_email_key'::regclass AND indisvalid"),
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM active_users"), 0);
    let row = db.client().query_one("SELECT kind, length(checksum), applied_by, migrun_version, execution_ms FROM migrun_history WHERE version = 1", &[]).expect("row");
    assert_eq!(row.get::<_, String>(0), "versioned");
    assert_eq!(row.get::<_, i32>(1), 64);
    assert!(!row.get::<_, String>(2).is_empty());
    assert_eq!(row.get::<_, String>(3), env!("CARGO_PKG_VERSION"));
    assert!(row.get::<_, Option<i64>>(4).is_some());

    let second = db.migrun().dir(&example_sql()).args(["up"]).run();
    second.assert_code(0);
    assert!(second.applied_files().is_empty());
    assert_eq!(second.result()["pending_before"], 0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
}

#[test]
fn versions_are_ordered_as_numbers_and_other_files_are_ignored() {
    let db = TestDb::new();
    db.migrun().dir(&fixture("ordering")).args(["up"]).run().assert_code(0);
    let order: Vec<i32> = db
        .client()
        .query("SELECT version FROM applied_order ORDER BY n", &[])
        .expect("order")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, vec![1, 2, 9, 10, 20261125]);
}

#[test]
fn no_transaction_file_runs_statement_by_statement_with_quoting_intact() {
    let db = TestDb::new();
    db.migrun().dir(&fixture("no_tx")).args(["up"]).run().assert_code(0);
    let notes = db.query_strings("SELECT note FROM items ORDER BY id");
    assert_eq!(notes, vec!["semi;colon and 'quote'", "backslash ' and ; inside", "dollar; quoted $$ body"]);
    assert_eq!(db.count("SELECT items_count()"), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = 'items_note_idx'::regclass AND indisvalid"),
        1
    );
    assert_eq!(db.query_strings("SELECT state FROM migrun_history WHERE version = 2"), vec!["applied"]);
}

#[test]
fn failing_file_rolls_back_completely_and_reports_file_line_and_sqlstate() {
    let db = TestDb::new();
    let run = db.migrun().dir(&fixture("broken")).args(["up"]).run();
    run.assert_code(6);
    let result = run.result();
    assert_eq!(result["outcome"], "migration_failed");
    assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0002_broken.sql");
    assert_eq!(result["version"], 2);
    assert_eq!(result["sqlstate"], "42703");
    assert_eq!(result["line"], 4, "{result}");
    assert_eq!(result["column"], 12, "{result}");
    assert_eq!(run.applied_files(), vec!["0001_ok.sql"], "the failure says what was applied before it");
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'"), 0);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'never_applied'"), 0);
    let versions: Vec<i64> = db
        .client()
        .query("SELECT version FROM migrun_history", &[])
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1]);
    assert_eq!(db.count(crate::locking::ADVISORY_LOCKS_HERE), 0, "lock released after failure");
}

#[test]
fn failing_no_transaction_statement_reports_its_line_in_the_file() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("0001_ix.sql"),
        "-- migrun:no-transaction\nCREATE TABLE t (x int);\n\nSELECT x, y FROM t;\n",
    )
    .expect("write");
    let run = db.migrun().dir(dir.path()).args(["up"]).run();
    run.assert_code(6);
    let result = run.result();
    assert_eq!(result["line"], 4, "{result}");
    assert_eq!(result["column"], 11, "{result}");
    assert!(result["error"].as_str().unwrap_or_default().contains("statements before it stay applied"), "{result}");
    assert_eq!(
        db.query_strings("SELECT state FROM migrun_history"),
        vec!["started"],
        "an unfinished no-transaction file stays marked started"
    );
}

#[test]
fn eight_concurrent_runs_all_succeed_and_each_body_runs_once() {
    concurrent_runs_apply_each_body_once(&["migrun_history"]);
}

#[test]
fn concurrent_runs_spelling_the_table_differently_share_one_lock() {
    concurrent_runs_apply_each_body_once(&["migrun_history", "public.migrun_history", "PUBLIC.Migrun_History"]);
}

fn concurrent_runs_apply_each_body_once(spellings: &[&str]) {
    let db = TestDb::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            db.migrun().dir(&fixture("concurrent")).args(["up", "--table", spellings[i % spellings.len()]]).spawn()
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(|c| Run::from(c.wait_with_output().expect("wait"))).collect();
    for run in &runs {
        run.assert_code(0);
    }
    let runs_per_version: Vec<(i32, i64)> = db
        .client()
        .query("SELECT version, count(*) FROM body_runs GROUP BY version ORDER BY version", &[])
        .expect("q")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(runs_per_version, (1..=6).map(|v| (v, 1)).collect::<Vec<_>>());
    let total_applied: usize = runs.iter().map(|r| r.applied_files().len()).sum();
    assert_eq!(total_applied, 6, "exactly one run applied each file");
}

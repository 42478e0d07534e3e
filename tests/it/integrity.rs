//! Success means applied: a file that leaves a transaction open or drops migrun's lock stops
//! the run, and every spelling of one history table shares one lock.

use crate::harness::*;

const NO_TX: &str = "-- migrun:no-transaction\n";

fn table_exists(db: &TestDb, name: &str) -> bool {
    db.count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'")) == 1
}

#[test]
fn a_no_transaction_file_that_leaves_a_transaction_open_fails_and_is_rolled_back() {
    for begin in [
        "BEGIN;",
        "START TRANSACTION;",
        "begin isolation level serializable;",
        "BEGIN WORK;",
        "start transaction read write;",
    ] {
        let db = TestDb::new();
        let file = format!("{NO_TX}CREATE TABLE before_begin (x int);\n{begin}\nCREATE TABLE inside (x int);\n");
        let dir = sql_dir(&[("0001_open.sql", &file), ("0002_next.sql", "CREATE TABLE next (x int);")]);
        let run = db.migrun().dir(dir.path()).args(["up"]).run();
        run.assert_code(6);
        let result = run.result();
        assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0001_open.sql", "{begin}: {result}");
        assert!(result["error"].as_str().unwrap_or_default().contains("left a transaction open"), "{result}");
        assert!(table_exists(&db, "before_begin"), "{begin}: statements before BEGIN ran");
        assert!(!table_exists(&db, "inside"), "{begin}: what ran inside the open transaction was rolled back");
        assert!(!table_exists(&db, "next"), "{begin}: the run stopped");
        assert_eq!(db.query_strings("SELECT state FROM migrun_history"), vec!["started"], "{begin}");
        // Not ready, and a rerun does not call it applied either.
        db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "1s"]).run().assert_code(9);
        db.migrun().dir(dir.path()).args(["up"]).run().assert_code(6);
    }
}

#[test]
fn begin_and_commit_inside_a_no_transaction_file_is_fine() {
    let db = TestDb::new();
    let file = format!("{NO_TX}BEGIN;\nCREATE TABLE a (x int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY a_x ON a (x);\n");
    let dir = sql_dir(&[("0001_grouped.sql", &file)]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert!(table_exists(&db, "a_x"));
    assert_eq!(db.query_strings("SELECT state FROM migrun_history"), vec!["applied"]);
}

#[test]
fn a_file_that_releases_the_lock_stops_the_run_naming_the_file() {
    let key = "-4028659133243882200";
    let cases = [
        ("SELECT pg_advisory_unlock_all();", false),
        (&*format!("SELECT pg_advisory_unlock({key});"), false),
        ("SELECT pg_advisory_unlock_all();", true),
        ("DISCARD ALL;", true),
    ];
    for (statement, no_transaction) in cases {
        let db = TestDb::new();
        let header = if no_transaction { NO_TX } else { "" };
        let file = format!("{header}CREATE TABLE released (x int);\n{statement}\n");
        let dir = sql_dir(&[
            ("0001_first.sql", "CREATE TABLE first (x int);"),
            ("0002_release.sql", &file),
            ("0003_next.sql", "CREATE TABLE next (x int);"),
        ]);
        let run = db.migrun().dir(dir.path()).args(["up"]).run();
        run.assert_code(6);
        let result = run.result();
        assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0002_release.sql", "{statement}: {result}");
        assert!(result["error"].as_str().unwrap_or_default().contains("released migrun's advisory lock"), "{result}");
        assert!(!table_exists(&db, "next"), "{statement}: the run stopped");
        // A transactional file is rolled back; a no-transaction file's statements ran and are recorded.
        assert_eq!(table_exists(&db, "released"), no_transaction, "{statement}");
        let states = db.query_strings("SELECT version || ' ' || state FROM migrun_history ORDER BY version");
        let expected: Vec<String> = match no_transaction {
            true => vec!["1 applied".into(), "2 applied".into()],
            false => vec!["1 applied".into()],
        };
        assert_eq!(states, expected, "{statement}");
    }
}

#[test]
fn every_spelling_of_the_history_table_takes_the_same_lock() {
    let db = TestDb::new();
    let mut keys = Vec::new();
    for spelling in ["migrun_history", "public.migrun_history", "PUBLIC.MIGRUN_HISTORY", "Migrun_History"] {
        let run = db.migrun().dir(&example_sql()).args(["up", "--table", spelling]).run();
        run.assert_code(0);
        let acquired = run.events().into_iter().find(|e| e["message"] == "lock acquired").expect("lock acquired");
        assert_eq!(acquired["history_table"], "public.migrun_history", "{spelling}");
        keys.push(acquired["lock_key"].as_i64().expect("key"));
    }
    // The key of the default table never changes between versions of migrun.
    assert_eq!(keys, vec![-4_028_659_133_243_882_200; 4]);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 1);
    // Another schema is another table, and another lock; a search path resolves like Postgres does.
    db.client().batch_execute("CREATE SCHEMA ops").expect("schema");
    let ops = db.migrun().dir(&example_sql()).env("PGOPTIONS", "-c search_path=ops").args(["plan"]).run();
    ops.assert_code(0);
    let run = db.migrun().dir(&example_sql()).args(["up", "--table", "ops.migrun_history"]).run();
    run.assert_code(0);
    let acquired = run.events().into_iter().find(|e| e["message"] == "lock acquired").expect("lock acquired");
    assert_eq!(acquired["history_table"], "ops.migrun_history");
    assert_ne!(acquired["lock_key"].as_i64(), Some(keys[0]));
    let ops_key = acquired["lock_key"].as_i64();
    // The unqualified name, found in `ops` through the search path: the same table, the same lock.
    let run = db.migrun().dir(&example_sql()).env("PGOPTIONS", "-c search_path=ops").args(["up"]).run();
    run.assert_code(0);
    let acquired = run.events().into_iter().find(|e| e["message"] == "lock acquired").expect("lock acquired");
    assert_eq!(acquired["history_table"], "ops.migrun_history");
    assert_eq!(acquired["lock_key"].as_i64(), ops_key);
    // Found in `public` behind an existing schema that lacks it: public's table.
    let run = db
        .migrun()
        .dir(&example_sql())
        .env("PGOPTIONS", "-c search_path=ops,public")
        .args(["up", "--table", "users"])
        .run();
    let acquired = run.events().into_iter().find(|e| e["message"] == "lock acquired").expect("lock acquired");
    assert_eq!(acquired["history_table"], "public.users", "{}", run.stderr);
}

#[test]
fn a_history_table_that_cannot_last_or_does_not_resolve_is_refused() {
    let db = TestDb::new();
    for (args, env, says) in [
        (vec!["--table", "pg_temp.history"], None, "not in pg_temp"),
        (vec!["--table", "PG_TEMP.history"], None, "not in pg_temp"),
        (vec!["--table", "nosuch.history"], None, "schema nosuch does not exist"),
        (vec![], Some("-c search_path=nosuch"), "names no existing schema"),
    ] {
        let mut migrun = db.migrun();
        if let Some(options) = env {
            migrun.env("PGOPTIONS", options);
        }
        let run = migrun.dir(&example_sql()).args(["up"]).args(&args).run();
        run.assert_code(2);
        assert!(run.result()["error"].as_str().unwrap_or_default().contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(db.count("SELECT count(*) FROM pg_class WHERE relname IN ('users', 'history', 'migrun_history')"), 0);
}

#[test]
fn a_history_write_that_fails_is_blamed_on_migrun_never_on_a_line_of_the_file() {
    let db = TestDb::new();
    db.migrun().dir(sql_dir(&[("0001_a.sql", "CREATE TABLE a (x int);")]).path()).args(["up"]).run().assert_code(0);
    db.client()
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'history is frozen'; END $$;
             CREATE TRIGGER frozen_insert BEFORE INSERT ON migrun_history FOR EACH ROW WHEN (NEW.state = 'applied') EXECUTE FUNCTION refuse();
             CREATE TRIGGER frozen_update BEFORE UPDATE ON migrun_history FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .expect("triggers");
    // A transactional file: the row is written in its transaction, which is rolled back.
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (x int);"), ("0002_b.sql", "\n\nCREATE TABLE b (x int);")]);
    let run = db.migrun().dir(dir.path()).args(["up"]).run();
    run.assert_code(1);
    let result = run.result();
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("0002_b.sql: ran, but recording it failed, so the file was rolled back"), "{error}");
    assert!(error.contains("history is frozen"), "{error}");
    assert!(result.get("line").is_none() && result.get("column").is_none(), "{result}");
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'b'"), 0);
    // A no-transaction file: its statements ran; the error says so and how to recover.
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_c.sql", "-- migrun:no-transaction\nCREATE TABLE c (x int);"),
    ]);
    let run = db.migrun().dir(dir.path()).args(["up"]).run();
    run.assert_code(1);
    let result = run.result();
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("every statement succeeded, but marking the file applied failed"), "{error}");
    assert!(error.contains("fix the cause and run `migrun repair --mark-applied 2`"), "{error}");
    assert!(result.get("line").is_none(), "{result}");
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'c'"), 1);
    assert_eq!(db.query_strings("SELECT state FROM migrun_history WHERE version = 2"), vec!["started"]);
}

#[test]
fn a_file_that_deallocates_prepared_statements_does_not_break_the_next_record() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_a.sql", "-- migrun:no-transaction\nCREATE TABLE a (x int);\nDEALLOCATE ALL;"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
        ("0003_c.sql", "DEALLOCATE ALL;\nCREATE TABLE c (x int);"),
        ("0004_d.sql", "CREATE TABLE d (x int);"),
    ]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(
        db.query_strings("SELECT string_agg(version || ' ' || state, ', ' ORDER BY version) FROM migrun_history"),
        vec!["1 applied, 2 applied, 3 applied, 4 applied"]
    );
}

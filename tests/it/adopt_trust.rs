//! Adoption and conversion that never run a file twice and never lose one: Flyway's real
//! history rows (failed, baseline, baseline migrations, quoted names), colliding repeatable
//! files, byte-order marks, symlink loops, long history-table names, and what `baseline`
//! says `up` will do.

use std::time::Duration;

use crate::harness::{sql_dir, LiveRun, Migrun, TestDb};

const FLYWAY_TABLE: &str = "(installed_rank INT PRIMARY KEY, version VARCHAR(50),
    description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL,
    checksum INT, installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),
    execution_time INT NOT NULL, success BOOLEAN NOT NULL)";

fn flyway_history(db: &TestDb, table: &str, rows: &str) {
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE {table} {FLYWAY_TABLE};
             INSERT INTO {table} (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success) VALUES {rows}"
        ))
        .expect("flyway history");
}

fn recorded(db: &TestDb) -> Vec<String> {
    db.query_strings("SELECT version::text FROM migrun_history ORDER BY version")
}

/// A failed Flyway row (a non-transactional script that stopped midway) is refused, as Flyway
/// refuses to migrate past it: `up` would run that script again on a half-changed schema.
#[test]
fn a_failed_flyway_row_is_refused() {
    let db = TestDb::new();
    db.client().batch_execute("CREATE TABLE users (id int)").expect("schema");
    flyway_history(
        &db,
        "flyway_schema_history",
        "(1, '1', 'users', 'SQL', 'V1__users.sql', 1, 'app', 3, true),
         (2, '2', 'index', 'SQL', 'V2__index.sql', 2, 'app', 3, false)",
    );
    let dir = sql_dir(&[
        ("1_users.sql", "CREATE TABLE users (id int);\n"),
        ("2_index.sql", "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n"),
    ]);
    let run = db.migrun().dir(dir.path()).args(["baseline", "--from", "flyway"]).run();
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("version 2") && error.contains("flyway repair"), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 0);
}

/// The rows `flyway baseline` and a `B` baseline migration write are adopted: each covers
/// the versions below it, and needs no file of its own.
#[test]
fn flyway_baselines_are_adopted() {
    let plain = TestDb::new();
    flyway_history(
        &plain,
        "flyway_schema_history",
        "(1, '1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'app', 0, true),
         (2, '2', 'posts', 'SQL', 'V2__posts.sql', 2, 'app', 3, true)",
    );
    plain.client().batch_execute("CREATE TABLE posts (id int)").expect("schema");
    let dir = sql_dir(&[
        ("2_posts.sql", "CREATE TABLE posts (id int);\n"),
        ("3_comments.sql", "CREATE TABLE comments (id int);\n"),
    ]);
    let run = plain.migrun().dir(dir.path()).args(["baseline", "--from", "flyway"]).run();
    run.assert_code(0);
    assert_eq!(recorded(&plain), ["2"]);
    plain.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(recorded(&plain), ["2", "3"]);

    let migration = TestDb::new();
    flyway_history(
        &migration,
        "flyway_schema_history",
        "(1, '5', 'init', 'SQL_BASELINE', 'B5__init.sql', 5, 'app', 3, true),
         (2, '6', 'six', 'SQL', 'V6__six.sql', 6, 'app', 3, true)",
    );
    let dir = sql_dir(&[
        ("4_four.sql", "SELECT 1/0;\n"),
        ("5_five.sql", "SELECT 1/0;\n"),
        ("6_six.sql", "SELECT 1/0;\n"),
        ("7_seven.sql", "CREATE TABLE seven (id int);\n"),
    ]);
    migration.migrun().dir(dir.path()).args(["baseline", "--from", "flyway"]).run().assert_code(0);
    assert_eq!(recorded(&migration), ["4", "5", "6"]);
    migration.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
}

/// `--from-table` with quoted parts keeps their case; unquoted parts fold as Postgres folds.
#[test]
fn a_quoted_mixed_case_history_table_is_found() {
    let db = TestDb::new();
    db.client().batch_execute("CREATE SCHEMA \"Ops\"").expect("schema");
    flyway_history(&db, "\"Ops\".\"FlywayHistory\"", "(1, '1', 'users', 'SQL', 'V1__users.sql', 1, 'app', 3, true)");
    let dir = sql_dir(&[("1_users.sql", "CREATE TABLE users (id int);\n")]);
    let run = db
        .migrun()
        .dir(dir.path())
        .args(["baseline", "--from", "flyway", "--from-table", "\"Ops\".\"FlywayHistory\""])
        .run();
    run.assert_code(0);
    assert_eq!(recorded(&db), ["1"]);
}

/// Two repeatable files that map to one migrun name are refused with nothing written.
#[test]
fn convert_refuses_repeatable_files_that_become_one_name() {
    let folders = [
        vec![
            ("R__a-b.sql", "CREATE OR REPLACE VIEW a AS SELECT 1;\n"),
            ("R__a_b.sql", "CREATE OR REPLACE VIEW b AS SELECT 2;\n"),
        ],
        vec![
            ("sub1/R__views.sql", "CREATE OR REPLACE VIEW a AS SELECT 1;\n"),
            ("sub2/R__views.sql", "CREATE OR REPLACE VIEW b AS SELECT 2;\n"),
        ],
    ];
    for folder in folders {
        let source = sql_dir(&folder);
        let out = tempfile::tempdir().expect("dir").keep().join("sql");
        let run = Migrun::new().args(["convert", "--from", "flyway"]).arg_path(source.path()).arg_path(&out).run();
        run.assert_code(2);
        assert!(run.stderr.contains("R__views.sql") || run.stderr.contains("R__a_b.sql"), "{}", run.stderr);
        assert!(!out.exists(), "nothing written");
    }
}

/// A converted no-transaction file that starts with a byte-order mark applies with `up`.
#[test]
fn a_converted_file_with_a_byte_order_mark_applies() {
    let source = sql_dir(&[
        ("V1__users.sql", "\u{feff}CREATE TABLE users (id int);\n"),
        ("V2__index.sql", "\u{feff}CREATE INDEX CONCURRENTLY users_id ON users (id);\n"),
        ("V2__index.sql.conf", "executeInTransaction=false\n"),
    ]);
    let out = tempfile::tempdir().expect("dir");
    let sql = out.path().join("sql");
    Migrun::new().args(["convert", "--from", "flyway"]).arg_path(source.path()).arg_path(&sql).run().assert_code(0);
    let db = TestDb::new();
    let run = db.migrun().dir(&sql).args(["up"]).run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'users_id'"), 1);
}

/// Symlinks back up the tree are not followed: convert ends, with the real files.
#[test]
fn convert_does_not_follow_symlinked_folders() {
    let source = sql_dir(&[
        ("V1__users.sql", "CREATE TABLE users (id int);\n"),
        ("deeper/V2__posts.sql", "CREATE TABLE posts (id int);\n"),
    ]);
    std::os::unix::fs::symlink(source.path(), source.path().join("deeper").join("up")).expect("symlink");
    std::os::unix::fs::symlink(source.path(), source.path().join("again")).expect("symlink");
    let out = tempfile::tempdir().expect("dir");
    let sql = out.path().join("sql");
    let mut convert = Migrun::new();
    convert.args(["convert", "--from", "flyway"]).arg_path(source.path()).arg_path(&sql);
    let run = LiveRun::start(convert.spawn()).finish_within(Duration::from_secs(20));
    run.assert_code(0);
    let mut written: Vec<String> =
        std::fs::read_dir(&sql).expect("out").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    assert_eq!(written, ["1_users.sql", "2_posts.sql"]);
}

/// `repair` with a history table whose name is near Postgres's 63-byte limit: its audit table
/// gets a name of its own, never the history table's.
#[test]
fn repair_with_a_long_table_name_keeps_its_audit_table_apart() {
    let db = TestDb::new();
    let table = format!("history_{}", "x".repeat(52));
    assert_eq!(table.len(), 60);
    let dir = sql_dir(&[("1_users.sql", "CREATE TABLE users (id int);\n")]);
    db.migrun().dir(dir.path()).args(["up", "--table", &table]).run().assert_code(0);
    std::fs::write(dir.path().join("1_users.sql"), "-- users\nCREATE TABLE users (id int);\n").expect("edit");
    let run = db.migrun().dir(dir.path()).args(["repair", "--accept-checksum", "1", "--table", &table]).run();
    run.assert_code(0);
    let tables = db.query_strings("SELECT tablename FROM pg_tables WHERE tablename LIKE 'history_%' ORDER BY 1");
    assert_eq!(tables.len(), 5, "the history, its audit, rollback and snapshot tables: {tables:?}");
    for suffix in ["_repairs", "_rollback", "_reverts", "_snapshots"] {
        assert!(tables.iter().any(|t| t.ends_with(suffix) && t.len() <= 63), "{suffix}: {tables:?}");
    }
    db.migrun().dir(dir.path()).args(["up", "--table", &table]).run().assert_code(0);
}

/// `baseline --ignore-differences` says what `up` will do with a lower file the other tool
/// never applied: refuse it as out of order, and `up` does.
#[test]
fn baseline_says_what_up_does_with_a_file_the_other_tool_skipped() {
    let db = TestDb::new();
    db.client()
        .batch_execute(
            "CREATE TABLE users (id int); CREATE TABLE comments (id int);
             CREATE TABLE schema_migrations (version character varying NOT NULL PRIMARY KEY);
             INSERT INTO schema_migrations VALUES ('1'), ('3')",
        )
        .expect("rails history");
    let dir = sql_dir(&[
        ("1_users.sql", "CREATE TABLE users (id int);\n"),
        ("2_posts.sql", "CREATE TABLE posts (id int);\n"),
        ("3_comments.sql", "CREATE TABLE comments (id int);\n"),
    ]);
    let run = db.migrun().dir(dir.path()).args(["baseline", "--from", "rails", "--ignore-differences"]).run();
    run.assert_code(0);
    assert!(
        run.stdout.contains("2_posts.sql") && run.stdout.contains("refuses them as out of order, exit 7"),
        "{}",
        run.stdout
    );
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(7);
    db.migrun().dir(dir.path()).args(["up", "--allow-out-of-order"]).run().assert_code(0);
}

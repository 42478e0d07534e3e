//! The ways back: `down` with down files (transactional and not, refusals, SIGTERM, a
//! concurrent `up`), and old images starting on a newer schema by what the history recorded.

use std::time::Duration;

use crate::harness::*;
use crate::locking::ADVISORY_LOCKS_HERE;

/// Three versions with downs: a table, a column with a default and a check, and an index
/// built concurrently (no transaction both ways).
fn folder() -> tempfile::TempDir {
    sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n"),
        ("0001_users.down.sql", "DROP TABLE users;\n"),
        (
            "0002_email.sql",
            "ALTER TABLE users ADD COLUMN email text DEFAULT '' CONSTRAINT email_short CHECK (length(email) < 300);\n",
        ),
        ("0002_email.down.sql", "ALTER TABLE users DROP COLUMN email;\n"),
        (
            "0003_by_name.sql",
            "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_by_name ON users (name);\n",
        ),
        ("0003_by_name.down.sql", "-- migrun:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_by_name;\n"),
    ])
}

fn versions(db: &TestDb) -> Vec<String> {
    db.query_strings("SELECT version::text FROM migrun_history WHERE version IS NOT NULL ORDER BY version")
}

fn schema(db: &TestDb) -> Vec<String> {
    db.query_strings(
        "SELECT format('%s %s', c.relname, c.relkind) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relname NOT LIKE 'migrun%' ORDER BY 1",
    )
}

#[test]
fn down_undoes_one_version_then_the_rest_and_up_applies_them_again() {
    let db = TestDb::new();
    let dir = folder();
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let applied_schema = schema(&db);

    // The no-transaction index first.
    let run = db.migrun().dir(dir.path()).args(["down", "--steps", "1"]).run();
    run.assert_code(0);
    assert_eq!(run.applied_files(), ["0003_by_name.down.sql"]);
    assert_eq!(run.result()["message"], "reverted 1 migration(s)");
    assert_eq!(versions(&db), ["1", "2"]);
    assert_eq!(db.count("SELECT count(*) FROM pg_class WHERE relname = 'users_by_name'"), 0);
    let status = db.migrun().dir(dir.path()).args(["status", "--json"]).run();
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(report["files"][2]["state"], "pending", "{}", status.stdout);

    // Then the column and the table, newest first, each in its transaction.
    let run = db.migrun().dir(dir.path()).args(["down", "--to", "0"]).run();
    run.assert_code(0);
    assert_eq!(run.applied_files(), ["0002_email.down.sql", "0001_users.down.sql"]);
    assert!(versions(&db).is_empty());
    assert!(schema(&db).is_empty(), "{:?}", schema(&db));
    let reverts = db.query_strings(
        "SELECT format('%s %s %s', version, state, reverted_by <> '') FROM migrun_history_reverts ORDER BY id",
    );
    assert_eq!(reverts, ["3 reverted t", "2 reverted t", "1 reverted t"]);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history_reverts WHERE execution_ms IS NULL"), 0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history_rollback"), 0, "the reverted versions' rows went");

    // Nothing left to undo; and up converges on the schema it made first.
    let run = db.migrun().dir(dir.path()).args(["down", "--to", "0"]).run();
    run.assert_code(0);
    assert_eq!(run.result()["message"], "nothing to revert");
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(schema(&db), applied_schema);
    assert_eq!(versions(&db), ["1", "2", "3"]);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
}

#[test]
fn down_dry_run_prints_the_plan_and_changes_nothing() {
    let db = TestDb::new();
    let dir = folder();
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let run = db.migrun().dir(dir.path()).args(["down", "--to", "1", "--dry-run"]).run();
    run.assert_code(0);
    assert!(run.stdout.contains("1. ") && run.stdout.contains("0003_by_name.down.sql"), "{}", run.stdout);
    assert!(run.stdout.contains("2. ") && run.stdout.contains("0002_email.down.sql"), "{}", run.stdout);
    assert!(!run.stdout.contains("0001_users.down.sql"), "{}", run.stdout);
    assert_eq!(run.result()["message"], "would revert 2 migration(s) (dry run)");
    assert_eq!(versions(&db), ["1", "2", "3"]);
}

#[test]
fn down_refuses_with_nothing_run_when_a_down_is_missing_edited_or_used() {
    let db = TestDb::new();
    let dir = folder();
    std::fs::write(dir.path().join("0004_orders.sql"), "CREATE TABLE orders (id int);\n").expect("write");
    std::fs::write(
        dir.path().join("R__names.sql"),
        "CREATE OR REPLACE VIEW user_names AS SELECT id, name FROM users;\n",
    )
    .expect("write");
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let before = (schema(&db), versions(&db));

    // 4 has no down file.
    let run = db.migrun().dir(dir.path()).args(["down", "--steps", "2"]).run();
    run.assert_code(7);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("0004_orders.sql has no down file; write") && error.contains("0004_orders.down.sql"),
        "{error}"
    );
    assert!(error.contains("nothing was run"), "{error}");
    assert_eq!((schema(&db), versions(&db)), before);

    // 3's down file was edited after the up ran.
    std::fs::write(dir.path().join("0004_orders.down.sql"), "DROP TABLE orders;\n").expect("write");
    std::fs::write(
        dir.path().join("0003_by_name.down.sql"),
        "-- migrun:no-transaction\nDROP INDEX CONCURRENTLY users_by_name;\n",
    )
    .expect("edit");
    let run = db.migrun().dir(dir.path()).args(["down", "--steps", "2"]).run();
    run.assert_code(7);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("0003_by_name.down.sql changed since version 3 was applied"), "{error}");
    assert!(
        !error.contains("0004_orders.sql has no down file"),
        "4's down file is there now (not recorded: warned only): {error}"
    );
    assert_eq!((schema(&db), versions(&db)), before);

    // The repeatable view uses the table version 1 created (its name, and its column).
    std::fs::write(
        dir.path().join("0003_by_name.down.sql"),
        "-- migrun:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_by_name;\n",
    )
    .expect("restore");
    let run = db.migrun().dir(dir.path()).args(["down", "--to", "0"]).run();
    run.assert_code(7);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("R__names.sql uses users (version 1)"), "{error}");
    assert_eq!((schema(&db), versions(&db)), before);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);

    // Within the range the repeatable does not touch, down goes ahead.
    let run = db.migrun().dir(dir.path()).args(["down", "--to", "2"]).run();
    run.assert_code(0);
    assert_eq!(run.applied_files(), ["0004_orders.down.sql", "0003_by_name.down.sql"]);
    assert!(run
        .events()
        .iter()
        .any(|e| e["version"] == 4 && e["message"].as_str().unwrap_or_default().contains("no down file was recorded")));
}

#[test]
fn sigterm_during_a_down_rolls_it_back_releases_the_lock_and_keeps_the_history() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0001_users.down.sql", "DROP TABLE users;\nSELECT pg_sleep(60);\n"),
    ]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let mut live = LiveRun::start(db.migrun().dir(dir.path()).args(["down", "--to", "0"]).spawn());
    live.wait_for_line("\"reverting\"", Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "the down's sleep runs", || {
        db.count("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()") == 1
    });
    send(live.pid(), libc::SIGTERM);
    let run = live.finish_within(Duration::from_secs(30));
    run.assert_code(143);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), 1, "rolled back");
    assert_eq!(versions(&db), ["1"], "history unchanged");
    assert_eq!(db.count("SELECT count(*) FROM migrun_history_reverts"), 0);
    assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0, "lock released");
}

#[test]
fn a_down_and_an_up_at_once_take_turns_on_the_lock() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0002_slow.sql", "CREATE TABLE slow (id int);\n"),
        ("0002_slow.down.sql", "SELECT pg_sleep(1.5);\nDROP TABLE slow;\n"),
    ]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let mut down = LiveRun::start(db.migrun().dir(dir.path()).args(["down", "--steps", "1"]).spawn());
    down.wait_for_line("\"reverting\"", Duration::from_secs(30));
    let up = db.migrun().dir(dir.path()).args(["up", "--lock-wait", "60s"]).run();
    let down = down.finish();
    down.assert_code(0);
    up.assert_code(0);
    assert!(up.stderr.contains("waiting for the lock"), "the up waited: {}", up.stderr);
    // The up ran after the down: version 2 is applied again.
    assert_eq!(up.applied_files(), ["0002_slow.sql"]);
    assert_eq!(versions(&db), ["1", "2"]);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'slow'"), 1);
}

/// Release N had versions 1 and 2; N+1 added 3. The old image starts again.
fn newer(third: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let base = [
        ("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY, email text, legacy text);\n"),
        ("0002_orders.sql", "CREATE TABLE orders (id int, user_id int);\n"),
    ];
    let old = sql_dir(&base);
    let mut files = base.to_vec();
    files.push(("0003_next.sql", third));
    (old, sql_dir(&files))
}

#[test]
fn an_old_image_starts_on_an_expand_only_newer_schema() {
    let db = TestDb::new();
    let (old, new) = newer("ALTER TABLE users ADD COLUMN nick text;\nCREATE INDEX users_nick ON users (nick);\n");
    db.migrun().dir(new.path()).args(["up"]).run().assert_code(0);
    for policy in ["refuse", "warn"] {
        let run = db
            .migrun()
            .dir(old.path())
            .args(["exec", "--wait", "--on-newer-schema", policy, "--", "sh", "-c", "echo started"])
            .run();
        run.assert_code(0);
        assert!(run.stdout.contains("started"), "{}", run.stdout);
        assert!(run.stderr.contains("all expand-only"), "{}", run.stderr);
        assert!(!run.events().iter().any(|e| e["level"] == "WARN"), "{}", run.stderr);
    }
    // `up` of the old image: nothing to do, no refusal.
    db.migrun().dir(old.path()).args(["up", "--on-newer-schema", "refuse"]).run().assert_code(0);
}

#[test]
fn an_old_image_follows_the_policy_on_a_contract_change() {
    let db = TestDb::new();
    let (old, new) = newer("ALTER TABLE users DROP COLUMN legacy;\n");
    db.migrun().dir(new.path()).args(["up"]).run().assert_code(0);
    let exec = |policy: Option<&str>| {
        let mut m = db.migrun();
        m.dir(old.path()).args(["exec", "--wait"]);
        if let Some(policy) = policy {
            m.args(["--on-newer-schema", policy]);
        }
        m.args(["--", "sh", "-c", "echo started"]).run()
    };
    // The default: start, warning with the version and what it changed.
    let run = exec(None);
    run.assert_code(0);
    assert!(run.stdout.contains("started"));
    let warning = run.events().into_iter().find(|e| e["level"] == "WARN" && e["version"] == 3).expect("a warning");
    assert!(
        warning["message"].as_str().unwrap_or_default().contains("3 (contract: drop-column: users.legacy)"),
        "{warning}"
    );
    // refuse: the command never starts.
    let run = exec(Some("refuse"));
    run.assert_code(7);
    assert!(!run.stdout.contains("started"));
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("3 (contract: drop-column: users.legacy)"), "{error}");
    // start: quietly.
    let run = exec(Some("start"));
    run.assert_code(0);
    assert!(!run.events().iter().any(|e| e["level"] == "WARN"), "{}", run.stderr);
    // wait and up follow it too.
    db.migrun().dir(old.path()).args(["wait", "--on-newer-schema", "refuse"]).run().assert_code(7);
    db.migrun().dir(old.path()).args(["up", "--on-newer-schema", "refuse"]).run().assert_code(7);
    db.migrun().dir(old.path()).args(["up", "--on-newer-schema", "refuse", "--allow-missing"]).run().assert_code(0);
}

#[test]
fn a_version_applied_before_compatibility_was_recorded_is_unknown() {
    let db = TestDb::new();
    let (old, new) = newer("CREATE TABLE audit (id int);\n");
    db.migrun().dir(new.path()).args(["up"]).run().assert_code(0);
    // As an older migrun leaves it: no rollback table.
    db.client().batch_execute("DROP TABLE migrun_history_rollback").expect("drop");
    let run = db.migrun().dir(old.path()).args(["wait", "--on-newer-schema", "refuse"]).run();
    run.assert_code(7);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("3 (compatibility unknown"), "{}", run.stderr);
}

#[test]
fn the_history_records_each_kind_of_change_as_expand_or_contract() {
    let db = TestDb::new();
    let cases: [(&str, &str, &str); 16] = [
        ("create_table", "CREATE TABLE t (id int PRIMARY KEY, a text, b int, c text);\nCREATE TABLE other (id int);\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\nCREATE VIEW v0 AS SELECT 1 AS x;", "expand"),
        ("nullable_column", "ALTER TABLE t ADD COLUMN d text;", "expand"),
        ("column_with_default", "ALTER TABLE t ADD COLUMN e int NOT NULL DEFAULT 0;", "expand"),
        ("index", "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);", "expand"),
        ("not_valid_check", "ALTER TABLE t ADD CONSTRAINT b_pos CHECK (b > 0) NOT VALID;", "expand"),
        ("view", "CREATE VIEW v AS SELECT id, a FROM t;", "expand"),
        ("drop_column", "ALTER TABLE t DROP COLUMN c;", "contract"),
        ("rename_column", "ALTER TABLE t RENAME COLUMN a TO a2;", "contract"),
        ("change_type", "ALTER TABLE t ALTER COLUMN b TYPE bigint;", "contract"),
        ("set_not_null", "ALTER TABLE t ALTER COLUMN d SET NOT NULL;", "contract"),
        ("not_null_no_default", "ALTER TABLE other ADD COLUMN g int NOT NULL;", "contract"),
        ("drop_view", "DROP VIEW v0;", "contract"),
        ("drop_function", "DROP FUNCTION f();", "contract"),
        ("rename_table", "ALTER TABLE other RENAME TO other2;", "contract"),
        ("drop_table", "DROP TABLE other2;", "contract"),
        ("widen_varchar", "CREATE TABLE w (s varchar(10));\nALTER TABLE w ALTER COLUMN s TYPE varchar(20);", "expand"),
    ];
    let files: Vec<(String, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, (name, sql, _))| (format!("{:04}_{name}.sql", i + 1), format!("{sql}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let dir = sql_dir(&refs);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let recorded = db.query_strings("SELECT compatibility FROM migrun_history_rollback ORDER BY version");
    let expected: Vec<&str> = cases.iter().map(|(_, _, c)| *c).collect();
    assert_eq!(recorded, expected);
    let changes = db.query_strings("SELECT changes FROM migrun_history_rollback WHERE version = 7");
    assert_eq!(changes, ["drop-column: t.c"]);
    // status shows it for every applied version.
    let status = db.migrun().dir(dir.path()).args(["status", "--json"]).run();
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let shown: Vec<&str> =
        report["files"].as_array().expect("files").iter().map(|f| f["compatibility"].as_str().unwrap_or("?")).collect();
    assert_eq!(shown, expected);
    let human = db.migrun().dir(dir.path()).args(["status"]).run();
    assert!(human.stdout.contains("contract (drop-column: t.c)"), "{}", human.stdout);
}

/// Each tool's way of writing a down migration, converted, then run by a real `down`. In
/// every folder version 1's down holds no statement (as tools generate them), so it gets no
/// down file and `down` refuses to undo it.
#[test]
fn each_tools_down_migrations_convert_and_run() {
    const A: &str = "CREATE TABLE a (id int);\n";
    const B: &str = "CREATE TABLE b (id int);\n";
    const DROP_B: &str = "DROP TABLE b;\n";
    let folders: [(&str, &[(&str, &str)]); 6] = [
        (
            "sqlx",
            &[
                ("1_a.up.sql", A),
                ("1_a.down.sql", "-- Add down migration script here\n"),
                ("2_b.up.sql", B),
                ("2_b.down.sql", DROP_B),
                ("3_i.up.sql", "-- no-transaction\nCREATE INDEX CONCURRENTLY b_id ON b (id);\n"),
                ("3_i.down.sql", "-- no-transaction\nDROP INDEX CONCURRENTLY b_id;\n"),
            ],
        ),
        (
            "golang-migrate",
            &[
                ("000001_a.up.sql", A),
                ("000001_a.down.sql", ""),
                ("000002_b.up.sql", B),
                ("000002_b.down.sql", DROP_B),
                ("000003_i.up.sql", "CREATE INDEX b_id ON b (id);\n"),
                ("000003_i.down.sql", "DROP INDEX b_id;\n"),
            ],
        ),
        (
            "dbmate",
            &[
                ("20230101000001_a.sql", "-- migrate:up\nCREATE TABLE a (id int);\n\n-- migrate:down\n\n"),
                ("20230101000002_b.sql", "-- migrate:up\nCREATE TABLE b (id int);\n\n-- migrate:down\nDROP TABLE b;\n"),
                (
                    "20230101000003_i.sql",
                    "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY b_id ON b (id);\n\n-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY b_id;\n",
                ),
            ],
        ),
        (
            "goose",
            &[
                ("00001_a.sql", "-- +goose Up\nCREATE TABLE a (id int);\n\n-- +goose Down\n-- +goose StatementBegin\n-- +goose StatementEnd\n"),
                ("00002_b.sql", "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE b (id int);\n-- +goose StatementEnd\n\n-- +goose Down\nDROP TABLE b;\n"),
                (
                    "00003_i.sql",
                    "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY b_id ON b (id);\n\n-- +goose Down\nDROP INDEX CONCURRENTLY b_id;\n",
                ),
                ("00004_seed.go", "package migrations\n"),
            ],
        ),
        (
            "flyway",
            &[
                ("V1__a.sql", A),
                ("V2__b.sql", B),
                ("U2__b.sql", DROP_B),
                ("V3__i.sql", "CREATE INDEX CONCURRENTLY b_id ON b (id);\n"),
                ("V3__i.sql.conf", "executeInTransaction=false\n"),
                ("U3__i.sql", "DROP INDEX CONCURRENTLY b_id;\n"),
                ("U3__i.sql.conf", "executeInTransaction=false\n"),
            ],
        ),
        (
            "diesel",
            &[
                ("2023-01-01-000001_a/up.sql", A),
                ("2023-01-01-000001_a/down.sql", "-- This file should undo anything in `up.sql`\n"),
                ("2023-01-01-000002_b/up.sql", B),
                ("2023-01-01-000002_b/down.sql", DROP_B),
                ("2023-01-01-000003_i/up.sql", "CREATE INDEX CONCURRENTLY b_id ON b (id);\n"),
                ("2023-01-01-000003_i/down.sql", "DROP INDEX CONCURRENTLY b_id;\n"),
                ("2023-01-01-000003_i/metadata.toml", "run_in_transaction = false\n"),
            ],
        ),
    ];
    for (tool, files) in folders {
        let source = sql_dir(files);
        let parent = tempfile::tempdir().expect("temp dir");
        let out = parent.path().join("sql");
        let run = Migrun::new().args(["convert", "--from", tool]).arg_path(source.path()).arg_path(&out).run();
        run.assert_code(0);
        let downs: Vec<String> = std::fs::read_dir(&out)
            .expect("out")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".down.sql"))
            .collect();
        assert_eq!(downs.len(), 2, "{tool}: {downs:?}\n{}", run.stdout);

        let db = TestDb::new();
        db.migrun().dir(&out).args(["up"]).run().assert_code(0);
        let run = db.migrun().dir(&out).args(["down", "--steps", "2"]).run();
        run.assert_code(0);
        assert_eq!(run.applied_files().len(), 2, "{tool}: {}", run.stderr);
        let tables = db.query_strings(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('a', 'b')",
        );
        assert_eq!(tables, ["a"], "{tool}");
        let run = db.migrun().dir(&out).args(["down", "--steps", "1"]).run();
        run.assert_code(7);
        assert!(
            run.result()["error"].as_str().unwrap_or_default().contains("has no down file"),
            "{tool}: {}",
            run.stderr
        );
        // And forward again.
        db.migrun().dir(&out).args(["up"]).run().assert_code(0);
        assert_eq!(db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'b_id'"), 1, "{tool}");
    }
}

/// A no-transaction down stopped between its statements: the version is left `started`, and
/// either way converges: `down` runs the down file again, `up` the up file again.
#[test]
fn an_interrupted_no_transaction_down_is_finished_by_the_next_down_or_up() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_t.sql", "CREATE TABLE t (a int, b int);\nCREATE TABLE slow_down (id int);\n"),
        (
            "0002_indexes.sql",
            "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_b ON t (b);\n",
        ),
        (
            "0002_indexes.down.sql",
            "-- migrun:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_b;\nSELECT pg_sleep(60) FROM slow_down;\nDROP INDEX CONCURRENTLY IF EXISTS t_a;\n",
        ),
    ]);
    let indexes = || db.query_strings("SELECT indexname::text FROM pg_indexes WHERE tablename = 't' ORDER BY 1");
    let interrupt = || {
        db.client().batch_execute("INSERT INTO slow_down VALUES (1)").expect("slow");
        let live = LiveRun::start(db.migrun().dir(dir.path()).args(["down", "--steps", "1"]).spawn());
        wait_until(Duration::from_secs(30), "the down sleeps between its statements", || {
            db.count(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'",
            ) == 1
        });
        send(live.pid(), libc::SIGTERM);
        live.finish_within(Duration::from_secs(30)).assert_code(143);
        db.client().batch_execute("DELETE FROM slow_down").expect("fast");
        assert_eq!(indexes(), ["t_a"], "the first statement ran, the last did not");
        assert_eq!(db.query_strings("SELECT state FROM migrun_history WHERE version = 2"), ["started"]);
        assert_eq!(db.count(ADVISORY_LOCKS_HERE), 0);
    };
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);

    interrupt();
    let run = db.migrun().dir(dir.path()).args(["down", "--steps", "1"]).run();
    run.assert_code(0);
    assert!(run.stderr.contains("did not finish it; running it again"), "{}", run.stderr);
    assert!(indexes().is_empty());
    assert_eq!(versions(&db), ["1"]);

    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    interrupt();
    let run = db.migrun().dir(dir.path()).args(["up"]).run();
    run.assert_code(0);
    assert_eq!(indexes(), ["t_a", "t_b"]);
    assert_eq!(db.query_strings("SELECT state FROM migrun_history WHERE version = 2"), ["applied"]);
}

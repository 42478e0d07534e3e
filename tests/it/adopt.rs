//! Adopting a database that already has its schema: `baseline <version>`, `baseline --from
//! <tool>` with each tool's real history-table layout, and `convert --from <tool>`.

use std::path::Path;

use crate::harness::{sql_dir, Migrun, TestDb};

/// The schema the other tool already built: what files 1 and 2 create. Running either again
/// fails (no IF NOT EXISTS), so a test passes only if migrun recorded them without running them.
const EXISTING_SCHEMA: &str = "CREATE TABLE users (id int); CREATE TABLE posts (id int);";

fn history(db: &TestDb) -> Vec<String> {
    db.query_strings(
        "SELECT version || ' ' || state || ' ' || coalesce(adopted_from, '-') || ' ' || coalesce(execution_ms::text, '-') FROM migrun_history ORDER BY version",
    )
}

fn table_text(db: &TestDb, table: &str) -> Vec<String> {
    db.query_strings(&format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1"))
}

#[test]
fn baseline_records_up_to_a_version_without_running_and_up_runs_the_rest() {
    let db = TestDb::new();
    db.client().batch_execute(EXISTING_SCHEMA).expect("existing schema");
    let dir = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0002_posts.sql", "CREATE TABLE posts (id int);\n"),
        ("0003_comments.sql", "CREATE TABLE comments (id int);\n"),
        ("R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT 1 AS one;\n"),
    ]);
    // Before a baseline, up fails on the existing schema: the case baseline exists for.
    let dry = db.migrun().dir(dir.path()).args(["baseline", "2", "--dry-run", "--json"]).run();
    dry.assert_code(0);
    let printed: serde_json::Value = serde_json::from_str(dry.stdout.trim()).expect("json");
    let versions: Vec<u64> = printed["baseline"]["record"]
        .as_array()
        .expect("record")
        .iter()
        .filter_map(|r| r["version"].as_u64())
        .collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(printed["baseline"]["pending"].as_array().map(Vec::len), Some(1));
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 0, "dry run wrote");

    let run = db.migrun().dir(dir.path()).args(["baseline", "2"]).run();
    run.assert_code(0);
    assert!(run.stdout.contains("recorded 2 file(s)"), "{}", run.stdout);
    assert_eq!(history(&db), vec!["1 applied baseline -", "2 applied baseline -"]);
    let status = db.migrun().dir(dir.path()).args(["status"]).run();
    status.assert_code(0);
    assert!(status.stdout.contains("applied (baselined)"), "{}", status.stdout);
    let json = db.migrun().dir(dir.path()).args(["status", "--json"]).run();
    assert!(json.stdout.contains("\"adopted_from\": \"baseline\""), "{}", json.stdout);

    let up = db.migrun().dir(dir.path()).args(["up"]).run();
    up.assert_code(0);
    assert_eq!(up.applied_files(), vec!["0003_comments.sql", "R__view.sql"]);
    // A second baseline on a history with rows is refused, and so is a version with no file.
    let again = db.migrun().dir(dir.path()).args(["baseline", "2"]).run();
    again.assert_code(2);
    assert!(again.result()["error"].as_str().unwrap_or_default().contains("already has 4 row(s)"), "{}", again.stderr);
    let other = TestDb::new();
    let missing = other.migrun().dir(dir.path()).args(["baseline", "7"]).run();
    missing.assert_code(2);
    assert!(missing.result()["error"].as_str().unwrap_or_default().contains("version 7"), "{}", missing.stderr);
    assert_eq!(other.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"), 0);
    other.migrun().dir(dir.path()).args(["baseline"]).run().assert_code(2);
    other.migrun().dir(dir.path()).args(["baseline", "two"]).run().assert_code(2);
}

/// The history table as releases before `adopted_from` created it.
const OLD_HISTORY: &str = "CREATE TABLE migrun_history (
    id bigserial PRIMARY KEY, version bigint UNIQUE, description text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('versioned', 'repeatable')), checksum text NOT NULL,
    state text NOT NULL CHECK (state IN ('applied', 'started')), applied_at timestamptz NOT NULL DEFAULT now(),
    execution_ms bigint, applied_by text NOT NULL, migrun_version text NOT NULL, release text,
    ecs_task_arn text, image text, image_digest text)";

#[test]
fn a_history_table_from_an_earlier_release_still_works_and_takes_a_baseline() {
    let dir = sql_dir(&[("0001_a.sql", "CREATE TABLE a (id int);\n"), ("0002_b.sql", "CREATE TABLE b (id int);\n")]);
    // With rows: read, extended by up, and shown by status, without the new column.
    let db = TestDb::new();
    db.client().batch_execute(OLD_HISTORY).expect("old table");
    db.migrun().dir(dir.path()).args(["up", "--target", "1"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["status"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "1s"]).run().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history WHERE state = 'applied'"), 2);
    // Empty: baseline adds the column in the same transaction as its rows.
    let empty = TestDb::new();
    empty.client().batch_execute(&format!("{OLD_HISTORY}; CREATE TABLE a (id int)")).expect("old table");
    empty.migrun().dir(dir.path()).args(["baseline", "1"]).run().assert_code(0);
    assert_eq!(history(&empty), vec!["1 applied baseline -"]);
    empty.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
}

/// One tool: its folder layout, its history table with rows for versions 1 and 2 (as the tool
/// writes them), and the migrun files `convert` must make of the folder.
struct ToolCase {
    tool: &'static str,
    folder: &'static [(&'static str, &'static str)],
    history_sql: &'static str,
    history_table: &'static str,
    converted: &'static [&'static str],
    /// The down files it makes of the tool's down migrations.
    downs: &'static [&'static str],
    /// Converted files that must start with `-- migrun:no-transaction`.
    no_transaction: &'static [&'static str],
}

const INDEX: &str = "CREATE INDEX CONCURRENTLY users_id ON users (id);\n";

fn cases() -> Vec<ToolCase> {
    vec![
        ToolCase {
            tool: "sqlx",
            folder: &[
                ("20230101000001_create_users.sql", "CREATE TABLE users (id int);\n"),
                ("20230101000002_create-posts.up.sql", "CREATE TABLE posts (id int);\n"),
                ("20230101000002_create-posts.down.sql", "DROP TABLE posts;\n"),
                ("20230101000003_users_index.sql", "-- no-transaction\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n"),
            ],
            history_sql: "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL,
                execution_time BIGINT NOT NULL);
                INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES
                (20230101000001, 'create users', true, '\\x01', 5), (20230101000002, 'create-posts', true, '\\x02', 4)",
            history_table: "_sqlx_migrations",
            converted: &[
                "20230101000001_create_users.sql",
                "20230101000002_create_posts.sql",
                "20230101000003_users_index.sql",
            ],
            downs: &["20230101000002_create_posts.down.sql"],
            no_transaction: &["20230101000003_users_index.sql"],
        },
        ToolCase {
            tool: "flyway",
            folder: &[
                ("V1__Create_users.sql", "CREATE TABLE users (id int);\n"),
                ("release2/V2__Create_posts.sql", "CREATE TABLE posts (id int);\n"),
                ("U2__Drop_posts.sql", "DROP TABLE posts;\n"),
                ("V3__users_index.sql", INDEX),
                ("V3__users_index.sql.conf", "executeInTransaction=false\n"),
                ("R__report_view.sql", "CREATE OR REPLACE VIEW report AS SELECT count(*) AS n FROM users;\n"),
            ],
            history_sql: "CREATE TABLE flyway_schema_history (installed_rank INT PRIMARY KEY, version VARCHAR(50),
                description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL,
                checksum INT, installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),
                execution_time INT NOT NULL, success BOOLEAN NOT NULL);
                INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success) VALUES
                (1, '1', 'Create users', 'SQL', 'V1__Create_users.sql', 1, 'app', 3, true),
                (2, '2', 'Create posts', 'SQL', 'release2/V2__Create_posts.sql', 2, 'app', 3, true),
                (3, NULL, 'report view', 'SQL', 'R__report_view.sql', 3, 'app', 1, true)",
            history_table: "flyway_schema_history",
            converted: &["1_Create_users.sql", "2_Create_posts.sql", "3_users_index.sql", "R__report_view.sql"],
            downs: &["2_Create_posts.down.sql"],
            no_transaction: &["3_users_index.sql"],
        },
        ToolCase {
            tool: "golang-migrate",
            folder: &[
                ("000001_create_users.up.sql", "CREATE TABLE users (id int);\n"),
                ("000001_create_users.down.sql", "DROP TABLE users;\n"),
                ("000002_create_posts.up.sql", "CREATE TABLE posts (id int);\n"),
                ("000002_create_posts.down.sql", "DROP TABLE posts;\n"),
                ("000003_comments.up.sql", "CREATE TABLE comments (id int);\n"),
            ],
            history_sql: "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
                INSERT INTO schema_migrations VALUES (2, false)",
            history_table: "schema_migrations",
            converted: &["000001_create_users.sql", "000002_create_posts.sql", "000003_comments.sql"],
            downs: &["000001_create_users.down.sql", "000002_create_posts.down.sql"],
            no_transaction: &[],
        },
        ToolCase {
            tool: "dbmate",
            folder: &[
                ("20230101000001_create_users.sql", "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n"),
                ("20230101000002_create_posts.sql", "-- migrate:up\nCREATE TABLE posts (id int);\n\n-- migrate:down\n"),
                ("20230101000003_users_index.sql", "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n\n-- migrate:down\nDROP INDEX users_id;\n"),
            ],
            history_sql: "CREATE TABLE schema_migrations (version character varying(128) NOT NULL PRIMARY KEY);
                INSERT INTO schema_migrations VALUES ('20230101000001'), ('20230101000002')",
            history_table: "schema_migrations",
            converted: &[
                "20230101000001_create_users.sql",
                "20230101000002_create_posts.sql",
                "20230101000003_users_index.sql",
            ],
            downs: &["20230101000001_create_users.down.sql", "20230101000003_users_index.down.sql"],
            no_transaction: &["20230101000003_users_index.sql"],
        },
        ToolCase {
            tool: "diesel",
            folder: &[
                ("2023-01-01-000001_create_users/up.sql", "CREATE TABLE users (id int);\n"),
                ("2023-01-01-000001_create_users/down.sql", "DROP TABLE users;\n"),
                ("2023-01-01-000002_create_posts/up.sql", "CREATE TABLE posts (id int);\n"),
                ("2023-01-01-000003_users_index/up.sql", INDEX),
                ("2023-01-01-000003_users_index/metadata.toml", "run_in_transaction = false\n"),
                (".keep", ""),
            ],
            history_sql: "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL,
                run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
                INSERT INTO __diesel_schema_migrations (version) VALUES ('20230101000001'), ('20230101000002')",
            history_table: "__diesel_schema_migrations",
            converted: &[
                "20230101000001_create_users.sql",
                "20230101000002_create_posts.sql",
                "20230101000003_users_index.sql",
            ],
            downs: &["20230101000001_create_users.down.sql"],
            no_transaction: &["20230101000003_users_index.sql"],
        },
        ToolCase {
            tool: "prisma",
            folder: &[
                ("20230101000001_create_users/migration.sql", "-- CreateTable\nCREATE TABLE users (id int);\n"),
                ("20230101000002_create_posts/migration.sql", "-- CreateTable\nCREATE TABLE posts (id int);\n"),
                ("20230101000003_comments/migration.sql", "-- CreateTable\nCREATE TABLE comments (id int);\n"),
                ("migration_lock.toml", "provider = \"postgresql\"\n"),
            ],
            history_sql: "CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,
                finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
                started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0);
                INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) VALUES
                ('a', 'c1', now(), '20230101000001_create_users', 1), ('b', 'c2', now(), '20230101000002_create_posts', 1)",
            history_table: "_prisma_migrations",
            converted: &[
                "20230101000001_create_users.sql",
                "20230101000002_create_posts.sql",
                "20230101000003_comments.sql",
            ],
            downs: &[],
            no_transaction: &[],
        },
    ]
}

fn convert(tool: &str, source: &Path, out: &Path) -> crate::harness::Run {
    Migrun::new().args(["convert", "--from", tool]).arg_path(source).arg_path(out).run()
}

#[test]
fn each_tool_converts_and_is_adopted_from_its_own_history_table() {
    for case in cases() {
        let source = sql_dir(case.folder);
        let out_parent = tempfile::tempdir().expect("temp dir");
        let out = out_parent.path().join("sql");
        let run = convert(case.tool, source.path(), &out);
        run.assert_code(0);
        let mut written: Vec<String> = std::fs::read_dir(&out)
            .expect("out dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let (downs, ups): (Vec<String>, Vec<String>) = written.into_iter().partition(|n| n.ends_with(".down.sql"));
        assert_eq!(ups, case.converted, "{}: {}", case.tool, run.stdout);
        assert_eq!(downs, case.downs, "{}: {}", case.tool, run.stdout);
        for name in case.downs {
            let text = std::fs::read_to_string(out.join(name)).expect("down file");
            assert!(text.contains("DROP") && !text.contains("migrate:"), "{}: {name}:\n{text}", case.tool);
        }
        // Bodies byte for byte: every converted file ends with its source's up migration.
        for name in case.converted {
            let text = std::fs::read_to_string(out.join(name)).expect("converted file");
            assert_eq!(
                text.starts_with("-- migrun:no-transaction\n"),
                case.no_transaction.contains(name),
                "{}: {name}:\n{text}",
                case.tool
            );
            assert!(text.contains("CREATE"), "{}: {name}", case.tool);
            assert!(
                !text.contains("DROP") && !text.contains("migrate:down"),
                "{}: {name} holds a down part",
                case.tool
            );
        }
        if !case.downs.is_empty() {
            assert!(
                run.stdout.contains(&format!("({} of them down files", case.downs.len())),
                "{}: {}",
                case.tool,
                run.stdout
            );
        }
        if case.tool == "dbmate" {
            assert!(run.stdout.contains("1 down migration(s) without a statement left out"), "{}", run.stdout);
        }

        let db = TestDb::new();
        db.client().batch_execute(EXISTING_SCHEMA).expect("existing schema");
        db.client().batch_execute(case.history_sql).expect("tool history");
        let before = table_text(&db, case.history_table);
        let adopted = db.migrun().dir(&out).args(["baseline", "--from", case.tool]).run();
        adopted.assert_code(0);
        let (first, second) = (case.converted[0], case.converted[1]);
        let version = |name: &str| name.split('_').next().unwrap_or_default().trim_start_matches('0').to_string();
        assert_eq!(
            history(&db),
            vec![
                format!("{} applied {} -", version(first), case.tool),
                format!("{} applied {} -", version(second), case.tool)
            ],
            "{}",
            case.tool
        );
        assert_eq!(table_text(&db, case.history_table), before, "{}: the tool's table changed", case.tool);
        // The next up runs only what the tool never applied (files 1 and 2 would fail).
        let up = db.migrun().dir(&out).args(["up"]).run();
        up.assert_code(0);
        assert_eq!(up.applied_files()[0], case.converted[2], "{}", case.tool);
        let status = db.migrun().dir(&out).args(["status"]).run();
        assert!(status.stdout.contains(&format!("applied (adopted from {})", case.tool)), "{}", status.stdout);
    }
}

#[test]
fn rails_and_alembic_histories_are_adopted_too() {
    let dir = sql_dir(&[
        ("20230101000001_users.sql", "CREATE TABLE users (id int);\n"),
        ("20230101000002_posts.sql", "CREATE TABLE posts (id int);\n"),
        ("20230101000003_comments.sql", "CREATE TABLE comments (id int);\n"),
    ]);
    let rails = TestDb::new();
    rails
        .client()
        .batch_execute(&format!(
            "{EXISTING_SCHEMA}; CREATE TABLE schema_migrations (version character varying NOT NULL PRIMARY KEY);
             CREATE TABLE ar_internal_metadata (key character varying PRIMARY KEY, value character varying);
             INSERT INTO schema_migrations VALUES ('20230101000001'), ('20230101000002')"
        ))
        .expect("rails history");
    rails.migrun().dir(dir.path()).args(["baseline", "--from", "rails"]).run().assert_code(0);
    assert_eq!(history(&rails), vec!["20230101000001 applied rails -", "20230101000002 applied rails -"]);

    let alembic = TestDb::new();
    alembic
        .client()
        .batch_execute(&format!(
            "{EXISTING_SCHEMA}; CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
             INSERT INTO alembic_version VALUES ('ae1027a6acf')"
        ))
        .expect("alembic history");
    // Alembic keeps only its head: migrun asks which version that is, naming the head.
    let asked = alembic.migrun().dir(dir.path()).args(["baseline", "--from", "alembic"]).run();
    asked.assert_code(2);
    assert!(asked.result()["error"].as_str().unwrap_or_default().contains("ae1027a6acf"), "{}", asked.stderr);
    let run = alembic.migrun().dir(dir.path()).args(["baseline", "--from", "alembic", "20230101000002"]).run();
    run.assert_code(0);
    assert!(run.stdout.contains("alembic head ae1027a6acf"), "{}", run.stdout);
    assert_eq!(history(&alembic), vec!["20230101000001 applied alembic -", "20230101000002 applied alembic -"]);
    alembic.client().batch_execute("INSERT INTO alembic_version VALUES ('b2')").expect("second head");
    // A VERSION with another tool is refused: only Alembic needs one.
    rails.migrun().dir(dir.path()).args(["baseline", "--from", "rails", "2"]).run().assert_code(2);
    rails.migrun().dir(dir.path()).args(["baseline", "--from", "liquibase"]).run().assert_code(2);
}

fn refused(db: &TestDb, dir: &Path, args: &[&str], needles: &[&str]) {
    let run = db.migrun().dir(dir).args(args).run();
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    for needle in needles {
        assert!(error.contains(needle), "{args:?}: `{needle}` not in: {error}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"),
        0,
        "{args:?} left a history table"
    );
}

#[test]
fn differences_and_unfinished_histories_are_refused_with_nothing_written() {
    let dir = sql_dir(&[
        ("1_users.sql", "CREATE TABLE users (id int);\n"),
        ("2_posts.sql", "CREATE TABLE posts (id int);\n"),
        ("3_comments.sql", "CREATE TABLE comments (id int);\n"),
    ]);
    let flyway = |rows: &str| {
        format!(
            "{EXISTING_SCHEMA}; CREATE TABLE flyway_schema_history (installed_rank INT PRIMARY KEY, version VARCHAR(50),
             description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INT,
             installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(), execution_time INT NOT NULL,
             success BOOLEAN NOT NULL);
             INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, installed_by, execution_time, success) VALUES {rows}"
        )
    };
    // Flyway applied 1, 3 and 5: 5 has no file, and 2 was never applied.
    let db = TestDb::new();
    db.client()
        .batch_execute(&flyway(
            "(1, '1', 'a', 'SQL', 'V1__a.sql', 'x', 1, true), (2, '3', 'c', 'SQL', 'V3__c.sql', 'x', 1, true),
             (3, '5', 'e', 'SQL', 'V5__e.sql', 'x', 1, true), (4, '3.1', 'f', 'SQL', 'V3_1__f.sql', 'x', 1, true)",
        ))
        .expect("flyway history");
    refused(
        &db,
        dir.path(),
        &["baseline", "--from", "flyway"],
        &["no file: 5", "never applied", "2_posts.sql", "3.1", "--ignore-differences"],
    );
    let dry =
        db.migrun().dir(dir.path()).args(["baseline", "--from", "flyway", "--ignore-differences", "--dry-run"]).run();
    dry.assert_code(0);
    assert!(dry.stdout.contains("would record 2 file(s)"), "{}", dry.stdout);
    db.migrun().dir(dir.path()).args(["baseline", "--from", "flyway", "--ignore-differences"]).run().assert_code(0);
    assert_eq!(history(&db), vec!["1 applied flyway -", "3 applied flyway -"]);

    // A Flyway baseline row counts for every version up to it.
    let baselined = TestDb::new();
    baselined
        .client()
        .batch_execute(&flyway(
            "(1, '2', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', 'x', 0, true), (2, '3', 'c', 'SQL', 'V3__c.sql', 'x', 1, false)",
        ))
        .expect("flyway baseline");
    // A failed row is refused: Flyway itself does not migrate past it.
    refused(&baselined, dir.path(), &["baseline", "--from", "flyway"], &["version 3", "flyway repair"]);
    baselined.client().batch_execute("DELETE FROM flyway_schema_history WHERE NOT success").expect("flyway repair");
    let run = baselined.migrun().dir(dir.path()).args(["baseline", "--from", "flyway"]).run();
    run.assert_code(0);
    assert_eq!(history(&baselined), vec!["1 applied flyway -", "2 applied flyway -"]);

    let dirty = TestDb::new();
    dirty
        .client()
        .batch_execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (2, true)")
        .expect("dirty");
    refused(&dirty, dir.path(), &["baseline", "--from", "golang-migrate"], &["version 2 is dirty", "migrate force"]);
    // The same table named as dbmate's: the wrong tool is said, not guessed at.
    refused(&dirty, dir.path(), &["baseline", "--from", "dbmate"], &["golang-migrate"]);

    let prisma = TestDb::new();
    prisma
        .client()
        .batch_execute("CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
             migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             applied_steps_count INTEGER NOT NULL DEFAULT 0);
             INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name) VALUES ('a', 'x', now(), '1_users'), ('b', 'y', NULL, '2_posts')")
        .expect("prisma");
    refused(&prisma, dir.path(), &["baseline", "--from", "prisma"], &["2_posts", "prisma migrate resolve"]);

    let none = TestDb::new();
    refused(&none, dir.path(), &["baseline", "--from", "sqlx"], &["_sqlx_migrations does not exist"]);
    // Asked of the catalog: no ERROR in the server's log (RDS log alerts fire on those).
    assert_eq!(none.server_log_errors(), Vec::<String>::new());
    let sqlx_failed = TestDb::new();
    sqlx_failed
        .client()
        .batch_execute("CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
             success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, 'users', now(), true, '\\x00', 1), (2, 'posts', now(), false, '\\x00', 1)")
        .expect("sqlx");
    refused(&sqlx_failed, dir.path(), &["baseline", "--from", "sqlx"], &["version 2 (success = false)"]);
    // --from-table reads a table under another name (Flyway's `table` setting).
    let renamed = TestDb::new();
    renamed
        .client()
        .batch_execute(
            &flyway("(1, '1', 'a', 'SQL', 'V1__a.sql', 'x', 1, true)").replace("flyway_schema_history", "Ops_History"),
        )
        .expect("renamed");
    renamed
        .migrun()
        .dir(dir.path())
        .args(["baseline", "--from", "flyway", "--from-table", "ops_history"])
        .run()
        .assert_code(0);
    assert_eq!(history(&renamed), vec!["1 applied flyway -"]);
}

#[test]
fn convert_refuses_what_it_cannot_map_and_writes_nothing() {
    let out_parent = tempfile::tempdir().expect("temp dir");
    let out = out_parent.path().join("sql");
    // Dotted Flyway versions, a duplicate version, and a name without a version: all named.
    let source = sql_dir(&[
        ("V1__a.sql", "SELECT 1;\n"),
        ("V1.1__b.sql", "SELECT 1;\n"),
        ("V2__c.sql", "SELECT 1;\n"),
        ("V002__d.sql", "SELECT 1;\n"),
        ("Vx.sql", "SELECT 1;\n"),
    ]);
    let run = convert("flyway", source.path(), &out);
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    for needle in ["V1.1__b.sql", "version 2 is used by", "Vx.sql", "nothing was written"] {
        assert!(error.contains(needle), "`{needle}` not in {error}");
    }
    assert!(!out.exists(), "a refused convert wrote {out:?}");
    // An output folder with files in it is never written into.
    std::fs::create_dir(&out).expect("out");
    std::fs::write(out.join("0001_mine.sql"), "SELECT 1;\n").expect("existing");
    let good = sql_dir(&[("V1__a.sql", "SELECT 1;\n")]);
    convert("flyway", good.path(), &out).assert_code(2);
    assert_eq!(std::fs::read_dir(&out).expect("out").count(), 1);
    convert("liquibase", good.path(), &out_parent.path().join("x")).assert_code(2);
    // An empty folder is fine to fill.
    std::fs::remove_file(out.join("0001_mine.sql")).expect("remove");
    convert("flyway", good.path(), &out).assert_code(0);
    assert_eq!(std::fs::read_to_string(out.join("1_a.sql")).expect("converted"), "SELECT 1;\n");
}

/// dbmate itself writes its history; migrun adopts it. dbmate comes from npm (see scripts/test).
#[test]
fn dbmate_itself_writes_the_history_migrun_adopts() {
    let dbmate = crate::harness::tool("dbmate");
    let db = TestDb::new();
    let source = sql_dir(&[
        (
            "20230101000001_create_users.sql",
            "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n",
        ),
        (
            "20230101000002_create_posts.sql",
            "-- migrate:up\nCREATE TABLE posts (id int);\n\n-- migrate:down\nDROP TABLE posts;\n",
        ),
    ]);
    let status = std::process::Command::new(dbmate)
        .args(["--no-dump-schema", "--migrations-dir"])
        .arg(source.path())
        .args(["--url", &format!("{}?sslmode=disable", db.url()), "up"])
        .status()
        .expect("run dbmate");
    assert!(status.success(), "dbmate up failed");
    std::fs::write(
        source.path().join("20230101000003_users_index.sql"),
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n-- migrate:down\nDROP INDEX users_id;\n",
    )
    .expect("third file");
    let out_parent = tempfile::tempdir().expect("temp dir");
    let out = out_parent.path().join("sql");
    convert("dbmate", source.path(), &out).assert_code(0);
    db.migrun().dir(&out).args(["baseline", "--from", "dbmate"]).run().assert_code(0);
    let up = db.migrun().dir(&out).args(["up"]).run();
    up.assert_code(0);
    assert_eq!(up.applied_files(), vec!["20230101000003_users_index.sql"]);
    assert_eq!(db.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'users_id'"), 1);
}

//! `migrun verify` against scratch Postgres servers it starts itself (and the test server,
//! named with --database-url): measured locks and rewrites, interruption safety, the upgrade
//! path, and the exit code of each failure class.

use crate::harness::{server, sql_dir, Migrun, Run, TestDb};

fn verify(dir: &std::path::Path, args: &[&str]) -> Run {
    Migrun::offline(dir).arg_path(std::path::Path::new("verify")).args(args).run()
}

fn report(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr))
}

/// A live table with rows, then a release that locks and rewrites it, and a table made and
/// indexed in one file (new: nothing to report).
fn release() -> tempfile::TempDir {
    sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int, email text);\nINSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g;\n"),
        (
            "0002_release.sql",
            "CREATE INDEX users_email ON users (email);\nALTER TABLE users ALTER COLUMN id TYPE bigint;\nALTER TABLE users ADD COLUMN note text;\n",
        ),
        ("0003_new_table.sql", "CREATE TABLE tags (id int);\nCREATE INDEX tags_id ON tags (id);\nALTER TABLE tags ALTER COLUMN id TYPE bigint;\n"),
        ("0004_index.sql", "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_id ON users (id);\n"),
    ])
}

#[test]
fn verify_measures_the_locks_and_rewrites_of_each_statement_on_existing_tables() {
    let dir = release();
    let run = verify(dir.path(), &["--json"]);
    run.assert_code(0);
    let report = report(&run);
    let statements = report["statements"].as_array().expect("statements");
    let find = |file: &str, line: u64| {
        statements
            .iter()
            .find(|s| s["file"].as_str().is_some_and(|f| f.ends_with(file)) && s["line"] == line)
            .unwrap_or_else(|| panic!("{file}:{line} in {statements:?}"))
    };
    let index = find("0002_release.sql", 1);
    assert_eq!(index["locks"][0]["table"], "public.users");
    assert_eq!(index["locks"][0]["mode"], "ShareLock");
    assert_eq!(index["rewritten"].as_array().map(Vec::len), Some(0));
    let retype = find("0002_release.sql", 2);
    assert_eq!(retype["locks"][0]["mode"], "AccessExclusiveLock");
    assert_eq!(retype["rewritten"][0], "public.users");
    // ADD COLUMN without a default: AccessExclusive (already held: not reported again), no rewrite.
    let add = find("0002_release.sql", 3);
    assert_eq!(add["rewritten"].as_array().map(Vec::len), Some(0));
    // A table created in the same file is not an existing table.
    for line in 1..=3 {
        let s = find("0003_new_table.sql", line);
        assert_eq!(s["locks"].as_array().map(Vec::len), Some(0), "{s}");
        assert_eq!(s["rewritten"].as_array().map(Vec::len), Some(0), "{s}");
    }
    // CONCURRENTLY runs outside a transaction: said, not guessed.
    assert_eq!(find("0004_index.sql", 2)["locks_measured"], false);
    // The summary names them; --strict fails on them.
    let summary = verify(dir.path(), &[]);
    assert!(
        summary.stdout.contains("0002_release.sql:2: ALTER TABLE users ALTER COLUMN id TYPE bigint"),
        "{}",
        summary.stdout
    );
    assert!(
        summary.stdout.contains("AccessExclusiveLock on public.users; rewrites public.users"),
        "{}",
        summary.stdout
    );
    let strict = verify(dir.path(), &["--strict"]);
    strict.assert_code(10);
    assert_eq!(strict.result()["outcome"], "findings");
}

#[test]
fn verify_finds_a_no_transaction_file_that_cannot_run_again_after_an_interruption() {
    let unsafe_file = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int, email text);\n"),
        (
            "0002_backfill.sql",
            "-- migrun:no-transaction\nCREATE TABLE IF NOT EXISTS audit (id int PRIMARY KEY);\nINSERT INTO audit VALUES (1);\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
        ),
    ]);
    let run = verify(unsafe_file.path(), &["--json"]);
    run.assert_code(11);
    assert_eq!(run.result()["outcome"], "not_rerunnable");
    let reruns = report(&run)["reruns"].as_array().expect("reruns").clone();
    let problem = |case: &str| {
        reruns
            .iter()
            .find(|r| r["case"].as_str().is_some_and(|c| c.starts_with(case)))
            .and_then(|r| r["problem"].as_str().map(str::to_string))
    };
    // Cut after the INSERT: the INSERT runs again and hits the primary key.
    assert!(problem("after 2 of 3").is_some_and(|p| p.contains("duplicate key")), "{reruns:?}");
    // Cut inside the index build: an INVALID index is left; without IF NOT EXISTS the
    // CREATE fails... after migrun drops the INVALID index, as `up` does, it is built again.
    assert!(reruns.iter().any(|r| r["case"].as_str().is_some_and(|c| c.contains("INVALID"))), "{reruns:?}");

    let idempotent = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int, email text);\n"),
        (
            "0002_backfill.sql",
            "-- migrun:no-transaction\nCREATE TABLE IF NOT EXISTS audit (id int PRIMARY KEY);\nINSERT INTO audit VALUES (1) ON CONFLICT DO NOTHING;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);\n",
        ),
        ("R__view.sql", "CREATE OR REPLACE VIEW emails AS SELECT email FROM users;\n"),
    ]);
    let run = verify(idempotent.path(), &["--json"]);
    run.assert_code(0);
    let reruns = report(&run)["reruns"].as_array().expect("reruns").clone();
    assert_eq!(reruns.len(), 4, "2 cuts, 1 INVALID index, 1 repeatable run twice: {reruns:?}");
    assert!(reruns.iter().all(|r| r["problem"].is_null()), "{reruns:?}");

    // A repeatable file that cannot run twice.
    let repeatable = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        ("R__view.sql", "CREATE VIEW v AS SELECT id FROM a;\n"),
    ]);
    let run = verify(repeatable.path(), &[]);
    run.assert_code(11);
    assert!(run.stdout.contains("R__view.sql: run twice: NOT SAFE"), "{}", run.stdout);
}

#[test]
fn verify_from_the_previous_release_finds_an_upgrade_path_difference() {
    let previous = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0002_email.sql", "ALTER TABLE users ADD COLUMN email text;\n"),
    ]);
    // The same release again, plus a new file: upgrading gives the same schema.
    let next = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0002_email.sql", "ALTER TABLE users ADD COLUMN email text;\n"),
        ("0003_name.sql", "ALTER TABLE users ADD COLUMN name text;\n"),
    ]);
    let run = verify(next.path(), &["--from", &previous.path().display().to_string()]);
    run.assert_code(0);
    assert!(run.stdout.contains("same schema as from empty"), "{}", run.stdout);
    // An applied file edited in the new release: databases that ran the old one differ.
    let edited = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int);\n"),
        ("0002_email.sql", "ALTER TABLE users ADD COLUMN email varchar(320) NOT NULL DEFAULT '';\n"),
        ("0003_name.sql", "ALTER TABLE users ADD COLUMN name text;\n"),
    ]);
    let run = verify(edited.path(), &["--from", &previous.path().display().to_string(), "--json"]);
    run.assert_code(12);
    assert_eq!(run.result()["outcome"], "upgrade_differs");
    let differences = report(&run)["upgrade"]["differences"].as_array().expect("differences").clone();
    assert!(
        differences
            .iter()
            .any(|d| d == "- column public.users.email character varying(320) not null default ''::character varying"),
        "{differences:?}"
    );
    assert!(differences.iter().any(|d| d == "+ column public.users.email text"), "{differences:?}");
}

#[test]
fn verify_on_a_named_server_uses_scratch_databases_of_its_own() {
    let db = TestDb::new();
    let dir = release();
    let live = crate::harness::LiveRun::start(
        Migrun::new().dir(dir.path()).args(["verify", "--database-url", &db.url()]).spawn(),
    );
    let pid = live.pid();
    let run = live.finish();
    run.assert_code(0);
    // Nothing is left behind on the server, and the named database was not touched.
    let mut admin = server().connect("postgres");
    let left: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM pg_database WHERE datname LIKE 'migrun\\_verify\\_%\\_{pid}\\_%'"),
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 0);
    // A database that has tables is refused: it looks like an application's.
    db.client().batch_execute("CREATE TABLE app_data (id int)").expect("table");
    let refused = verify(dir.path(), &["--database-url", &db.url()]);
    refused.assert_code(2);
    assert!(refused.result()["error"].as_str().unwrap_or_default().contains("is not empty"), "{}", refused.stderr);
    // The ambient DATABASE_URL is never used for scratch databases.
    let ambient = Migrun::new().dir(dir.path()).env("DATABASE_URL", &db.url()).args(["verify"]).run();
    ambient.assert_code(0);
}

#[test]
fn a_file_that_fails_from_empty_is_a_migration_failure() {
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        ("0002_b.sql", "SELECT 1;\nALTER TABLE missing ADD COLUMN x int;\n"),
    ]);
    let run = verify(dir.path(), &[]);
    run.assert_code(6);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("0002_b.sql (line 2) fails on an empty database") && error.contains("42P01"), "{error}");
}

/// The scratch server never outlives migrun, even when migrun is SIGKILLed.
#[test]
fn the_scratch_server_dies_with_a_killed_verify() {
    use crate::harness::{send, wait_until, LiveRun};
    let dir = sql_dir(&[("0001_slow.sql", "SELECT pg_sleep(60);\n")]);
    let mut live = LiveRun::start(Migrun::offline(dir.path()).args(["verify"]).spawn());
    live.wait_for_line("scratch Postgres started", std::time::Duration::from_secs(30));
    let marker = format!("migrun-verify-{}-", live.pid());
    let servers = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&marker))
            .count()
    };
    assert!(servers() > 0, "no scratch server found");
    send(live.pid(), libc::SIGKILL);
    wait_until(std::time::Duration::from_secs(20), "the scratch server is gone", || servers() == 0);
    let _ = live.finish();
}

/// A named server that cannot be reached, or whose certificate does not verify, ends as it
/// does for every other command: exit 4 with the explanation, not exit 2 with the driver's text.
#[test]
fn a_named_server_that_cannot_be_reached_is_exit_4() {
    let dir = release();
    let port = crate::services::free_port();
    let unreachable =
        verify(dir.path(), &["--database-url", &format!("postgres://postgres@127.0.0.1:{port}/postgres")]);
    unreachable.assert_code(4);
    assert!(
        unreachable.result()["error"].as_str().unwrap_or_default().contains("cannot reach"),
        "{}",
        unreachable.stderr
    );
    let tls = crate::services::tls_server();
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        tls.port,
        tls.other_ca.display()
    );
    let wrong_ca = verify(dir.path(), &["--database-url", &url]);
    wrong_ca.assert_code(4);
    let error = wrong_ca.result()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("not signed by a CA in"), "{error}");
}

/// Downs that leave a column, an index, a default, a constraint and a function behind, and
/// one that drops more than its up created: each reported with its schema lines, exit 18.
#[test]
fn verify_catches_each_down_that_does_not_undo_its_up() {
    let dir = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY, name text);\n"),
        ("0001_users.down.sql", "DROP TABLE users;\n"),
        ("0002_email.sql", "ALTER TABLE users ADD COLUMN email text;\n"),
        ("0002_email.down.sql", "SELECT 'the column stays';\n"),
        ("0003_index.sql", "CREATE INDEX users_name ON users (name);\n"),
        ("0003_index.down.sql", "SELECT 'the index stays';\n"),
        ("0004_default.sql", "ALTER TABLE users ALTER COLUMN name SET DEFAULT 'anon';\n"),
        ("0004_default.down.sql", "SELECT 'the default stays';\n"),
        ("0005_check.sql", "ALTER TABLE users ADD CONSTRAINT name_short CHECK (length(name) < 100);\n"),
        ("0005_check.down.sql", "SELECT 'the constraint stays';\n"),
        (
            "0006_function.sql",
            "CREATE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM users';\n",
        ),
        ("0006_function.down.sql", "SELECT 'the function stays';\n"),
        ("0007_nick.sql", "ALTER TABLE users ADD COLUMN nick text;\n"),
        ("0007_nick.down.sql", "ALTER TABLE users DROP COLUMN nick;\n"),
        ("0008_tags.sql", "CREATE TABLE tags (id int);\n"),
        ("0008_tags.down.sql", "DROP TABLE tags;\nALTER TABLE users DROP COLUMN email;\n"),
        // After 8, running its up again cannot give back email: the pass goes on elsewhere.
        ("0009_last.sql", "CREATE TABLE last (id int);\n"),
        ("0009_last.down.sql", "DROP TABLE last;\n"),
    ]);
    let run = verify(dir.path(), &["--json"]);
    run.assert_code(18);
    assert_eq!(run.result()["outcome"], "down_differs");
    let report = report(&run);
    let downs = report["downs"].as_array().expect("downs");
    let of = |version: u64| {
        downs.iter().find(|d| d["version"] == version).unwrap_or_else(|| panic!("version {version} in {downs:?}"))
    };
    let lines = |version: u64| -> Vec<String> {
        of(version)["differences"]
            .as_array()
            .map_or(Vec::new(), |a| a.iter().map(|l| l.as_str().unwrap_or("").to_string()).collect())
    };
    assert!(of(1)["problem"].is_null() && of(7)["problem"].is_null() && of(9)["problem"].is_null(), "{downs:?}");
    assert_eq!(downs.len(), 9);
    let left = [
        (2, "+ column public.users.email text"),
        (3, "+ index CREATE INDEX users_name"),
        (4, "+ column public.users.name text default 'anon'::text"),
        (5, "+ constraint public.users name_short CHECK"),
        (6, "+ function CREATE OR REPLACE FUNCTION public.user_count()"),
        // Drops more than its up created: the column version 2 added goes too.
        (8, "- column public.users.email text"),
    ];
    for (version, expected) in left {
        assert!(of(version)["problem"].as_str().unwrap_or_default().contains("does not restore"), "{}", of(version));
        assert!(lines(version).iter().any(|l| l.starts_with(expected)), "{version}: {:?}", lines(version));
    }
    // The default changed a line rather than adding one: the old line is there as `-`.
    assert!(lines(4).iter().any(|l| l == "- column public.users.name text"), "{:?}", lines(4));
    let human = verify(dir.path(), &[]);
    human.assert_code(18);
    assert!(human.stdout.contains("0008_tags.down.sql: DOES NOT UNDO version 8"), "{}", human.stdout);
    assert!(human.stdout.contains("  - column public.users.email text"), "{}", human.stdout);
}

/// Exact downs pass; with --from, rolling the new release back gives the old release's schema.
#[test]
fn verify_passes_exact_downs_and_proves_the_rollback_to_the_previous_release() {
    let base = [
        ("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY, name text);\n"),
        ("0001_users.down.sql", "DROP TABLE users;\n"),
        ("R__names.sql", "CREATE OR REPLACE VIEW names AS SELECT name FROM users;\n"),
    ];
    let previous = sql_dir(&base);
    let current = sql_dir(&[
        base[0],
        base[1],
        ("0002_email.sql", "ALTER TABLE users ADD COLUMN email text DEFAULT '' NOT NULL;\n"),
        ("0002_email.down.sql", "ALTER TABLE users DROP COLUMN email;\n"),
        (
            "0003_index.sql",
            "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);\n",
        ),
        ("0003_index.down.sql", "-- migrun:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_email;\n"),
        ("R__names.sql", "CREATE OR REPLACE VIEW names AS SELECT name FROM users;\n"),
    ]);
    let from = previous.path().to_str().expect("path").to_string();
    let run = verify(current.path(), &["--json", "--from", &from]);
    run.assert_code(0);
    let report = report(&run);
    assert_eq!(report["downs"].as_array().map(Vec::len), Some(3), "{report}");
    assert!(report["downs"].as_array().into_iter().flatten().all(|d| d["problem"].is_null()), "{report}");
    assert_eq!(report["upgrade"]["rollback"], serde_json::json!([]), "{report}");

    // A new release whose down leaves its column: the rollback to the previous one differs.
    std::fs::write(current.path().join("0002_email.down.sql"), "SELECT 1;\n").expect("write");
    std::fs::remove_file(current.path().join("0002_email.sql")).expect("rm");
    std::fs::write(current.path().join("0002_email.sql"), "ALTER TABLE users ADD COLUMN email text;\n").expect("write");
    let run = verify(current.path(), &["--json", "--from", &from]);
    run.assert_code(18);
    let second = self::report(&run);
    let rollback: Vec<&str> =
        second["upgrade"]["rollback"].as_array().expect("rollback").iter().filter_map(|l| l.as_str()).collect();
    assert_eq!(rollback, ["+ column public.users.email text"], "{second}");
}

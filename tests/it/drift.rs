//! Drift: out-of-band changes made by hand on a migrated database, each held to what
//! `pg_dump --schema-only --no-owner` says; the snapshot every change records; `diff`,
//! `up --check-drift`, `diff --accept`, `--against`, `--scratch`; `schema --write/--check`.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

/// A role the fixtures grant to (cluster-wide, so made once).
const READER: &str = "drift_reader";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drift")
}

fn create_reader() {
    server()
        .connect("postgres")
        .batch_execute(&format!("DO $$ BEGIN CREATE ROLE {READER}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
        .expect("create the reader role");
}

/// A case of tests/fixtures/drift/cases.sql.
struct Case {
    name: String,
    differs: bool,
    statements: Vec<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture_dir().join("cases.sql")).expect("read cases.sql");
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- differs: ") {
            cases.push(Case { name: name.into(), differs: true, statements: Vec::new() });
        } else if let Some(name) = line.strip_prefix("-- same: ") {
            cases.push(Case { name: name.into(), differs: false, statements: Vec::new() });
        } else if !line.trim().is_empty() && !line.starts_with("--") {
            cases.last_mut().expect("a statement after a case line").statements.push(line.into());
        }
    }
    cases
}

/// pg_dump's schema-only text without the lines that differ between any two dumps (the
/// header's versions, and the random key of `\restrict`).
fn pg_dump(db: &str) -> String {
    let s = server();
    let out = Command::new(tool("pg_dump"))
        .args(["--schema-only", "--no-owner", "-h", &s.host, "-p", &s.port.to_string(), "-U", &s.user, db])
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump {db}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict") && !l.starts_with("-- Dumped"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of `template` (no session may be on it).
fn copy_of(template: &str) -> TestDb {
    let db = TestDb { name: format!("{template}_c{}", rand_suffix()) };
    server()
        .connect("postgres")
        .batch_execute(&format!("CREATE DATABASE {} TEMPLATE {template}", db.name))
        .expect("copy the database");
    db
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn migrated() -> TestDb {
    create_reader();
    let db = TestDb::new();
    db.migrun().dir(&fixture_dir().join("sql")).args(["up"]).run().assert_code(0);
    db
}

/// Every out-of-band change of the suite (115 that pg_dump shows, 12 it does not) is reported by
/// `diff` exactly when pg_dump shows a difference, and `up --check-drift` refuses exactly then;
/// the database `up` migrated shows none.
#[test]
fn diff_and_pg_dump_agree_on_every_out_of_band_change() {
    let base = migrated();
    let sql = fixture_dir().join("sql");
    let clean = base.migrun().dir(&sql).args(["diff"]).run();
    clean.assert_code(0);
    assert!(clean.stdout.starts_with("no drift"), "{}", clean.stdout);
    let base_dump = pg_dump(&base.name);
    let cases = cases();
    assert!(cases.iter().filter(|c| c.differs).count() >= 40, "the suite has fewer than 40 kinds of change");
    let disagreements: Vec<String> = std::thread::scope(|scope| {
        let chunks: Vec<&[Case]> = cases.chunks(cases.len().div_ceil(4)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(|| chunk.iter().filter_map(|case| judge(&base, &base_dump, case)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a case thread")).collect()
    });
    assert!(disagreements.is_empty(), "{} case(s) wrong:\n{}", disagreements.len(), disagreements.join("\n"));
}

/// What is wrong with one case, if anything.
fn judge(base: &TestDb, base_dump: &str, case: &Case) -> Option<String> {
    let copy = copy_of(&base.name);
    let mut client = copy.client();
    for statement in &case.statements {
        let result = client.batch_execute(statement);
        // A concurrent build that fails on purpose leaves its index INVALID.
        if !statement.contains("CONCURRENTLY") {
            result.unwrap_or_else(|e| panic!("{}: {statement}: {e:?}", case.name));
        }
    }
    drop(client);
    let dump_differs = pg_dump(&copy.name) != base_dump;
    let sql = fixture_dir().join("sql");
    let diff = copy.migrun().dir(&sql).args(["diff", "--json"]).run();
    let gate = copy.migrun().dir(&sql).args(["up", "--check-drift"]).run();
    let expected = if case.differs { 19 } else { 0 };
    let mut wrong = Vec::new();
    if dump_differs != case.differs {
        wrong.push(format!("pg_dump differs: {dump_differs}"));
    }
    if diff.code != expected {
        wrong.push(format!("diff exit {} ({})", diff.code, diff.stdout.lines().take(12).collect::<Vec<_>>().join(" ")));
    }
    if gate.code != expected {
        wrong.push(format!("up --check-drift exit {}", gate.code));
    }
    if case.differs && gate.code == 19 && !gate.stderr.contains("nothing was applied") {
        wrong.push("the refusal does not say nothing was applied".into());
    }
    (!wrong.is_empty()).then(|| format!("{}: {}", case.name, wrong.join("; ")))
}

/// Two differences migrun reports on purpose where pg_dump shows none: an extension's version
/// (pg_dump writes CREATE EXTENSION without one, so a restore installs whatever is there) and
/// an INVALID index left by a failed concurrent build (pg_dump skips invalid indexes; the
/// index still slows every write and holds its name).
#[test]
fn an_extension_update_and_a_leftover_invalid_index_are_reported_beyond_pg_dump() {
    let base = migrated();
    base.client().batch_execute("CREATE EXTENSION citext VERSION '1.4'").expect("citext 1.4");
    base.migrun().dir(&fixture_dir().join("sql")).args(["diff", "--accept"]).run().assert_code(0);
    let base_dump = pg_dump(&base.name);
    let sql = fixture_dir().join("sql");
    for (name, statements) in [
        ("extension updated", vec!["ALTER EXTENSION citext UPDATE"]),
        (
            "invalid index left behind",
            vec![
                "INSERT INTO users (email, name) VALUES ('a@x', 'same'), ('b@x', 'same')",
                "CREATE UNIQUE INDEX CONCURRENTLY users_name_unique ON users (name)",
            ],
        ),
    ] {
        let copy = copy_of(&base.name);
        let mut client = copy.client();
        for statement in statements {
            let _ = client.batch_execute(statement);
        }
        drop(client);
        assert_eq!(pg_dump(&copy.name), base_dump, "{name}: pg_dump shows it after all");
        let diff = copy.migrun().dir(&sql).args(["diff"]).run();
        diff.assert_code(19);
        let needle =
            if name.starts_with("extension") { "extension citext schema public version 1." } else { "INVALID" };
        assert!(diff.stdout.contains(needle), "{name}:\n{}", diff.stdout);
    }
}

/// The report names each object and what changed; JSON has the same; the result event says
/// where to look; `--accept` records the live schema and `diff` passes after it.
#[test]
fn diff_names_objects_and_accept_records_the_live_schema() {
    let db = migrated();
    let sql = fixture_dir().join("sql");
    db.client()
        .batch_execute(
            "ALTER TABLE users ADD COLUMN phone text; GRANT INSERT ON posts TO drift_reader; DROP VIEW active_users",
        )
        .expect("change by hand");
    let human = db.migrun().dir(&sql).args(["diff"]).run();
    human.assert_code(19);
    for needle in [
        "in 3 object(s)",
        "table public.users (changed)\n  + column public.users.phone text",
        "table public.posts (changed)\n  + grant INSERT on table public.posts to drift_reader",
        "view public.active_users (removed)\n  - view public.active_users",
    ] {
        assert!(human.stdout.contains(needle), "{needle}:\n{}", human.stdout);
    }
    assert_eq!(human.result()["outcome"], "schema_drift");
    let message = human.result()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("migrun diff --accept") && message.contains("3 object(s)"), "{message}");
    let json = db.migrun().dir(&sql).args(["diff", "--json"]).run();
    json.assert_code(19);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("diff --json");
    assert_eq!(report["against"], "snapshot");
    assert_eq!(report["snapshot"]["highest_version"], 3);
    assert_eq!(report["snapshot"]["history_unchanged"], true);
    let objects = report["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 3);
    assert!(objects.iter().any(|o| o["name"] == "public.active_users" && o["change"] == "removed"), "{objects:?}");
    // Owners are compared only when asked.
    db.client().batch_execute("ALTER TABLE billing.invoices OWNER TO drift_reader").expect("owner");
    db.migrun().dir(&sql).args(["diff", "--accept"]).run().assert_code(0);
    db.migrun().dir(&sql).args(["diff"]).run().assert_code(0);
    db.client().batch_execute("ALTER TABLE billing.invoices OWNER TO postgres").expect("owner back");
    db.migrun().dir(&sql).args(["diff"]).run().assert_code(0);
    let owners = db.migrun().dir(&sql).args(["diff", "--owners"]).run();
    owners.assert_code(19);
    assert!(owners.stdout.contains("- owner of table billing.invoices is drift_reader"), "{}", owners.stdout);
}

/// Each change records a snapshot in the same transaction as its last history row (a
/// transactional file) or right after (a no-transaction file); the no-op `up` records none;
/// `down` records the schema it goes back to.
#[test]
fn every_change_records_a_snapshot_and_the_no_op_none() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY);\n"),
        ("0001_items.down.sql", "DROP TABLE items;\n"),
        ("0002_index.sql", "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY items_id ON items (id);\n"),
        ("0002_index.down.sql", "DROP INDEX items_id;\n"),
    ]);
    let snapshots = |db: &TestDb| {
        db.query_strings(
            "SELECT command || ':' || array_to_string(versions, ',') FROM migrun_history_snapshots ORDER BY id",
        )
    };
    db.migrun().dir(dir.path()).args(["up", "--target", "1"]).run().assert_code(0);
    assert_eq!(snapshots(&db), ["up:1"]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(snapshots(&db), ["up:1", "up:1,2"]);
    let no_op = db.migrun().dir(dir.path()).args(["up"]).run();
    no_op.assert_code(0);
    assert!(!no_op.stderr.contains("snapshot"), "{}", no_op.stderr);
    assert_eq!(snapshots(&db).len(), 2);
    db.migrun().dir(dir.path()).args(["down", "--steps", "1"]).run().assert_code(0);
    assert_eq!(snapshots(&db).last().map(String::as_str), Some("down:1"));
    db.migrun().dir(dir.path()).args(["diff"]).run().assert_code(0);
    // The snapshot and the history row it describes commit together: the hash of what is
    // stored is the hash of the text.
    let stored = db.count("SELECT count(*) FROM migrun_history_snapshots WHERE schema_hash = encode(sha256(convert_to(schema, 'UTF8')), 'hex')");
    assert_eq!(stored, 3);
    // migrun's own tables are not the schema.
    let text = db.query_strings("SELECT schema FROM migrun_history_snapshots ORDER BY id DESC LIMIT 1").join("");
    assert!(!text.contains("migrun_history"), "{text}");
    assert!(text.contains("table public.items"), "{text}");
}

/// `--against FILE` compares with a committed schema file; `--scratch` with the folder's
/// applied versions run from empty; `schema --check` fails when a migration is added without
/// writing the file again, and passes after `schema --write`.
#[test]
fn schema_file_check_and_diff_against_it_and_the_folder() {
    create_reader();
    let dir = tempfile::tempdir().expect("temp dir");
    let sql = dir.path().join("sql");
    std::fs::create_dir(&sql).expect("sql dir");
    for entry in std::fs::read_dir(fixture_dir().join("sql")).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), sql.join(entry.file_name())).expect("copy");
    }
    let file = dir.path().join("schema.txt");
    let scratch = format!("postgres://{}@{}:{}/postgres", server().user, server().host, server().port);
    let schema = |action: &str| {
        Migrun::offline(&sql).args(["schema", action]).arg_path(&file).args(["--database-url", &scratch]).run()
    };
    schema("--write").assert_code(0);
    let written = std::fs::read_to_string(&file).expect("schema file");
    assert!(written.starts_with("-- The schema"), "{written}");
    assert!(written.lines().nth(1).is_some_and(|l| l.starts_with("-- Read on PostgreSQL 1")), "{written}");
    assert!(
        written.contains("\ntable public.users\n")
            && written.contains("\n  column public.users.id bigint not null generated by default as identity"),
        "{written}"
    );
    schema("--check").assert_code(0);
    std::fs::write(sql.join("0004_phone.sql"), "ALTER TABLE users ADD COLUMN phone text;\n").expect("new file");
    let stale = schema("--check");
    stale.assert_code(19);
    assert!(stale.stdout.contains("+ column public.users.phone text"), "{}", stale.stdout);
    assert!(
        stale.result()["message"].as_str().unwrap_or_default().contains("migrun schema --write"),
        "{}",
        stale.stderr
    );
    schema("--write").assert_code(0);
    schema("--check").assert_code(0);

    let db = TestDb::new();
    db.migrun().dir(&sql).args(["up"]).run().assert_code(0);
    db.migrun().dir(&sql).args(["diff", "--against"]).arg_path(&file).run().assert_code(0);
    db.migrun().dir(&sql).args(["diff", "--scratch", "--scratch-url", &scratch]).run().assert_code(0);
    db.client().batch_execute("COMMENT ON TABLE posts IS 'by hand'").expect("change");
    let against = db.migrun().dir(&sql).args(["diff", "--against"]).arg_path(&file).run();
    against.assert_code(19);
    assert!(against.stdout.contains("+ comment on table public.posts is 'by hand'"), "{}", against.stdout);
    let folder = db.migrun().dir(&sql).args(["diff", "--scratch", "--scratch-url", &scratch, "--json"]).run();
    folder.assert_code(19);
    assert!(folder.stdout.contains("\"against\": \"scratch\""), "{}", folder.stdout);
    // A file that is not a schema file is exit 2, naming it.
    std::fs::write(&file, "this is not\n  a schema\n").expect("garbage");
    let bad = db.migrun().dir(&sql).args(["diff", "--against"]).arg_path(&file).run();
    bad.assert_code(2);
    assert!(
        bad.result()["message"].as_str().unwrap_or_default().contains("schema.txt: not a migrun schema file: line 1"),
        "{}",
        bad.stderr
    );
}

/// A database with no snapshot: `diff` says what to do (exit 2); `up --check-drift` on a new
/// database passes (nothing to hold it to) and records the first snapshot.
#[test]
fn no_snapshot_yet() {
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_items.sql", "CREATE TABLE items (id int);\n")]);
    let none = db.migrun().dir(dir.path()).args(["diff"]).run();
    none.assert_code(2);
    assert!(
        none.result()["message"].as_str().unwrap_or_default().contains("no schema snapshot yet"),
        "{}",
        none.stderr
    );
    db.migrun().dir(dir.path()).args(["up", "--check-drift"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["diff"]).run().assert_code(0);
    // MIGRUN_CHECK_DRIFT turns the gate on for exec --migrate as well.
    db.client().batch_execute("CREATE TABLE by_hand (id int)").expect("change");
    let exec =
        db.migrun().dir(dir.path()).env("MIGRUN_CHECK_DRIFT", "true").args(["exec", "--migrate", "--", "true"]).run();
    exec.assert_code(19);
    assert!(exec.stderr.contains("table public.by_hand"), "{}", exec.stderr);
}

/// `diff` through each connection source: libpq's variables, and an RDS-managed secret in
/// Secrets Manager (moto, through the real SDK); the secret's password never appears.
#[test]
fn diff_through_libpq_variables_and_a_secret() {
    use crate::connections::{secret, unique, with_moto};
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_items.sql", "CREATE TABLE items (id int);\n")]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    db.client().batch_execute("ALTER TABLE items ADD COLUMN by_hand text").expect("change");
    let s = server();
    let via_libpq = Migrun::new()
        .env("PGHOST", &s.host)
        .env("PGPORT", &s.port.to_string())
        .env("PGUSER", &s.user)
        .env("PGDATABASE", &db.name)
        .dir(dir.path())
        .args(["diff"])
        .run();
    via_libpq.assert_code(19);
    assert!(via_libpq.stdout.contains("+ column public.items.by_hand text"), "{}", via_libpq.stdout);
    let value = serde_json::json!({
        "engine": "postgres", "host": s.host, "port": s.port, "username": PASSWORD_ROLE, "password": PASSWORD, "dbname": db.name,
    })
    .to_string();
    let name = unique("drift");
    secret(&name, &value);
    let mut m = Migrun::new();
    with_moto(&mut m).env("MIGRUN_SECRET_ID", &name).dir(dir.path()).args(["diff", "--json"]);
    let via_secret = m.run();
    via_secret.assert_code(19);
    assert!(via_secret.stdout.contains("public.items"), "{}", via_secret.stdout);
    assert!(!via_secret.stdout.contains(PASSWORD) && !via_secret.stderr.contains(PASSWORD), "the password leaked");
}

/// A history that changed after the newest snapshot without one (a run killed between files,
/// an older migrun): `diff` and the gate say so, and `diff --accept` settles it.
#[test]
fn a_history_newer_than_its_snapshot_is_named_as_such() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_items.sql", "CREATE TABLE items (id int);\n"),
        ("0002_tags.sql", "CREATE TABLE tags (id int);\n"),
        ("0003_more.sql", "CREATE TABLE more (id int);\n"),
    ]);
    db.migrun().dir(dir.path()).args(["up", "--target", "1"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["up", "--target", "2"]).run().assert_code(0);
    // As if the second run had died before recording its snapshot.
    db.client()
        .batch_execute("DELETE FROM migrun_history_snapshots WHERE id = (SELECT max(id) FROM migrun_history_snapshots)")
        .expect("forget");
    let diff = db.migrun().dir(dir.path()).args(["diff"]).run();
    diff.assert_code(19);
    assert!(diff.stdout.contains("+ table public.tags"), "{}", diff.stdout);
    let message = diff.result()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("the history changed after that snapshot was recorded"), "{message}");
    let gate = db.migrun().dir(dir.path()).args(["up", "--check-drift"]).run();
    gate.assert_code(19);
    assert!(gate.stderr.contains("the history changed after this snapshot"), "{}", gate.stderr);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 2, "nothing was applied");
    db.migrun().dir(dir.path()).args(["diff", "--accept"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["up", "--check-drift"]).run().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 3);
}

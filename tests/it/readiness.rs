//! An empty or misshapen migrations directory is never an up-to-date schema, and ready means
//! every file applied, repeatable ones at their current checksum.

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_directory_without_migrations_fails_unless_allowed() {
    let db = TestDb::new();
    let empty = tempfile::tempdir().expect("dir");
    // A folder-per-migration layout (Prisma, diesel) holds no top-level migration file either.
    let folders = sql_dir(&[("20240101_init/migration.sql", "CREATE TABLE t (x int);")]);
    let readme = sql_dir(&[("README.md", "migrations live elsewhere")]);
    for dir in [empty.path(), readme.path()] {
        for args in [
            vec!["up"],
            vec!["wait", "--wait-timeout", "1s"],
            vec!["exec", "--", "true"],
            vec!["exec", "--migrate", "--", "true"],
        ] {
            let run = db.migrun().dir(dir).args(&args).run();
            run.assert_code(2);
            let error = run.result()["error"].as_str().unwrap_or_default().to_string();
            assert!(
                error.contains("holds no migration file") && error.contains(&dir.display().to_string()),
                "{args:?}: {error}"
            );
            let mut allowed = args.clone();
            allowed.insert(1, "--allow-empty");
            db.migrun().dir(dir).args(&allowed).run().assert_code(0);
            db.migrun().dir(dir).env("MIGRUN_ALLOW_EMPTY", "true").args(&args).run().assert_code(0);
        }
        db.migrun().dir(dir).args(["status"]).run().assert_code(0);
        db.migrun().dir(dir).args(["plan"]).run().assert_code(0);
    }
    let run = db.migrun().dir(folders.path()).args(["up"]).run();
    run.assert_code(2);
    assert!(
        run.result()["error"].as_str().unwrap_or_default().contains("migration.sql (in a subdirectory)"),
        "{}",
        run.stderr
    );
}

#[test]
fn files_that_look_like_migrations_and_would_be_skipped_are_all_named() {
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.SQL", "CREATE TABLE b (x int);"),
        ("0003_c.Sql", "CREATE TABLE c (x int);"),
        ("old/0004_d.sql", "CREATE TABLE d (x int);"),
        ("notes.txt", "not a migration"),
    ]);
    let fifo = dir.path().join("0005_e.sql");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let run = Migrun::new()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .dir(dir.path())
        .args(["up", "--connect-timeout", "30s"])
        .run();
    run.assert_code(2);
    let error = run.result()["error"].as_str().unwrap_or_default().to_string();
    for named in ["0002_b.SQL", "0003_c.Sql", "0004_d.sql (in a subdirectory)", "0005_e.sql (not a regular file)"] {
        assert!(error.contains(named), "{named} in {error}");
    }
    assert!(error.contains("4 look like migrations"), "{error}");
    assert!(!error.contains("notes.txt") && !error.contains("0001_a.sql"), "{error}");
}

#[test]
fn a_symlink_to_a_migration_file_is_a_migration() {
    let db = TestDb::new();
    let dir = sql_dir(&[("shared/create.sql.txt", "CREATE TABLE linked (x int);")]);
    std::fs::remove_dir_all(dir.path().join("shared")).ok();
    let target = tempfile::NamedTempFile::new().expect("target");
    std::fs::write(target.path(), "CREATE TABLE linked (x int);").expect("write");
    std::os::unix::fs::symlink(target.path(), dir.path().join("0001_linked.sql")).expect("symlink");
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'linked'"), 1);
}

#[test]
fn ready_waits_for_repeatable_files_at_their_current_checksum() {
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_t.sql", "CREATE TABLE t (x int);")]);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    // Every versioned file applied, a new repeatable one not yet: not ready.
    std::fs::write(dir.path().join("R__view.sql"), "CREATE OR REPLACE VIEW v AS SELECT x FROM t;").expect("add");
    let run = db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "1s"]).run();
    run.assert_code(9);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("R__view.sql"), "{}", run.stderr);
    // A waiter becomes ready once the repeatable is applied.
    let waiter = LiveRun::start(db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "60s"]).spawn());
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    waiter.finish().assert_code(0);
    // An edited repeatable is not ready until it is applied again.
    std::fs::write(dir.path().join("R__view.sql"), "CREATE OR REPLACE VIEW v AS SELECT x, 1 AS y FROM t;")
        .expect("edit");
    db.migrun().dir(dir.path()).args(["wait", "--wait-timeout", "1s"]).run().assert_code(9);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let started = std::time::Instant::now();
    db.migrun().dir(dir.path()).args(["exec", "--wait", "--", "true"]).run().assert_code(0);
    assert!(started.elapsed() < Duration::from_secs(30));
}

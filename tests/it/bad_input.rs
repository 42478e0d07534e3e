//! Every bad input class migrun knows, run for real, and `docs/bad-input.md` generated from
//! the same list: the table cannot drift from what migrun does. After changing a case, run
//! `MIGRUN_BLESS=1 cargo test --test it bad_input` and commit the regenerated table.

use std::path::Path;

use crate::harness::*;

/// What is left behind when migrun refused before connecting.
const NOTHING: &str = "nothing: no connection was made";
const NOTHING_APPLIED: &str = "nothing applied";

struct Case {
    /// The input, as the table shows it.
    input: &'static str,
    exit: i32,
    /// The start of the result event's message (the migrations directory shown as `sql`).
    says: &'static str,
    left: &'static str,
    run: fn(&TestDb) -> (Run, String),
}

/// `up` on a directory holding `files`, against a database that cannot be reached: a refusal
/// must come before any connection attempt.
fn files(entries: &[(&str, &[u8])]) -> (Run, String) {
    let dir = tempfile::tempdir().expect("dir");
    for (name, body) in entries {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("subdirectory");
        }
        std::fs::write(path, body).expect("write");
    }
    offline(dir.path(), &["up"], &[])
}

fn offline(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Run, String) {
    let mut migrun = Migrun::new();
    migrun.env("DATABASE_URL", "postgres://app@127.0.0.1:1/app").dir(dir);
    for (key, value) in env {
        migrun.env(key, value);
    }
    let run = migrun.args(args).args(["--connect-timeout", "30s"]).run();
    (run, dir.display().to_string())
}

fn setting(args: &[&str], env: &[(&str, &str)]) -> (Run, String) {
    offline(&example_sql(), args, env)
}

fn url(url: &str) -> (Run, String) {
    let run = Migrun::new().env("DATABASE_URL", url).dir(&example_sql()).args(["up"]).run();
    (run, example_sql().display().to_string())
}

fn online(db: &TestDb, entries: &[(&str, &str)], args: &[&str]) -> (Run, String) {
    let dir = sql_dir(entries);
    let run = db.migrun().dir(dir.path()).args(args).run();
    (run, dir.path().display().to_string())
}

fn pw(text: &str) -> String {
    text.replace("PW", &encode(PASSWORD))
}

const CASES: &[Case] = &[
    // Migration files: refused before any connection.
    Case { input: "file name without a version (`init.sql`)", exit: 2, says: "sql/init.sql: not a migration file name (no _ between version and description)", left: NOTHING, run: |_| files(&[("init.sql", b"SELECT 1;")]) },
    Case { input: "version with a dash (`0002-add.sql`)", exit: 2, says: "sql/0002-add.sql: not a migration file name (no _ between version and description)", left: NOTHING, run: |_| files(&[("0002-add.sql", b"SELECT 1;")]) },
    Case { input: "Flyway-style name (`V4__add.sql`)", exit: 2, says: "sql/V4__add.sql: not a migration file name (the version must be digits)", left: NOTHING, run: |_| files(&[("V4__add.sql", b"SELECT 1;")]) },
    Case { input: "19-digit version", exit: 2, says: "sql/1234567890123456789_x.sql: not a migration file name (the version has more than 18 digits", left: NOTHING, run: |_| files(&[("1234567890123456789_x.sql", b"SELECT 1;")]) },
    Case { input: "description with a dash", exit: 2, says: "sql/0001_add-users.sql: not a migration file name (the description may hold letters, digits and _ only)", left: NOTHING, run: |_| files(&[("0001_add-users.sql", b"SELECT 1;")]) },
    Case { input: "repeatable file without a description (`R__.sql`)", exit: 2, says: "sql/R__.sql: not a migration file name (the description may hold", left: NOTHING, run: |_| files(&[("R__.sql", b"SELECT 1;")]) },
    Case { input: "several bad names", exit: 2, says: "2 files are not migration file names: sql/a.sql (no _ between version and description), sql/b.sql", left: NOTHING, run: |_| files(&[("a.sql", b"SELECT 1;"), ("b.sql", b"SELECT 1;")]) },
    Case { input: "two files with one version (`0001_a.sql`, `1_b.sql`)", exit: 2, says: "sql/0001_a.sql and sql/1_b.sql: both have version 1", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;"), ("1_b.sql", b"SELECT 2;")]) },
    Case { input: "down file without an up file of its version", exit: 2, says: "sql/0002_b.down.sql: a down file without an up file of its version", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;"), ("0002_b.down.sql", b"SELECT 2;")]) },
    Case { input: "down file of a repeatable file (`R__views.down.sql`)", exit: 2, says: "sql/R__views.down.sql: not a migration file name (a repeatable file has no down file", left: NOTHING, run: |_| files(&[("R__views.sql", b"SELECT 1;"), ("R__views.down.sql", b"SELECT 2;")]) },
    Case { input: "two down files of one version", exit: 2, says: "sql/0001_a.down.sql and sql/1_a.down.sql: both have version 1", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;"), ("0001_a.down.sql", b"SELECT 2;"), ("1_a.down.sql", b"SELECT 3;")]) },
    Case { input: "empty down file", exit: 2, says: "sql/0001_a.down.sql: holds no SQL statement", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;"), ("0001_a.down.sql", b"-- nothing\n")]) },
    Case { input: "`down --steps 0`", exit: 2, says: "down --steps: `0` is not valid", left: NOTHING, run: |_| setting(&["down", "--steps", "0"], &[]) },
    Case { input: "`down --to` not a version", exit: 2, says: "down --to: `v3` is not valid", left: NOTHING, run: |_| setting(&["down", "--to", "v3"], &[]) },
    Case { input: "`down` without `--to` or `--steps`", exit: 2, says: "the following required arguments were not provided: --to <VERSION>", left: NOTHING, run: |_| setting(&["down"], &[]) },
    Case { input: "`--on-newer-schema` not a policy", exit: 2, says: "invalid value 'stop' for '--on-newer-schema <POLICY>'", left: NOTHING, run: |_| setting(&["up", "--on-newer-schema", "stop"], &[]) },
    Case { input: "`MIGRUN_ON_NEWER_SCHEMA` not a policy", exit: 2, says: "--on-newer-schema / MIGRUN_ON_NEWER_SCHEMA: `stop` is not valid; expected start, warn or refuse", left: NOTHING, run: |_| setting(&["up"], &[("MIGRUN_ON_NEWER_SCHEMA", "stop")]) },
    Case { input: "`down --to` a version no file has", exit: 2, says: "down --to 5: no migration file has this version", left: NOTHING_APPLIED, run: |db| online(db, &[("0001_a.sql", "CREATE TABLE a (id int);")], &["down", "--to", "5"]) },
    Case { input: "upper-case extension (`0001_a.SQL`)", exit: 2, says: "sql: 1 look like migrations but would be skipped: sql/0001_a.SQL (extension not lower-case .sql)", left: NOTHING, run: |_| files(&[("0001_a.SQL", b"SELECT 1;")]) },
    Case { input: "`.sql` file in a subdirectory", exit: 2, says: "sql: 1 look like migrations but would be skipped: sql/old/0001_a.sql (in a subdirectory)", left: NOTHING, run: |_| files(&[("old/0001_a.sql", b"SELECT 1;")]) },
    Case { input: "folder-per-migration layout (Prisma, diesel)", exit: 2, says: "sql: 1 look like migrations but would be skipped: sql/20240101_init/migration.sql (in a subdirectory)", left: NOTHING, run: |_| files(&[("20240101_init/migration.sql", b"SELECT 1;")]) },
    Case { input: "a FIFO named like a migration", exit: 2, says: "sql: 1 look like migrations but would be skipped: sql/0001_a.sql (not a regular file)", left: NOTHING, run: |_| {
        let dir = tempfile::tempdir().expect("dir");
        let status = std::process::Command::new("mkfifo").arg(dir.path().join("0001_a.sql")).status().expect("mkfifo");
        assert!(status.success());
        offline(dir.path(), &["up"], &[])
    } },
    Case { input: "empty migrations directory", exit: 2, says: "sql: holds no migration file", left: NOTHING, run: |_| files(&[]) },
    Case { input: "directory with no `.sql` file (`README.md` only)", exit: 2, says: "sql: holds no migration file", left: NOTHING, run: |_| files(&[("README.md", b"docs")]) },
    Case { input: "missing migrations directory", exit: 2, says: "/nonexistent/sql: cannot read the migrations directory", left: NOTHING, run: |_| (offline(Path::new("/nonexistent/sql"), &["up"], &[]).0, String::new()) },
    Case { input: "unknown directive (`-- migrun:no-transation`)", exit: 2, says: "sql/0001_a.sql: unknown directive `no-transation` (line 1)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- migrun:no-transation\nSELECT 1;")]) },
    Case { input: "directive with a bad value (`lock-timeout=soon`)", exit: 2, says: "sql/0001_a.sql: directive `lock-timeout=soon` (line 1) needs a whole number", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- migrun:lock-timeout=soon\nSELECT 1;")]) },
    Case { input: "directive over Postgres's limit (`lock-timeout=25d`)", exit: 2, says: "sql/0001_a.sql: directive `lock-timeout=25d` (line 1) needs at most 2147483647ms", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- migrun:lock-timeout=25d\nSELECT 1;")]) },
    Case { input: "directive given twice", exit: 2, says: "sql/0001_a.sql: directive `no-transaction` given twice (line 2)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- migrun:no-transaction\n-- migrun:no-transaction\nSELECT 1;")]) },
    Case { input: "directive after the first statement", exit: 2, says: "sql/0001_a.sql: directive `no-transaction` (line 2) comes after the first statement", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;\n-- migrun:no-transaction\n")]) },
    Case { input: "upper-case directive (`-- MIGRUN:no-transaction`)", exit: 2, says: "sql/0001_a.sql: `-- MIGRUN:no-transaction` (line 1) looks like a migrun directive", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- MIGRUN:no-transaction\nSELECT 1;")]) },
    Case { input: "directive without its colon (`-- migrun no-transaction`)", exit: 2, says: "sql/0001_a.sql: `-- migrun no-transaction` (line 1) looks like a migrun directive", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- migrun no-transaction\nSELECT 1;")]) },
    Case { input: "directive in a block comment (`/* migrun:no-transaction */`)", exit: 2, says: "sql/0001_a.sql: `/* migrun:no-transaction */` (line 1) looks like a migrun directive", left: NOTHING, run: |_| files(&[("0001_a.sql", b"/* migrun:no-transaction */\nSELECT 1;")]) },
    Case { input: "invalid UTF-8 (Latin-1)", exit: 2, says: "sql/0001_a.sql: not valid UTF-8 (line 2)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;\nSELECT 'caf\xe9';")]) },
    Case { input: "UTF-16 with a byte-order mark", exit: 2, says: "sql/0001_a.sql: is UTF-16 (little-endian byte-order mark)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"\xff\xfeS\0E\0L\0")]) },
    Case { input: "UTF-16 big-endian with a byte-order mark", exit: 2, says: "sql/0001_a.sql: is UTF-16 (big-endian byte-order mark)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"\xfe\xff\0S\0E\0L")]) },
    Case { input: "UTF-16 without a byte-order mark", exit: 2, says: "sql/0001_a.sql: holds a NUL byte (line 1); is it UTF-16 without a byte-order mark?", left: NOTHING, run: |_| files(&[("0001_a.sql", b"S\0E\0L\0E\0C\0T\0 \x001\0;\0")]) },
    Case { input: "a NUL byte in a file", exit: 2, says: "sql/0001_a.sql: holds a NUL byte (line 2)", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;\nSELECT '\0';")]) },
    Case { input: "CR-only line endings", exit: 2, says: "sql/0001_a.sql: has CR-only line endings", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- header\rSELECT 1;\r")]) },
    Case { input: "file with comments only", exit: 2, says: "sql/0001_a.sql: holds no SQL statement", left: NOTHING, run: |_| files(&[("0001_a.sql", b"-- TODO\n")]) },
    Case { input: "`BEGIN` in a transactional file", exit: 2, says: "sql/0001_a.sql: `BEGIN` (line 1) controls the transaction", left: NOTHING, run: |_| files(&[("0001_a.sql", b"BEGIN;\nSELECT 1;\nCOMMIT;")]) },
    Case { input: "`COMMIT` in a transactional file", exit: 2, says: "sql/0001_a.sql: `COMMIT` (line 2) controls the transaction", left: NOTHING, run: |_| files(&[("0001_a.sql", b"SELECT 1;\nCOMMIT;")]) },
    Case { input: "`COPY ... FROM stdin` (pg_dump data)", exit: 2, says: "sql/0001_a.sql: `COPY ... FROM STDIN` (line 1) exchanges data with a client", left: NOTHING, run: |_| files(&[("0001_a.sql", b"COPY t (x) FROM stdin;\n1\n\\.\n")]) },
    Case { input: "`COPY ... TO STDOUT`", exit: 2, says: "sql/0001_a.sql: `COPY ... TO STDOUT` (line 1) exchanges data with a client", left: NOTHING, run: |_| files(&[("0001_a.sql", b"COPY (SELECT 1) TO STDOUT;")]) },
    // Settings: refused before any connection.
    Case { input: "`--lock-wait ten minutes`", exit: 2, says: "--lock-wait / MIGRUN_LOCK_WAIT: `ten minutes` is not a usable duration; expected a whole number", left: NOTHING, run: |_| setting(&["up", "--lock-wait", "ten minutes"], &[]) },
    Case { input: "`MIGRUN_LOCK_TIMEOUT=25d` (over Postgres's limit)", exit: 2, says: "--lock-timeout / MIGRUN_LOCK_TIMEOUT: `25d` is not a usable duration; expected at most 2147483647ms", left: NOTHING, run: |_| setting(&["up"], &[("MIGRUN_LOCK_TIMEOUT", "25d")]) },
    Case { input: "`--statement-timeout -5s`", exit: 2, says: "--statement-timeout / MIGRUN_STATEMENT_TIMEOUT: `-5s` is not a usable duration", left: NOTHING, run: |_| setting(&["up", "--statement-timeout=-5s"], &[]) },
    Case { input: "`--table a.b.c`", exit: 2, says: "--table / MIGRUN_TABLE: `a.b.c` is not valid", left: NOTHING, run: |_| setting(&["up", "--table", "a.b.c"], &[]) },
    Case { input: "`--table pg_temp.history`", exit: 2, says: "--table / MIGRUN_TABLE: `pg_temp.history` is not valid; expected a table name, optionally schema-qualified, not in pg_temp", left: NOTHING, run: |_| setting(&["up", "--table", "pg_temp.history"], &[]) },
    Case { input: "`--lock-key abc`", exit: 2, says: "--lock-key / MIGRUN_LOCK_KEY: `abc` is not valid; expected a signed 64-bit integer", left: NOTHING, run: |_| setting(&["up", "--lock-key", "abc"], &[]) },
    Case { input: "`MIGRUN_LOCK_RETRIES=-1`", exit: 2, says: "--lock-retries / MIGRUN_LOCK_RETRIES: `-1` is not valid", left: NOTHING, run: |_| setting(&["up"], &[("MIGRUN_LOCK_RETRIES", "-1")]) },
    Case { input: "`--sslmode verify_full`", exit: 2, says: "--sslmode / MIGRUN_SSLMODE: `verify_full` is not valid", left: NOTHING, run: |_| setting(&["up", "--sslmode", "verify_full"], &[]) },
    Case { input: "`MIGRUN_ALLOW_DRIFT=maybe`", exit: 2, says: "--allow-drift / MIGRUN_ALLOW_DRIFT: `maybe` is not valid", left: NOTHING, run: |_| setting(&["up"], &[("MIGRUN_ALLOW_DRIFT", "maybe")]) },
    Case { input: "`--target abc`", exit: 2, says: "--target: `abc` is not a migration version", left: NOTHING, run: |_| setting(&["up", "--target", "abc"], &[]) },
    Case { input: "`--result-file` in a missing directory", exit: 2, says: "--result-file / MIGRUN_RESULT_FILE: cannot write /nonexistent/result.json: the directory /nonexistent does not exist", left: NOTHING, run: |_| setting(&["up", "--result-file", "/nonexistent/result.json"], &[]) },
    Case { input: "`--result-file` naming a directory", exit: 2, says: "--result-file / MIGRUN_RESULT_FILE: cannot write /tmp: it is a directory", left: NOTHING, run: |_| setting(&["up", "--result-file", "/tmp"], &[]) },
    Case { input: "unknown flag", exit: 2, says: "unexpected argument '--no-such-flag' found (see migrun --help)", left: NOTHING, run: |_| setting(&["up", "--no-such-flag"], &[]) },
    Case { input: "no command", exit: 2, says: "'migrun' requires a subcommand but one was not provided (see migrun --help)", left: NOTHING, run: |_| setting(&[], &[]) },
    Case { input: "`--log-level loud`", exit: 2, says: "invalid value 'loud' for '--log-level <LOG_LEVEL>' (see migrun --help)", left: NOTHING, run: |_| setting(&["up", "--log-level", "loud"], &[]) },
    Case { input: "no database given at all", exit: 2, says: "no database given: set one of DATABASE_URL / --database-url", left: NOTHING, run: |_| {
        let run = Migrun::offline(&example_sql()).args(["up"]).run();
        (run, String::new())
    } },
    // Connection strings: never echoed.
    Case { input: "URL with one slash (`postgres:/app:PW@h/x`)", exit: 2, says: "the database connection string is not valid: it starts like a URL, but the scheme is not followed by ://", left: NOTHING, run: |_| url(&pw("postgres:/app:PW@h/x")) },
    Case { input: "URL with `;//` (`postgres;//app:PW@h/x`)", exit: 2, says: "the database connection string is not valid: it starts like a URL, but the scheme is not followed by ://", left: NOTHING, run: |_| url(&pw("postgres;//app:PW@h/x")) },
    Case { input: "URL without the colon (`postgresql//app:PW@h/x`)", exit: 2, says: "the database connection string is not valid: it starts like a URL, but the scheme is not followed by ://", left: NOTHING, run: |_| url(&pw("postgresql//app:PW@h/x")) },
    Case { input: "URL without slashes (`postgres:app:PW@h/x`)", exit: 2, says: "the database connection string is not valid: it starts like a URL, but the scheme is not followed by ://", left: NOTHING, run: |_| url(&pw("postgres:app:PW@h/x")) },
    Case { input: "a bare password in `DATABASE_URL`", exit: 2, says: "the database connection string is not valid: it is neither a URL nor key=value pairs", left: NOTHING, run: |_| url("hunter2") },
    Case { input: "a bare password holding `=`", exit: 2, says: "the database connection string is not valid: invalid connection string: unknown option (a value not shown)", left: NOTHING, run: |_| url(PASSWORD) },
    Case { input: "another scheme (`mysql://...`)", exit: 2, says: "the database connection string is not valid: the scheme is not postgres:// or postgresql://", left: NOTHING, run: |_| url(&pw("mysql://app:PW@h/x")) },
    Case { input: "an unknown URL parameter", exit: 2, says: "the database connection string is not valid: invalid connection string: unknown option (a value not shown)", left: NOTHING, run: |_| url(&pw("postgres://app:PW@h/x?PW=1")) },
    Case { input: "a port that is not a number", exit: 2, says: "the database connection string is not valid: invalid connection string: invalid value for option `port`", left: NOTHING, run: |_| url(&pw("postgres://app:PW@h:notaport/x")) },
    Case { input: "an unterminated quote in key=value", exit: 2, says: "the database connection string is not valid: invalid connection string: unterminated quoted connection parameter value", left: NOTHING, run: |_| url(&pw("host=h password='PW")) },
    Case { input: "`sslmode=sometimes` in the URL", exit: 2, says: "the database connection string is not valid: sslmode `sometimes` is not one of", left: NOTHING, run: |_| url(&pw("postgres://app:PW@h/x?sslmode=sometimes")) },
    Case { input: "a malformed Secrets Manager ARN", exit: 2, says: "`arn:aws:secretsmanager:nope` is not a Secrets Manager ARN", left: NOTHING, run: |_| url("arn:aws:secretsmanager:nope") },
    Case { input: "`PGPORT=abc` (libpq variables)", exit: 2, says: "libpq variables: PGPORT `abc` is not a port number", left: NOTHING, run: |_| {
        let run = Migrun::new().env("PGHOST", "127.0.0.1").env("PGPORT", "abc").dir(&example_sql()).args(["up"]).run();
        (run, String::new())
    } },
    // Against a database.
    Case { input: "`--table nosuch.history` (schema does not exist)", exit: 2, says: "history table nosuch.history: schema nosuch does not exist", left: NOTHING_APPLIED, run: |db| online(db, &[("0001_a.sql", "CREATE TABLE a (x int);")], &["up", "--table", "nosuch.history"]) },
    Case { input: "`--target` naming no file's version", exit: 2, says: "--target 7: no migration file has this version (nearest: 1 below, none above)", left: "nothing applied (the history table is created)", run: |db| online(db, &[("0001_a.sql", "CREATE TABLE a (x int);")], &["up", "--target", "7"]) },
    Case { input: "`CREATE INDEX CONCURRENTLY` in a transactional file", exit: 6, says: "sql/0001_a.sql: CREATE INDEX CONCURRENTLY cannot run inside a transaction block (SQLSTATE 25001)", left: "the file rolled back; the history table", run: |db| online(db, &[("0001_a.sql", "CREATE TABLE a (x int);\nCREATE INDEX CONCURRENTLY a_x ON a (x);")], &["up"]) },
    Case { input: "a no-transaction file that leaves `BEGIN` open", exit: 6, says: "sql/0001_a.sql: left a transaction open", left: "statements before `BEGIN`; the row `started`", run: |db| online(db, &[("0001_a.sql", "-- migrun:no-transaction\nBEGIN;\nCREATE TABLE a (x int);")], &["up"]) },
    Case { input: "a file calling `pg_advisory_unlock_all()`", exit: 6, says: "sql/0001_a.sql: released migrun's advisory lock", left: "the file rolled back; the history table", run: |db| online(db, &[("0001_a.sql", "SELECT pg_advisory_unlock_all();")], &["up"]) },
    Case { input: "`baseline` with neither a version nor `--from`", exit: 2, says: "baseline: give the VERSION the database is at, or --from TOOL", left: NOTHING, run: |_| setting(&["baseline"], &[]) },
    Case { input: "`baseline --from liquibase`", exit: 2, says: "baseline --from: `liquibase` is not a tool migrun knows; expected one of sqlx, flyway", left: NOTHING, run: |_| setting(&["baseline", "--from", "liquibase"], &[]) },
    Case { input: "`baseline 3 --from flyway` (a version with another tool than Alembic)", exit: 2, says: "baseline: give either VERSION or --from TOOL", left: NOTHING, run: |_| setting(&["baseline", "3", "--from", "flyway"], &[]) },
    Case { input: "`baseline` naming a version no file has", exit: 2, says: "baseline: no versioned migration file has version 7", left: "nothing recorded (the history table is not created)", run: |db| online(db, &[("0001_a.sql", "CREATE TABLE a (x int);")], &["baseline", "7", "--table", "bl_nofile"]) },
    Case { input: "`baseline` on a history that has rows", exit: 2, says: "baseline: history table public.bl_full already has 1 row(s)", left: "nothing recorded", run: |db| {
        let dir = sql_dir(&[("0001_a.sql", "SELECT 1;")]);
        db.migrun().dir(dir.path()).args(["up", "--table", "bl_full"]).run().assert_code(0);
        let run = db.migrun().dir(dir.path()).args(["baseline", "1", "--table", "bl_full"]).run();
        (run, dir.path().display().to_string())
    } },
    Case { input: "`baseline --from flyway` without Flyway's table", exit: 2, says: "baseline --from flyway: table flyway_schema_history does not exist", left: "nothing recorded", run: |db| online(db, &[("0001_a.sql", "SELECT 1;")], &["baseline", "--from", "flyway", "--table", "bl_flyway"]) },
    Case { input: "`convert --from rails` (Ruby migrations)", exit: 2, says: "convert --from: `rails` is not a tool migrun knows; expected one of sqlx, flyway, golang-migrate, dbmate, diesel, prisma", left: NOTHING, run: |_| {
        let run = Migrun::new().args(["convert", "--from", "rails", "db/migrate", "sql"]).run();
        (run, String::new())
    } },
    Case { input: "`convert` into a folder that holds files", exit: 2, says: "convert: sql already exists and is not an empty directory", left: "nothing written", run: |_| {
        let source = sql_dir(&[("V1__a.sql", "SELECT 1;")]);
        let out = sql_dir(&[("0001_mine.sql", "SELECT 1;")]);
        let run = Migrun::new().args(["convert", "--from", "flyway"]).arg_path(source.path()).arg_path(out.path()).run();
        (run, out.path().display().to_string())
    } },
    Case { input: "`convert` of a dotted Flyway version (`V1.1__x.sql`)", exit: 2, says: "convert: 1 cannot become migrun files: V1.1__x.sql: version `1.1` is not a whole number", left: "nothing written", run: |_| {
        let source = sql_dir(&[("V1.1__x.sql", "SELECT 1;")]);
        let out = tempfile::tempdir().expect("dir");
        let run = Migrun::new().args(["convert", "--from", "flyway"]).arg_path(source.path()).arg_path(&out.path().join("sql")).run();
        (run, String::new())
    } },
    Case { input: "`lint --format xml`", exit: 2, says: "invalid value 'xml' for '--format <FORMAT>'", left: NOTHING, run: |_| setting(&["lint", "--format", "xml"], &[]) },
    Case { input: "`verify --from` a folder that does not exist", exit: 2, says: "/nonexistent/sql: cannot read the migrations directory", left: "nothing: no server was started", run: |_| (setting(&["verify", "--from", "/nonexistent/sql"], &[]).0, String::new()) },
    Case { input: "`fanout up --targets tenants.txt` (no source prefix)", exit: 2, says: "--targets: `tenants.txt` is not a target source; expected file:PATH, secret:ARN[:KEY] or sql:URL", left: NOTHING, run: |_| setting(&["fanout", "up", "--targets", "tenants.txt"], &[]) },
    Case { input: "`fanout up --max-failure-rate 20` (not a share)", exit: 2, says: "--max-failure-rate: `20` is not valid; expected a share between 0 and 1", left: NOTHING, run: |_| setting(&["fanout", "up", "--targets", "file:/dev/null", "--max-failure-rate", "20"], &[]) },
    Case { input: "`fanout up --max-conns-per-server 4 --workers 4` (no slot left for targets)", exit: 2, says: "--workers: `4` is not valid; expected fewer than --max-conns-per-server", left: NOTHING, run: |_| setting(&["fanout", "up", "--targets", "file:/dev/null", "--max-conns-per-server", "4", "--workers", "4"], &[]) },
    Case { input: "`lint` of a file with no statement (only comments)", exit: 2, says: "sql/0002_later.sql: holds no SQL statement", left: NOTHING, run: |db| online(db, &[("0001_a.sql", "SELECT 1;"), ("0002_later.sql", "-- to do\n")], &["lint"]) },
    Case { input: "`verify --database-url` of a folder with `ALTER SYSTEM`", exit: 2, says: "verify: sql/0002_b.sql: `ALTER SYSTEM` changes the whole server you named", left: NOTHING, run: |db| online(db, &[("0001_a.sql", "SELECT 1;"), ("0002_b.sql", "ALTER SYSTEM SET work_mem = '8MB';")], &["verify", "--database-url", &db.url()]) },
    Case { input: "`fanout up` with two lines naming one target as different roles", exit: 2, says: "--targets file:sql: lines 1 and 2 both name ", left: NOTHING, run: |db| {
        let file = tempfile::NamedTempFile::new().expect("targets");
        let s = server();
        std::fs::write(file.path(), format!("postgres://{}@{}:{}/{}\npostgres://{OTHER_ROLE}@{}:{}/{}\n", s.user, s.host, s.port, db.name, s.host, s.port, db.name)).expect("write");
        let path = file.path().display().to_string();
        let run = Migrun::new().dir(&example_sql()).args(["fanout", "up", "--targets", &format!("file:{path}"), "--coord-url", &db.url()]).run();
        (run, path)
    } },
    Case { input: "`diff` of a database with no schema snapshot yet", exit: 2, says: "diff: nothing to compare with: this database has no schema snapshot yet", left: "nothing: diff only reads", run: |db| online(db, &[("0001_a.sql", "SELECT 1;")], &["diff"]) },
    Case { input: "`diff --against` a file that is not a schema file", exit: 2, says: "sql/schema.txt: not a migrun schema file: line 1: expected `<kind> <name>`, an item or a blank line", left: "nothing: diff only reads", run: |db| {
        let dir = sql_dir(&[("0001_a.sql", "SELECT 1;"), ("schema.txt", "CREATE TABLE t (id int);\n")]);
        let file = dir.path().join("schema.txt").display().to_string();
        db.migrun().dir(dir.path()).args(["up"]).run();
        let run = db.migrun().dir(dir.path()).args(["diff", "--against", &file]).run();
        (run, dir.path().display().to_string())
    } },
    Case { input: "`schema` without `--write` or `--check`", exit: 2, says: "the following required arguments were not provided: --write <FILE>", left: NOTHING, run: |_| setting(&["schema"], &[]) },
    Case { input: "`MIGRUN_CHECK_DRIFT=maybe`", exit: 2, says: "--check-drift / MIGRUN_CHECK_DRIFT: `maybe` is not valid; expected true or false", left: NOTHING, run: |_| setting(&["up"], &[("MIGRUN_CHECK_DRIFT", "maybe")]) },
    Case { input: "`--iam-auth` with `sslmode=disable`", exit: 2, says: "--iam-auth needs TLS: sslmode `disable` would send the token in the clear", left: NOTHING, run: |_| setting(&["status", "--iam-auth", "--sslmode", "disable"], &[]) },
    Case { input: "`MIGRUN_IAM_AUTH=maybe`", exit: 2, says: "--iam-auth / MIGRUN_IAM_AUTH: `maybe` is not valid; expected true or false", left: NOTHING, run: |_| setting(&["status"], &[("MIGRUN_IAM_AUTH", "maybe")]) },
    Case { input: "`MIGRUN_METRICS=prometheus`", exit: 2, says: "--metrics / MIGRUN_METRICS: `prometheus` is not valid; expected none or emf", left: NOTHING, run: |_| setting(&["status"], &[("MIGRUN_METRICS", "prometheus")]) },
    Case { input: "`exec` of a command that does not exist", exit: 127, says: "the command exited with 127", left: NOTHING, run: |_| {
        let run = Migrun::new().args(["exec", "--no-db", "--", "/nonexistent/app"]).run();
        (run, String::new())
    } },
];

fn render(cases: &[Case]) -> String {
    let mut doc = String::from(
        "# Bad input\n\nEvery bad input class migrun knows, with its exit code, the start of its message and what is\nleft behind. Generated from `tests/it/bad_input.rs`, which runs each case against the real\nbinary (and a real Postgres where a database is involved): the table cannot drift from what\nmigrun does. No case prints a password: the suite fails on any output that holds one.\n\n| input | exit | the message starts | left behind |\n|---|---|---|---|\n",
    );
    for case in cases {
        let says = case.says.replace('|', "\\|");
        doc.push_str(&format!("| {} | {} | `{}` | {} |\n", case.input, case.exit, says, case.left));
    }
    doc
}

#[test]
fn every_bad_input_class_behaves_as_the_table_says() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let db = TestDb::new();
    let mut wrong = Vec::new();
    for case in CASES {
        let (run, dir) = (case.run)(&db);
        let message = serde_json::from_str::<serde_json::Value>(run.stderr.lines().last().unwrap_or_default())
            .map(|event| event["message"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let shown = if dir.is_empty() { message.clone() } else { message.replace(&dir, "sql") };
        if run.code != case.exit || !shown.starts_with(case.says) {
            wrong.push(format!("{}: exit {} (table: {}), message {shown:?}", case.input, run.code, case.exit));
        }
        if case.left == NOTHING && run.stderr.contains("\"connected\"") {
            wrong.push(format!("{}: connected", case.input));
        }
    }
    assert!(wrong.is_empty(), "cases that do not behave as the table says:\n{}", wrong.join("\n"));
    let doc = render(CASES);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bad-input.md");
    if std::env::var_os("MIGRUN_BLESS").is_some() {
        std::fs::write(&path, &doc).expect("write docs/bad-input.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == doc, "docs/bad-input.md is out of date: run MIGRUN_BLESS=1 cargo test --test it bad_input");
}

//! Every file starts from the session state migrun set up: whatever a file changes with SET,
//! set_config, SET ROLE or SET SESSION AUTHORIZATION ends with the file, and migrun's own
//! history writes never depend on it.

use crate::harness::*;

/// The second file records the session state it ran in.
const PROBE: &str = "CREATE TABLE public.probe AS SELECT
    current_schema() AS schema, current_user AS role, session_user AS session_user,
    current_setting('search_path') AS search_path,
    current_setting('default_transaction_read_only') AS read_only,
    current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction,
    current_setting('lock_timeout') AS lock_timeout,
    current_setting('statement_timeout') AS statement_timeout,
    current_setting('client_min_messages') AS client_min_messages;
CREATE TABLE y (x int);
";

/// What the second file saw, and where its unqualified table went.
fn observed(db: &TestDb) -> Vec<String> {
    let mut state = db.query_strings(
        "SELECT concat_ws(' | ', schema, role, session_user, search_path, read_only, idle_in_transaction, lock_timeout, statement_timeout, client_min_messages) FROM public.probe",
    );
    state.extend(db.query_strings(
        "SELECT n.nspname || '.' || c.relname || ' owned by ' || pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'y'",
    ));
    state
}

fn run_pair(first: &str, no_transaction: bool, extra_env: &[(&str, &str)]) -> (Run, Vec<String>, TestDb) {
    let db = TestDb::new();
    let header = if no_transaction { "-- migrun:no-transaction\n" } else { "" };
    let first = format!("{header}{first}");
    let dir = sql_dir(&[("0001_first.sql", &first), ("0002_probe.sql", PROBE)]);
    let mut migrun = db.migrun();
    for (key, value) in extra_env {
        migrun.env(key, value);
    }
    let run = migrun.dir(dir.path()).args(["up"]).run();
    let state = if run.code == 0 { observed(&db) } else { Vec::new() };
    (run, state, db)
}

#[test]
fn what_a_file_sets_ends_with_the_file() {
    let role = format!("r{}", std::process::id());
    server()
        .connect("postgres")
        .batch_execute(&format!("CREATE ROLE {role}; GRANT ALL ON SCHEMA public TO {role}"))
        .ok();
    let (baseline, expected, _db) = run_pair("SELECT 1;", false, &[]);
    baseline.assert_code(0);
    assert!(expected[1].starts_with("public.y owned by "), "{expected:?}");
    let variants = [
        "CREATE SCHEMA app; SET search_path = app, public;".to_string(),
        "CREATE SCHEMA app; SET SESSION search_path TO app;".to_string(),
        "CREATE SCHEMA app; SELECT pg_catalog.set_config('search_path', 'app', false);".to_string(),
        "SELECT pg_catalog.set_config('search_path', '', false);".to_string(),
        format!("GRANT ALL ON SCHEMA public TO {role}; SET ROLE {role};"),
        format!("GRANT ALL ON SCHEMA public TO {role}; SET SESSION AUTHORIZATION {role};"),
        "SET default_transaction_read_only = on;".to_string(),
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;".to_string(),
        "SET idle_in_transaction_session_timeout = 0;".to_string(),
        "SET lock_timeout = 0; SET statement_timeout = '5ms';".to_string(),
        "SET client_min_messages = error;".to_string(),
    ];
    for variant in &variants {
        for no_transaction in [false, true] {
            let (run, state, db) = run_pair(variant, no_transaction, &[]);
            run.assert_code(0);
            assert_eq!(state, expected, "after `{variant}` (no-transaction: {no_transaction})");
            assert_eq!(
                db.query_strings("SELECT state || ' by ' || applied_by FROM public.migrun_history ORDER BY version"),
                db.query_strings("SELECT 'applied by ' || applied_by FROM public.migrun_history ORDER BY version"),
            );
            assert_eq!(db.count("SELECT count(*) FROM public.migrun_history WHERE state = 'applied'"), 2);
            assert_eq!(
                db.count(&format!("SELECT count(*) FROM pg_tables WHERE tableowner = '{role}'")),
                0,
                "after `{variant}`: the history table and later tables belong to the connecting role"
            );
        }
    }
    server().connect("postgres").batch_execute(&format!("REVOKE ALL ON SCHEMA public FROM {role}")).ok();
}

#[test]
fn one_file_per_run_and_all_files_in_one_run_give_the_same_schema() {
    let first = "CREATE SCHEMA app; SET search_path = app, public;";
    let (together, state, _db) = run_pair(first, false, &[]);
    together.assert_code(0);
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_first.sql", first), ("0002_probe.sql", PROBE)]);
    db.migrun().dir(dir.path()).args(["up", "--target", "1"]).run().assert_code(0);
    db.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    assert_eq!(observed(&db), state);
    assert!(state[1].starts_with("public.y"), "{state:?}");
}

#[test]
fn the_connection_options_stay_the_session_defaults() {
    // Through PGOPTIONS, and through the connection string's `options`.
    let through_url =
        |db: &TestDb| format!("{}?options=-c%20search_path%3Dops,public%20-c%20client_min_messages%3Dnotice", db.url());
    for use_url in [false, true] {
        let db = TestDb::new();
        db.client().batch_execute("CREATE SCHEMA ops").expect("schema");
        let dir = sql_dir(&[
            ("0001_first.sql", "-- migrun:no-transaction\nSELECT pg_catalog.set_config('search_path', '', false); SET client_min_messages = error;"),
            ("0002_probe.sql", PROBE),
        ]);
        let mut migrun = db.migrun();
        match use_url {
            true => migrun.env("DATABASE_URL", &through_url(&db)),
            false => migrun.env("PGOPTIONS", "-c search_path=ops,public -c client_min_messages=notice"),
        };
        migrun.dir(dir.path()).args(["up"]).run().assert_code(0);
        let state = observed(&db);
        assert!(state[0].starts_with("ops | "), "{state:?}");
        assert!(state[0].ends_with(" | notice"), "{state:?}");
        assert!(state[1].starts_with("ops.y"), "{state:?}");
        assert_eq!(
            db.count("SELECT count(*) FROM ops.migrun_history"),
            2,
            "the history table resolved through the search path"
        );
    }
}

/// What `pg_dump --schema-only` writes before the first object: every schema-dump baseline
/// starts with it.
const PG_DUMP_PREAMBLE: &str = "SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';
SET default_table_access_method = heap;
CREATE TABLE public.accounts (id integer NOT NULL);
";

#[test]
fn a_pg_dump_baseline_applies_and_is_recorded() {
    for no_transaction in [true, false] {
        let (run, state, db) = run_pair(PG_DUMP_PREAMBLE, no_transaction, &[]);
        run.assert_code(0);
        assert!(state[1].starts_with("public.y"), "{state:?}");
        assert!(state[0].ends_with(" | 1min | 5s | 0 | notice"), "timeouts and messages back to migrun's: {state:?}");
        assert_eq!(
            db.query_strings("SELECT state FROM public.migrun_history ORDER BY version"),
            vec!["applied", "applied"]
        );
    }
}

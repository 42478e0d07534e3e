//! Where the connection comes from: Secrets Manager (moto, through the real AWS SDK), libpq
//! variables and the password file, TLS modes against a TLS-only server, ECS task identity.

use std::path::Path;

use crate::harness::*;
use crate::services::{moto, moto_https, serve_json, tls_server};

/// AWS settings for moto: dummy keys, a region, no instance-metadata probing.
pub fn with_moto(m: &mut Migrun) -> &mut Migrun {
    m.env("AWS_ENDPOINT_URL", &moto().endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent")
}

pub fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{name}-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

pub fn secret(name: &str, value: &str) -> String {
    register_secret(value);
    moto().create_secret(name, value)
}

fn up_with(db: &TestDb, configure: impl FnOnce(&mut Migrun) -> &mut Migrun) -> Run {
    let mut m = Migrun::new();
    with_moto(&mut m).dir(&example_sql()).args(["up"]);
    configure(&mut m);
    let run = m.run();
    let _ = db;
    run
}

#[test]
fn secret_arn_with_json_key_and_empty_stage_fields() {
    let db = TestDb::new();
    let value = format!(r#"{{"DATABASE_URL":"{}","OTHER":"x"}}"#, db.password_url(PASSWORD));
    let arn = secret(&unique("prod/backend"), &value);
    let run = up_with(&db, |m| m.env("MIGRUN_SECRET_ID", &format!("{arn}:DATABASE_URL::")));
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
    assert!(run.stderr.contains("secret fetched"), "{}", run.stderr);
}

#[test]
fn database_url_holding_an_arn_is_resolved() {
    let db = TestDb::new();
    let arn = secret(&unique("url-in-env"), &format!(r#"{{"url":"{}"}}"#, db.password_url(PASSWORD)));
    up_with(&db, |m| m.env("DATABASE_URL", &format!("{arn}:url::"))).assert_code(0);
}

#[test]
fn plain_string_secret_by_name() {
    let db = TestDb::new();
    let name = unique("plain");
    secret(&name, &db.password_url(PASSWORD));
    up_with(&db, |m| m.env("MIGRUN_SECRET_ID", &name)).assert_code(0);
}

#[test]
fn rds_managed_secret_with_special_characters_in_the_password() {
    let db = TestDb::new();
    let s = server();
    let value = serde_json::json!({
        "engine": "postgres", "host": s.host, "port": s.port, "username": PASSWORD_ROLE, "password": PASSWORD, "dbname": db.name,
    })
    .to_string();
    let name = unique("rds");
    secret(&name, &value);
    up_with(&db, |m| m.env("MIGRUN_SECRET_ID", &name)).assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
}

#[test]
fn secret_problems_exit_3_naming_the_secret_never_its_value() {
    let db = TestDb::new();
    let keyed = unique("keyed");
    secret(&keyed, &format!(r#"{{"url":"{}"}}"#, db.password_url(PASSWORD)));
    let plain = unique("not-json");
    secret(&plain, &db.password_url(PASSWORD));
    let garbage = unique("garbage");
    secret(&garbage, r#"{"url":"not a connection string at all ://"}"#);
    let missing = unique("missing");
    let cases: Vec<(Vec<(&str, String)>, String)> = vec![
        (vec![("MIGRUN_SECRET_ID", missing.clone())], format!("secret {missing}: ResourceNotFoundException")),
        (
            vec![("MIGRUN_SECRET_ID", keyed.clone()), ("MIGRUN_SECRET_KEY", "nope".into())],
            format!("secret {keyed} has no key `nope` (it has: url)"),
        ),
        (
            vec![("MIGRUN_SECRET_ID", plain.clone()), ("MIGRUN_SECRET_KEY", "url".into())],
            format!("secret {plain} is not JSON"),
        ),
        (
            vec![("MIGRUN_SECRET_ID", garbage.clone()), ("MIGRUN_SECRET_KEY", "url".into())],
            format!("secret {garbage} key `url`: not a usable connection string"),
        ),
    ];
    for (vars, expected) in cases {
        let run = up_with(&db, |m| {
            for (k, v) in &vars {
                m.env(k, v);
            }
            m
        });
        run.assert_code(3);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(&expected), "expected {expected:?} in {error:?}");
        assert_eq!(run.result()["outcome"], "secret_unavailable");
    }
}

#[test]
fn no_aws_credentials_exit_3() {
    let run = Migrun::new()
        .env("AWS_ENDPOINT_URL", &moto().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent")
        .env("MIGRUN_SECRET_ID", "anything")
        .dir(&example_sql())
        .args(["up"])
        .run();
    run.assert_code(3);
    assert!(run.result()["error"].as_str().unwrap_or_default().contains("no AWS credentials"), "{}", run.stderr);
}

#[test]
fn ecs_container_credentials_are_used_without_static_keys() {
    let db = TestDb::new();
    let name = unique("ecs-creds");
    secret(&name, &db.url());
    let credentials = serde_json::json!({
        "AccessKeyId": "ASIATESTKEY", "SecretAccessKey": "test-secret-key", "Token": "test-token", "Expiration": "2099-01-01T00:00:00Z",
    });
    register_secret("test-secret-key");
    let base = serve_json(vec![("/creds".into(), credentials.to_string())]);
    let run = Migrun::new()
        .env("AWS_ENDPOINT_URL", &moto().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &format!("{base}/creds"))
        .env("MIGRUN_SECRET_ID", &name)
        .dir(&example_sql())
        .args(["up"])
        .run();
    run.assert_code(0);
}

#[test]
fn refused_secret_password_is_fetched_again_once() {
    let db = TestDb::new();
    let name = unique("stale");
    secret(&name, &db.password_url("stale-password"));
    let run = up_with(&db, |m| m.env("MIGRUN_SECRET_ID", &name));
    run.assert_code(4);
    assert_eq!(run.stderr.matches("secret fetched").count(), 2, "fetched, refused, fetched again:\n{}", run.stderr);
    assert!(run.stderr.contains("28P01"));
}

#[test]
fn libpq_variables_and_password_file() {
    let db = TestDb::new();
    let s = server();
    let pg = |m: &mut Migrun| {
        m.env("PGHOST", &s.host)
            .env("PGPORT", &s.port.to_string())
            .env("PGDATABASE", &db.name)
            .dir(&example_sql())
            .args(["status"]);
    };
    let mut trust = Migrun::new();
    pg(&mut trust);
    trust.env("PGUSER", "postgres").run().assert_code(0);

    let dir = tempfile::tempdir().expect("dir");
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("{}:{}:*:{PASSWORD_ROLE}:{}\n", s.host, s.port, PASSWORD.replace('\\', "\\\\").replace(':', "\\:")),
    )
    .expect("write");
    set_mode(&passfile, 0o600);
    let mut with_file = Migrun::new();
    pg(&mut with_file);
    with_file.env("PGUSER", PASSWORD_ROLE).env("PGPASSFILE", &passfile.display().to_string()).run().assert_code(0);

    set_mode(&passfile, 0o644);
    let mut readable = Migrun::new();
    pg(&mut readable);
    let run = readable.env("PGUSER", PASSWORD_ROLE).env("PGPASSFILE", &passfile.display().to_string()).run();
    run.assert_code(4);
    assert!(run.stderr.contains("readable by others"), "{}", run.stderr);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
}

#[test]
fn database_url_wins_over_secret_id_and_libpq_variables() {
    let db = TestDb::new();
    let run = Migrun::new()
        .env("DATABASE_URL", &db.url())
        .env("MIGRUN_SECRET_ID", "does-not-exist")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .dir(&example_sql())
        .args(["up"])
        .run();
    run.assert_code(0);
    let resolved = run.events().into_iter().find(|e| e["message"] == "connection resolved").expect("resolved event");
    assert_eq!(resolved["source"], "database_url");
}

fn tls_url(host: &str, params: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{params}", tls_server().port)
}

#[test]
fn tls_modes_against_a_tls_only_server() {
    let server = tls_server();
    let ca = server.ca.display().to_string();
    let other = server.other_ca.display().to_string();
    let cases = [
        (tls_url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")), 0, ""),
        (tls_url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")), 0, ""),
        (tls_url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={other}")), 4, "not signed by a CA in"),
        (tls_url("127.0.0.2", &format!("sslmode=verify-full&sslrootcert={ca}")), 4, "not valid for the host name"),
        (tls_url("127.0.0.2", &format!("sslmode=verify-ca&sslrootcert={ca}")), 0, ""),
        (tls_url("127.0.0.1", "sslmode=require"), 0, ""),
        (tls_url("127.0.0.1", "sslmode=disable"), 4, "no encryption"),
    ];
    for (url, code, expected) in cases {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("0001_t.sql"), "SELECT 1;\n").expect("write");
        let run = Migrun::new().env("DATABASE_URL", &url).dir(dir.path()).args(["status"]).run();
        assert_eq!(run.code, code, "{url}\n{}", run.stderr);
        assert!(run.stderr.contains(expected), "{url}: expected {expected:?} in\n{}", run.stderr);
    }
}

#[test]
fn sslmode_flag_and_pgsslmode_precedence() {
    let server = tls_server();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("0001_t.sql"), "SELECT 1;\n").expect("write");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    let status = |vars: &[(&str, &str)]| {
        let mut m = Migrun::new();
        m.env("DATABASE_URL", &url).dir(dir.path()).args(["status"]);
        for (k, v) in vars {
            m.env(k, v);
        }
        m.run().code
    };
    assert_eq!(status(&[("PGSSLMODE", "disable")]), 4, "PGSSLMODE applies when the URL has none");
    assert_eq!(status(&[("PGSSLMODE", "disable"), ("MIGRUN_SSLMODE", "require")]), 0, "--sslmode wins");
    let ca = server.ca.display().to_string();
    assert_eq!(status(&[("MIGRUN_SSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)]), 0);
}

#[test]
fn ecs_task_identity_lands_in_history_and_result() {
    let db = TestDb::new();
    let task = serde_json::json!({
        "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
        "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef",
        "Family": "backend-migrate", "Revision": "42",
    });
    let container = serde_json::json!({
        "Name": "app", "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:abc123",
        "ImageID": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    });
    let base = serve_json(vec![("/v4/abc".into(), container.to_string()), ("/v4/abc/task".into(), task.to_string())]);
    let run = db
        .migrun()
        .env("ECS_CONTAINER_METADATA_URI_V4", &format!("{base}/v4/abc"))
        .env("MIGRUN_RELEASE", "abc123")
        .dir(&example_sql())
        .args(["up"])
        .run();
    run.assert_code(0);
    let row = db
        .client()
        .query_one(
            "SELECT applied_by, ecs_task_arn, image, image_digest, release FROM migrun_history WHERE version = 1",
            &[],
        )
        .expect("row");
    let task_arn = "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef";
    assert_eq!(row.get::<_, String>(0), task_arn);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(task_arn));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:abc123")
    );
    assert!(row.get::<_, Option<String>>(3).unwrap_or_default().starts_with("sha256:9f86"));
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("abc123"));
    let result = run.result();
    assert_eq!(result["ecs_task_arn"], task_arn);
    assert!(run.stderr.contains("\"task_definition\":\"backend-migrate:42\""), "{}", run.stderr);

    let unreachable = db
        .migrun()
        .env("ECS_CONTAINER_METADATA_URI_V4", "http://127.0.0.1:1/v4/x")
        .dir(&example_sql())
        .args(["status"])
        .run();
    unreachable.assert_code(0);
    assert!(unreachable.stderr.contains("ECS task metadata unreachable"));
}

#[test]
fn exec_exports_a_json_secret_as_environment_variables() {
    let name = unique("app-env");
    secret(&name, r#"{"API_KEY":"api-value-7f3a","WORKERS":4}"#);
    register_secret("api-value-7f3a");
    let mut m = Migrun::new();
    with_moto(&mut m).args([
        "exec",
        "--no-db",
        "--env-from-secret",
        &name,
        "--",
        "sh",
        "-c",
        r#"test "$API_KEY" = api-value-7f3a && test "$WORKERS" = 4"#,
    ]);
    let run = m.run();
    run.assert_code(0);
    assert!(run.stderr.contains(r#""keys":"[\"API_KEY\", \"WORKERS\"]""#), "{}", run.stderr);

    let bad = unique("bad-env");
    secret(&bad, r#"{"not-a-name":"x"}"#);
    let mut m = Migrun::new();
    with_moto(&mut m).args(["exec", "--no-db", "--env-from-secret", &bad, "--", "sh", "-c", "echo must-not-run"]);
    let run = m.run();
    run.assert_code(3);
    assert!(run.stderr.contains("key `not-a-name` is not a valid environment variable name"), "{}", run.stderr);
    assert!(!run.stdout.contains("must-not-run"));
}

#[test]
fn secret_keys_that_collide_are_logged_and_the_lock_contract_is_kept() {
    // A key that overrides the environment wins, and is named (never its value).
    let name = unique("override-env");
    secret(&name, r#"{"HOME":"/srv/app-home-91c2"}"#);
    register_secret("/srv/app-home-91c2");
    let mut m = Migrun::new();
    m.env("HOME", "/root");
    with_moto(&mut m).args([
        "exec",
        "--no-db",
        "--env-from-secret",
        &name,
        "--",
        "sh",
        "-c",
        r#"test "$HOME" = /srv/app-home-91c2"#,
    ]);
    let run = m.run();
    run.assert_code(0);
    let warning = run.events().into_iter().find(|e| e["level"] == "WARN").expect("a warning");
    assert_eq!(warning["key"], "HOME", "{}", run.stderr);
    assert!(warning["message"].as_str().unwrap_or_default().contains("overrides the environment"), "{warning}");

    // A NUL byte cannot go into an environment variable: exit 3 naming the key.
    let nul = unique("nul-env");
    secret(&nul, r#"{"TOKEN":"abc\u0000def"}"#);
    let mut m = Migrun::new();
    with_moto(&mut m).args(["exec", "--no-db", "--env-from-secret", &nul, "--", "sh", "-c", "echo must-not-run"]);
    let run = m.run();
    run.assert_code(3);
    assert!(
        run.result()["error"].as_str().unwrap_or_default().contains("key `TOKEN` holds a NUL byte"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("must-not-run"));

    // Under exec --lock, DATABASE_URL and PG* are migrun's to set: refused, exit 2.
    let db = TestDb::new();
    for key in ["DATABASE_URL", "PGHOST", "PGPASSWORD"] {
        let reserved = unique("reserved-env");
        secret(&reserved, &format!(r#"{{"{key}":"elsewhere"}}"#));
        let mut m = db.migrun();
        with_moto(&mut m).args([
            "exec",
            "--lock",
            "--no-sql",
            "--env-from-secret",
            &reserved,
            "--",
            "sh",
            "-c",
            "echo must-not-run",
        ]);
        let run = m.run();
        run.assert_code(2);
        assert!(
            run.result()["error"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("key `{key}` would replace the connection")),
            "{}",
            run.stderr
        );
        assert!(!run.stdout.contains("must-not-run"));
    }
}

#[test]
fn a_secret_value_that_does_not_parse_is_never_echoed() {
    let db = TestDb::new();
    let value = "sv-Q7x9!k2";
    register_secret(value);
    for (shape, text) in [
        ("a=b-like", format!("{value}=x")),
        ("URL with a leading space and a query", format!(" postgres://app:{value}@127.0.0.1:1/x?{value}=1")),
        ("one slash", format!("postgres:/app:{value}@h/x")),
        ("bare", value.to_string()),
    ] {
        let name = unique("unusable");
        secret(&name, &format!(r#"{{"url":{}}}"#, serde_json::Value::String(text)));
        let run = up_with(&db, |m| m.env("MIGRUN_SECRET_ID", &name).env("MIGRUN_SECRET_KEY", "url"));
        run.assert_code(3);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("not a usable connection string"), "{shape}: {error}");
    }
}

/// Secrets Manager over HTTPS: the SDK trusts the system's CA certificates; with none (an app
/// image without ca-certificates) it trusts migrun's bundled Mozilla roots instead of nothing.
#[test]
fn secrets_manager_tls_trusts_the_system_store_else_the_bundled_roots() {
    let db = TestDb::new();
    let https = moto_https();
    let name = unique("over-https");
    register_secret(&db.password_url(PASSWORD));
    https.create_secret(&name, &db.password_url(PASSWORD));
    let ca = https.ca.as_ref().expect("a CA");
    let no_dir = tempfile::tempdir().expect("temp dir");
    let run_with = |cert_file: &Path| {
        let mut m = Migrun::new();
        with_moto(&mut m)
            .env("AWS_ENDPOINT_URL", &https.endpoint)
            .env("SSL_CERT_FILE", &cert_file.display().to_string())
            .env("SSL_CERT_DIR", &no_dir.path().display().to_string())
            .env("MIGRUN_SECRET_ID", &name)
            .dir(&example_sql())
            .args(["status"]);
        m.run()
    };
    // The system store (here: the test CA) is used when it has certificates.
    let trusted = run_with(ca);
    trusted.assert_code(0);
    assert!(!trusted.stderr.contains("bundled Mozilla roots"), "{}", trusted.stderr);
    // No system certificates: the bundled roots, which do not hold the test CA, so the
    // handshake is refused (exit 3, the secret named), not skipped.
    let empty = no_dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("empty bundle");
    let bundled = run_with(&empty);
    assert!(bundled.stderr.contains("bundled Mozilla roots"), "{}", bundled.stderr);
    bundled.assert_code(3);
    assert!(bundled.result()["error"].as_str().unwrap_or_default().contains(&name), "{}", bundled.stderr);
}

/// `fanout --targets secret:...`: the tenant list from Secrets Manager, as a list or as ids with
/// a URL template. The template holds a password: no line, result or recorded message shows
/// it, not even for a tenant that fails.
#[test]
fn fanout_reads_its_targets_from_a_secret() {
    let tenants: Vec<TestDb> = (0..3).map(|_| TestDb::new()).collect();
    let first = &tenants[0];
    let template = first.password_url(PASSWORD).replace(&first.name, "{id}");
    let names: Vec<String> =
        tenants.iter().map(|t| format!("\"{}\"", t.name)).chain(["\"no_such_tenant\"".into()]).collect();
    let arn = secret(&unique("tenants"), &format!(r#"{{"template":"{template}","ids":[{}]}}"#, names.join(",")));
    let mut m = Migrun::new();
    with_moto(&mut m).dir(&example_sql()).args(["fanout", "up", "--targets", &format!("secret:{arn}")]);
    m.args(["--coord-url", &first.url()]);
    let run = m.run();
    run.assert_code(13);
    assert_eq!(run.result()["fanout"]["current"], 3);
    assert!(run.result()["fanout"]["failed_targets"][0]["target"]
        .as_str()
        .is_some_and(|t| t.ends_with("/no_such_tenant")));
    for tenant in &tenants {
        assert_eq!(tenant.count("SELECT count(*) FROM migrun_history"), 4);
    }
    let recorded = first.query_strings("SELECT concat_ws(' ', target, outcome, message) FROM migrun_fanout").join("\n");
    assert!(recorded.contains("no_such_tenant") && recorded.contains("does not exist"), "{recorded}");
    for secret in [PASSWORD.to_string(), encode(PASSWORD)] {
        assert!(!recorded.contains(&secret), "a password in the run table: {recorded}");
    }
}

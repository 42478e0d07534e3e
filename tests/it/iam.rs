//! `--iam-auth`: the password of every login attempt is an RDS IAM auth token signed by the
//! real SDK from the default credential chain, checked byte for byte against botocore's
//! `generate_db_auth_token` for the time the token states. A stand-in endpoint
//! (tests/fixtures/iam/capture_server.py: TLS, start-up, cleartext password) captures them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::connections::{secret, unique, with_moto};
use crate::harness::*;

const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION: &str = "IQoJb3JpZ2luX2VjE/+=session";

/// The stand-in endpoint: its port, the capture file, and the process (killed on drop).
struct Endpoint {
    port: u16,
    capture: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Endpoint {
    /// Answers "starting up" to the first `retries` attempts.
    fn start(retries: u32) -> Endpoint {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new(tool("openssl"))
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let capture = dir.path().join("captured.tsv");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iam/capture_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([&cert, &key, &capture])
            .arg(retries.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the stand-in endpoint");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
        let port = line.trim().parse().expect("a port");
        Endpoint { port, capture, child, _dir: dir }
    }

    /// Every (user, password) captured, in order.
    fn captured(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.capture)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(u, p)| (u.to_string(), p.to_string())))
            .collect()
    }
}

/// botocore's token for host 127.0.0.1, `port`, `user`, eu-west-1, at the time `token` states.
fn botocore_token(token: &str, port: u16, user: &str, session: Option<&str>) -> String {
    let date = token.split("X-Amz-Date=").nth(1).and_then(|r| r.get(..16)).expect("a date in the token");
    let script = r#"
import datetime, sys
from unittest import mock
import botocore.session
port, user, key, secret, session, date = sys.argv[1:7]
s = botocore.session.get_session()
s.set_credentials(key, secret, session or None)
c = s.create_client('rds', region_name='eu-west-1')
at = datetime.datetime.strptime(date, '%Y%m%dT%H%M%SZ').replace(tzinfo=datetime.timezone.utc)
with mock.patch('botocore.auth.get_current_datetime', return_value=at):
    print(c.generate_db_auth_token('127.0.0.1', int(port), user), end='')
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), user, KEY, SECRET, session.unwrap_or(""), date])
        .output()
        .expect("botocore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Static credentials in the environment, a region, no metadata probing.
fn aws<'m>(m: &'m mut Migrun, session: Option<&str>) -> &'m mut Migrun {
    m.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent");
    if let Some(token) = session {
        m.env("AWS_SESSION_TOKEN", token);
    }
    m
}

/// Every captured password is botocore's token for its own time, and none is printed.
fn assert_tokens(endpoint: &Endpoint, run: &Run, user: &str, attempts: usize, session: Option<&str>) {
    let captured = endpoint.captured();
    assert_eq!(captured.len(), attempts, "attempts: {captured:?}\n{}", run.stderr);
    for (got_user, token) in &captured {
        assert_eq!(got_user, user);
        assert_eq!(*token, botocore_token(token, endpoint.port, user, session));
        let signature = token.rsplit("X-Amz-Signature=").next().unwrap_or_default();
        assert!(!run.stderr.contains(signature) && !run.stdout.contains(signature), "a token was printed");
    }
}

/// A connection string without a password, retried twice ("starting up"), then refused: a
/// token per attempt, each botocore's; exit 4 as any refused login.
#[test]
fn each_attempt_sends_a_fresh_token_from_a_connection_string() {
    let endpoint = Endpoint::start(2);
    let mut m = Migrun::new();
    aws(&mut m, None)
        .env("DATABASE_URL", &format!("postgres://app_user@127.0.0.1:{}/app", endpoint.port))
        .dir(&example_sql())
        .args(["status", "--iam-auth", "--connect-timeout", "20s"]);
    let run = m.run();
    run.assert_code(4);
    assert!(run.stderr.contains("password authentication failed"), "{}", run.stderr);
    assert_tokens(&endpoint, &run, "app_user", 3, None);
}

/// `iam=true` in the connection string is `--iam-auth`; a value that is not a boolean is exit 2.
#[test]
fn the_connection_string_can_ask_for_iam() {
    let endpoint = Endpoint::start(0);
    let mut m = Migrun::new();
    aws(&mut m, None)
        .env("DATABASE_URL", &format!("postgres://app_user@127.0.0.1:{}/app?iam=true&sslmode=require", endpoint.port))
        .dir(&example_sql())
        .args(["status"]);
    let run = m.run();
    run.assert_code(4);
    assert_tokens(&endpoint, &run, "app_user", 1, None);
    let mut m = Migrun::new();
    aws(&mut m, None)
        .env("DATABASE_URL", &format!("postgres://app_user@127.0.0.1:{}/app?iam=maybe", endpoint.port))
        .dir(&example_sql())
        .args(["status"]);
    let run = m.run();
    run.assert_code(2);
    assert!(run.stderr.contains("the connection string's `iam` parameter is not true or false"), "{}", run.stderr);
}

/// Session credentials (the ECS task role's kind) through MIGRUN_IAM_AUTH and libpq's variables.
#[test]
fn session_credentials_and_libpq_variables() {
    let endpoint = Endpoint::start(0);
    let mut m = Migrun::new();
    aws(&mut m, Some(SESSION))
        .env("MIGRUN_IAM_AUTH", "true")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", &endpoint.port.to_string())
        .env("PGUSER", "migrator")
        .env("PGDATABASE", "app")
        .dir(&example_sql())
        .args(["status"]);
    let run = m.run();
    run.assert_code(4);
    assert_tokens(&endpoint, &run, "migrator", 1, Some(SESSION));
    assert!(endpoint.captured()[0].1.contains("X-Amz-Security-Token="));
}

/// An RDS-managed secret shape with no password: user, host and port from the secret.
#[test]
fn an_rds_secret_without_a_password() {
    let endpoint = Endpoint::start(0);
    let value = serde_json::json!({"engine": "postgres", "host": "127.0.0.1", "port": endpoint.port, "username": "from_secret", "dbname": "app"});
    let name = unique("iam");
    secret(&name, &value.to_string());
    let mut m = Migrun::new();
    with_moto(&mut m);
    // moto's dummy keys sign the token too.
    m.env("MIGRUN_SECRET_ID", &name).dir(&example_sql()).args(["status", "--iam-auth"]);
    let run = m.run();
    run.assert_code(4);
    let captured = endpoint.captured();
    assert_eq!(captured.len(), 1, "{}", run.stderr);
    assert_eq!(captured[0].0, "from_secret");
    assert!(
        captured[0].1.starts_with(&format!(
            "127.0.0.1:{}/?Action=connect&DBUser=from_secret&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test%2F",
            endpoint.port
        )),
        "{}",
        captured[0].1
    );
}

/// No TLS refuses before connecting (exit 2); no credentials is exit 3 naming where they come from.
#[test]
fn no_tls_and_no_credentials_are_refused() {
    let endpoint = Endpoint::start(0);
    let url = format!("postgres://app@127.0.0.1:{}/app?sslmode=disable", endpoint.port);
    let mut m = Migrun::new();
    aws(&mut m, None).env("DATABASE_URL", &url).dir(&example_sql()).args(["status", "--iam-auth"]);
    let run = m.run();
    run.assert_code(2);
    assert!(run.stderr.contains("--iam-auth needs TLS"), "{}", run.stderr);
    assert!(endpoint.captured().is_empty());

    let url = format!("postgres://app@127.0.0.1:{}/app", endpoint.port);
    let run = Migrun::new()
        .env("DATABASE_URL", &url)
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent")
        .dir(&example_sql())
        .args(["status", "--iam-auth"])
        .run();
    run.assert_code(3);
    assert!(
        run.result()["message"].as_str().unwrap_or_default().starts_with("--iam-auth: no AWS credentials"),
        "{}",
        run.stderr
    );
    assert!(endpoint.captured().is_empty());

    // A host that names no region, and no AWS_REGION.
    let mut m = Migrun::new();
    aws(&mut m, None)
        .env("AWS_REGION", "")
        .env("DATABASE_URL", &url)
        .dir(&example_sql())
        .args(["status", "--iam-auth"]);
    let run = m.run();
    run.assert_code(2);
    assert!(run.stderr.contains("no AWS region"), "{}", run.stderr);
}

//! Test harness: one throwaway Postgres per test binary, a fresh database per test, and the
//! real migrun binary run as a process.
//!
//! `MIGRUN_TEST_DATABASE_URL` points the tests at an existing server instead (it must accept
//! `CREATE DATABASE` and `CREATE ROLE`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A role that logs in with a password (scram), for redaction and auth-failure tests. The
/// password holds every character that breaks naive URL handling.
pub const PASSWORD_ROLE: &str = "migrun_pw";
pub const PASSWORD: &str = "pw-S3cr@t:/?#%&=+ 'q\"";
/// Secret values a test put somewhere (Secrets Manager, files): no output of any run in the
/// whole suite may contain one.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Everything every run printed so far, so a secret registered later is checked against
/// outputs from before it too: the whole suite's output, in whatever order tests run.
static OUTPUTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn register_secret(value: &str) {
    if let Ok(outputs) = OUTPUTS.lock() {
        for output in outputs.iter() {
            assert!(!output.contains(value), "a secret value appeared in an earlier run's output:\n{output}");
        }
    }
    if let Ok(mut secrets) = SECRETS.lock() {
        secrets.push(value.to_string());
    }
}

/// Secrets no output of any test may contain.
pub fn secrets() -> Vec<String> {
    let mut all = vec![PASSWORD.to_string(), encode(PASSWORD), RDS_PASSWORD.to_string(), encode(RDS_PASSWORD)];
    if let Ok(registered) = SECRETS.lock() {
        all.extend(registered.iter().cloned());
    }
    all
}

/// Percent-encodes everything but unreserved characters, as a URL's user info needs.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Server {
    /// URL of the maintenance database, as superuser, without a database name.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The server's log, when the harness started the server.
    pub log: Option<PathBuf>,
}

/// A role shaped like an RDS application or migration role: NOSUPERUSER, no
/// pg_read_all_stats, a SCRAM password, its own `statement_timeout` and `lock_timeout`; it
/// owns the databases made for it (`TestDb::owned_by_rds_role`).
pub const RDS_ROLE: &str = "migrun_rds";
pub const RDS_PASSWORD: &str = "rds-Pa55:w/rd@?";
/// Another plain role, to hold locks that the RDS role's runs cannot see the details of.
pub const OTHER_ROLE: &str = "migrun_other";

static SERVER: OnceLock<Server> = OnceLock::new();

pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        crate::tools::check();
        let server = match std::env::var("MIGRUN_TEST_DATABASE_URL") {
            Ok(url) => external_server(&url),
            Err(_) => {
                let hba = format!("local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all {RDS_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n");
                let cluster = crate::services::start_cluster(&hba, "127.0.0.1", &[]);
                Server { host: "127.0.0.1".into(), port: cluster.port, user: "postgres".into(), log: Some(cluster.log) }
            }
        };
        let mut admin = server.connect("postgres");
        let create_role = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') THEN CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD {}; END IF; END $$",
            quote_literal(PASSWORD)
        );
        admin.batch_execute(&create_role).expect("create the password role");
        // PostgreSQL 13 still stores md5 hashes by default; RDS roles log in with SCRAM.
        let create_roles = format!(
            "SET password_encryption = 'scram-sha-256';
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{RDS_ROLE}') THEN
                 CREATE ROLE {RDS_ROLE} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD {};
                 ALTER ROLE {RDS_ROLE} SET statement_timeout = '3s';
                 ALTER ROLE {RDS_ROLE} SET lock_timeout = '500ms';
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OTHER_ROLE}') THEN
                 CREATE ROLE {OTHER_ROLE} LOGIN NOSUPERUSER;
               END IF;
             END $$",
            quote_literal(RDS_PASSWORD)
        );
        admin.batch_execute(&create_roles).expect("create the RDS-shaped roles");
        server
    })
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn external_server(url: &str) -> Server {
    let config: postgres::Config = url.parse().expect("MIGRUN_TEST_DATABASE_URL is a valid URL");
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    Server {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().unwrap_or("postgres").to_string(),
        log: None,
    }
}

/// An external tool the tests run (see tests/tools.rs).
pub fn tool(name: &str) -> std::path::PathBuf {
    crate::tools::tool(name)
}

/// Sends a real signal to a process the test started (and has not reaped).
pub fn send(pid: u32, signal: i32) {
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0, "kill");
}

/// Polls `condition` every few milliseconds until it holds, or panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Server {
    pub fn connect(&self, dbname: &str) -> postgres::Client {
        self.connect_as(dbname, &self.user)
    }

    /// A session as `role` (trusted on loopback, or the password role).
    pub fn connect_as(&self, dbname: &str, role: &str) -> postgres::Client {
        postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(role)
            .dbname(dbname)
            .application_name("migrun-test")
            .connect(postgres::NoTls)
            .expect("test connection")
    }
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        server().connect("postgres").batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
        TestDb { name }
    }

    /// A database owned by the RDS-shaped role, with a database-level
    /// `idle_in_transaction_session_timeout` as RDS parameter groups often set.
    pub fn owned_by_rds_role() -> TestDb {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        let mut admin = server().connect("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {RDS_ROLE}"))
            .expect("create the RDS role's database");
        admin
            .batch_execute(&format!("ALTER DATABASE {name} SET idle_in_transaction_session_timeout = '2s'"))
            .expect("set a database-level timeout");
        TestDb { name }
    }

    pub fn url(&self) -> String {
        let s = server();
        format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, self.name)
    }

    /// As the RDS-shaped role, with its SCRAM password.
    pub fn rds_url(&self) -> String {
        let s = server();
        format!("postgres://{RDS_ROLE}:{}@{}:{}/{}", encode(RDS_PASSWORD), s.host, s.port, self.name)
    }

    /// Through `pooler`, as the superuser.
    pub fn pooled_url(&self, pooler: &crate::services::Pooler) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", server().user, pooler.port, self.name)
    }

    /// The ERROR lines the server logged for this database, but for those `expected` names.
    pub fn server_log_errors_except(&self, expected: &[&str]) -> Vec<String> {
        let Some(log) = &server().log else { return Vec::new() };
        let text = std::fs::read_to_string(log).expect("read the server log");
        let prefix = format!("{}|", self.name);
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("ERROR:"))
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .map(str::to_string)
            .collect()
    }

    /// The ERROR lines the server logged for this database.
    pub fn server_log_errors(&self) -> Vec<String> {
        self.server_log_errors_except(&[])
    }

    pub fn password_url(&self, password: &str) -> String {
        let s = server();
        format!("postgres://{PASSWORD_ROLE}:{}@{}:{}/{}", encode(password), s.host, s.port, self.name)
    }

    pub fn client(&self) -> postgres::Client {
        server().connect(&self.name)
    }

    pub fn query_strings(&self, sql: &str) -> Vec<String> {
        self.client().query(sql, &[]).expect(sql).iter().map(|r| r.get(0)).collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }

    pub fn migrun(&self) -> Migrun {
        let mut m = Migrun::new();
        m.env("DATABASE_URL", &self.url());
        m
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(server) = SERVER.get() {
            let _ = server
                .connect("postgres")
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn example_sql() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sql")
}

/// A copy of a fixture in a temp dir, for tests that edit files.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture dir").flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy fixture file");
    }
    dir
}

/// The migrun binary with a clean environment (no DATABASE_URL or AWS variables leak in).
pub struct Migrun {
    command: Command,
}

impl Migrun {
    pub fn new() -> Migrun {
        let mut command = Command::new(env!("CARGO_BIN_EXE_migrun"));
        command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("MIGRUN_LOG_FORMAT", "json");
        Migrun { command }
    }

    /// For a command that needs no database: the clean environment and `--dir`.
    pub fn offline(dir: &Path) -> Migrun {
        let mut migrun = Migrun::new();
        migrun.dir(dir);
        migrun
    }

    pub fn env(&mut self, key: &str, value: &str) -> &mut Migrun {
        self.command.env(key, value);
        self
    }

    pub fn dir(&mut self, dir: &Path) -> &mut Migrun {
        self.env("MIGRUN_DIR", &dir.display().to_string())
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&mut self, args: I) -> &mut Migrun {
        self.command.args(args);
        self
    }

    pub fn arg_path(&mut self, path: &Path) -> &mut Migrun {
        self.command.arg(path);
        self
    }

    pub fn run(&mut self) -> Run {
        let output = self.command.output().expect("run migrun");
        Run::from(output)
    }

    pub fn spawn(&mut self) -> Child {
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn migrun")
    }
}

/// What one run printed and how it ended; checked for secrets on creation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for secret in secrets() {
            assert!(
                !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
                "a password appeared in migrun's output:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
        if let Ok(mut outputs) = OUTPUTS.lock() {
            outputs.push(format!("{}{}", run.stdout, run.stderr));
        }
        run
    }
}

impl Run {
    /// The last stderr line, which must be the result event.
    pub fn result(&self) -> serde_json::Value {
        let line = self.stderr.lines().last().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("last stderr line is not JSON ({e}): {line}\n{}", self.stderr));
        assert_eq!(value["event"], "result", "{line}");
        value
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    pub fn applied_files(&self) -> Vec<String> {
        self.result()["applied"]
            .as_array()
            .expect("applied list")
            .iter()
            .map(|a| file_name(a["file"].as_str().unwrap_or_default()))
            .collect()
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

pub fn file_name(path: &str) -> String {
    Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads a child's stderr line by line on a thread, so a test can wait for an event while
/// the process runs and still get the whole output at the end.
pub struct LiveRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LiveRun {
    pub fn start(mut child: Child) -> LiveRun {
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveRun { child, lines, seen: Vec::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("no stderr line containing {needle:?} within {limit:?}; saw:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// As `finish`, but a run still going after `limit` is killed and the test fails, and
    /// output that a process migrun left behind keeps open is not waited for past `limit`.
    pub fn finish_within(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("migrun did not exit within {limit:?}; it printed:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (tx, stdout) = mpsc::channel();
        if let Some(mut out) = self.child.stdout.take() {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
                let _ = tx.send(text);
            });
        }
        let stdout = stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_default();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        let output = Output { status, stdout: stdout.into_bytes(), stderr: (self.seen.join("\n") + "\n").into_bytes() };
        Run::from(output)
    }

    pub fn finish(mut self) -> Run {
        let status = self.child.wait().expect("wait for migrun");
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
        }
        self.seen.extend(self.lines.iter());
        let output = Output { status, stdout: stdout.into_bytes(), stderr: (self.seen.join("\n") + "\n").into_bytes() };
        Run::from(output)
    }
}

/// A migrations directory holding `files` (name, text).
pub fn sql_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create subdirectory");
        }
        std::fs::write(path, text).expect("write migration file");
    }
    dir
}

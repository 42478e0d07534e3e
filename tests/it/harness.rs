//! Test harness: one throwaway Postgres per test binary, a fresh database per test, and the
//! real migrun binary run as a process.
//!
//! `MIGRUN_TEST_DATABASE_URL` points the tests at an existing server instead (it must accept
//! `CREATE DATABASE` and `CREATE ROLE`).

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A role that logs in with a password (scram), for redaction and auth-failure tests. The
/// password holds every character that breaks naive URL handling.
pub const PASSWORD_ROLE: &str = "migrun_pw";
pub const PASSWORD: &str = "pw-S3cr@t:/?#%&=+ 'q\"";
/// Secrets no output of any test may contain.
pub fn secrets() -> Vec<String> {
    vec![PASSWORD.to_string(), encode(PASSWORD)]
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
}

static SERVER: OnceLock<Server> = OnceLock::new();
static CLEANUP: Mutex<Option<(i32, PathBuf)>> = Mutex::new(None);

pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let server = match std::env::var("MIGRUN_TEST_DATABASE_URL") {
            Ok(url) => external_server(&url),
            Err(_) => start_cluster(),
        };
        let mut admin = server.connect("postgres");
        let create_role = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') THEN CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD {}; END IF; END $$",
            quote_literal(PASSWORD)
        );
        admin.batch_execute(&create_role).expect("create the password role");
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
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.is_file())
                .collect();
            versions.sort();
            versions.pop()
        })
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL server package")
        })
}

/// Postgres refuses to run as root: run its programs as the `postgres` user when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call could reuse it.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = CString::new("postgres").ok()?;
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            panic!("tests run as root but there is no `postgres` user to run the test server as");
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn as_server_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

extern "C" fn stop_cluster() {
    if let Ok(mut guard) = CLEANUP.lock() {
        if let Some((pid, dir)) = guard.take() {
            // SAFETY: signalling and reaping our own child process.
            unsafe {
                libc::kill(pid, libc::SIGQUIT);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start_cluster() -> Server {
    let user = server_user();
    let dir = tempfile::Builder::new().prefix("migrun-test-pg-").tempdir().expect("temp dir").keep();
    let data = dir.join("data");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the test cluster dir");
    }
    let mut initdb = Command::new(pg_bin("initdb"));
    initdb.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"]).arg(&data);
    as_server_user(&mut initdb, user);
    let out = initdb.output().expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        data.join("pg_hba.conf"),
        format!("local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"),
    )
    .expect("write pg_hba.conf");
    let port = free_port();
    let postgres = pg_bin("postgres");
    let socket_dir = dir.clone();
    let (tx, rx) = mpsc::channel();
    // The server is the child of a thread that lives as long as the test binary, so
    // PR_SET_PDEATHSIG stops it even when the binary is killed.
    std::thread::spawn(move || {
        let mut command = Command::new(postgres);
        command
            .arg("-D")
            .arg(&data)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-p", &port.to_string(), "-k"])
            .arg(&socket_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_server_user(&mut command, user);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        // Reaped by `stop_cluster` at exit (waitpid), not through this handle.
        let child = command.spawn().expect("start postgres");
        tx.send(child.id() as i32).expect("report the server pid");
        std::mem::forget(child);
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().expect("server pid");
    *CLEANUP.lock().expect("cleanup lock") = Some((pid, dir));
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(stop_cluster);
    }
    let server = Server { host: "127.0.0.1".into(), port, user: "postgres".into() };
    wait_until(Duration::from_secs(30), "the test server accepts connections", || {
        postgres::Config::new()
            .host(&server.host)
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .is_ok()
    });
    server
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
        postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
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

    pub fn url(&self) -> String {
        let s = server();
        format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, self.name)
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

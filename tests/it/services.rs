//! Background services the tests need, started once per test binary and stopped when it
//! exits (normally, by panic, or killed): Postgres clusters, a TLS-only cluster with its own
//! certificates, and moto standing in for Secrets Manager. Traffic stays on loopback.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use crate::harness::wait_until;

/// Processes to stop and folders to remove at exit.
static OWNED: Mutex<Vec<(i32, Option<PathBuf>)>> = Mutex::new(Vec::new());
static ATEXIT: OnceLock<()> = OnceLock::new();

/// SIGQUIT to every service (Postgres's immediate shutdown), then SIGKILL to any still running
/// after 5 s: exiting must never wait on a service.
extern "C" fn stop_all() {
    if let Ok(mut owned) = OWNED.lock() {
        let owned: Vec<(i32, Option<PathBuf>)> = owned.drain(..).collect();
        for (pid, _) in &owned {
            // SAFETY: signalling our own child processes.
            unsafe { libc::kill(*pid, libc::SIGQUIT) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for (pid, dir) in owned {
            // SAFETY: reaping our own child processes, without blocking until the deadline.
            unsafe {
                while libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == 0 {
                    if std::time::Instant::now() > deadline {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Starts `command` as the child of a thread that lives as long as the test binary, so
/// PR_SET_PDEATHSIG stops it even when the binary is killed; `atexit` stops it otherwise.
fn spawn_owned(mut command: Command, cleanup: Option<PathBuf>, stderr: Option<std::fs::File>) -> i32 {
    ATEXIT.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(stop_all) };
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl and signal are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                // A test binary started in the background by a shell without job control
                // (scripts/test) has SIGINT and SIGQUIT ignored, and a service would inherit
                // that: moto then outlived the SIGQUIT meant to stop it.
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let stderr = stderr.map_or_else(Stdio::null, Stdio::from);
        let child = command.stdout(Stdio::null()).stderr(stderr).spawn();
        let _ = tx.send(child.as_ref().map(|c| c.id() as i32).map_err(|e| e.to_string()));
        // Reaped by `stop_all` (waitpid), not through this handle.
        std::mem::forget(child);
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().expect("service thread").unwrap_or_else(|e| panic!("cannot start a test service: {e}"));
    OWNED.lock().expect("owned list").push((pid, cleanup));
    pid
}

pub fn pg_bin(name: &str) -> PathBuf {
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

/// The major version of the server binary `name` the tests use (`postgres (PostgreSQL) 16.4`).
pub fn binary_major(name: &str) -> u32 {
    let out = Command::new(pg_bin(name)).arg("--version").output().expect("run --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last().unwrap_or_default();
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read a major from {text:?}"))
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

fn chown_to_server(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for the test server");
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A started test cluster.
pub struct Cluster {
    /// Its port on loopback.
    pub port: u16,
    /// Its server log: one line per message, each starting with `<database>|`.
    pub log: PathBuf,
}

/// initdb + postgres with `hba` as pg_hba.conf, listening on `listen`; returns once it accepts
/// connections. `settings` are extra `-c` options (ssl and its files, say). The binaries are
/// the first `initdb`/`postgres` on PATH (scripts/test puts another major's first to test it).
pub fn start_cluster(hba: &str, listen: &str, settings: &[(&str, String)]) -> Cluster {
    let user = server_user();
    let dir = tempfile::Builder::new().prefix("migrun-test-pg-").tempdir().expect("temp dir").keep();
    chown_to_server(&dir, user);
    let data = dir.join("data");
    let mut initdb = Command::new(pg_bin("initdb"));
    initdb.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"]).arg(&data);
    as_server_user(&mut initdb, user);
    let out = initdb.output().expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    let port = free_port();
    let log = dir.join("server.log");
    let mut command = Command::new(pg_bin("postgres"));
    command.arg("-D").arg(&data);
    command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
    command.args(["-c", &format!("listen_addresses={listen}"), "-c", "max_connections=200", "-p", &port.to_string()]);
    command.args(["-c", "log_line_prefix=%d|", "-c", "log_min_messages=warning"]);
    command.arg("-k").arg(&dir);
    for (name, value) in settings {
        command.args(["-c", &format!("{name}={value}")]);
    }
    as_server_user(&mut command, user);
    let file = std::fs::File::create(&log).expect("create the server log");
    chown_to_server(&log, user);
    spawn_owned(command, Some(dir.clone()), Some(file));
    wait_until(Duration::from_secs(30), "the test server accepts connections", || {
        postgres::Config::new()
            .host_path(&dir)
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .is_ok()
    });
    Cluster { port, log }
}

/// A cluster of one test's own that the test stops and starts again (a restart, a crash),
/// on the same port and data directory.
pub struct Restartable {
    dir: PathBuf,
    pub port: u16,
    pid: Mutex<i32>,
}

impl Restartable {
    pub fn start() -> Restartable {
        let user = server_user();
        let dir = tempfile::Builder::new().prefix("migrun-test-pg-").tempdir().expect("temp dir").keep();
        chown_to_server(&dir, user);
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(dir.join("data"));
        as_server_user(&mut initdb, user);
        let out = initdb.output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let cluster = Restartable { dir, port: free_port(), pid: Mutex::new(0) };
        cluster.start_again();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn accepts(&self) -> bool {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(1))
            .connect(postgres::NoTls)
            .is_ok()
    }

    /// Stops the server with `signal` (SIGINT: fast shutdown; SIGQUIT: immediate, a crash) and
    /// waits until it is gone.
    pub fn stop(&self, signal: i32) {
        let pid = *self.pid.lock().expect("pid");
        // SAFETY: signalling and reaping the server this test started.
        unsafe {
            libc::kill(pid, signal);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// Starts the server again; returns once it accepts connections.
    pub fn start_again(&self) {
        let user = server_user();
        let mut command = Command::new(pg_bin("postgres"));
        command.arg("-D").arg(self.dir.join("data"));
        command.args(["-c", "fsync=off", "-c", "listen_addresses=127.0.0.1", "-p", &self.port.to_string()]);
        command.arg("-k").arg(&self.dir);
        as_server_user(&mut command, user);
        *self.pid.lock().expect("pid") = spawn_owned(command, None, None);
        wait_until(Duration::from_secs(30), "the restarted server accepts connections", || self.accepts());
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.stop(libc::SIGQUIT);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a PgBouncer in front of the test server pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolerConfig {
    /// `pool_mode`: session, transaction or statement.
    pub mode: &'static str,
    /// `ignore_startup_parameters = options` (PgBouncer's default refuses `options`).
    pub ignore_options: bool,
    /// `server_round_robin = 1`: idle server connections are reused oldest first.
    pub round_robin: bool,
}

/// A PgBouncer in front of the test server.
pub struct Pooler {
    pub port: u16,
    pub config: PoolerConfig,
    /// Its log (a crash leaves its FATAL line there).
    pub log: PathBuf,
}

static POOLERS: Mutex<Vec<&'static Pooler>> = Mutex::new(Vec::new());

/// Debian's PgBouncer with `config`, every database of the test server behind it, users
/// trusted; one per configuration per test binary.
pub fn pgbouncer(config: PoolerConfig) -> &'static Pooler {
    let server = crate::harness::server();
    let mut poolers = POOLERS.lock().expect("pooler list");
    if let Some(pooler) = poolers.iter().find(|p| p.config == config) {
        return pooler;
    }
    let user = server_user();
    let dir = tempfile::Builder::new().prefix("migrun-test-pgbouncer-").tempdir().expect("temp dir").keep();
    let port = free_port();
    let log = dir.join("pgbouncer.log");
    let users = dir.join("users.txt");
    std::fs::write(&users, "\"postgres\" \"\"\n\"migrun_other\" \"\"\n").expect("write the auth file");
    let mut ini = format!(
        "[databases]\n* = host={} port={}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {}\nlogfile = {}\npool_mode = {}\nmax_client_conn = 500\ndefault_pool_size = 20\n",
        server.host,
        server.port,
        users.display(),
        log.display(),
        config.mode
    );
    if config.ignore_options {
        ini.push_str("ignore_startup_parameters = options\n");
    }
    if config.round_robin {
        ini.push_str("server_round_robin = 1\n");
    }
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).expect("write pgbouncer.ini");
    for path in [&dir, &users, &ini_path] {
        chown_to_server(path, user);
    }
    let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("pgbouncer is not installed (Debian pgbouncer; scripts/test installs it)");
    let mut command = Command::new(binary);
    command.arg(&ini_path);
    as_server_user(&mut command, user);
    spawn_owned(command, Some(dir), None);
    let pooler: &'static Pooler = Box::leak(Box::new(Pooler { port, config, log }));
    wait_until(Duration::from_secs(30), "PgBouncer accepts connections", || pooler.answers());
    poolers.push(pooler);
    pooler
}

impl Pooler {
    /// Whether a query through it works (it is running and reaches the server).
    pub fn answers(&self) -> bool {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
            .and_then(|mut c| c.simple_query("SELECT 1"))
            .is_ok()
    }
}

/// A cluster that accepts only TLS connections (hostssl), on 127.0.0.1 and 127.0.0.2, with a
/// certificate for `localhost` / 127.0.0.1 signed by `ca`; `other_ca` signed nothing of it.
pub struct TlsServer {
    pub port: u16,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
}

static TLS_SERVER: OnceLock<TlsServer> = OnceLock::new();

pub fn tls_server() -> &'static TlsServer {
    TLS_SERVER.get_or_init(|| {
        let user = server_user();
        let dir = tempfile::Builder::new().prefix("migrun-test-certs-").tempdir().expect("temp dir").keep();
        let certs = make_certificates(&dir);
        for file in ["server.crt", "server.key"] {
            chown_to_server(&dir.join(file), user);
        }
        chown_to_server(&dir, user);
        let hba = "local all all trust\nhostssl all all 127.0.0.0/8 trust\n";
        let settings = [
            ("ssl", "on".to_string()),
            ("ssl_cert_file", dir.join("server.crt").display().to_string()),
            ("ssl_key_file", dir.join("server.key").display().to_string()),
        ];
        let port = start_cluster(hba, "127.0.0.1,127.0.0.2", &settings).port;
        TlsServer { port, ca: certs.0, other_ca: certs.1 }
    })
}

/// A CA, a server certificate it signs (CA:FALSE, SAN localhost and 127.0.0.1: rustls rejects
/// a self-signed CA certificate used as the server's), and an unrelated second CA.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (install it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=migrun test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    std::fs::set_permissions(dir.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");
    (dir.join("ca.crt"), dir.join("other-ca.crt"))
}

/// moto's server, standing in for Secrets Manager.
pub struct Moto {
    pub endpoint: String,
    /// The CA that signed its certificate, when it serves HTTPS.
    pub ca: Option<PathBuf>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let probe = Command::new("python3").args(["-c", "import moto.server, boto3"]).output();
        assert!(
            probe.map(|o| o.status.success()).unwrap_or(false),
            "moto is missing: pip install 'moto[server]' (.ci/run does)"
        );
        let port = free_port();
        let mut command = Command::new("python3");
        command.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        spawn_owned(command, None, None);
        wait_until(Duration::from_secs(30), "moto answers", || http_get(port, "/moto-api/").is_some());
        Moto { endpoint: format!("http://127.0.0.1:{port}"), ca: None }
    })
}

static MOTO_HTTPS: OnceLock<Moto> = OnceLock::new();

/// A second moto serving HTTPS with a certificate for 127.0.0.1 signed by a test CA.
pub fn moto_https() -> &'static Moto {
    MOTO_HTTPS.get_or_init(|| {
        moto();
        let dir = tempfile::Builder::new().prefix("migrun-test-moto-certs-").tempdir().expect("temp dir").keep();
        let (ca, _) = make_certificates(&dir);
        let port = free_port();
        let mut command = Command::new("python3");
        command.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string(), "-c"]);
        command.arg(dir.join("server.crt")).arg("-k").arg(dir.join("server.key"));
        spawn_owned(command, None, None);
        let moto = Moto { endpoint: format!("https://127.0.0.1:{port}"), ca: Some(ca) };
        wait_until(Duration::from_secs(30), "moto answers over HTTPS", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    })
}

impl Moto {
    /// Creates a secret through boto3 and returns its ARN.
    pub fn create_secret(&self, name: &str, value: &str) -> String {
        // The value goes through stdin: a large one (over 128 KiB) cannot be an argument.
        let script = "import boto3, sys\n\
                      c = boto3.client('secretsmanager', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test', verify=sys.argv[3] if sys.argv[3] else None)\n\
                      print(c.create_secret(Name=sys.argv[2], SecretString=sys.stdin.read())['ARN'])\n";
        let ca = self.ca.as_ref().map(|c| c.display().to_string()).unwrap_or_default();
        let mut child = Command::new("python3")
            .args(["-c", script, &self.endpoint, name, &ca])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run boto3");
        child.stdin.take().expect("stdin").write_all(value.as_bytes()).expect("write the value");
        let out = child.wait_with_output().expect("boto3");
        assert!(out.status.success(), "create_secret: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A plain HTTP GET on loopback; the body on a 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// A loopback HTTP server answering every GET for `path` prefix matches with a JSON body;
/// returns its base URL. Runs for the rest of the test binary.
pub fn serve_json(routes: Vec<(String, String)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || answer(stream, &routes));
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn answer(mut stream: TcpStream, routes: &[(String, String)]) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = match routes.iter().find(|(p, _)| *p == path) {
        Some((_, body)) => format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// An AWS JSON-protocol endpoint that fails every call with `status` and error code `code`
/// (a throttled or failing Secrets Manager).
pub fn serve_aws_error(status: &'static str, code: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body its Content-Length says.
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = format!("{{\"__type\":\"{code}\",\"message\":\"Rate exceeded\"}}");
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

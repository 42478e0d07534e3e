//! A Postgres to experiment on: a throwaway cluster started from the local server binaries
//! (`initdb`, `postgres`; as the `postgres` user when run as root, since Postgres refuses
//! root), or a server someone named, on which migrun only creates and drops databases of its
//! own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::tls::{self, SslMode, TlsSettings};
use crate::db::url::DatabaseUrl;

/// The scratch server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("scratch Postgres: no server binaries (initdb) on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL server package, or name a server: --database-url for verify and schema, --scratch-url for diff --scratch")]
    NoBinaries,
    #[error("scratch Postgres: cannot start one: {0}")]
    Start(String),
    #[error("scratch Postgres: {0}")]
    Server(String),
    #[error("scratch Postgres: cannot reach the server you named ({server}): {reason}; check the host, port and that it is up")]
    Unreachable { server: String, reason: String },
    #[error("scratch Postgres: TLS to the server you named ({server}) failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("scratch Postgres: database {0} on the server you named is not empty (it has tables, views, sequences or other relations); name a server's maintenance database (postgres): migrun creates and drops scratch databases of its own there")]
    NotEmpty(String),
    #[error("verify: {file}: `{statement}` changes the whole server you named, not a scratch database; verify such a folder on a scratch server of its own (run verify without --database-url)")]
    ClusterWide { file: String, statement: String },
    #[error("scratch Postgres: {0}")]
    Interrupted(#[from] crate::signals::Interrupted),
}

/// A server to create scratch databases on.
pub struct Server {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    tls_settings: TlsSettings,
    /// Its major version (`STRATEGY` for `CREATE DATABASE` is 15 and later).
    major: u32,
    /// Whether migrun may touch the catalogs (to fake an interrupted index build).
    pub superuser: bool,
    cluster: Option<Cluster>,
}

/// A throwaway cluster: stopped and removed when dropped.
struct Cluster {
    dir: PathBuf,
    postgres: Child,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGINT: Postgres's fast shutdown.
        // SAFETY: signalling the child this process started and has not reaped.
        unsafe { libc::kill(self.postgres.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.postgres.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// Starts a throwaway cluster from the local binaries, after removing what runs that
    /// died without cleaning up left in the temp folder.
    pub async fn start() -> Result<Server, ScratchError> {
        let bin = server_binaries().ok_or(ScratchError::NoBinaries)?;
        sweep_scratch_dirs(&std::env::temp_dir());
        let started = Instant::now();
        let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("{SCRATCH_DIR_PREFIX}{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ScratchError::Start(format!("{}: {e}", dir.display())))?;
        let owner = as_postgres_user(&dir)?;
        let run = |program: &str| {
            let mut command = Command::new(bin.join(program));
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            command
        };
        let data = dir.join("data");
        let initdb = run("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| ScratchError::Start(format!("initdb: {e}")))?;
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ScratchError::Start(format!("initdb: {}", String::from_utf8_lossy(&initdb.stderr).trim())));
        }
        let port = free_port().map_err(|e| ScratchError::Start(format!("no free port: {e}")))?;
        let mut postgres = run("postgres");
        // The server must not outlive migrun (killed, or aborted after a second signal):
        // SIGINT, Postgres's fast shutdown, when the thread that started it ends (the main
        // thread, which ends with the process).
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            postgres.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let postgres = postgres
            .arg("-D")
            .arg(&data)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=50", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ScratchError::Start(format!("postgres: {e}")))?;
        let cluster = Cluster { dir, postgres };
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(port).user("postgres").dbname("postgres");
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let tls = tls::connector(&TlsSettings { mode: SslMode::Disable, root_cert: None })
            .map_err(|e| ScratchError::Start(e.to_string()))?;
        let settings = TlsSettings { mode: SslMode::Disable, root_cert: None };
        let mut server =
            Server { config, tls, tls_settings: settings, major: 0, superuser: true, cluster: Some(cluster) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match server.connect("postgres").await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(ScratchError::Start(format!("the server did not accept connections: {e}"))),
            }
        }
        server.major = server.read_major().await?;
        tracing::info!(
            port,
            major = server.major,
            start_ms = started.elapsed().as_millis() as u64,
            "scratch Postgres started"
        );
        Ok(server)
    }

    /// A server someone named; its database must hold no tables (it is only used to create
    /// migrun's own scratch databases).
    pub async fn at(url: &str) -> Result<Server, ScratchError> {
        let (_, config, params) =
            DatabaseUrl::parse(url.to_string()).map_err(|e| ScratchError::Server(e.to_string()))?;
        let mode = params.sslmode.as_deref().and_then(SslMode::parse).unwrap_or(SslMode::Prefer);
        let settings = TlsSettings { mode, root_cert: params.sslrootcert.map(PathBuf::from) };
        let tls = tls::connector(&settings).map_err(|e| ScratchError::Server(e.to_string()))?;
        let mut config = config;
        config.ssl_mode(mode.for_driver());
        let dbname = config.get_dbname().unwrap_or("postgres").to_string();
        let mut server = Server { config, tls, tls_settings: settings, major: 0, superuser: false, cluster: None };
        let client = server.connect(&dbname).await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'),
                        coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
                        current_setting('server_version_num')::int / 10000",
                &[],
            )
            .await
            .map_err(|e| ScratchError::Server(e.to_string()))?;
        let column = |e: tokio_postgres::Error| ScratchError::Server(crate::db::failure::error_chain(&e));
        if row.try_get::<_, i64>(0).map_err(column)? > 0 {
            return Err(ScratchError::NotEmpty(dbname));
        }
        server.superuser = row.try_get(1).map_err(column)?;
        server.major = u32::try_from(row.try_get::<_, i32>(2).map_err(column)?).unwrap_or(0);
        Ok(server)
    }

    /// Whether this is a throwaway cluster of migrun's own (not a server someone named).
    pub fn is_scratch(&self) -> bool {
        self.cluster.is_some()
    }

    /// The prefix of this run's scratch databases: this host and this process, so a later run
    /// on the same host can tell a dead run's leftovers from a live run's databases.
    pub fn database_prefix(&self) -> String {
        format!("{}{}_", database_prefix_of_host(), std::process::id())
    }

    /// Drops the scratch databases that runs on this host which are gone left behind (killed,
    /// or ended at once by a second signal) on a server someone named.
    pub async fn sweep_databases(&self) {
        if self.cluster.is_some() {
            return;
        }
        let Ok(admin) = self.connect(self.maintenance()).await else { return };
        let prefix = database_prefix_of_host();
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let Ok(rows) = admin.query("SELECT datname FROM pg_database WHERE datname LIKE $1", &[&pattern]).await else {
            return;
        };
        for name in rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()) {
            let pid = name.strip_prefix(&prefix).and_then(|rest| rest.split('_').next()?.parse().ok());
            if pid.is_some_and(|pid: i32| !process_alive(pid)) {
                tracing::warn!(database = %name, "dropping a scratch database a verify run that is gone left behind");
                self.drop_database(&name).await;
            }
        }
    }

    /// The server's major version.
    async fn read_major(&self) -> Result<u32, ScratchError> {
        let client = self.connect("postgres").await?;
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int / 10000", &[])
            .await
            .map_err(|e| ScratchError::Server(crate::db::failure::error_chain(&e)))?;
        let major: i32 = row.try_get(0).map_err(|e| ScratchError::Server(crate::db::failure::error_chain(&e)))?;
        Ok(u32::try_from(major).unwrap_or(0))
    }

    /// A session on database `dbname`.
    pub async fn connect(&self, dbname: &str) -> Result<Client, ScratchError> {
        let mut config = self.config.clone();
        config.dbname(dbname).application_name("migrun verify");
        let (client, connection) = config.connect(self.tls.clone()).await.map_err(|e| self.connect_error(&e))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A failed connection, classified as every other command's: unreachable and TLS failures
    /// (exit 4, with the TLS explanation) apart from what the server refused.
    fn connect_error(&self, e: &tokio_postgres::Error) -> ScratchError {
        let failure = crate::db::failure::PgFailure::from_pg(e);
        let server = crate::db::session::describe_server(&self.config);
        if let Some(reason) = crate::db::connect::tls_failure(&failure, &self.tls_settings) {
            return ScratchError::Tls { server, reason };
        }
        if crate::db::connect::is_transient(&failure) {
            return ScratchError::Unreachable { server, reason: failure.to_string() };
        }
        ScratchError::Server(failure.to_string())
    }

    /// Creates database `name` (a copy of `template`, when given).
    pub async fn create(&self, name: &str, template: Option<&str>) -> Result<(), ScratchError> {
        let admin = self.connect(self.maintenance()).await?;
        let sql = match template {
            // A file copy of a small template is the fastest (15 and later default to WAL_LOG;
            // older servers know only the copy, and no STRATEGY option).
            Some(template) if self.major >= 15 => {
                format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\" STRATEGY FILE_COPY")
            }
            Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
            None => format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
        };
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| ScratchError::Server(format!("{sql}: {}", crate::db::failure::error_chain(&e))))
    }

    /// Drops database `name`, ending its sessions.
    pub async fn drop_database(&self, name: &str) {
        if let Ok(admin) = self.connect(self.maintenance()).await {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }

    /// Its PostgreSQL major.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The database migrun connects to for creating and dropping the others.
    pub fn maintenance(&self) -> &str {
        match &self.cluster {
            Some(_) => "postgres",
            None => self.config.get_dbname().unwrap_or("postgres"),
        }
    }
}

/// The temp folder's scratch clusters: `migrun-verify-<pid>-<nanos>`.
const SCRATCH_DIR_PREFIX: &str = "migrun-verify-";

/// `migrun_verify_<host hash>_`: scratch databases on a named server, by host.
fn database_prefix_of_host() -> String {
    use sha2::Digest;
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most the buffer's length.
    unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    let hash: String = sha2::Sha256::digest(&name[..end])[..3].iter().map(|b| format!("{b:02x}")).collect();
    format!("migrun_verify_{hash}_")
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

/// Removes the scratch clusters of runs whose process is gone (and whose server is not
/// running any more): 46 MB each.
fn sweep_scratch_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SCRATCH_DIR_PREFIX).and_then(|r| r.split('-').next()?.parse::<i32>().ok())
        else {
            continue;
        };
        let postmaster = std::fs::read_to_string(entry.path().join("data").join("postmaster.pid")).ok();
        let server_pid = postmaster.and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        if process_alive(pid) || server_pid.is_some_and(process_alive) {
            continue;
        }
        tracing::info!(dir = %entry.path().display(), "removing a scratch cluster a verify run that is gone left behind");
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// `initdb`'s directory: on PATH, else the newest /usr/lib/postgresql/<major>/bin.
fn server_binaries() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| d.join("initdb").is_file()) {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// As root, the cluster belongs to `postgres` (Postgres refuses to run as root).
fn as_postgres_user(dir: &Path) -> Result<Option<(u32, u32)>, ScratchError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").map_err(|e| ScratchError::Start(e.to_string()))?;
    // SAFETY: a valid NUL-terminated name; the returned record is read at once, before any
    // other call that could reuse it.
    let (uid, gid) = unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            return Err(ScratchError::Start(
                "running as root needs a `postgres` user to run the scratch server as".into(),
            ));
        }
        ((*entry).pw_uid, (*entry).pw_gid)
    };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| ScratchError::Start(format!("chown {}: {e}", dir.display())))?;
    Ok(Some((uid, gid)))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

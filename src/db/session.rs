//! Connecting to Postgres: session settings, retries at start-up, the session itself.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::endpoint::{ConnectionSpec, Endpoint, EndpointError, Source};
use super::failure::{error_chain, PgFailure};
use super::options::{self, Setting};
use super::pooler::{self, PoolMode};
use super::tls::{self, TlsError, TlsSettings};
use super::url::first_host;
use crate::backoff::Backoff;
use crate::duration::Millis;
use crate::signals::{Interrupted, Shutdown};

/// Why no usable session could be opened (or kept).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection source could not be resolved (secret, libpq variables, sslmode).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Every attempt failed with a transient error until `--connect-timeout`.
    #[error("cannot reach the database at {server} after {attempts} attempts over {waited_s:.1}s: {reason}; check the host, port, security groups and that the server is up (--connect-timeout to wait longer)")]
    Unreachable { server: String, attempts: u32, waited_s: f64, reason: String },
    /// The server answered and said no (login, database, permissions).
    #[error("the database at {server} refused the connection: {failure}")]
    Refused { server: String, failure: PgFailure },
    /// The backend changed between statements: a transaction-pooling proxy.
    #[error("the connection to {server} goes through a transaction-pooling proxy (backend pid changed from {first} to {second}); advisory locks and session settings cannot work through it: point migrun at the database directly (not PgBouncer in transaction mode)")]
    TransactionPooler { server: String, first: i32, second: i32 },
    /// A pooler hands the session's server connection to others between transactions.
    #[error("the connection to {server} goes through a pooler in {mode} mode (PgBouncer `pool_mode = {mode}`): migrun's advisory lock and session settings need one server session for the whole run, so nothing was done; point migrun at the database directly, or at a pool in session mode")]
    PoolMode { server: String, mode: &'static str },
    /// The pooler refuses start-up options and these cannot be made with SET.
    #[error("the server at {server} refuses start-up options (a pooler: PgBouncer without `ignore_startup_parameters = options`) and the connection's own options cannot be made with SET: {reason}; remove them from the connection string's `options` / PGOPTIONS, or connect to the database directly")]
    Options { server: String, reason: String },
    /// The connection broke after it was made.
    #[error("lost the database connection: {failure}")]
    Lost { failure: PgFailure },
    /// A stop was requested while connecting.
    #[error("{0} while connecting")]
    Interrupted(#[from] Interrupted),
    /// The TLS handshake failed (not retried).
    #[error("TLS to {server} failed: {reason}")]
    Tls { server: String, reason: String },
    /// The TLS configuration itself is unusable (the CA file).
    #[error(transparent)]
    TlsSetup(#[from] TlsError),
}

/// Settings of every session migrun opens, sent in the start-up packet.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `lock_timeout` for migration statements.
    pub lock_timeout: Millis,
    /// `statement_timeout` for migration statements.
    pub statement_timeout: Millis,
    /// `idle_in_transaction_session_timeout` for the session.
    pub idle_in_transaction_timeout: Millis,
    /// `application_name`, unless the connection string sets one.
    pub application_name: String,
}

/// From PostgreSQL 14 on: the server never ends an idle session of migrun's (`idle_session_timeout`
/// set on the database or role would end a session that waits for the lock, or holds it while
/// `exec --lock` runs a command), and it notices within a second that migrun is gone (killed,
/// or exited after the shutdown grace) and rolls back, instead of running the orphaned
/// statement, with its locks, to its end. Older servers have neither setting and reject the
/// names, even in the start-up packet, so they are set once the version is known.
const PROTECT_14: &str = "SET idle_session_timeout = 0; SET client_connection_check_interval = '1s'";
/// From PostgreSQL 17 on, `transaction_timeout` set on a database or role would end a session
/// whose migration runs long.
const PROTECT_17: &str = "SET transaction_timeout = 0";

/// Puts a session back into the state migrun set up after a migration file ran: the file's
/// `SET`, `set_config(.., false)`, `SET ROLE` and `SET SESSION AUTHORIZATION` end here.
/// `RESET ALL` returns every setting to the session's default, which keeps the start-up
/// options (migrun's and the connection string's `options` or PGOPTIONS); it leaves the role
/// and the session user alone, hence the two statements before it.
const RESTORE: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL";

/// The same protection as `set_config` calls, which a SELECT can make conditional.
const PROTECT_14_CALLS: &str = "pg_catalog.set_config('idle_session_timeout', '0', false), pg_catalog.set_config('client_connection_check_interval', '1s', false)";
const PROTECT_17_CALLS: &str = "pg_catalog.set_config('transaction_timeout', '0', false)";

/// How often a connection that keeps failing says so.
const RETRY_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the server said about itself when the session started.
#[derive(Debug, Clone, Default)]
struct ServerFacts {
    /// `server_version`, e.g. `15.4` or `16.1 (Debian 16.1-1)`.
    version: String,
    /// `session_authorization`: who the session is.
    user: String,
}

impl ServerFacts {
    fn read<S, T>(connection: &tokio_postgres::Connection<S, T>) -> ServerFacts
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let get = |name: &str| connection.parameter(name).unwrap_or_default().to_string();
        ServerFacts { version: get("server_version"), user: get("session_authorization") }
    }

    /// The major version (`9` for 9.6), 0 when the server did not say.
    fn major(&self) -> u32 {
        let digits: String = self.version.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    }
}

/// What is known of the way from the session to its server backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPath {
    /// No statement has answered yet.
    Unknown,
    /// Straight to Postgres: the start-up key names the backend's own pid.
    Direct,
    /// Through a pooler (or proxy), how it pools not yet known.
    Pooled,
    /// Through a pooler that keeps one server connection for the whole session.
    SessionPool,
}

/// A connected session and what migrun learned about it.
pub struct Session {
    /// The driver's client, for statements.
    pub client: Client,
    /// `host:port/dbname as user`, for messages.
    pub server: String,
    /// The first backend pid any statement saw (0 until then).
    backend_pid: Cell<i32>,
    connection: tokio::task::JoinHandle<()>,
    /// For cancel requests, which open a connection of their own.
    tls: MakeRustlsConnect,
    /// The configuration the session was opened with: cancel requests go to its hosts, and a
    /// second session (to learn how a pooler pools) is opened with it.
    config: tokio_postgres::Config,
    /// The pid of the start-up key (BackendKeyData): the backend's own pid on a direct session.
    key_pid: Option<i32>,
    /// The start-up options as settings (the connection's own, then migrun's), to make with SET
    /// where a pooler refused or dropped them; an error when they cannot be made so.
    startup: Result<Vec<Setting>, String>,
    /// Whether the start-up packet carried the options (false: the server refused them).
    options_sent: bool,
    /// What is known of the way to the backend.
    path: Cell<BackendPath>,
    /// TLS as resolved from every source.
    tls_settings: TlsSettings,
    /// The connection as a child process (`exec --lock`) should get it, password included.
    pub child_url: String,
    /// The same connection as libpq variables would give it.
    pub child_config: tokio_postgres::Config,
    /// The server's version and the session's user, from the start-up answer.
    facts: ServerFacts,
    /// The database connected to.
    database: String,
}

impl Session {
    /// Asks the server to cancel the statement running on this session, and waits (briefly)
    /// until the server has taken the request (see `db::cancel`).
    pub async fn cancel(&self) -> Result<(), String> {
        super::cancel::cancel(&self.client.cancel_token(), &self.config, &self.tls).await
    }

    /// Ends the session politely (Terminate, then close), so the server logs no "connection
    /// reset" and the process does not exit with a live socket.
    pub async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.connection).await;
    }

    /// The server process behind this session, once known (0 before).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid.get()
    }

    /// Fails when the backend behind this connection changed, which only a transaction-pooling
    /// proxy does.
    /// The first pid seen is logged as the `connected` event, with what the server said about
    /// itself at start-up: no statement of its own.
    pub fn check_backend(&self, pid: i32) -> Result<(), ConnectError> {
        let first = self.backend_pid.get();
        if first == 0 {
            self.backend_pid.set(pid);
            let direct = self.key_pid == Some(pid);
            self.path.set(if direct { BackendPath::Direct } else { BackendPath::Pooled });
            let facts = &self.facts;
            tracing::info!(server = %self.server, backend_pid = pid, server_version = %facts.version, database = %self.database, user = %facts.user, pooled = !direct, "connected");
            return Ok(());
        }
        if pid == first {
            return Ok(());
        }
        Err(ConnectError::TransactionPooler { server: self.server.clone(), first, second: pid })
    }

    /// The pid of the start-up key, as a bind parameter: 0 (no backend's pid) when unknown.
    pub fn key_pid(&self) -> i32 {
        self.key_pid.unwrap_or(0)
    }

    /// The TLS settings the session was opened with (for a child process's connection).
    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls_settings
    }

    /// The server's major version (0 when it did not say).
    pub fn server_major(&self) -> u32 {
        self.facts.major()
    }

    /// Whether nothing sits between the session and its backend.
    pub fn is_direct(&self) -> bool {
        self.path.get() == BackendPath::Direct
    }

    /// Whether the start-up packet carried the options: false when the server (a pooler)
    /// refused them, so a child process's PGOPTIONS would be refused too.
    pub fn options_sent(&self) -> bool {
        self.options_sent
    }

    /// The first statement of every session, pipelined with the caller's first statements:
    /// asks for the backend's pid (logged as the `connected` event), and on a direct session
    /// protects it (see `PROTECT_14`). Through a pooler nothing is set yet: a setting there
    /// would stay on a server connection that other clients get next, unless the pooler keeps
    /// it for this session alone (`settle_pooled` finds out).
    pub async fn start(&self) -> Result<(), ConnectError> {
        let calls = match self.facts.major() {
            17.. => format!("{PROTECT_14_CALLS}, {PROTECT_17_CALLS}"),
            14..=16 => PROTECT_14_CALLS.to_string(),
            _ => "NULL".to_string(),
        };
        let sql = format!(
            "SELECT pg_catalog.pg_backend_pid(), CASE WHEN pg_catalog.pg_backend_pid() = $1 THEN pg_catalog.concat({calls}) END"
        );
        let key = self.key_pid();
        let row = self
            .client
            .query_typed_one(&sql, &[(&key, Type::INT4)])
            .await
            .map_err(|e| ConnectError::Lost { failure: PgFailure::from_pg(&e) })?;
        let pid = row.try_get(0).map_err(|e| ConnectError::Lost { failure: PgFailure::from_pg(&e) })?;
        self.check_backend(pid)
    }

    /// A pooled session must keep its server connection for its whole life (a pooler in
    /// session mode) before migrun takes a lock on it: asks the pooler how it pools, then makes
    /// migrun's settings with SET (the pooler refused or dropped them at start-up). Errors
    /// name the pool mode that cannot work. A direct session needs nothing.
    pub async fn settle_pooled(&self) -> Result<(), ConnectError> {
        if self.path.get() != BackendPath::Pooled {
            return Ok(());
        }
        let sibling = self.sibling(pooler::SIBLING_LIMIT).await;
        if sibling.is_none() {
            tracing::warn!(server = %self.server, "a second session through the pooler could not be opened within {}s; taking the pool to be in session mode", pooler::SIBLING_LIMIT.as_secs());
        }
        let mode = pooler::classify(self.backend_pid(), &self.client, sibling.as_ref().map(|(client, _)| client)).await;
        if let Some((client, connection)) = sibling {
            drop(client);
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
        let mode = mode.map_err(|failure| ConnectError::Lost { failure })?;
        tracing::info!(server = %self.server, pool_mode = mode.name(), "the connection goes through a pooler");
        if mode != PoolMode::Session {
            return Err(ConnectError::PoolMode { server: self.server.clone(), mode: mode.name() });
        }
        let sets = self.startup_sql()?;
        let protect = self.protect_sql().unwrap_or_default();
        let sql =
            [sets.as_str(), protect.as_str()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("; ");
        if !sql.is_empty() {
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| ConnectError::Lost { failure: PgFailure::from_pg(&e) })?;
        }
        self.path.set(BackendPath::SessionPool);
        tracing::info!(server = %self.server, "connected through a pooler in session mode; migrun's session settings are made with SET");
        Ok(())
    }

    /// The start-up options as one SET statement (for a session whose pooler did not apply
    /// them).
    fn startup_sql(&self) -> Result<String, ConnectError> {
        match &self.startup {
            Ok(settings) => Ok(options::set_sql(settings)),
            Err(reason) => Err(ConnectError::Options { server: self.server.clone(), reason: reason.clone() }),
        }
    }

    /// A second session with the same configuration, for at most `limit` (connect included):
    /// a pooler's way of pooling shows only across sessions.
    pub async fn sibling(&self, limit: Duration) -> Option<(Client, tokio::task::JoinHandle<()>)> {
        let connected = tokio::time::timeout(limit, self.config.connect(self.tls.clone())).await.ok()?.ok()?;
        let (client, connection) = connected;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Some((client, task))
    }

    fn protect_sql(&self) -> Option<String> {
        match self.facts.major() {
            17.. => Some(format!("{PROTECT_14}; {PROTECT_17}")),
            14..=16 => Some(PROTECT_14.to_string()),
            _ => None,
        }
    }

    /// The statements that put the session back into the state migrun set up (see `RESTORE`),
    /// protection included. Through a session-mode pooler, `RESET ALL` goes back to the server
    /// connection's defaults, so the start-up options are made again after it.
    pub fn restore_sql(&self) -> String {
        let mut parts = vec![RESTORE.to_string()];
        if self.path.get() == BackendPath::SessionPool {
            parts.extend(self.startup_sql().ok().filter(|s| !s.is_empty()));
        }
        parts.extend(self.protect_sql());
        parts.join("; ")
    }
}

/// `host:port/dbname as user`, for logs; never the password.
pub fn describe_server(config: &tokio_postgres::Config) -> String {
    let host = first_host(config).unwrap_or_else(|| "localhost".to_string());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("?");
    let user = config.get_user().unwrap_or("?");
    format!("{host}:{port}/{db} as {user}")
}

/// Resolves the connection (fetching a secret if that is the source) and connects. When a
/// secret's password is refused, the secret is fetched once more and the login retried once:
/// a rotation may have landed between the fetch and the login.
pub async fn open(
    spec: &ConnectionSpec,
    settings: &SessionSettings,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<Session, ConnectError> {
    if let Source::Url { url, .. } = &spec.source {
        tracing::debug!(database_url = %url, "connecting");
    }
    let endpoint = spec.resolve().await?;
    tracing::info!(source = spec.source.kind(), sslmode = endpoint.tls.mode.as_str(), "connection resolved");
    match connect(&endpoint, settings, timeout, shutdown).await {
        Err(ConnectError::Refused { failure, .. }) if failure.is("28P01") && endpoint.secret.is_some() => {
            tracing::warn!("the secret's password was refused; fetching the secret again in case it was just rotated");
            let fresh = spec.resolve().await?;
            connect(&fresh, settings, timeout, shutdown).await
        }
        other => other,
    }
}

/// Connects, retrying what start-up makes transient (refused, DNS, server starting, too many
/// connections) until `timeout` runs out; a refused login fails at once.
async fn connect(
    resolved: &Endpoint,
    session: &SessionSettings,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<Session, ConnectError> {
    let mut config = resolved.config.clone();
    let startup = apply_session_settings(&mut config, session);
    let mut options_sent = true;
    let server = describe_server(&config);
    let tls = tls::connector(&resolved.tls)?;
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempts = 0;
    let mut last_report: Option<Instant> = None;
    loop {
        attempts += 1;
        let remaining = timeout.saturating_sub(started.elapsed());
        config.connect_timeout(
            remaining.clamp(Duration::from_millis(100), resolved.attempt_timeout.max(Duration::from_millis(100))),
        );
        let attempt = tokio::select! {
            attempt = config.connect(tls.clone()) => attempt,
            stop = shutdown.wait() => return Err(stop.into()),
        };
        let failure = match attempt {
            Ok((client, connection)) => {
                let facts = ServerFacts::read(&connection);
                let task = tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %error_chain(&e), "connection ended");
                    }
                });
                let key_pid = super::cancel::key_pid(&client.cancel_token()).await;
                return Ok(Session {
                    client,
                    server,
                    backend_pid: Cell::new(0),
                    connection: task,
                    tls,
                    config: config.clone(),
                    key_pid,
                    startup,
                    options_sent,
                    path: Cell::new(BackendPath::Unknown),
                    tls_settings: resolved.tls.clone(),
                    child_url: resolved.url_for_child.clone(),
                    child_config: resolved.config.clone(),
                    facts,
                    database: config.get_dbname().or(config.get_user()).unwrap_or_default().to_string(),
                });
            }
            Err(e) => PgFailure::from_pg(&e),
        };
        if options_sent && refuses_options(&failure) {
            // Said once: the next attempt goes without them.
            tracing::warn!(server = %server, "the server refuses start-up options (a pooler: PgBouncer without `ignore_startup_parameters = options`); connecting without them, and making migrun's settings with SET once the pooler is known to keep the session's server connection");
            config = options::without_options(&config);
            options_sent = false;
            continue;
        }
        if let Some(reason) = tls_failure(&failure, &resolved.tls) {
            return Err(ConnectError::Tls { server, reason });
        }
        if !is_transient(&failure) {
            return Err(ConnectError::Refused { server, failure });
        }
        // The last attempt is made at the deadline itself.
        let Some(delay) = backoff.next_delay_until(started + timeout) else {
            return Err(ConnectError::Unreachable {
                server,
                attempts,
                waited_s: started.elapsed().as_secs_f64(),
                reason: failure.to_string(),
            });
        };
        // The reason once, then a short line every 10 s: a wrong port on a laptop should not
        // print a warning per attempt for a minute.
        match last_report {
            None => tracing::warn!(
                server = %server,
                error = %failure,
                retry_for_s = timeout.as_secs(),
                "database not reachable yet; retrying for up to {}s (--connect-timeout / MIGRUN_CONNECT_TIMEOUT)",
                timeout.as_secs()
            ),
            Some(at) if at.elapsed() >= RETRY_REPORT_EVERY => tracing::warn!(
                server = %server,
                attempt = attempts,
                waited_s = started.elapsed().as_secs(),
                "still not reachable; retrying"
            ),
            Some(_) => {
                tracing::debug!(server = %server, attempt = attempts, error = %failure, "database not reachable yet");
                shutdown.sleep(delay).await?;
                continue;
            }
        }
        last_report = Some(Instant::now());
        shutdown.sleep(delay).await?;
    }
}

/// Session settings go in the start-up packet: no extra round trip, and they hold from the
/// first statement on. `statement_timeout` is off for migrun's own statements (a role's or
/// database's own setting included): each migration file sets its own. Returns the start-up
/// options as settings (the connection's own, then migrun's), for a pooler that refuses them.
fn apply_session_settings(
    config: &mut tokio_postgres::Config,
    session: &SessionSettings,
) -> Result<Vec<Setting>, String> {
    let ours: Vec<Setting> = vec![
        ("lock_timeout".into(), session.lock_timeout.to_setting()),
        ("statement_timeout".into(), "0".into()),
        ("idle_in_transaction_session_timeout".into(), session.idle_in_transaction_timeout.to_setting()),
    ];
    let ours_text = ours.iter().map(|(name, value)| format!("-c {name}={value}")).collect::<Vec<_>>().join(" ");
    let theirs = config.get_options().map(str::to_string).filter(|o| !o.trim().is_empty());
    let startup = match &theirs {
        Some(text) => options::parse(text).map(|mut settings| {
            settings.extend(ours);
            settings
        }),
        None => Ok(ours),
    };
    let options = match theirs {
        Some(theirs) => format!("{theirs} {ours_text}"),
        None => ours_text,
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name(session.application_name.clone());
    }
    // A vanished peer (task stopped, failover) is noticed in under a minute, not hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(30));
    startup
}

/// PgBouncer's answer to a start-up packet with `options` it was not told to ignore.
fn refuses_options(failure: &PgFailure) -> bool {
    failure.message.contains("unsupported startup parameter") && failure.message.contains("options")
}

/// A TLS failure is not transient: retrying a certificate that does not verify only delays the
/// error. Returns the operator's explanation.
pub fn tls_failure(failure: &PgFailure, settings: &TlsSettings) -> Option<String> {
    if failure.sqlstate.is_some() {
        return None;
    }
    let text = &failure.message;
    if let Some(explained) = tls::explain_handshake(text, settings) {
        return Some(explained);
    }
    if text.contains("server does not support TLS") {
        return Some(format!("the server does not offer TLS but sslmode={} requires it", settings.mode.as_str()));
    }
    text.contains("TLS handshake").then(|| text.clone())
}

/// What start-up makes transient: the network (refused, DNS, timeouts, a dropped connection)
/// and a server that is starting or full. A login problem, a configuration problem (no
/// password) or TLS is not: retrying only delays the error.
pub fn is_transient(failure: &PgFailure) -> bool {
    match failure.sqlstate.as_deref() {
        Some(code) => matches!(code, "57P03" | "53300" | "08006" | "08001"),
        None => [
            "error connecting to server",
            "timeout waiting for server",
            "error communicating with the server",
            "connection closed",
        ]
        .iter()
        .any(|prefix| failure.message.starts_with(prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tls::SslMode;

    fn server_said(code: &str) -> PgFailure {
        PgFailure { sqlstate: Some(code.into()), ..PgFailure::other("server message") }
    }

    #[test]
    fn start_up_conditions_are_retried_and_refusals_are_not() {
        // Starting up, too many connections, connection failures reported by the server.
        for code in ["57P03", "53300", "08006", "08001"] {
            assert!(is_transient(&server_said(code)), "{code}");
        }
        // Wrong password, no such database, no such role, no permission: retrying only delays.
        for code in ["28P01", "28000", "3D000", "42501"] {
            assert!(!is_transient(&server_said(code)), "{code}");
        }
        for network in [
            "error connecting to server: Connection refused (os error 111)",
            "error connecting to server: failed to lookup address information",
            "timeout waiting for server",
            "error communicating with the server: Connection reset by peer",
            "connection closed",
        ] {
            assert!(is_transient(&PgFailure::other(network)), "{network}");
        }
        assert!(!is_transient(&PgFailure::other("invalid configuration: password missing")));
    }

    #[test]
    fn tls_failures_are_named_and_never_retried() {
        let verify = TlsSettings { mode: SslMode::VerifyFull, root_cert: None };
        let unknown = PgFailure::other("error performing TLS handshake: invalid peer certificate: UnknownIssuer");
        let reason = tls_failure(&unknown, &verify).expect("a TLS failure");
        assert!(reason.contains("not signed by a CA in (built-in roots)"), "{reason}");
        let name = PgFailure::other("error performing TLS handshake: invalid peer certificate: NotValidForName");
        assert!(tls_failure(&name, &verify).is_some_and(|r| r.contains("host name")));
        let require = TlsSettings { mode: SslMode::Require, root_cert: None };
        let plain = PgFailure::other("error performing TLS handshake: server does not support TLS");
        assert!(tls_failure(&plain, &require).is_some_and(|r| r.contains("sslmode=require requires it")));
        // A server's own error is never a TLS failure, and a refused socket is not either.
        assert_eq!(tls_failure(&server_said("28P01"), &verify), None);
        assert_eq!(tls_failure(&PgFailure::other("error connecting to server: Connection refused"), &verify), None);
    }
}

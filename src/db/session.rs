//! Connecting to Postgres: session settings, retries at start-up, the session itself.

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::endpoint::{ConnectionSpec, Endpoint, EndpointError, Source};
use super::failure::{error_chain, PgFailure};
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

/// A connected session and what migrun learned about it.
pub struct Session {
    /// The driver's client, for statements.
    pub client: Client,
    /// `host:port/dbname as user`, for messages.
    pub server: String,
    /// The first backend pid any statement saw (0 until then).
    backend_pid: std::cell::Cell<i32>,
    connection: tokio::task::JoinHandle<()>,
    /// For cancel requests, which open a connection of their own.
    tls: MakeRustlsConnect,
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
    /// Asks the server to cancel the statement running on this session.
    pub async fn cancel(&self) -> Result<(), tokio_postgres::Error> {
        self.client.cancel_token().cancel_query(self.tls.clone()).await
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
            let facts = &self.facts;
            tracing::info!(server = %self.server, backend_pid = pid, server_version = %facts.version, database = %self.database, user = %facts.user, "connected");
            return Ok(());
        }
        if pid == first {
            return Ok(());
        }
        Err(ConnectError::TransactionPooler { server: self.server.clone(), first, second: pid })
    }

    /// Asks the server for the backend's pid (logged as the `connected` event). Callers
    /// pipeline it with their first statements: it costs no round trip of its own.
    pub async fn identify(&self) -> Result<(), ConnectError> {
        let row = self
            .client
            .query_typed_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| ConnectError::Lost { failure: PgFailure::from_pg(&e) })?;
        self.check_backend(row.get(0))
    }

    /// Keeps the server from ending this session while it waits or holds the lock, and makes
    /// it end a statement whose client is gone (PostgreSQL 14 and later; see `PROTECT_14`).
    /// Callers pipeline it with their first statements.
    pub async fn protect(&self) -> Result<(), ConnectError> {
        let Some(sql) = self.protect_sql() else { return Ok(()) };
        self.client.batch_execute(&sql).await.map_err(|e| ConnectError::Lost { failure: PgFailure::from_pg(&e) })
    }

    fn protect_sql(&self) -> Option<String> {
        match self.facts.major() {
            17.. => Some(format!("{PROTECT_14}; {PROTECT_17}")),
            14..=16 => Some(PROTECT_14.to_string()),
            _ => None,
        }
    }

    /// The statements that put the session back into the state migrun set up (see `RESTORE`),
    /// protection included.
    pub fn restore_sql(&self) -> String {
        match self.protect_sql() {
            Some(protect) => format!("{RESTORE}; {protect}"),
            None => RESTORE.to_string(),
        }
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
    apply_session_settings(&mut config, session);
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
                return Ok(Session {
                    client,
                    server,
                    backend_pid: std::cell::Cell::new(0),
                    connection: task,
                    tls,
                    child_url: resolved.url_for_child.clone(),
                    child_config: resolved.config.clone(),
                    facts,
                    database: config.get_dbname().or(config.get_user()).unwrap_or_default().to_string(),
                });
            }
            Err(e) => PgFailure::from_pg(&e),
        };
        if let Some(reason) = tls_failure(&failure, &resolved.tls) {
            return Err(ConnectError::Tls { server, reason });
        }
        if !is_transient(&failure) {
            return Err(ConnectError::Refused { server, failure });
        }
        let delay = backoff.next_delay();
        if started.elapsed() + delay >= timeout {
            return Err(ConnectError::Unreachable {
                server,
                attempts,
                waited_s: started.elapsed().as_secs_f64(),
                reason: failure.to_string(),
            });
        }
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
/// database's own setting included): each migration file sets its own.
fn apply_session_settings(config: &mut tokio_postgres::Config, session: &SessionSettings) {
    let ours = format!(
        "-c lock_timeout={} -c statement_timeout=0 -c idle_in_transaction_session_timeout={}",
        session.lock_timeout.to_setting(),
        session.idle_in_transaction_timeout.to_setting(),
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
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
}

/// A TLS failure is not transient: retrying a certificate that does not verify only delays the
/// error. Returns the operator's explanation.
fn tls_failure(failure: &PgFailure, settings: &TlsSettings) -> Option<String> {
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
fn is_transient(failure: &PgFailure) -> bool {
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

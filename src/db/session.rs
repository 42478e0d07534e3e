//! A session with Postgres: what migrun learned about it (its backend, the way there through a
//! pooler), its protection and reset, cancelling its statement. Opening one is `db::connect`.

use std::cell::Cell;
use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::endpoint::EndpointError;
use super::failure::PgFailure;
use super::options::{self, Setting};
use super::pooler::{self, PoolMode};
use super::tls::{TlsError, TlsSettings};
use super::url::first_host;
use crate::duration::Millis;
use crate::signals::Interrupted;

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

/// What the server said about itself when the session started.
#[derive(Debug, Clone, Default)]
pub(super) struct ServerFacts {
    /// `server_version`, e.g. `15.4` or `16.1 (Debian 16.1-1)`.
    version: String,
    /// `session_authorization`: who the session is.
    user: String,
}

impl ServerFacts {
    pub(super) fn read<S, T>(connection: &tokio_postgres::Connection<S, T>) -> ServerFacts
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
    pub(super) backend_pid: Cell<i32>,
    pub(super) connection: tokio::task::JoinHandle<()>,
    /// For cancel requests, which open a connection of their own.
    pub(super) tls: MakeRustlsConnect,
    /// The configuration the session was opened with: cancel requests go to its hosts, and a
    /// second session (to learn how a pooler pools) is opened with it.
    pub(super) config: tokio_postgres::Config,
    /// The pid of the start-up key (BackendKeyData): the backend's own pid on a direct session.
    pub(super) key_pid: Option<i32>,
    /// The start-up options as settings (the connection's own, then migrun's), to make with SET
    /// where a pooler refused or dropped them; an error when they cannot be made so.
    pub(super) startup: Result<Vec<Setting>, String>,
    /// Whether the start-up packet carried the options (false: the server refused them).
    pub(super) options_sent: bool,
    /// What is known of the way to the backend.
    pub(super) path: Cell<BackendPath>,
    /// TLS as resolved from every source.
    pub(super) tls_settings: TlsSettings,
    /// The connection as a child process (`exec --lock`) should get it, password included.
    pub child_url: String,
    /// The same connection as libpq variables would give it.
    pub child_config: tokio_postgres::Config,
    /// The server's version and the session's user, from the start-up answer.
    pub(super) facts: ServerFacts,
    /// The database connected to.
    pub(super) database: String,
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

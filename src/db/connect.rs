//! Opening a session: the connection resolved (a secret fetched again after a rotation),
//! migrun's settings in the start-up packet (or without them, for a pooler that refuses them),
//! retries of what start-up makes transient, and which failures are not.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::endpoint::{ConnectionSpec, Endpoint, Source};
use super::failure::{error_chain, PgFailure};
use super::options::{self, Setting};
use super::session::{describe_server, BackendPath, ConnectError, ServerFacts, Session, SessionSettings};
use super::tls::{self, TlsSettings};
use crate::backoff::Backoff;
use crate::signals::Shutdown;

/// How often a connection that keeps failing says so.
const RETRY_REPORT_EVERY: Duration = Duration::from_secs(10);

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
        // A refused IAM token is not a rotated password: fetching the secret again cannot help.
        Err(ConnectError::Refused { failure, .. })
            if failure.is("28P01") && endpoint.secret.is_some() && endpoint.iam.is_none() =>
        {
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
    let signer = match &resolved.iam {
        Some(_) => Some(TokenSigner::new().await?),
        None => None,
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempts = 0;
    let mut last_report: Option<Instant> = None;
    loop {
        attempts += 1;
        crate::counters::connect_attempt();
        if let (Some(signer), Some(target)) = (&signer, &resolved.iam) {
            // A token per attempt: a retry or a wait never outlives the one it signs with.
            config.password(signer.token(target).await?);
        }
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

/// Signs the RDS IAM auth token of each attempt.
#[cfg(feature = "aws")]
struct TokenSigner(super::iam::Signer);

#[cfg(feature = "aws")]
impl TokenSigner {
    async fn new() -> Result<TokenSigner, ConnectError> {
        super::iam::Signer::new().await.map(TokenSigner).map_err(iam_failure)
    }

    async fn token(&self, target: &super::endpoint::IamTarget) -> Result<String, ConnectError> {
        let what =
            super::iam::TokenFor { host: &target.host, port: target.port, user: &target.user, region: &target.region };
        self.0.token(&what).await.map_err(iam_failure)
    }
}

#[cfg(feature = "aws")]
fn iam_failure(e: super::iam::IamError) -> ConnectError {
    ConnectError::Endpoint(super::endpoint::EndpointError::IamCredentials(e.to_string()))
}

/// Without the AWS SDK there is nothing to sign with.
#[cfg(not(feature = "aws"))]
struct TokenSigner;

#[cfg(not(feature = "aws"))]
impl TokenSigner {
    async fn new() -> Result<TokenSigner, ConnectError> {
        Err(ConnectError::Endpoint(super::endpoint::EndpointError::Iam(
            "--iam-auth: this migrun was built without the AWS SDK (cargo feature `aws`); use a release build".into(),
        )))
    }

    async fn token(&self, _target: &super::endpoint::IamTarget) -> Result<String, ConnectError> {
        Ok(String::new())
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

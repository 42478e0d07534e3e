//! Where the connection comes from: a connection string, a Secrets Manager secret, or libpq's
//! variables (with the password file and TLS precedence), resolved into one `Endpoint`.

use std::path::PathBuf;
use std::time::Duration;

use super::libpq::{self, LibpqVars};
use super::secrets::{self, SecretError, SecretRef, SecretValue};
use super::tls::{SslMode, TlsSettings, MODES};
use super::url::{first_host, to_url, DatabaseUrl, TlsParams};

/// Where the connection comes from, in the order of precedence.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--database-url` / `DATABASE_URL` holding a connection string.
    Url { url: DatabaseUrl, config: Box<tokio_postgres::Config>, tls: TlsParams },
    /// A Secrets Manager secret: an ARN in DATABASE_URL, or `--secret-id`.
    Secret(SecretRef),
    /// libpq's `PG*` variables.
    Libpq,
}

impl Source {
    /// The source's name in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Url { .. } => "database_url",
            Source::Secret(_) => "secret",
            Source::Libpq => "libpq_env",
        }
    }
}

/// TLS settings given outside the connection string.
#[derive(Debug, Clone, Default)]
pub struct TlsOverrides {
    /// `--sslmode` / `MIGRUN_SSLMODE`: wins over everything.
    pub sslmode: Option<SslMode>,
    /// `--sslrootcert` / `MIGRUN_SSLROOTCERT`: wins over everything.
    pub sslrootcert: Option<PathBuf>,
}

/// Everything configured about the connection, before any secret is fetched.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// Where the connection string (or its parts) comes from.
    pub source: Source,
    /// TLS settings from flags.
    pub tls: TlsOverrides,
    /// libpq's variables: a source of their own, and defaults (PGSSLMODE, the password file)
    /// for the other sources.
    pub libpq: LibpqVars,
}

/// A connection ready to open.
pub struct Endpoint {
    /// The driver's configuration, password included.
    pub config: tokio_postgres::Config,
    /// TLS as resolved from every source.
    pub tls: TlsSettings,
    /// The secret it came from, to fetch again when a rotation made the password stale.
    pub secret: Option<SecretRef>,
    /// A connection string for a child process (`exec --lock`), password included.
    pub url_for_child: String,
    /// The longest one connection attempt may take.
    pub attempt_timeout: Duration,
}

const DEFAULT_ATTEMPT: Duration = Duration::from_secs(10);

/// Why a connection source could not be turned into an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{source_name}: sslmode `{value}` is not one of {MODES}")]
    SslMode { source_name: String, value: String },
    #[error("libpq variables: {0}")]
    Libpq(String),
}

impl ConnectionSpec {
    /// Turns the source into an endpoint: fetches the secret if there is one, applies the TLS
    /// precedence (`--sslmode` > the connection string > PGSSLMODE > prefer) and the password
    /// file.
    pub async fn resolve(&self) -> Result<Endpoint, EndpointError> {
        resolve(&self.source, &self.tls, &self.libpq).await
    }
}

async fn resolve(source: &Source, overrides: &TlsOverrides, env: &LibpqVars) -> Result<Endpoint, EndpointError> {
    let (mut config, params, secret, child_url) = match source {
        Source::Url { url, config, tls } => ((**config).clone(), tls.clone(), None, url.expose().to_string()),
        Source::Secret(secret) => {
            let text = secrets::fetch(secret).await?;
            let (config, params, child_url) = from_secret(secret, &text)?;
            (config, params, Some(secret.clone()), child_url)
        }
        Source::Libpq => {
            let config = env.to_config().map_err(EndpointError::Libpq)?;
            let child_url = to_url(&config);
            (config, TlsParams::default(), None, child_url)
        }
    };
    let mode = match (overrides.sslmode, &params.sslmode, &env.sslmode) {
        (Some(mode), _, _) => mode,
        (None, Some(text), _) => ssl_mode("the connection string", text)?,
        (None, None, Some(text)) => ssl_mode("PGSSLMODE", text)?,
        (None, None, None) => SslMode::Prefer,
    };
    let root_cert = overrides
        .sslrootcert
        .clone()
        .or_else(|| params.sslrootcert.clone().map(PathBuf::from))
        .or_else(|| env.sslrootcert.clone().map(PathBuf::from));
    config.ssl_mode(mode.for_driver());
    env.fill_in(&mut config);
    if config.get_password().is_none() {
        add_pgpass_password(&mut config, env);
    }
    // Each connection attempt is capped by the connection string's connect_timeout, else
    // PGCONNECT_TIMEOUT, else 10 s; --connect-timeout bounds the retries as a whole.
    let attempt_timeout =
        config.get_connect_timeout().copied().or_else(|| env.connect_timeout()).unwrap_or(DEFAULT_ATTEMPT);
    Ok(Endpoint { config, tls: TlsSettings { mode, root_cert }, secret, url_for_child: child_url, attempt_timeout })
}

fn ssl_mode(source_name: &str, text: &str) -> Result<SslMode, EndpointError> {
    SslMode::parse(text).ok_or_else(|| EndpointError::SslMode { source_name: source_name.into(), value: text.into() })
}

fn from_secret(secret: &SecretRef, text: &str) -> Result<(tokio_postgres::Config, TlsParams, String), SecretError> {
    match secrets::interpret(secret, text)? {
        SecretValue::Rds(rds) => {
            let config = rds.to_config();
            let child_url = to_url(&config);
            Ok((config, TlsParams::default(), child_url))
        }
        SecretValue::ConnectionString(raw) => match DatabaseUrl::parse(raw) {
            Ok((url, config, params)) => Ok((config, params, url.expose().to_string())),
            Err(e) => Err(SecretError::NotUsable {
                name: secret.name().to_string(),
                key: secret.json_key.clone(),
                reason: e.reason,
            }),
        },
    }
}

fn add_pgpass_password(config: &mut tokio_postgres::Config, env: &LibpqVars) {
    let Some(passfile) = &env.passfile else { return };
    // libpq matches a socket connection against `localhost` in the password file.
    let host = first_host(config).filter(|h| !h.starts_with('/')).unwrap_or_else(|| "localhost".to_string());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_string();
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    if let Some(password) = libpq::pgpass_password(passfile, &host, port, &dbname, &user) {
        tracing::debug!(file = %passfile.display(), "password from the password file");
        config.password(password.as_bytes());
    }
}

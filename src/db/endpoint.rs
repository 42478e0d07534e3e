//! Where the connection comes from: a connection string, a Secrets Manager secret, or libpq's
//! variables (with the password file and TLS precedence), resolved into one `Endpoint`.

use std::path::PathBuf;
use std::time::Duration;

use super::libpq::{self, LibpqVars};
use super::secrets::{self, SecretError, SecretRef, SecretValue};
use super::tls::{SslMode, TlsSettings, MODES};
use super::url::{first_host, to_url, DatabaseUrl, HandledParams};

/// Where the connection comes from, in the order of precedence.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--database-url` / `DATABASE_URL` holding a connection string.
    Url { url: DatabaseUrl, config: Box<tokio_postgres::Config>, tls: HandledParams },
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

/// `--iam-auth`: the password is an RDS IAM auth token, signed for every attempt.
#[derive(Debug, Clone, Default)]
pub struct IamSettings {
    pub enabled: bool,
    /// `AWS_REGION` (else `AWS_DEFAULT_REGION`), when the host does not name one.
    pub region: Option<String>,
}

/// What an attempt signs a token for: the connection's host, port and user, and the region.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub struct IamTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub region: String,
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
    /// IAM database authentication.
    pub iam: IamSettings,
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
    /// `--iam-auth`: what each attempt signs a token for.
    pub iam: Option<IamTarget>,
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
    /// `--iam-auth` cannot be used with this connection.
    #[error("{0}")]
    Iam(String),
    /// `--iam-auth`: no credentials to sign a token with (or signing failed).
    #[error("{0}")]
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    IamCredentials(String),
}

impl ConnectionSpec {
    /// Turns the source into an endpoint: fetches the secret if there is one, applies the TLS
    /// precedence (`--sslmode` > the connection string > PGSSLMODE > prefer) and the password
    /// file.
    pub async fn resolve(&self) -> Result<Endpoint, EndpointError> {
        resolve(&self.source, &self.tls, &self.libpq, &self.iam).await
    }
}

async fn resolve(
    source: &Source,
    overrides: &TlsOverrides,
    env: &LibpqVars,
    iam: &IamSettings,
) -> Result<Endpoint, EndpointError> {
    let (mut config, params, secret, child_url) = match source {
        Source::Url { url, config, tls } => ((**config).clone(), tls.clone(), None, url.expose().to_string()),
        Source::Secret(secret) => {
            let text = secrets::fetch(secret).await?;
            let (config, params, child_url) = from_secret(secret, &text, iam.enabled)?;
            (config, params, Some(secret.clone()), child_url)
        }
        Source::Libpq => {
            let config = env.to_config().map_err(EndpointError::Libpq)?;
            let child_url = to_url(&config);
            (config, HandledParams::default(), None, child_url)
        }
    };
    let mode = match (overrides.sslmode, &params.sslmode, &env.sslmode) {
        (Some(mode), _, _) => mode,
        (None, Some(text), _) => ssl_mode("the connection string", text)?,
        (None, None, Some(text)) => ssl_mode("PGSSLMODE", text)?,
        (None, None, None) => SslMode::Prefer,
    };
    let iam = &IamSettings { enabled: iam.enabled || iam_param(&params)?, region: iam.region.clone() };
    // A token is a password: never in the clear. `prefer` would fall back to it.
    let mode = match (iam.enabled, mode) {
        (true, SslMode::Disable) => return Err(EndpointError::Iam(IAM_NO_TLS.into())),
        (true, SslMode::Prefer) => SslMode::Require,
        (_, mode) => mode,
    };
    let root_cert = overrides
        .sslrootcert
        .clone()
        .or_else(|| params.sslrootcert.clone().map(PathBuf::from))
        .or_else(|| env.sslrootcert.clone().map(PathBuf::from));
    config.ssl_mode(mode.for_driver());
    env.fill_in(&mut config);
    let iam_target = match iam.enabled {
        true => Some(iam_target(&config, iam)?),
        false => None,
    };
    if config.get_password().is_none() && iam_target.is_none() {
        add_pgpass_password(&mut config, env);
    }
    // Each connection attempt is capped by the connection string's connect_timeout, else
    // PGCONNECT_TIMEOUT, else 10 s; --connect-timeout bounds the retries as a whole.
    let attempt_timeout =
        config.get_connect_timeout().copied().or_else(|| env.connect_timeout()).unwrap_or(DEFAULT_ATTEMPT);
    Ok(Endpoint {
        config,
        tls: TlsSettings { mode, root_cert },
        secret,
        url_for_child: child_url,
        attempt_timeout,
        iam: iam_target,
    })
}

/// The connection string's `iam` parameter: `true`/`false` (1/0, yes/no, on/off).
fn iam_param(params: &HandledParams) -> Result<bool, EndpointError> {
    let Some(text) = params.iam.as_deref() else { return Ok(false) };
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(EndpointError::Iam("the connection string's `iam` parameter is not true or false".into())),
    }
}

const IAM_NO_TLS: &str = "--iam-auth needs TLS: sslmode `disable` would send the token in the clear; use sslmode=require or verify-full (RDS serves TLS)";

/// The host, port, user and region a token is signed for.
fn iam_target(config: &tokio_postgres::Config, iam: &IamSettings) -> Result<IamTarget, EndpointError> {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => {
            return Err(EndpointError::Iam(
                "--iam-auth: the connection names no TCP host (a token is signed for an RDS endpoint's host name)"
                    .into(),
            ))
        }
    };
    let user = config
        .get_user()
        .ok_or_else(|| {
            EndpointError::Iam("--iam-auth: the connection names no user (the database user the token is for)".into())
        })?
        .to_string();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let region = host_region(&host).or_else(|| iam.region.clone()).ok_or_else(|| {
        EndpointError::Iam(format!("--iam-auth: no AWS region: the host `{host}` is not an RDS endpoint (<name>.<id>.<region>.rds.amazonaws.com); set AWS_REGION"))
    })?;
    Ok(IamTarget { host, port, user, region })
}

#[cfg(feature = "aws")]
fn host_region(host: &str) -> Option<String> {
    super::iam::region_of_host(host).map(str::to_string)
}

#[cfg(not(feature = "aws"))]
fn host_region(_host: &str) -> Option<String> {
    None
}

fn ssl_mode(source_name: &str, text: &str) -> Result<SslMode, EndpointError> {
    SslMode::parse(text).ok_or_else(|| EndpointError::SslMode { source_name: source_name.into(), value: text.into() })
}

fn from_secret(
    secret: &SecretRef,
    text: &str,
    iam: bool,
) -> Result<(tokio_postgres::Config, HandledParams, String), SecretError> {
    match secrets::interpret_with(secret, text, iam)? {
        SecretValue::Rds(rds) => {
            let config = rds.to_config();
            let child_url = to_url(&config);
            Ok((config, HandledParams::default(), child_url))
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

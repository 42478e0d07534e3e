//! Where the connection comes from and what it says: connection strings (with their TLS
//! parameters and password redaction), Secrets Manager, libpq variables and the password file,
//! resolved into one `Target`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::connect::ConnectError;
use crate::error::chain;
use crate::libpq::{self, LibpqVars};
use crate::secrets::{self, SecretError, SecretRef, SecretValue};
use crate::tls::{SslMode, TlsSettings, MODES};

/// A connection string as the user gave it. Its `Display` and `Debug` hide the password, so no
/// log line, error or panic message can print it.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
}

/// The TLS parameters of a connection string, which tokio-postgres does not (fully) know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

impl DatabaseUrl {
    /// Accepts `postgres://` / `postgresql://` URLs and libpq `key=value` strings.
    pub fn parse(raw: String) -> Result<(DatabaseUrl, tokio_postgres::Config, TlsParams), ConnectError> {
        let url = DatabaseUrl { raw };
        let (rest, tls) = take_tls_params(&url.raw);
        if let Some(mode) = tls.sslmode.as_deref().filter(|m| SslMode::parse(m).is_none()) {
            let reason = format!("sslmode `{mode}` is not one of {MODES}");
            return Err(ConnectError::InvalidUrl { url: url.to_string(), reason });
        }
        match rest.parse::<tokio_postgres::Config>() {
            Ok(config) => Ok((url, config, tls)),
            Err(e) => Err(ConnectError::InvalidUrl { url: url.to_string(), reason: chain(&e) }),
        }
    }
}

/// Removes `sslmode` and `sslrootcert` from a URL's query or a key=value string: migrun
/// handles TLS itself (tokio-postgres rejects `verify-ca`/`verify-full` and `sslrootcert`).
fn take_tls_params(raw: &str) -> (String, TlsParams) {
    let mut tls = TlsParams::default();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            tls.sslmode = Some(value);
            false
        }
        "sslrootcert" => {
            tls.sslrootcert = Some(value);
            false
        }
        _ => true,
    };
    if raw.contains("://") {
        let Some((base, query)) = raw.split_once('?') else { return (raw.to_string(), tls) };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(key, percent_decode(value))
            })
            .collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, tls);
    }
    let mut rest = String::new();
    for (key, value, text) in key_values(raw) {
        if keep(&key, value) {
            rest.push_str(text);
            rest.push(' ');
        }
    }
    (rest.trim_end().to_string(), tls)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq `key = value` pairs (values may be single-quoted, with backslash escapes), each with
/// its original text.
fn key_values(raw: &str) -> Vec<(String, String, &str)> {
    let bytes = raw.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = raw[start..i].to_string();
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'=') {
            i += 1;
        }
        let mut value = Vec::new();
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 1 < bytes.len() => {
                    value.push(bytes[i + 1]);
                    i += 2;
                    continue;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                b if !quoted && b.is_ascii_whitespace() => break,
                b => value.push(b),
            }
            i += 1;
        }
        if !key.is_empty() {
            pairs.push((key, String::from_utf8_lossy(&value).into_owned(), &raw[start..i]));
        }
    }
    pairs
}

impl DatabaseUrl {
    /// The string with its password, for handing to a child process; never for logs.
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.raw))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

const HIDDEN: &str = "***";

/// Hides the password in a URL's user info, in `password=` URL parameters and in libpq
/// `password=` pairs. Over-redacting a malformed string is fine; under-redacting is not.
pub fn redact(raw: &str) -> String {
    if let Some((scheme, rest)) = raw.split_once("://") {
        let mut out = format!("{scheme}://");
        // The last '@' ends the user info even when an unencoded password holds '@' or '/'.
        let rest = match rest.rfind('@') {
            Some(at) => {
                let user = rest[..at].split(':').next().unwrap_or_default();
                let had_password = rest[..at].contains(':');
                out.push_str(user);
                if had_password {
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                out.push('@');
                &rest[at + 1..]
            }
            None => rest,
        };
        out.push_str(&redact_query(rest));
        return out;
    }
    redact_key_values(raw)
}

fn redact_query(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else {
        return rest.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={HIDDEN}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// `host=db password='a b\'c' user=x` → `host=db password=*** user=x`, following libpq's
/// quoting rules (single quotes, backslash escapes).
fn redact_key_values(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(found) = find_password_key(rest) {
        let (before, after_key) = rest.split_at(found.value_start);
        out.push_str(before);
        out.push_str(HIDDEN);
        rest = skip_value(after_key);
    }
    out.push_str(rest);
    out
}

struct PasswordKey {
    value_start: usize,
}

fn find_password_key(text: &str) -> Option<PasswordKey> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let start = from + i;
        let at_word_start = start == 0 || lower.as_bytes()[start - 1].is_ascii_whitespace();
        let after = &text[start + "password".len()..];
        let trimmed = after.trim_start();
        if at_word_start && trimmed.starts_with('=') {
            let eq = text.len() - trimmed.len();
            let value = &text[eq + 1..];
            let value_start = eq + 1 + (value.len() - value.trim_start().len());
            return Some(PasswordKey { value_start });
        }
        from = start + 1;
    }
    None
}

fn skip_value(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.first() == Some(&b'\'') {
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => return &value[(i + 1).min(value.len())..],
                _ => i += 1,
            }
        }
        return "";
    }
    let end = value.find(char::is_whitespace).unwrap_or(value.len());
    &value[end..]
}

/// Where the connection comes from, in the order of precedence.
#[derive(Debug)]
pub enum Source {
    /// `--database-url` / `DATABASE_URL` holding a connection string.
    Url { url: DatabaseUrl, config: Box<tokio_postgres::Config>, tls: TlsParams },
    /// A Secrets Manager secret: an ARN in DATABASE_URL, or `--secret-id`.
    Secret(SecretRef),
    /// libpq's `PG*` variables.
    Libpq,
}

impl Source {
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
    pub sslrootcert: Option<PathBuf>,
}

/// A connection ready to open.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
    /// The secret it came from, to fetch again when a rotation made the password stale.
    pub secret: Option<SecretRef>,
    /// A connection string for a child process (`exec --lock`), password included.
    pub url_for_child: String,
    /// The longest one connection attempt may take.
    pub attempt_timeout: Duration,
}

const DEFAULT_ATTEMPT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{source_name}: sslmode `{value}` is not one of {MODES}")]
    SslMode { source_name: String, value: String },
    #[error("libpq variables: {0}")]
    Libpq(String),
}

/// Turns the source into a target: fetches the secret if there is one, applies the TLS
/// precedence (`--sslmode` > the connection string > PGSSLMODE > prefer) and the password file.
pub async fn resolve(source: &Source, overrides: &TlsOverrides, env: &LibpqVars) -> Result<Target, TargetError> {
    let (mut config, params, secret, child_url) = match source {
        Source::Url { url, config, tls } => ((**config).clone(), tls.clone(), None, url.expose().to_string()),
        Source::Secret(secret) => {
            let text = secrets::fetch(secret).await?;
            let (config, params, child_url) = from_secret(secret, &text)?;
            (config, params, Some(secret.clone()), child_url)
        }
        Source::Libpq => {
            let config = env.to_config().map_err(TargetError::Libpq)?;
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
    if config.get_password().is_none() {
        add_pgpass_password(&mut config, env);
    }
    // Each connection attempt is capped by the connection string's connect_timeout, else
    // PGCONNECT_TIMEOUT, else 10 s; --connect-timeout bounds the retries as a whole.
    let attempt_timeout =
        config.get_connect_timeout().copied().or_else(|| env.connect_timeout()).unwrap_or(DEFAULT_ATTEMPT);
    Ok(Target { config, tls: TlsSettings { mode, root_cert }, secret, url_for_child: child_url, attempt_timeout })
}

fn ssl_mode(source_name: &str, text: &str) -> Result<SslMode, TargetError> {
    SslMode::parse(text).ok_or_else(|| TargetError::SslMode { source_name: source_name.into(), value: text.into() })
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
                reason: match e {
                    ConnectError::InvalidUrl { reason, .. } => reason,
                    other => other.to_string(),
                },
            }),
        },
    }
}

fn add_pgpass_password(config: &mut tokio_postgres::Config, env: &LibpqVars) {
    let Some(passfile) = &env.passfile else { return };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_string();
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    if let Some(password) = libpq::pgpass_password(passfile, &host, port, &dbname, &user) {
        tracing::debug!(file = %passfile.display(), "password from the password file");
        config.password(password.as_bytes());
    }
}

/// `postgres://user:password@host:port/dbname`, user and password percent-encoded: passwords
/// from RDS hold `/@:?#%`.
pub fn to_url(config: &tokio_postgres::Config) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let user = config.get_user().map(encode).unwrap_or_default();
    let password =
        config.get_password().map(|p| format!(":{}", encode(&String::from_utf8_lossy(p)))).unwrap_or_default();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => encode(&path.display().to_string()),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().map(encode).unwrap_or_default();
    let at = if user.is_empty() { String::new() } else { format!("{user}{password}@") };
    format!("postgres://{at}{host}:{port}/{dbname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_url_error_hides_the_password() {
        let error = DatabaseUrl::parse("postgres://app:hunter2@db/app?connect_timeout=soon".into()).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("connect_timeout") && message.contains("app:***@db"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn takes_tls_parameters_out_of_urls_and_key_values() {
        let (rest, tls) =
            take_tls_params("postgres://u:p@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Frds.pem");
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        assert_eq!(tls, TlsParams { sslmode: Some("verify-full".into()), sslrootcert: Some("/etc/rds.pem".into()) });
        let (rest, tls) = take_tls_params("host=h sslmode = verify-ca password='a b\\'c' sslrootcert='/x y.pem'");
        assert_eq!(rest, "host=h password='a b\\'c'");
        assert_eq!(tls, TlsParams { sslmode: Some("verify-ca".into()), sslrootcert: Some("/x y.pem".into()) });
        let (rest, _) = take_tls_params("postgres://h/db?sslmode=require");
        assert_eq!(rest, "postgres://h/db");
    }

    #[test]
    fn urls_for_children_encode_user_and_password() {
        let mut config = tokio_postgres::Config::new();
        config.host("db.example").port(5433).user("app").password("p@ss:/?#%").dbname("app");
        let url = to_url(&config);
        assert_eq!(url, "postgres://app:p%40ss%3A%2F%3F%23%25@db.example:5433/app");
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_password(), Some("p@ss:/?#%".as_bytes()));
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(redact("postgres://app:s3cr%40t@db:5432/app"), "postgres://app:***@db:5432/app");
        assert_eq!(
            redact("postgresql://app:p@ss/w:rd@db/app?sslmode=require"),
            "postgresql://app:***@db/app?sslmode=require"
        );
        assert_eq!(
            redact("postgres://app@db/app?password=hunter2&sslmode=require"),
            "postgres://app@db/app?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
    }

    #[test]
    fn redacts_key_value_passwords() {
        assert_eq!(redact("host=db password=hunter2 user=app"), "host=db password=*** user=app");
        assert_eq!(redact("host=db password = 'a b\\'c' user=app"), "host=db password = *** user=app");
        assert_eq!(redact("PASSWORD=x"), "PASSWORD=***");
        assert_eq!(redact("host=db user=password_owner"), "host=db user=password_owner");
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let (url, _, _) = DatabaseUrl::parse("postgres://app:hunter2@db/app".into()).unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }
}

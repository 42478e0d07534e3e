//! Connection strings: parsing URLs and libpq `key=value` strings (with their TLS parameters),
//! and hiding their passwords from every log line, error and panic.

use std::fmt;

use super::failure::error_chain;
use super::tls::{SslMode, MODES};

/// A connection string that does not parse. It never holds the string, not even redacted: a
/// string that failed to parse may hide its password anywhere. It says which part is wrong.
#[derive(Debug, thiserror::Error)]
#[error("the database connection string is not valid: {reason}; expected postgres://user:password@host:port/dbname or key=value pairs (host=... dbname=...)")]
pub struct UrlError {
    /// What is wrong with it, in migrun's words and the names of parameters only.
    pub reason: String,
}

/// A connection string as the user gave it. Its `Display` and `Debug` hide the password, so no
/// log line, error or panic message can print it.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
}

/// The parameters of a connection string that migrun handles itself: TLS, which
/// tokio-postgres does not (fully) know, and `iam` (RDS IAM database authentication).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandledParams {
    /// `sslmode`, as written.
    pub sslmode: Option<String>,
    /// `sslrootcert`, as written.
    pub sslrootcert: Option<String>,
    /// `iam`, as written (`iam=true`: the same as `--iam-auth`).
    pub iam: Option<String>,
}

/// libpq's parameter names: the only words of a failed string an error may repeat.
const PARAMETERS: [&str; 24] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "options",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
    "target_session_attrs",
    "load_balance_hosts",
    "replication",
];

/// The driver's reason with every quoted fragment of the input dropped, except parameter names.
fn sanitize(reason: &str) -> String {
    let mut out = String::new();
    let mut parts = reason.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut quoted = true;
    for part in parts {
        match (quoted, PARAMETERS.contains(&part)) {
            (true, true) => out.push_str(&format!("`{part}`")),
            (true, false) => out.push_str("(a value not shown)"),
            (false, _) => out.push_str(part),
        }
        quoted = !quoted;
    }
    out
}

/// Why `text` (already trimmed) is not a connection string, judged by its shape before the
/// driver sees it; `None` when the driver should judge.
fn shape_problem(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if let Some((scheme, _)) = lower.split_once("://") {
        return match scheme {
            "postgres" | "postgresql" => None,
            _ => Some("the scheme is not postgres:// or postgresql://"),
        };
    }
    if lower.starts_with("postgres") {
        return Some("it starts like a URL, but the scheme is not followed by ://");
    }
    if !text.contains('=') {
        return Some("it is neither a URL nor key=value pairs");
    }
    None
}

impl DatabaseUrl {
    /// Accepts `postgres://` / `postgresql://` URLs and libpq `key=value` strings. Whitespace
    /// around the string (a copy from a console, a trailing newline) is dropped.
    pub fn parse(raw: String) -> Result<(DatabaseUrl, tokio_postgres::Config, HandledParams), UrlError> {
        let trimmed = raw.trim();
        let url = DatabaseUrl { raw: if trimmed.len() == raw.len() { raw } else { trimmed.to_string() } };
        if let Some(reason) = shape_problem(&url.raw) {
            return Err(UrlError { reason: reason.to_string() });
        }
        let (rest, tls) = take_handled_params(&url.raw);
        if let Some(mode) = tls.sslmode.as_deref().filter(|m| SslMode::parse(m).is_none()) {
            let shown = if mode.len() <= 12 && mode.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                mode
            } else {
                "(not shown)"
            };
            let reason = format!("sslmode `{shown}` is not one of {MODES}");
            return Err(UrlError { reason });
        }
        match rest.parse::<tokio_postgres::Config>() {
            Ok(config) => Ok((url, config, tls)),
            Err(e) => Err(UrlError { reason: sanitize(&error_chain(&e)) }),
        }
    }
}

/// Removes `sslmode`, `sslrootcert` and `iam` from a URL's query or a key=value string: migrun
/// handles TLS itself (tokio-postgres rejects `verify-ca`/`verify-full` and `sslrootcert`), and
/// `iam` is no libpq parameter (a child process's libpq would refuse it).
fn take_handled_params(raw: &str) -> (String, HandledParams) {
    let mut tls = HandledParams::default();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            tls.sslmode = Some(value);
            false
        }
        "sslrootcert" => {
            tls.sslrootcert = Some(value);
            false
        }
        "iam" => {
            tls.iam = Some(value);
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

/// `raw` with its own TLS parameters replaced by `sslmode` and `sslrootcert` (when given), in
/// the string's own syntax: a child process that reads only the string then connects as
/// migrun did.
pub fn with_tls_params(raw: &str, sslmode: &str, sslrootcert: Option<&str>) -> String {
    let (rest, _) = take_handled_params(raw);
    if rest.contains("://") {
        let mut pairs = vec![format!("sslmode={sslmode}")];
        pairs.extend(sslrootcert.map(|path| format!("sslrootcert={}", percent_encode(path))));
        let joiner = if rest.contains('?') { '&' } else { '?' };
        return format!("{rest}{joiner}{}", pairs.join("&"));
    }
    let mut text = format!("{rest} sslmode={sslmode}");
    if let Some(path) = sslrootcert {
        text.push_str(&format!(" sslrootcert='{}'", path.replace('\\', "\\\\").replace('\'', "\\'")));
    }
    text.trim_start().to_string()
}

/// Percent-encodes all but unreserved characters and `/` (a path in a URL's query).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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

/// The first host of a configuration: a name or address, or a Unix socket directory.
pub fn first_host(config: &tokio_postgres::Config) -> Option<String> {
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => Some(host.clone()),
        Some(tokio_postgres::config::Host::Unix(path)) => Some(path.display().to_string()),
        None => None,
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
    // A socket directory goes percent-encoded in the host part, as libpq reads it.
    let host = match first_host(config) {
        Some(dir) if dir.starts_with('/') => encode(&dir),
        Some(host) => host,
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
    fn a_child_string_carries_the_tls_settings_migrun_used() {
        assert_eq!(
            with_tls_params(
                "postgres://u:p@h/db?sslmode=prefer&application_name=x",
                "verify-full",
                Some("/etc/ssl/rds bundle.pem")
            ),
            "postgres://u:p@h/db?application_name=x&sslmode=verify-full&sslrootcert=/etc/ssl/rds%20bundle.pem"
        );
        assert_eq!(with_tls_params("postgres://h/db", "require", None), "postgres://h/db?sslmode=require");
        // `iam` is migrun's: a child's libpq never sees it.
        assert_eq!(with_tls_params("postgres://u@h/db?iam=true", "require", None), "postgres://u@h/db?sslmode=require");
        let (_, config, params) = DatabaseUrl::parse("postgres://u@h/db?iam=true&application_name=x".into()).unwrap();
        assert_eq!((params.iam.as_deref(), config.get_application_name()), (Some("true"), Some("x")));
        assert_eq!(
            with_tls_params("host=h sslmode=disable dbname=d", "verify-ca", Some("/a'b.pem")),
            "host=h dbname=d sslmode=verify-ca sslrootcert='/a\\'b.pem'"
        );
        let (_, config, tls) =
            DatabaseUrl::parse(with_tls_params("host=h dbname=d", "verify-ca", Some("/x y.pem"))).unwrap();
        assert_eq!(config.get_dbname(), Some("d"));
        assert_eq!((tls.sslmode.as_deref(), tls.sslrootcert.as_deref()), (Some("verify-ca"), Some("/x y.pem")));
    }

    #[test]
    fn invalid_url_error_names_the_part_never_the_text() {
        let error = DatabaseUrl::parse("postgres://app:hunter2@db/app?connect_timeout=soon".into()).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("invalid value for option `connect_timeout`"), "{message}");
        assert!(!message.contains("hunter2") && !message.contains("db/app"), "{message}");
        for (bad, says) in [
            ("postgres:/app:hunter2@h/x", "not followed by ://"),
            ("postgres;//app:hunter2@h/x", "not followed by ://"),
            ("postgresql//app:hunter2@h/x", "not followed by ://"),
            ("postgres:app:hunter2@h/x", "not followed by ://"),
            ("hunter2", "neither a URL nor key=value"),
            ("mysql://app:hunter2@h/x", "scheme is not postgres://"),
            ("hunter2=x y", "unknown option (a value not shown)"),
            ("host=h port=hunter2", "invalid value for option `port`"),
            ("host=h password='hunter2", "unterminated"),
            (" postgres://app:hunter2@h/x?hunter2=1 ", "unknown option (a value not shown)"),
            ("postgres://app:hunter2@h:99999999/x", "invalid"),
            ("postgres://app:hunter2@h/x?sslmode=hunter2", "sslmode `hunter2`"),
        ] {
            let message = DatabaseUrl::parse(bad.into()).err().unwrap_or_else(|| panic!("{bad} parsed")).to_string();
            assert!(message.contains(says), "{bad}: {message}");
            if !says.contains("hunter2") {
                assert!(!message.contains("hunter2"), "{bad}: {message}");
            }
        }
    }

    #[test]
    fn surrounding_whitespace_is_dropped() {
        let (url, config, _) = DatabaseUrl::parse("  postgres://app:pw@db/app\n".into()).unwrap();
        assert_eq!(url.expose(), "postgres://app:pw@db/app");
        assert_eq!(config.get_dbname(), Some("app"));
    }

    #[test]
    fn takes_tls_parameters_out_of_urls_and_key_values() {
        let (rest, tls) = take_handled_params(
            "postgres://u:p@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Frds.pem",
        );
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        assert_eq!(
            tls,
            HandledParams { sslmode: Some("verify-full".into()), sslrootcert: Some("/etc/rds.pem".into()), iam: None }
        );
        let (rest, tls) = take_handled_params("host=h sslmode = verify-ca password='a b\\'c' sslrootcert='/x y.pem'");
        assert_eq!(rest, "host=h password='a b\\'c'");
        assert_eq!(
            tls,
            HandledParams { sslmode: Some("verify-ca".into()), sslrootcert: Some("/x y.pem".into()), iam: None }
        );
        let (rest, _) = take_handled_params("postgres://h/db?sslmode=require");
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

//! Connection strings: the redacting URL type and password redaction.

use std::fmt;

use crate::connect::ConnectError;
use crate::error::chain;

/// A connection string as the user gave it. Its `Display` and `Debug` hide the password, so no
/// log line, error or panic message can print it.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
}

impl DatabaseUrl {
    /// Accepts `postgres://` / `postgresql://` URLs and libpq `key=value` strings.
    pub fn parse(raw: String) -> Result<(DatabaseUrl, tokio_postgres::Config), ConnectError> {
        let url = DatabaseUrl { raw };
        match url.raw.parse::<tokio_postgres::Config>() {
            Ok(config) => Ok((url, config)),
            Err(e) => Err(ConnectError::InvalidUrl { url: url.to_string(), reason: chain(&e) }),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let (url, _) = DatabaseUrl::parse("postgres://app:hunter2@db/app".into()).unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }
}

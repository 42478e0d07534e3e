//! The targets of a fan-out: databases (a connection string each) or schemas of one database,
//! read once from a source, sorted and de-duplicated, each with an id that holds no password.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::db::url::{first_host, DatabaseUrl};

/// One target.
#[derive(Debug, Clone)]
pub struct Target {
    /// What logs, the run table and `--only` call it: `host:port/db` or `schema:NAME`.
    pub id: String,
    pub kind: TargetKind,
    /// `host:port` of its server, for the per-server connection limit.
    pub server: String,
}

/// A database, or a schema of the base database.
#[derive(Debug, Clone)]
pub enum TargetKind {
    Database(String),
    Schema(String),
}

/// The targets cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("--targets: `{0}` is not a target source; expected file:PATH, secret:ARN[:KEY] or sql:URL (with --targets-query)")]
    BadSource(String),
    #[error("--targets {origin}: {reason}")]
    Unreadable { origin: String, reason: String },
    #[error("--targets {origin}, line {line}: {reason}")]
    BadLine { origin: String, line: usize, reason: String },
    #[error("--targets {0}: holds no target")]
    Empty(String),
    #[error("--targets {0}: schema targets need a database to live in: set DATABASE_URL / --database-url")]
    NoBaseDatabase(String),
    #[error("--only {0}: not one of the targets")]
    NotATarget(String),
}

/// Parses target lines: a connection string or `schema:NAME` each; `#` starts a comment.
pub fn parse(source: &str, text: &str, base: Option<&str>) -> Result<Vec<Target>, TargetsError> {
    let mut by_id: BTreeMap<String, Target> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| TargetsError::BadLine { origin: source.into(), line: index + 1, reason };
        let target = match line.strip_prefix("schema:") {
            Some(name) => {
                let name = name.trim();
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && name.len() <= 63;
                if !valid {
                    return Err(bad(format!("`{name}` is not a plain schema name (letters, digits, _)")));
                }
                let base = base.ok_or_else(|| TargetsError::NoBaseDatabase(source.into()))?;
                Target {
                    id: format!("schema:{}", name.to_ascii_lowercase()),
                    kind: TargetKind::Schema(name.to_ascii_lowercase()),
                    server: server_of(base).map_err(bad)?,
                }
            }
            None => {
                let (id, server) = describe(line).map_err(bad)?;
                Target { id, kind: TargetKind::Database(line.to_string()), server }
            }
        };
        by_id.entry(target.id.clone()).or_insert(target);
    }
    if by_id.is_empty() {
        return Err(TargetsError::Empty(source.into()));
    }
    Ok(by_id.into_values().collect())
}

/// `host:port/db` of a connection string (never its password), and `host:port`.
fn describe(url: &str) -> Result<(String, String), String> {
    let (_, config, _) = DatabaseUrl::parse(url.to_string()).map_err(|e| e.to_string())?;
    let server = server_from(&config);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_string();
    Ok((format!("{server}/{db}"), server))
}

fn server_of(url: &str) -> Result<String, String> {
    let (_, config, _) = DatabaseUrl::parse(url.to_string()).map_err(|e| e.to_string())?;
    Ok(server_from(&config))
}

fn server_from(config: &tokio_postgres::Config) -> String {
    let host = first_host(config).unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A short hash of the target list, in every event: workers with different lists are seen.
pub fn list_hash(targets: &[Target]) -> String {
    let mut hasher = Sha256::new();
    for target in targets {
        hasher.update(target.id.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize()[..6])
}

/// A stable order every worker computes alike: by a hash of the id, so the first N targets
/// (the canary) are spread over servers and tenants, and independent of the source's order.
pub fn stable_order(targets: &[Target]) -> Vec<usize> {
    let mut order: Vec<(Vec<u8>, usize)> =
        targets.iter().enumerate().map(|(i, t)| (Sha256::digest(t.id.as_bytes()).to_vec(), i)).collect();
    order.sort();
    order.into_iter().map(|(_, i)| i).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted_deduplicated_and_never_show_a_password() {
        let text = "# tenants\npostgres://app:secret@db2:5432/t2\npostgres://app:secret@db1/t1  # first\n\npostgres://app:other@db1/t1\n";
        let targets = parse("file:t", text, None).expect("parses");
        let ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["db1:5432/t1", "db2:5432/t2"]);
        assert!(targets.iter().all(|t| !t.id.contains("secret")));
        assert_eq!(targets[0].server, "db1:5432");
    }

    #[test]
    fn schema_targets_need_a_base_and_a_plain_name() {
        assert!(matches!(parse("f", "schema:acme\n", None), Err(TargetsError::NoBaseDatabase(_))));
        let targets = parse("f", "schema:Acme\nschema:beta\n", Some("postgres://a@h:6543/app")).expect("parses");
        assert_eq!(targets[0].id, "schema:acme");
        assert_eq!(targets[0].server, "h:6543");
        assert!(matches!(
            parse("f", "schema:a;drop\n", Some("postgres://a@h/app")),
            Err(TargetsError::BadLine { line: 1, .. })
        ));
        assert!(matches!(parse("f", "# nothing\n", None), Err(TargetsError::Empty(_))));
    }

    #[test]
    fn the_order_is_the_same_whatever_the_input_order() {
        let a = parse("f", "postgres://h/a\npostgres://h/b\npostgres://h/c\n", None).expect("a");
        let b = parse("f", "postgres://h/c\npostgres://h/a\npostgres://h/b\n", None).expect("b");
        let ids = |t: &[Target]| stable_order(t).into_iter().map(|i| t[i].id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(list_hash(&a), list_hash(&b));
    }
}

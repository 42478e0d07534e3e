//! The targets of a fan-out: databases (a connection string each) or schemas of one database,
//! read once from a source, sorted and de-duplicated, each with an id that holds no password;
//! two lines that name one id but write to different places are refused.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::db::url::{first_host, redact, DatabaseUrl};

/// One target.
#[derive(Debug, Clone)]
pub struct Target {
    /// What logs, the run table and `--only` call it: `host:port/db` or `schema:NAME`.
    pub id: String,
    pub kind: TargetKind,
    /// `host:port` of its server, for the per-server connection limit (after
    /// [`unify_servers`], one spelling per server).
    pub server: String,
}

/// A database, or a schema of the base database.
#[derive(Debug, Clone)]
pub enum TargetKind {
    Database(String),
    Schema(String),
}

/// The targets cannot be read. No variant holds a `--targets` value as given: a `sql:` URL
/// or a mistyped connection string may carry a password. [`origin`] is what they say instead.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error(
        "--targets: {0} is not a target source; expected file:PATH, secret:ARN[:KEY] or sql:URL (with --targets-query)"
    )]
    BadSource(String),
    #[error("--targets {origin}: {reason}")]
    Unreadable { origin: String, reason: String },
    #[error("--targets {origin}, line {line}: {reason}")]
    BadLine { origin: String, line: usize, reason: String },
    #[error("--targets {origin}: lines {first} and {second} both name {id}, as {what}: migrun would migrate one place and report both; give each its own database, or use schema:NAME targets")]
    Collision { origin: String, first: usize, second: usize, id: String, what: String },
    #[error("--targets {0}: holds no target")]
    Empty(String),
    #[error("--targets {0}: schema targets need a database to live in: set DATABASE_URL / --database-url")]
    NoBaseDatabase(String),
    #[error("--only {0}: not one of the targets")]
    NotATarget(String),
}

/// How errors and logs name a `--targets` value: `file:` and `secret:` as given, `sql:` with
/// its URL's password hidden, anything else only by its first word (it may be a connection
/// string with a password, or the password itself).
pub fn origin(source: &str) -> String {
    match source.split_once(':') {
        Some(("file" | "secret", _)) => source.to_string(),
        Some(("sql", url)) => format!("sql:{}", redact(url)),
        Some((scheme, _))
            if !scheme.is_empty() && scheme.len() <= 16 && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!("`{scheme}:...`")
        }
        // A bare path (the `file:` forgotten) names nothing secret.
        None if looks_like_path(source) => format!("`{source}`"),
        _ => "the value given".to_string(),
    }
}

/// `tenants.txt`, `/etc/migrun/targets`: a file name, not a connection string or a password.
fn looks_like_path(text: &str) -> bool {
    (text.contains('/') || text.contains('.'))
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
}

/// One line's target, with where it writes beyond its id.
struct Parsed {
    target: Target,
    line: usize,
    place: Place,
}

/// The role and start-up options of a line: another role (its `$user` schema, its ownership)
/// or another `search_path` writes elsewhere in the same database.
type Place = (Option<String>, Option<String>);

/// Parses target lines: a connection string or `schema:NAME` each. A line whose first
/// non-blank character is `#` is a comment; a `#` anywhere else is part of the line (a
/// password may hold one).
pub fn parse(source: &str, text: &str, base: Option<&str>) -> Result<Vec<Target>, TargetsError> {
    let origin = origin(source);
    let mut by_id: BTreeMap<String, Parsed> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = parse_line(line, index + 1, base, &origin)?;
        match by_id.get(&parsed.target.id) {
            Some(first) if first.place != parsed.place => {
                let what =
                    if first.place.0 != parsed.place.0 { "different roles" } else { "different start-up options" };
                return Err(TargetsError::Collision {
                    origin,
                    first: first.line,
                    second: parsed.line,
                    id: parsed.target.id,
                    what: what.into(),
                });
            }
            // The same place spelled again (another password, TLS setting): the first line wins.
            Some(_) => {}
            None => {
                by_id.insert(parsed.target.id.clone(), parsed);
            }
        }
    }
    if by_id.is_empty() {
        return Err(TargetsError::Empty(origin));
    }
    Ok(by_id.into_values().map(|p| p.target).collect())
}

fn parse_line(line: &str, number: usize, base: Option<&str>, origin: &str) -> Result<Parsed, TargetsError> {
    let bad = |reason: String| TargetsError::BadLine { origin: origin.into(), line: number, reason };
    match line.strip_prefix("schema:") {
        Some(name) => {
            let name = name.trim();
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.len() <= 63;
            if !valid {
                return Err(bad(format!("`{name}` is not a plain schema name (letters, digits, _)")));
            }
            let base = base.ok_or_else(|| TargetsError::NoBaseDatabase(origin.into()))?;
            let (_, server, _) = describe(base).map_err(bad)?;
            let target = Target {
                id: format!("schema:{}", name.to_ascii_lowercase()),
                kind: TargetKind::Schema(name.to_ascii_lowercase()),
                server,
            };
            Ok(Parsed { target, line: number, place: (None, None) })
        }
        None => {
            let (id, server, place) = describe(line).map_err(bad)?;
            Ok(Parsed {
                target: Target { id, kind: TargetKind::Database(line.to_string()), server },
                line: number,
                place,
            })
        }
    }
}

/// `host:port/db` of a connection string (never its password), `host:port`, and its place.
fn describe(url: &str) -> Result<(String, String, Place), String> {
    let (_, config, _) = DatabaseUrl::parse(url.to_string()).map_err(|e| e.to_string())?;
    let server = server_from(&config);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_string();
    let options = config.get_options().map(str::trim).filter(|o| !o.is_empty()).map(str::to_string);
    Ok((format!("{server}/{db}"), server, (config.get_user().map(str::to_string), options)))
}

fn server_from(config: &tokio_postgres::Config) -> String {
    let host = first_host(config).unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// The server of a connection string, as `host:port`.
pub fn server_of(url: &str) -> Option<String> {
    describe(url).ok().map(|(_, server, _)| server)
}

/// Gives every server one spelling: `localhost:5432` and `127.0.0.1:5432` (or an RDS cluster
/// endpoint and the instance it points to) are one server, and `--max-conns-per-server`
/// counts them together. Spellings whose resolved addresses meet are one server, named by
/// the first of them in order; a name that does not resolve (or a socket path) keeps its own.
pub async fn unify_servers(targets: &mut [Target], others: &mut [&mut String]) {
    let mut spellings: Vec<String> = targets.iter().map(|t| t.server.clone()).collect();
    spellings.extend(others.iter().map(|s| s.to_string()));
    spellings.sort();
    spellings.dedup();
    let mut resolved: Vec<(String, Vec<std::net::SocketAddr>)> = Vec::new();
    for spelling in spellings {
        let addresses =
            match tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host(spelling.as_str()))
                .await
            {
                Ok(Ok(found)) => found.collect(),
                _ => Vec::new(),
            };
        resolved.push((spelling, addresses));
    }
    // Union-find over the spellings: two whose addresses meet share a root, the first of them.
    let mut root: Vec<usize> = (0..resolved.len()).collect();
    fn find(root: &[usize], mut at: usize) -> usize {
        while root[at] != at {
            at = root[at];
        }
        at
    }
    for i in 0..resolved.len() {
        for j in i + 1..resolved.len() {
            if resolved[j].1.iter().any(|a| resolved[i].1.contains(a)) {
                let (a, b) = (find(&root, i), find(&root, j));
                root[a.max(b)] = a.min(b);
            }
        }
    }
    let canonical = |spelling: &str| -> String {
        match resolved.iter().position(|(s, _)| s == spelling) {
            Some(at) => resolved[find(&root, at)].0.clone(),
            None => spelling.to_string(),
        }
    };
    for target in targets.iter_mut() {
        target.server = canonical(&target.server);
    }
    for other in others.iter_mut() {
        **other = canonical(other);
    }
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

/// A secret's targets as lines: a JSON list of target lines, or
/// `{"template": "...{id}...", "ids": [...]}`.
pub fn secret_lines(value: &str) -> Result<String, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|_| "the secret is not JSON (a list of targets)".to_string())?;
    let strings = |v: &serde_json::Value| -> Result<Vec<String>, String> {
        v.as_array()
            .ok_or("expected a JSON list")?
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| "a list item is not a string".to_string()))
            .collect()
    };
    match &parsed {
        serde_json::Value::Array(_) => Ok(strings(&parsed)?.join("\n")),
        serde_json::Value::Object(object) => {
            let template =
                object.get("template").and_then(|t| t.as_str()).ok_or("expected a list, or {\"template\", \"ids\"}")?;
            let ids = strings(object.get("ids").unwrap_or(&serde_json::Value::Null))?;
            Ok(ids.iter().map(|id| template.replace("{id}", id)).collect::<Vec<_>>().join("\n"))
        }
        _ => Err("expected a JSON list of targets".into()),
    }
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
        let text = "# tenants\npostgres://app:secret@db2:5432/t2\n  # db1 next\npostgres://app:secret@db1/t1\n\npostgres://app:other@db1/t1\n";
        let targets = parse("file:t", text, None).expect("parses");
        let ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["db1:5432/t1", "db2:5432/t2"]);
        assert!(targets.iter().all(|t| !t.id.contains("secret")));
        assert_eq!(targets[0].server, "db1:5432");
    }

    #[test]
    fn a_hash_inside_a_line_is_part_of_it() {
        let targets = parse("file:t", "host=db1 password=ab#cd dbname=tenant1 user=app\n", None).expect("parses");
        assert_eq!(targets[0].id, "db1:5432/tenant1");
        let TargetKind::Database(line) = &targets[0].kind else { panic!("a database target") };
        assert!(line.contains("password=ab#cd"), "the whole line is the target");
    }

    #[test]
    fn one_id_for_two_places_is_refused() {
        let roles = "postgres://app@db/t1\npostgres://admin@db/t1\n";
        let e = parse("file:t", roles, None).expect_err("two roles, one id");
        assert!(matches!(e, TargetsError::Collision { first: 1, second: 2, .. }), "{e}");
        let paths = "host=db dbname=t1 options='-c search_path=a'\nhost=db dbname=t1 options='-c search_path=b'\n";
        assert!(matches!(parse("file:t", paths, None), Err(TargetsError::Collision { .. })));
        let spelled_twice = "postgres://app:one@db/t1\npostgres://app:two@db/t1?sslmode=require\n";
        assert_eq!(parse("file:t", spelled_twice, None).expect("the same place").len(), 1);
    }

    #[test]
    fn errors_never_quote_a_password() {
        for source in [
            "sql:postgres://app:hunter2@db/catalog",
            "postgres://app:hunter2@db/t1",
            "host=db password=hunter2",
            "hunter2",
        ] {
            let shown = origin(source);
            assert!(!shown.contains("hunter2"), "{source} shown as {shown}");
        }
        assert_eq!(origin("file:tenants.txt"), "file:tenants.txt");
        assert_eq!(origin("tenants.txt"), "`tenants.txt`");
        assert_eq!(origin("sql:postgres://app:hunter2@db/catalog"), "sql:postgres://app:***@db/catalog");
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

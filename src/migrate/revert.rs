//! `down`: which versions to undo, newest first, and every reason not to start. Pure logic
//! over the files, the history and what was recorded when each version was applied, so a
//! refused `down` has run nothing.

use std::collections::HashMap;

use serde::Serialize;

use super::compare::{Comparison, FileState};
use super::files::{Migration, MigrationKind};
use super::rollback::Recorded;
use super::split;

/// How far back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Undo every applied version above this one (0: all of them).
    To(u64),
    /// Undo the newest this many applied versions.
    Steps(usize),
}

/// One version to undo.
#[derive(Debug, Clone, Serialize)]
pub struct Step<'m> {
    pub version: u64,
    /// The down file.
    pub file: String,
    /// Runs in one transaction (else statement by statement).
    pub transaction: bool,
    /// A previous `up` or `down` stopped in the middle of this version's no-transaction file.
    pub unfinished: bool,
    #[serde(skip)]
    pub down: &'m Migration,
}

/// Why `down` refuses; nothing was run.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("down --to {target}: no migration file has this version and it is not 0; give the version to go back to (the versions above it are undone), or 0 for all")]
    NoSuchVersion { target: u64 },
    #[error("down: {}; nothing was run", .0.join("; "))]
    Refused(Vec<String>),
}

/// The versions `target` undoes, newest first, or every reason not to.
pub fn plan<'m>(
    comparison: &Comparison<'m>,
    recorded: &HashMap<u64, Recorded>,
    migrations: &'m [Migration],
    target: Target,
) -> Result<Vec<Step<'m>>, RevertError> {
    if let Target::To(v) = target {
        if v != 0 && !migrations.iter().any(|m| m.version() == Some(v)) && !comparison.missing.contains(&v) {
            return Err(RevertError::NoSuchVersion { target: v });
        }
    }
    let applied = applied_newest_first(comparison);
    let range: Vec<(u64, Option<&'m Migration>, bool)> = match target {
        Target::To(floor) => applied.into_iter().filter(|(v, _, _)| *v > floor).collect(),
        Target::Steps(n) => applied.into_iter().take(n).collect(),
    };
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    for (version, up, unfinished) in &range {
        let Some(up) = up else {
            problems.push(format!(
                "version {version} is applied but no file here has it; run down from the image that applied it"
            ));
            continue;
        };
        let Some(down) = up.down.as_deref() else {
            problems.push(format!("{} has no down file; write {}", up.display_path(), down_name(up)));
            continue;
        };
        if let Some(was) = recorded.get(version).and_then(|r| r.down_checksum.as_deref()) {
            if was != down.checksum {
                problems.push(format!(
                    "{} changed since version {version} was applied (recorded {was}, file now {}); restore it, or verify the new one and apply the version again",
                    down.display_path(),
                    down.checksum
                ));
                continue;
            }
        }
        steps.push(Step {
            version: *version,
            file: down.display_path(),
            transaction: !down.directives.no_transaction,
            unfinished: *unfinished,
            down,
        });
    }
    problems.extend(repeatables_using(comparison, &range));
    match problems.is_empty() {
        true => Ok(steps),
        false => Err(RevertError::Refused(problems)),
    }
}

/// `sql/0003_add_email.sql` → `sql/0003_add_email.down.sql`.
fn down_name(up: &Migration) -> String {
    let path = up.display_path();
    let stem = path.strip_suffix(".up.sql").or_else(|| path.strip_suffix(".sql")).unwrap_or(&path);
    format!("{stem}.down.sql")
}

/// Applied (or started) versions, newest first, each with its file if there is one.
fn applied_newest_first<'m>(comparison: &Comparison<'m>) -> Vec<(u64, Option<&'m Migration>, bool)> {
    let mut applied: Vec<(u64, Option<&'m Migration>, bool)> = comparison
        .entries
        .iter()
        .filter(|e| matches!(e.state, FileState::Applied | FileState::Drifted | FileState::Unfinished))
        .filter_map(|e| e.migration.version().map(|v| (v, Some(e.migration), e.state == FileState::Unfinished)))
        .chain(comparison.missing.iter().map(|v| (*v, None, false)))
        .collect();
    applied.sort_by_key(|a| std::cmp::Reverse(a.0));
    applied
}

/// Applied repeatable files that name an object an up file in the range created: undoing the
/// version would break them (or a `DROP ... CASCADE` in the down would take their objects
/// with it, and the history would still call them applied).
fn repeatables_using(comparison: &Comparison<'_>, range: &[(u64, Option<&Migration>, bool)]) -> Vec<String> {
    let created: Vec<(u64, String)> = range
        .iter()
        .filter_map(|(v, up, _)| up.map(|up| (*v, up)))
        .flat_map(|(v, up)| created_names(&up.sql).into_iter().map(move |name| (v, name)))
        .collect();
    let mut problems = Vec::new();
    for entry in &comparison.entries {
        let applied = matches!(entry.state, FileState::Applied | FileState::Changed);
        if entry.migration.kind != MigrationKind::Repeatable || !applied {
            continue;
        }
        let words = words(&entry.migration.sql);
        let used: Vec<String> = created
            .iter()
            .filter(|(_, name)| words.contains(name))
            .map(|(v, name)| format!("{name} (version {v})"))
            .collect();
        if !used.is_empty() {
            problems.push(format!(
                "{} uses {}; change it so that it does not, run up, then down",
                entry.migration.display_path(),
                used.join(", ")
            ));
        }
    }
    problems
}

/// Lower-cased identifiers in `sql`, comments and string literals left out (a function body in
/// dollar quotes is read: what it uses counts).
fn words(sql: &str) -> std::collections::HashSet<String> {
    let mut code = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
            }
            _ => {
                code.push(c);
                continue;
            }
        }
        code.push(' ');
    }
    code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The names of the tables, views, functions, types, sequences and columns `sql` creates:
/// the last part of each name, as Postgres folds it.
pub fn created_names(sql: &str) -> Vec<String> {
    const KINDS: [&str; 6] = ["table", "view", "function", "procedure", "type", "sequence"];
    const SKIP: [&str; 9] =
        ["or", "replace", "temp", "temporary", "unlogged", "materialized", "recursive", "if", "not"];
    let mut names = Vec::new();
    for statement in split::split(sql) {
        let words: Vec<String> = statement
            .text
            .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        for (i, word) in lower.iter().enumerate() {
            let name_after = |from: usize| {
                let mut at = from;
                while lower.get(at).is_some_and(|w| SKIP.contains(&w.as_str()) || w == "exists") {
                    at += 1;
                }
                words.get(at).map(|w| last_part(w))
            };
            let found = match word.as_str() {
                "create" => {
                    let mut at = i + 1;
                    while lower.get(at).is_some_and(|w| SKIP.contains(&w.as_str())) {
                        at += 1;
                    }
                    match lower.get(at) {
                        Some(kind) if KINDS.contains(&kind.as_str()) => name_after(at + 1),
                        _ => None,
                    }
                }
                "add" if lower.get(i + 1).is_some_and(|w| w == "column") => name_after(i + 2),
                _ => None,
            };
            if let Some(name) = found.filter(|n| !n.is_empty()) {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// `public."Users"` → `users`; `app.users` → `users`.
fn last_part(name: &str) -> String {
    // Quoted names are compared lower-cased too: a false match refuses, a missed one does not.
    let last = name.rsplit('.').next().unwrap_or(name);
    last.trim_matches('"').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_names_an_up_file_creates() {
        let sql = "CREATE TABLE IF NOT EXISTS app.orders (id int);\nALTER TABLE users ADD COLUMN IF NOT EXISTS email text, ADD COLUMN nick text;\nCREATE OR REPLACE FUNCTION f_total(int) RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;\nCREATE MATERIALIZED VIEW mv AS SELECT 1;\nCREATE UNIQUE INDEX i ON users (email);\nCREATE TYPE \"Mood\" AS ENUM ('a');";
        assert_eq!(created_names(sql), ["email", "f_total", "mood", "mv", "nick", "orders"]);
    }

    #[test]
    fn repeatables_are_read_without_comments_and_strings() {
        assert!(words("CREATE VIEW v AS SELECT u.email FROM users u; -- orders\n").contains("email"));
        assert!(!words("CREATE VIEW v AS SELECT 'orders' AS x; -- orders\n").contains("orders"));
    }
}

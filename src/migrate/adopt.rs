//! Other migration tools: their names, their history tables, and what those tables say is
//! applied. Read only; the other tool's table is never changed.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio_postgres::Client;

pub use super::tool::Tool;
use crate::db::failure::PgFailure;

/// What another tool's history table says is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolHistory {
    /// Versions applied one by one.
    pub each: BTreeSet<u64>,
    /// Every version up to and including this one is applied; it is a migration of its own
    /// (golang-migrate keeps only its current version).
    pub up_to: Option<u64>,
    /// Every version up to and including this one counts as applied, and this version need
    /// not be a file: a Flyway baseline (`flyway baseline`, or a `B` baseline migration).
    pub baseline: Option<u64>,
    /// Versions that cannot be migrun versions (`1.1` in Flyway), as the tool wrote them.
    pub unmappable: Vec<String>,
    /// Rows the tool itself does not count as applied (failed, rolled back), as `version: why`.
    pub ignored: Vec<String>,
    /// Alembic's current head revision: a name, not a version.
    pub head: Option<String>,
}

/// The other tool's table cannot be adopted as it is; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("baseline --from {tool}: table {table} does not exist; is this database managed by {tool}? (--from-table names another table)")]
    NoTable { tool: Tool, table: String },
    #[error("baseline --from {tool}: cannot read table {table}: {failure}")]
    Read { tool: Tool, table: String, failure: PgFailure },
    #[error("baseline --from {tool}: table {table} is not {tool}'s history ({reason})")]
    Shape { tool: Tool, table: String, reason: String },
    #[error("baseline --from golang-migrate: version {0} is dirty (a migration failed midway); fix the schema by hand, run `migrate force <version>` for the version the schema is really at, then run baseline again")]
    Dirty(String),
    #[error("baseline --from {tool}: {what} did not finish; finish or roll it back with {tool} first ({how}), then run baseline again")]
    Unfinished { tool: Tool, what: String, how: &'static str },
    #[error(
        "baseline --from alembic: alembic_version holds {0} heads (branches); merge them with `alembic merge` first"
    )]
    SeveralHeads(usize),
}

/// Reads `tool`'s history from `table` (its default name unless given).
pub async fn read(client: &Client, tool: Tool, table: &str) -> Result<ToolHistory, AdoptError> {
    // Every table read the same way: each row as one JSON object, so one query serves every
    // tool, a missing column is a clear shape error, and no column type needs guessing.
    let quoted = quote_table(table);
    // Asked of the catalog first: a read of a missing table is an ERROR in the server's log,
    // which RDS log alerts fire on.
    let found = client
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&quoted])
        .await
        .and_then(|row| row.try_get::<_, bool>(0));
    match found {
        Ok(false) => return Err(AdoptError::NoTable { tool, table: table.into() }),
        Ok(true) => {}
        Err(e) => return Err(AdoptError::Read { tool, table: table.into(), failure: PgFailure::from_pg(&e) }),
    }
    let sql = format!("SELECT to_jsonb(t)::text FROM {quoted} AS t");
    let rows = client.query(&sql, &[]).await.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            AdoptError::NoTable { tool, table: table.into() }
        } else {
            AdoptError::Read { tool, table: table.into(), failure: PgFailure::from_pg(&e) }
        }
    })?;
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String =
            row.try_get(0).map_err(|e| AdoptError::Shape { tool, table: table.into(), reason: e.to_string() })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| AdoptError::Shape {
            tool,
            table: table.into(),
            reason: e.to_string(),
        })?;
        objects.push(value);
    }
    interpret(tool, &objects).map_err(|e| match e {
        Interpreted::Shape(reason) => AdoptError::Shape { tool, table: table.into(), reason },
        Interpreted::Refused(e) => e,
    })
}

/// `ops.flyway_schema_history` → `"ops"."flyway_schema_history"`: an unquoted part folded to
/// lower case as Postgres folds it, a quoted one (`"Ops"."History"`) kept as written.
fn quote_table(table: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    let mut chars = table.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            c if quoted => part.push(c),
            c => part.extend(c.to_lowercase()),
        }
    }
    parts.push(part);
    parts.iter().map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

enum Interpreted {
    Shape(String),
    Refused(AdoptError),
}

/// A migrun version from another tool's version text: digits only, after dropping the
/// hyphens diesel puts in its timestamps (`2023-01-31-120000`).
pub fn version_of(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the rows of `tool`'s table say.
fn interpret(tool: Tool, rows: &[Value]) -> Result<ToolHistory, Interpreted> {
    let mut history = ToolHistory::default();
    let text = |row: &Value, column: &str| -> Result<Option<String>, Interpreted> {
        let object = row.as_object().ok_or_else(|| Interpreted::Shape("a row is not a record".into()))?;
        match object.get(column) {
            None => Err(Interpreted::Shape(format!("it has no column {column}"))),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Ok(Some(other.to_string())),
        }
    };
    let flag =
        |row: &Value, column: &str| -> Result<bool, Interpreted> { Ok(text(row, column)?.as_deref() == Some("true")) };
    let add = |history: &mut ToolHistory, version: &str| match version_of(version) {
        Some(v) => {
            history.each.insert(v);
        }
        None => history.unmappable.push(version.to_string()),
    };
    match tool {
        Tool::Sqlx => {
            for row in rows {
                let version = text(row, "version")?.unwrap_or_default();
                if !flag(row, "success")? {
                    return Err(Interpreted::Refused(AdoptError::Unfinished {
                        tool,
                        what: format!("version {version} (success = false)"),
                        how: "fix the schema, then delete its row from _sqlx_migrations or run it again with sqlx",
                    }));
                }
                add(&mut history, &version);
            }
        }
        Tool::Flyway => {
            let mut ordered: Vec<(i64, &Value)> = Vec::with_capacity(rows.len());
            for row in rows {
                let rank = text(row, "installed_rank")?.and_then(|r| r.parse().ok()).unwrap_or(0);
                ordered.push((rank, row));
            }
            ordered.sort_by_key(|(rank, _)| *rank);
            for (_, row) in ordered {
                let Some(version) = text(row, "version")? else {
                    continue; // a repeatable script: migrun runs repeatable files again itself
                };
                let kind = text(row, "type")?.unwrap_or_default();
                if !flag(row, "success")? {
                    // A script that failed midway outside a transaction: Flyway itself refuses
                    // to migrate past it, and `up` would run it again on a half-changed schema.
                    return Err(Interpreted::Refused(AdoptError::Unfinished {
                        tool,
                        what: format!("version {version} ({kind}, success = false)"),
                        how: "fix the schema by hand, then `flyway repair` removes the failed row",
                    }));
                }
                match kind.as_str() {
                    "SCHEMA" => {}
                    // `flyway baseline` (`<< Flyway Baseline >>`, no script) and a baseline
                    // migration (`B5__`, type SQL_BASELINE): everything up to it is applied.
                    k if k == "BASELINE" || k.ends_with("_BASELINE") => match version_of(&version) {
                        Some(v) => history.baseline = Some(history.baseline.map_or(v, |b| b.max(v))),
                        None => history.unmappable.push(version),
                    },
                    "DELETE" => {
                        if let Some(v) = version_of(&version) {
                            history.each.remove(&v);
                        }
                        history.ignored.push(format!("{version}: marked deleted"));
                    }
                    k if k.starts_with("UNDO") => {
                        if let Some(v) = version_of(&version) {
                            history.each.remove(&v);
                        }
                        history.ignored.push(format!("{version}: undone"));
                    }
                    _ => add(&mut history, &version),
                }
            }
        }
        Tool::GolangMigrate => {
            for row in rows {
                let version = text(row, "version")?.unwrap_or_default();
                if flag(row, "dirty")? {
                    return Err(Interpreted::Refused(AdoptError::Dirty(version)));
                }
                match version_of(&version) {
                    Some(v) => history.up_to = Some(history.up_to.map_or(v, |u| u.max(v))),
                    None => history.unmappable.push(version),
                }
            }
        }
        Tool::Dbmate | Tool::Rails | Tool::Diesel => {
            if rows.first().is_some_and(|r| r.get("dirty").is_some()) {
                return Err(Interpreted::Shape(
                    "it has a dirty column: golang-migrate's table? use --from golang-migrate".into(),
                ));
            }
            for row in rows {
                add(&mut history, &text(row, "version")?.unwrap_or_default());
            }
        }
        Tool::Prisma => {
            for row in rows {
                let name = text(row, "migration_name")?.unwrap_or_default();
                let finished = text(row, "finished_at")?.is_some();
                let rolled_back = text(row, "rolled_back_at")?.is_some();
                if rolled_back {
                    history.ignored.push(format!("{name}: rolled back"));
                } else if !finished {
                    return Err(Interpreted::Refused(AdoptError::Unfinished {
                        tool,
                        what: format!("migration {name}"),
                        how: "`prisma migrate resolve --applied` or `--rolled-back`",
                    }));
                } else {
                    let version = name.split('_').next().unwrap_or_default().to_string();
                    add(&mut history, &version);
                }
            }
        }
        // Configuration refuses `baseline --from goose`.
        Tool::Goose => return Err(Interpreted::Shape("goose's history is not read by migrun".into())),
        Tool::Alembic => {
            if rows.len() > 1 {
                return Err(Interpreted::Refused(AdoptError::SeveralHeads(rows.len())));
            }
            for row in rows {
                history.head = text(row, "version_num")?;
            }
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_from_other_tools() {
        assert_eq!(version_of("20230131120000"), Some(20230131120000));
        assert_eq!(version_of("2023-01-31-120000"), Some(20230131120000));
        assert_eq!(version_of("0001"), Some(1));
        assert_eq!(version_of("1.1"), None);
        assert_eq!(version_of(""), None);
        assert_eq!(version_of("1234567890123456789"), None);
    }

    #[test]
    fn flyway_rows_in_rank_order() {
        let rows = vec![
            json!({"installed_rank": 3, "version": "3", "type": "SQL", "success": true}),
            json!({"installed_rank": 1, "version": "1", "type": "BASELINE", "success": true}),
            json!({"installed_rank": 2, "version": "2", "type": "SQL", "success": true}),
            json!({"installed_rank": 4, "version": "4", "type": "SQL", "success": false}),
            json!({"installed_rank": 5, "version": null, "type": "SQL", "success": true}),
            json!({"installed_rank": 6, "version": "2.1", "type": "SQL", "success": true}),
            json!({"installed_rank": 7, "version": "3", "type": "DELETE", "success": true}),
        ];
        let Err(Interpreted::Refused(AdoptError::Unfinished { what, .. })) = interpret(Tool::Flyway, &rows) else {
            panic!("a failed row is refused")
        };
        assert!(what.contains("version 4"), "{what}");
        let rows: Vec<Value> = rows.into_iter().filter(|r| r["success"] == true).collect();
        let Ok(history) = interpret(Tool::Flyway, &rows) else { panic!("refused") };
        assert_eq!(history.baseline, Some(1));
        assert_eq!(history.each, BTreeSet::from([2]));
        assert_eq!(history.unmappable, vec!["2.1".to_string()]);
        assert_eq!(history.ignored.len(), 1);
    }

    #[test]
    fn flyway_baseline_migrations_cover_what_is_below_them() {
        let rows = vec![json!({"installed_rank": 1, "version": "5", "type": "SQL_BASELINE", "success": true})];
        let Ok(history) = interpret(Tool::Flyway, &rows) else { panic!("refused") };
        assert_eq!((history.baseline, history.each.len()), (Some(5), 0));
    }

    #[test]
    fn table_names_fold_like_postgres() {
        assert_eq!(quote_table("Ops.Flyway_History"), "\"ops\".\"flyway_history\"");
        assert_eq!(quote_table("\"Ops\".\"Flyway History\""), "\"Ops\".\"Flyway History\"");
        assert_eq!(quote_table("\"a.b\"\"c\""), "\"a.b\"\"c\"");
    }

    #[test]
    fn a_missing_column_is_a_shape_error() {
        let rows = vec![json!({"id": 1})];
        assert!(matches!(interpret(Tool::Dbmate, &rows), Err(Interpreted::Shape(_))));
        let dirty = vec![json!({"version": 3, "dirty": false})];
        assert!(matches!(interpret(Tool::Dbmate, &dirty), Err(Interpreted::Shape(_))));
        assert!(matches!(interpret(Tool::GolangMigrate, &dirty), Ok(h) if h.up_to == Some(3)));
    }
}

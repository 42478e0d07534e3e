//! The lint rules: what makes a statement unsafe while the old app version keeps running
//! against the new schema, read from Postgres's own parse tree. A table created earlier in the
//! same file is new: nothing reads it yet, so what would lock or rewrite a live table is fine.

use std::collections::{HashMap, HashSet};

use pg_query::protobuf::{
    AlterTableType, ColumnDef, ConstrType, Constraint, ObjectType, RangeVar, TransactionStmtKind, TypeName,
};
use pg_query::NodeEnum;
use serde::Serialize;
use serde_json::Value;

use super::parse::Statement;

/// How bad a finding is: errors fail `migrun lint`, warnings only with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What goes wrong in a rollout when a rule's statement ships: each is measured on Postgres
/// by the lint test (see `lint_truth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hazard {
    /// The live app waits: work that grows with a table (a scan, a rewrite, an index build)
    /// runs while a lock that blocks writes is held on a table that existed before.
    Blocks,
    /// The previous release's queries fail, or its rows are gone.
    BreaksOldApp,
    /// The file fails when `up` runs it.
    Fails,
    /// After an interruption, the run that follows fails or leaves a different database.
    Rerun,
}

impl Hazard {
    pub const ALL: [Hazard; 4] = [Hazard::Blocks, Hazard::BreaksOldApp, Hazard::Fails, Hazard::Rerun];

    pub fn name(self) -> &'static str {
        match self {
            Hazard::Blocks => "blocks",
            Hazard::BreaksOldApp => "breaks-old-app",
            Hazard::Fails => "fails",
            Hazard::Rerun => "rerun",
        }
    }
}

/// One rule.
#[derive(Debug, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    /// What it guards against; `None` for advice with nothing to measure (style, a lock
    /// taken and released at once).
    pub hazard: Option<Hazard>,
    /// Why it is unsafe, in one line.
    pub reason: &'static str,
    /// The safe alternative.
    pub fix: &'static str,
}

macro_rules! rules {
    ($($name:ident = ($id:literal, $severity:ident, $hazard:expr, $reason:literal, $fix:literal);)*) => {
        $(pub const $name: Rule = Rule { id: $id, severity: Severity::$severity, hazard: $hazard, reason: $reason, fix: $fix };)*
        /// Every rule, in the order the guide's table lists them.
        pub const RULES: &[&Rule] = &[$(&$name),*];
    };
}

rules! {
    PARSE_ERROR = ("parse-error", Error, Some(Hazard::Fails), "Postgres cannot parse the file", "fix the syntax; `migrun up` would fail on it");
    CREATE_INDEX = ("create-index-not-concurrent", Error, Some(Hazard::Blocks), "CREATE INDEX on an existing table takes a SHARE lock: writes wait for the whole build", "CREATE INDEX CONCURRENTLY in a file with `-- migrun:no-transaction`");
    DROP_INDEX = ("drop-index-not-concurrent", Warning, None, "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table", "DROP INDEX CONCURRENTLY in a file with `-- migrun:no-transaction`");
    CONCURRENTLY_IN_TRANSACTION = ("concurrently-in-transaction", Error, Some(Hazard::Fails), "CONCURRENTLY cannot run inside a transaction: the file will fail", "put `-- migrun:no-transaction` on the file's first line");
    CONSTRAINT_NOT_VALID = ("constraint-not-valid", Error, Some(Hazard::Blocks), "adding a FOREIGN KEY or CHECK constraint scans the table under a lock that blocks writes", "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later file");
    UNIQUE_WITHOUT_INDEX = ("unique-without-index", Error, Some(Hazard::Blocks), "ADD UNIQUE / PRIMARY KEY builds its index under an ACCESS EXCLUSIVE lock", "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... UNIQUE USING INDEX (or PRIMARY KEY USING INDEX)");
    SET_NOT_NULL = ("set-not-null", Error, Some(Hazard::Blocks), "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock", "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later file, then SET NOT NULL (Postgres 12+ skips the scan)");
    ALTER_COLUMN_TYPE = ("alter-column-type", Error, Some(Hazard::Blocks), "changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock (and the old app may not read the new type)", "add a new column, backfill it in batches, switch readers, drop the old one later; widening varchar(n) to a larger n or to text is safe");
    VOLATILE_DEFAULT = ("add-column-volatile-default", Error, Some(Hazard::Blocks), "ADD COLUMN with a volatile default (random(), gen_random_uuid(), clock_timestamp(), serial, a stored generated column) rewrites the table", "add the column without a default (or with a constant one), then backfill in batches");
    NOT_NULL_WITHOUT_DEFAULT = ("add-column-not-null-without-default", Error, Some(Hazard::Fails), "ADD COLUMN ... NOT NULL without a default fails on a table that has rows, and the old app's INSERTs fail after it", "add it nullable (or with a default), backfill, then add NOT NULL");
    RENAME_COLUMN = ("rename-column", Warning, Some(Hazard::BreaksOldApp), "renaming a column breaks the old app version that still uses the old name during the rollout", "expand/contract: add the new column, write both, switch reads, drop the old one in a later release");
    RENAME_TABLE = ("rename-table", Warning, Some(Hazard::BreaksOldApp), "renaming a table breaks the old app version that still uses the old name during the rollout", "expand/contract: create the new table (or a view with the old name), switch, drop later");
    DROP_COLUMN = ("drop-column", Warning, Some(Hazard::BreaksOldApp), "dropping a column breaks the old app version that still reads it during the rollout", "stop using the column in one release, drop it in the next");
    DROP_TABLE = ("drop-table", Warning, Some(Hazard::BreaksOldApp), "dropping a table breaks the old app version that still reads it during the rollout", "stop using the table in one release, drop it in the next");
    LOCK_TABLE = ("lock-table", Warning, None, "LOCK TABLE holds its lock until the file ends: the live app queues behind it", "avoid explicit locks; if one is needed, keep the file short");
    VACUUM_FULL = ("vacuum-full", Error, Some(Hazard::Blocks), "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock", "plain VACUUM, or pg_repack outside the migration");
    CLUSTER = ("cluster", Error, Some(Hazard::Blocks), "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock", "pg_repack outside the migration");
    REFRESH = ("refresh-not-concurrent", Warning, Some(Hazard::Blocks), "REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks every reader of the view", "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index) in a no-transaction file");
    TRUNCATE = ("truncate", Warning, Some(Hazard::BreaksOldApp), "TRUNCATE takes an ACCESS EXCLUSIVE lock and deletes every row the old app still uses", "DELETE in batches, or drop the table in a later release");
    ENUM_VALUE_USED = ("enum-value-used-in-transaction", Error, Some(Hazard::Fails), "a value added with ALTER TYPE ... ADD VALUE cannot be used in the same transaction: the file will fail", "add the value in one file and use it in a later one");
    RERUN_UNSAFE = ("rerun-unsafe", Error, Some(Hazard::Rerun), "in a no-transaction file an interruption leaves the statements before it applied, and the file runs again from its start: this statement fails the second time", "make it idempotent: IF NOT EXISTS / IF EXISTS, OR REPLACE, INSERT ... ON CONFLICT DO NOTHING");
    SESSION_STATE = ("session-state", Warning, None, "SET / SET ROLE / set_config change the session for the rest of the file (migrun resets them after it), so later statements run differently than they read", "SET LOCAL inside the file's transaction, or schema-qualified names");
    TRANSACTION_CONTROL = ("transaction-control", Warning, Some(Hazard::Fails), "BEGIN / COMMIT / ROLLBACK in a migration: migrun runs each file in a transaction (or, with no-transaction, statement by statement)", "remove it; use `-- migrun:no-transaction` for statements that cannot run in a transaction");
    ALLOW_WITHOUT_REASON = ("allow-without-reason", Error, None, "`-- migrun:allow` needs a rule id and a reason", "write `-- migrun:allow <rule-id> <why it is safe here>`");
}

/// A rule that fired on a statement.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: &'static Rule,
    /// What exactly, in this statement (`index on users`).
    pub detail: String,
}

/// What one file knows while its statements are checked in order.
#[derive(Debug, Default)]
pub struct FileState {
    /// Tables created earlier in this file: new, so nothing reads them yet.
    created: HashSet<String>,
    /// Enum values added earlier in this file.
    enum_values: Vec<String>,
}

/// What the folder knows from earlier files: column types and NOT NULL checks.
#[derive(Debug, Default)]
pub struct FolderState {
    columns: HashMap<(String, String), String>,
    not_null_checks: HashSet<(String, String)>,
}

/// The statement's hits. `no_transaction`: the file runs statement by statement.
pub fn check(statement: &Statement, no_transaction: bool, file: &mut FileState, folder: &mut FolderState) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut hit = |rule: &'static Rule, detail: String| hits.push(Hit { rule, detail });
    let existing = |relation: &Option<RangeVar>, file: &FileState| -> Option<String> {
        let name = relation.as_ref().map(table_name)?;
        (!file.created.contains(&name)).then_some(name)
    };
    match &statement.node {
        NodeEnum::CreateStmt(create) => {
            if let Some(name) = create.relation.as_ref().map(table_name) {
                for element in &create.table_elts {
                    if let Some(NodeEnum::ColumnDef(column)) = &element.node {
                        folder.columns.insert((name.clone(), column.colname.clone()), type_text(&column.type_name));
                    }
                }
                file.created.insert(name);
            }
            if no_transaction && !create.if_not_exists {
                hit(&RERUN_UNSAFE, "CREATE TABLE without IF NOT EXISTS".into());
            }
        }
        NodeEnum::CreateTableAsStmt(create) => {
            if let Some(rel) = create.into.as_ref().and_then(|i| i.rel.as_ref()) {
                file.created.insert(table_name(rel));
            }
            if no_transaction && !create.if_not_exists {
                hit(&RERUN_UNSAFE, "CREATE ... AS without IF NOT EXISTS".into());
            }
        }
        NodeEnum::IndexStmt(index) => {
            if index.concurrent && !no_transaction {
                hit(&CONCURRENTLY_IN_TRANSACTION, "CREATE INDEX CONCURRENTLY".into());
            }
            if let Some(table) = existing(&index.relation, file) {
                if !index.concurrent {
                    hit(&CREATE_INDEX, format!("index on {table}"));
                }
            }
            if no_transaction && !index.if_not_exists {
                hit(&RERUN_UNSAFE, "CREATE INDEX without IF NOT EXISTS".into());
            }
        }
        NodeEnum::DropStmt(drop) => check_drop(drop, no_transaction, file, &mut hit),
        NodeEnum::AlterTableStmt(alter) => check_alter_table(alter, no_transaction, file, folder, &mut hit),
        NodeEnum::RenameStmt(rename) => {
            let target = rename.relation.as_ref().map(table_name).unwrap_or_default();
            match ObjectType::try_from(rename.rename_type) {
                Ok(ObjectType::ObjectColumn) if !file.created.contains(&target) => {
                    hit(&RENAME_COLUMN, format!("{target}.{} to {}", rename.subname, rename.newname))
                }
                Ok(ObjectType::ObjectTable) if !file.created.contains(&target) => {
                    hit(&RENAME_TABLE, format!("{target} to {}", rename.newname))
                }
                _ => {}
            }
            if no_transaction {
                hit(&RERUN_UNSAFE, "RENAME cannot run twice".into());
            }
        }
        NodeEnum::LockStmt(_) => hit(&LOCK_TABLE, "LOCK TABLE".into()),
        NodeEnum::VacuumStmt(vacuum) => {
            let full =
                vacuum.options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "full"));
            if full {
                hit(&VACUUM_FULL, "VACUUM FULL".into());
            }
        }
        NodeEnum::ClusterStmt(_) => hit(&CLUSTER, "CLUSTER".into()),
        NodeEnum::RefreshMatViewStmt(refresh) => {
            if !refresh.concurrent {
                hit(&REFRESH, "REFRESH MATERIALIZED VIEW".into());
            } else if !no_transaction {
                hit(&CONCURRENTLY_IN_TRANSACTION, "REFRESH MATERIALIZED VIEW CONCURRENTLY".into());
            }
        }
        NodeEnum::ReindexStmt(reindex) => {
            let concurrent = reindex
                .params
                .iter()
                .any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "concurrently"));
            if concurrent && !no_transaction {
                hit(&CONCURRENTLY_IN_TRANSACTION, "REINDEX CONCURRENTLY".into());
            }
        }
        NodeEnum::TruncateStmt(truncate) => {
            let tables: Vec<String> = truncate
                .relations
                .iter()
                .filter_map(|r| match &r.node {
                    Some(NodeEnum::RangeVar(v)) => Some(table_name(v)),
                    _ => None,
                })
                .filter(|t| !file.created.contains(t))
                .collect();
            if !tables.is_empty() {
                hit(&TRUNCATE, tables.join(", "));
            }
        }
        NodeEnum::AlterEnumStmt(alter) if !alter.new_val.is_empty() => {
            file.enum_values.push(alter.new_val.clone());
            if no_transaction && !alter.skip_if_new_val_exists {
                hit(&RERUN_UNSAFE, "ADD VALUE without IF NOT EXISTS".into());
            }
        }
        NodeEnum::VariableSetStmt(set) if !set.is_local => {
            let what = if set.name.is_empty() { "RESET ALL".to_string() } else { format!("SET {}", set.name) };
            hit(&SESSION_STATE, what);
        }
        NodeEnum::TransactionStmt(transaction) => {
            let kind = TransactionStmtKind::try_from(transaction.kind).unwrap_or(TransactionStmtKind::Undefined);
            if !matches!(
                kind,
                TransactionStmtKind::TransStmtSavepoint
                    | TransactionStmtKind::TransStmtRelease
                    | TransactionStmtKind::TransStmtRollbackTo
            ) {
                hit(&TRANSACTION_CONTROL, statement.text.split_whitespace().next().unwrap_or("BEGIN").to_uppercase());
            }
        }
        NodeEnum::InsertStmt(insert) if no_transaction && insert.on_conflict_clause.is_none() => {
            hit(&RERUN_UNSAFE, "INSERT without ON CONFLICT".into());
        }
        NodeEnum::CreateSeqStmt(create) if no_transaction && !create.if_not_exists => {
            hit(&RERUN_UNSAFE, "CREATE SEQUENCE without IF NOT EXISTS".into())
        }
        NodeEnum::CreateSchemaStmt(create) if no_transaction && !create.if_not_exists => {
            hit(&RERUN_UNSAFE, "CREATE SCHEMA without IF NOT EXISTS".into())
        }
        NodeEnum::CreateExtensionStmt(create) if no_transaction && !create.if_not_exists => {
            hit(&RERUN_UNSAFE, "CREATE EXTENSION without IF NOT EXISTS".into())
        }
        NodeEnum::ViewStmt(view) if no_transaction && !view.replace => {
            hit(&RERUN_UNSAFE, "CREATE VIEW without OR REPLACE".into())
        }
        NodeEnum::CreateFunctionStmt(function) if no_transaction && !function.replace => {
            hit(&RERUN_UNSAFE, "CREATE FUNCTION without OR REPLACE".into())
        }
        NodeEnum::CreateEnumStmt(_) | NodeEnum::CompositeTypeStmt(_) | NodeEnum::CreateDomainStmt(_)
            if no_transaction =>
        {
            hit(&RERUN_UNSAFE, "CREATE TYPE / DOMAIN cannot say IF NOT EXISTS".into())
        }
        _ => {}
    }
    let tree = serde_json::to_value(&statement.node).unwrap_or(Value::Null);
    if function_calls(&tree).iter().any(|f| f == "set_config") {
        hit(&SESSION_STATE, "set_config()".into());
    }
    if !no_transaction && !matches!(statement.node, NodeEnum::AlterEnumStmt(_)) {
        let strings = string_constants(&tree);
        for value in &file.enum_values {
            if strings.contains(value) {
                hit(&ENUM_VALUE_USED, format!("'{value}'"));
            }
        }
    }
    hits
}

fn check_drop(
    drop: &pg_query::protobuf::DropStmt,
    no_transaction: bool,
    file: &FileState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let names = names_of(&drop.objects);
    match ObjectType::try_from(drop.remove_type) {
        Ok(ObjectType::ObjectIndex) => {
            if drop.concurrent && !no_transaction {
                hit(&CONCURRENTLY_IN_TRANSACTION, "DROP INDEX CONCURRENTLY".into());
            }
            if !drop.concurrent {
                hit(&DROP_INDEX, names.join(", "));
            }
        }
        Ok(ObjectType::ObjectTable) => {
            let live: Vec<String> = names.into_iter().filter(|n| !file.created.contains(n)).collect();
            if !live.is_empty() {
                hit(&DROP_TABLE, live.join(", "));
            }
        }
        _ => {}
    }
    if no_transaction && !drop.missing_ok {
        hit(&RERUN_UNSAFE, "DROP without IF EXISTS".into());
    }
}

fn check_alter_table(
    alter: &pg_query::protobuf::AlterTableStmt,
    no_transaction: bool,
    file: &FileState,
    folder: &mut FolderState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let Some(table) = alter.relation.as_ref().map(table_name) else { return };
    let live = !file.created.contains(&table);
    for command in &alter.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = &command.node else { continue };
        let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
        match AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined) {
            AlterTableType::AtAddColumn => {
                if let Some(NodeEnum::ColumnDef(column)) = def {
                    folder.columns.insert((table.clone(), column.colname.clone()), type_text(&column.type_name));
                    if live {
                        check_new_column(&table, column, hit);
                    }
                }
                if no_transaction && !cmd.missing_ok {
                    hit(&RERUN_UNSAFE, "ADD COLUMN without IF NOT EXISTS".into());
                }
            }
            AlterTableType::AtAddConstraint => {
                if let Some(NodeEnum::Constraint(constraint)) = def {
                    remember_not_null_check(&table, constraint, folder);
                    if live {
                        check_new_constraint(&table, constraint, hit);
                    }
                }
                if no_transaction {
                    hit(&RERUN_UNSAFE, "ADD CONSTRAINT cannot say IF NOT EXISTS".into());
                }
            }
            AlterTableType::AtSetNotNull
                if live && !folder.not_null_checks.contains(&(table.clone(), cmd.name.clone())) =>
            {
                hit(&SET_NOT_NULL, format!("{table}.{}", cmd.name));
            }
            AlterTableType::AtAlterColumnType if live => {
                let Some(NodeEnum::ColumnDef(column)) = def else { continue };
                let new = type_text(&column.type_name);
                let key = (table.clone(), cmd.name.clone());
                let old = folder.columns.get(&key).cloned();
                if !safe_type_change(old.as_deref(), &new) {
                    let from = old.as_deref().map(|o| format!(" from {o}")).unwrap_or_default();
                    hit(&ALTER_COLUMN_TYPE, format!("{table}.{}{from} to {new}", cmd.name));
                }
                folder.columns.insert(key, new);
            }
            AlterTableType::AtDropColumn => {
                if live {
                    hit(&DROP_COLUMN, format!("{table}.{}", cmd.name));
                }
                if no_transaction && !cmd.missing_ok {
                    hit(&RERUN_UNSAFE, "DROP COLUMN without IF EXISTS".into());
                }
            }
            _ => {}
        }
    }
}

fn check_new_column(table: &str, column: &ColumnDef, hit: &mut impl FnMut(&'static Rule, String)) {
    let constraints: Vec<&Constraint> = column
        .constraints
        .iter()
        .filter_map(|c| match &c.node {
            Some(NodeEnum::Constraint(c)) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    let kind = |c: &Constraint| ConstrType::try_from(c.contype).unwrap_or(ConstrType::Undefined);
    let default = constraints.iter().find(|c| kind(c) == ConstrType::ConstrDefault);
    let not_null = constraints.iter().any(|c| kind(c) == ConstrType::ConstrNotnull);
    let generated_stored = constraints.iter().any(|c| kind(c) == ConstrType::ConstrGenerated);
    let serial = matches!(
        type_text(&column.type_name).as_str(),
        "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "serial2"
    );
    let volatile_default = default.and_then(|d| d.raw_expr.as_ref()).is_some_and(|expr| {
        let tree = serde_json::to_value(expr.as_ref()).unwrap_or(Value::Null);
        function_calls(&tree).iter().any(|f| VOLATILE.contains(&f.as_str()))
    });
    if serial || volatile_default || generated_stored {
        hit(&VOLATILE_DEFAULT, format!("{table}.{}", column.colname));
    }
    if not_null && default.is_none() && !serial && !generated_stored && column.identity.is_empty() {
        hit(&NOT_NULL_WITHOUT_DEFAULT, format!("{table}.{}", column.colname));
    }
    for constraint in constraints {
        match kind(constraint) {
            ConstrType::ConstrPrimary | ConstrType::ConstrUnique => {
                hit(&UNIQUE_WITHOUT_INDEX, format!("{table}.{}", column.colname))
            }
            // Validated against every row, under the ADD COLUMN's ACCESS EXCLUSIVE lock (a
            // foreign key by a query over the whole table, even when the column is all NULL).
            ConstrType::ConstrForeign | ConstrType::ConstrCheck if !constraint.skip_validation => {
                hit(&CONSTRAINT_NOT_VALID, format!("{table}.{}", column.colname))
            }
            _ => {}
        }
    }
}

/// Functions whose value differs per row: a default calling one rewrites the table.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
];

fn check_new_constraint(table: &str, constraint: &Constraint, hit: &mut impl FnMut(&'static Rule, String)) {
    let name =
        if constraint.conname.is_empty() { table.to_string() } else { format!("{table}.{}", constraint.conname) };
    match ConstrType::try_from(constraint.contype).unwrap_or(ConstrType::Undefined) {
        ConstrType::ConstrForeign | ConstrType::ConstrCheck if !constraint.skip_validation => {
            hit(&CONSTRAINT_NOT_VALID, name)
        }
        ConstrType::ConstrUnique | ConstrType::ConstrPrimary if constraint.indexname.is_empty() => {
            hit(&UNIQUE_WITHOUT_INDEX, name)
        }
        ConstrType::ConstrExclusion => hit(&UNIQUE_WITHOUT_INDEX, name),
        _ => {}
    }
}

/// `CHECK (col IS NOT NULL)` makes a later SET NOT NULL on `col` cheap.
fn remember_not_null_check(table: &str, constraint: &Constraint, folder: &mut FolderState) {
    if ConstrType::try_from(constraint.contype) != Ok(ConstrType::ConstrCheck) {
        return;
    }
    let Some(expr) = constraint.raw_expr.as_ref().and_then(|e| e.node.as_ref()) else { return };
    if let NodeEnum::NullTest(test) = expr {
        let is_not_null = test.nulltesttype == pg_query::protobuf::NullTestType::IsNotNull as i32;
        if let Some(NodeEnum::ColumnRef(column)) = test.arg.as_ref().and_then(|a| a.node.as_ref()) {
            if let Some(name) = names_of(&column.fields).last() {
                if is_not_null {
                    folder.not_null_checks.insert((table.to_string(), name.clone()));
                }
            }
        }
    }
}

/// Known type changes that need no rewrite: to text or unbounded varchar from a string type,
/// a longer varchar, a wider numeric with the same scale.
fn safe_type_change(old: Option<&str>, new: &str) -> bool {
    let Some(old) = old else { return false };
    let base = |t: &str| t.split('(').next().unwrap_or(t).trim().to_string();
    let modifiers = |t: &str| -> Vec<i64> {
        t.split_once('(')
            .map(|(_, m)| m.trim_end_matches(')').split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    let strings = ["varchar", "text", "bpchar", "citext"];
    match (base(old).as_str(), base(new).as_str()) {
        (o, "text") if strings.contains(&o) && o != "bpchar" => true,
        ("varchar" | "text", "varchar") => {
            let new_len = modifiers(new);
            new_len.is_empty() || (base(old) == "varchar" && modifiers(old).first() <= new_len.first())
        }
        ("numeric", "numeric") => {
            let (o, n) = (modifiers(old), modifiers(new));
            n.is_empty() || (o.len() == n.len() && o.first() <= n.first() && o.get(1) == n.get(1))
        }
        (o, n) => o == n && modifiers(old) == modifiers(new),
    }
}

/// `public.Users` → `users`; a schema other than public stays (`ops.users`).
fn table_name(relation: &RangeVar) -> String {
    match relation.schemaname.as_str() {
        "" | "public" => relation.relname.clone(),
        schema => format!("{schema}.{}", relation.relname),
    }
}

/// A type as text: `varchar(20)`, `text`, `numeric(10,2)`, `bigserial`.
fn type_text(type_name: &Option<TypeName>) -> String {
    let Some(type_name) = type_name else { return String::new() };
    let name = names_of(&type_name.names).into_iter().filter(|n| n != "pg_catalog").collect::<Vec<_>>().join(".");
    let modifiers: Vec<String> = type_name
        .typmods
        .iter()
        .filter_map(|m| serde_json::to_value(m).ok())
        .filter_map(|v| first_key(&v, "ival").and_then(|i| i.as_i64()).map(|i| i.to_string()))
        .collect();
    if modifiers.is_empty() {
        name
    } else {
        format!("{name}({})", modifiers.join(","))
    }
}

/// The string parts of name lists (`[String("public"), String("users")]`); an object's name
/// in a DROP is one such list.
fn names_of(nodes: &[pg_query::protobuf::Node]) -> Vec<String> {
    let mut names = Vec::new();
    for node in nodes {
        match &node.node {
            Some(NodeEnum::String(s)) => names.push(s.sval.clone()),
            Some(NodeEnum::List(list)) => {
                let parts: Vec<String> = names_of(&list.items).into_iter().filter(|p| p != "public").collect();
                names.push(parts.join("."));
            }
            Some(NodeEnum::RangeVar(v)) => names.push(table_name(v)),
            _ => {}
        }
    }
    names
}

/// The first value under `key`, anywhere in `value`.
fn first_key<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key).or_else(|| map.values().find_map(|v| first_key(v, key))),
        Value::Array(items) => items.iter().find_map(|v| first_key(v, key)),
        _ => None,
    }
}

/// The last part of every function name called anywhere in a serialized tree.
fn function_calls(tree: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(tree, &mut |key, value| {
        if key == "FuncCall" {
            if let Some(Value::Array(parts)) = value.get("funcname") {
                if let Some(name) = parts.iter().rev().find_map(|p| first_key(p, "sval")).and_then(Value::as_str) {
                    found.push(name.to_ascii_lowercase());
                }
            }
        }
    });
    found
}

/// Every string constant in a serialized tree.
fn string_constants(tree: &Value) -> HashSet<String> {
    let mut found = HashSet::new();
    walk(tree, &mut |key, value| {
        if key == "AConst" {
            if let Some(text) = first_key(value, "sval").and_then(Value::as_str) {
                found.insert(text.to_string());
            }
        }
    });
    found
}

fn walk(value: &Value, visit: &mut impl FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                visit(key, child);
                walk(child, visit);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_safe_and_rewrites_are_not() {
        assert!(safe_type_change(Some("varchar(20)"), "varchar(40)"));
        assert!(safe_type_change(Some("varchar(20)"), "text"));
        assert!(safe_type_change(Some("varchar(20)"), "varchar"));
        assert!(safe_type_change(Some("numeric(10,2)"), "numeric(12,2)"));
        assert!(!safe_type_change(Some("varchar(40)"), "varchar(20)"));
        assert!(!safe_type_change(Some("int4"), "int8"));
        assert!(!safe_type_change(Some("numeric(10,2)"), "numeric(12,3)"));
        assert!(!safe_type_change(None, "text"));
    }

    #[test]
    fn the_readme_lists_every_rule() {
        let readme = include_str!("../../docs/guide.md");
        for rule in RULES {
            assert!(readme.contains(&format!("| `{}` |", rule.id)), "{} is not in the guide's rules table", rule.id);
        }
    }

    #[test]
    fn every_rule_has_a_unique_id_a_reason_and_a_fix() {
        let mut ids = HashSet::new();
        for rule in RULES {
            assert!(ids.insert(rule.id), "{} twice", rule.id);
            assert!(!rule.reason.is_empty() && !rule.fix.is_empty(), "{}", rule.id);
        }
    }
}

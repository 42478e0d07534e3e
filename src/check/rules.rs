//! The lint rules: what makes a statement unsafe while the old app version keeps running
//! against the new schema, read from Postgres's own parse tree. A table created earlier in the
//! same file is new: nothing reads it yet, so what would lock or rewrite a live table is fine.

use std::collections::{BTreeMap, HashMap, HashSet};

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

#[cfg(test)]
impl Hazard {
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
    CONCURRENTLY_IN_TRANSACTION = ("concurrently-in-transaction", Error, Some(Hazard::Fails), "CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY and VACUUM cannot run inside a transaction: the file will fail", "put `-- migrun:no-transaction` on the file's first line");
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
    WORK_UNDER_LOCK = ("work-under-lock", Error, Some(Hazard::Blocks), "this statement works through every row of a table while the file's transaction still holds a lock that blocks writes, taken by an earlier statement: the live app waits for both", "put the work in a file of its own (a NOT VALID constraint's VALIDATE, a backfill), or mark the file `-- migrun:no-transaction`");
    CONCURRENTLY_PARTITIONED = ("concurrently-on-partitioned", Error, Some(Hazard::Fails), "CREATE INDEX CONCURRENTLY cannot build on a partitioned table: the file will fail", "CREATE INDEX ... ON ONLY the parent, CREATE INDEX CONCURRENTLY on each partition, then ALTER INDEX ... ATTACH PARTITION");
    NOT_VALID_PARTITIONED = ("not-valid-on-partitioned", Error, Some(Hazard::Fails), "before PostgreSQL 18 a foreign key on a partitioned table cannot be NOT VALID: the file will fail", "add the key NOT VALID on each partition, VALIDATE them in later files, then add it on the parent (or target PostgreSQL 18 with --pg-version)");
    REWRITE = ("table-rewrite", Error, Some(Hazard::Blocks), "this rewrites every row of the table under an ACCESS EXCLUSIVE lock", "do it outside the rollout (pg_repack, or a maintenance window), or build a new table and switch to it");
    REINDEX = ("reindex-not-concurrent", Error, Some(Hazard::Blocks), "REINDEX without CONCURRENTLY builds under a lock that blocks writes to the table", "REINDEX ... CONCURRENTLY in a file with `-- migrun:no-transaction`");
    DROP_OBJECT = ("drop-view-or-function", Warning, Some(Hazard::BreaksOldApp), "dropping a view, materialized view or function breaks the old app version that still uses it during the rollout", "stop using it in one release, drop it in the next");
    DETACH_PARTITION = ("detach-partition", Warning, Some(Hazard::BreaksOldApp), "a detached partition's rows leave the table: the old app no longer finds them", "detach in a release whose code no longer reads those rows");
    DELETE_ALL = ("delete-all-rows", Warning, Some(Hazard::BreaksOldApp), "DELETE without WHERE removes every row the old app still uses", "delete what is no longer used, with a WHERE, in batches");
    REFRESH_NO_DATA = ("refresh-with-no-data", Error, Some(Hazard::BreaksOldApp), "REFRESH ... WITH NO DATA leaves the view unreadable: the old app's queries on it fail until the next refresh", "refresh with data (CONCURRENTLY, in a no-transaction file)");
    DEFAULT_DROPPED = ("not-null-default-dropped", Error, Some(Hazard::BreaksOldApp), "dropping the default of a NOT NULL column added in the same file: the old app's INSERTs, which do not name the column, fail", "keep the default until the old app version is gone, drop it in a later release");
    TYPE_UNDER_VIEW = ("type-change-under-view", Error, Some(Hazard::Fails), "the column's type cannot change while a view or materialized view reads it: the file will fail", "drop the view, change the type and create the view again in the same file");
    ONLY_ON_PARTITIONED = ("constraint-on-only-partitioned", Error, Some(Hazard::Fails), "a CHECK constraint on ONLY a partitioned table is refused (it must hold on the partitions too): the file will fail", "add it without ONLY");
    IDENTITY_ALWAYS = ("identity-always", Warning, Some(Hazard::BreaksOldApp), "GENERATED ALWAYS on an existing column refuses the values the old app inserts into it", "GENERATED BY DEFAULT AS IDENTITY (or ALWAYS once the old app version is gone)");
    DYNAMIC_SQL = ("dynamic-sql-not-checked", Warning, None, "EXECUTE of a string built at run time: lint cannot see the statement it runs", "run the statement directly, or EXECUTE a constant string");
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
    /// Tables, views and materialized views created earlier in this file (not with IF NOT
    /// EXISTS, which on a live database usually finds the table there): new, so nothing
    /// reads them yet.
    created: HashSet<String>,
    /// Columns added earlier in this file, and which of them are NOT NULL.
    added_columns: HashSet<(String, String)>,
    added_not_null: HashSet<(String, String)>,
    /// Enum values added earlier in this file.
    enum_values: Vec<String>,
    /// Existing tables on which this file's transaction holds a lock that blocks writes, and
    /// what took it.
    held: BTreeMap<String, String>,
    /// Tables renamed in this file: old name → (new name, the rename's detail).
    renamed: HashMap<String, (String, String)>,
    /// Findings to take back at the end of the file: a rename whose old name was created
    /// again (a view or a table), which the old app then finds.
    pub retracted: Vec<(&'static str, String)>,
    /// Views, materialized views and functions dropped in this file: made again later in it,
    /// the old app finds them.
    dropped: HashSet<String>,
    /// Where a BEGIN of a no-transaction file is still open.
    open_block: Option<String>,
}

impl FileState {
    /// After each statement: a no-transaction file's locks end with its statement.
    pub fn statement_done(&mut self, no_transaction: bool) {
        if no_transaction && self.open_block.is_none() {
            self.held.clear();
        }
    }

    /// At the end of the file: a transaction the file opened and did not close.
    pub fn finish(&self) -> Vec<Hit> {
        self.open_block
            .iter()
            .map(|what| Hit { rule: &TRANSACTION_CONTROL, detail: format!("{what} is never committed") })
            .collect()
    }

    fn is_new(&self, table: &str) -> bool {
        self.created.contains(table)
    }
}

/// What the folder knows from earlier files, and the PostgreSQL major the folder targets.
#[derive(Debug)]
pub struct FolderState {
    columns: HashMap<(String, String), String>,
    not_null: HashSet<(String, String)>,
    /// `CHECK (col IS NOT NULL)` constraints: name → (table, column, validated).
    not_null_checks: HashMap<String, (String, String, bool)>,
    partitioned: HashSet<String>,
    matviews: HashSet<String>,
    /// Index name → (table, columns).
    indexes: HashMap<String, (String, Vec<String>)>,
    /// Columns that views and materialized views read: (table, column) → the view.
    view_columns: HashMap<(String, String), String>,
    pub major: u32,
}

/// The oldest major migrun supports: verdicts that depend on the major assume it unless told.
pub const OLDEST_MAJOR: u32 = 13;

impl Default for FolderState {
    fn default() -> FolderState {
        FolderState::for_major(OLDEST_MAJOR)
    }
}

impl FolderState {
    pub fn for_major(major: u32) -> FolderState {
        FolderState {
            columns: HashMap::new(),
            not_null: HashSet::new(),
            not_null_checks: HashMap::new(),
            partitioned: HashSet::new(),
            matviews: HashSet::new(),
            indexes: HashMap::new(),
            view_columns: HashMap::new(),
            major,
        }
    }

    fn validated_not_null_check(&self, table: &str, column: &str) -> bool {
        self.not_null_checks.values().any(|(t, c, valid)| *valid && t == table && c == column)
    }
}

/// The statement's hits. `no_transaction`: the file runs statement by statement.
pub fn check(statement: &Statement, no_transaction: bool, file: &mut FileState, folder: &mut FolderState) -> Vec<Hit> {
    let mut hits = Vec::new();
    check_node(&statement.node, &statement.text, no_transaction, file, folder, &mut hits);
    hits
}

/// The hits of one parse tree (a statement of the file, or one inside a DO block).
pub fn check_node(
    node: &NodeEnum,
    text: &str,
    no_transaction: bool,
    file: &mut FileState,
    folder: &mut FolderState,
    hits: &mut Vec<Hit>,
) {
    let mut hit = |rule: &'static Rule, detail: String| hits.push(Hit { rule, detail });
    let existing = |relation: &Option<RangeVar>, file: &FileState| -> Option<String> {
        let name = relation.as_ref().map(table_name)?;
        (!file.is_new(&name)).then_some(name)
    };
    match node {
        NodeEnum::CreateStmt(create) => {
            if let Some(name) = create.relation.as_ref().map(table_name) {
                remember_table(&name, create, folder);
                if create.partspec.is_some() {
                    folder.partitioned.insert(name.clone());
                }
                if !create.if_not_exists {
                    retract_rename(&name, file);
                    file.created.insert(name);
                }
            }
            if no_transaction && !create.if_not_exists {
                hit(&RERUN_UNSAFE, "CREATE TABLE without IF NOT EXISTS".into());
            }
        }
        NodeEnum::CreateTableAsStmt(create) => {
            if let Some(rel) = create.into.as_ref().and_then(|i| i.rel.as_ref()) {
                let name = table_name(rel);
                if create.objtype == ObjectType::ObjectMatview as i32 {
                    folder.matviews.insert(name.clone());
                    if let Some(query) = create.query.as_ref().and_then(|q| q.node.as_ref()) {
                        remember_view_columns(&name, query, folder);
                    }
                }
                retract_drop(&name, file);
                if !create.if_not_exists {
                    file.created.insert(name);
                }
            }
            if let Some(query) = create.query.as_ref().and_then(|q| q.node.as_ref()) {
                check_work(query, file, &mut hit);
            }
            if no_transaction && !create.if_not_exists {
                hit(&RERUN_UNSAFE, "CREATE ... AS without IF NOT EXISTS".into());
            }
        }
        NodeEnum::ViewStmt(view) => {
            if let Some(name) = view.view.as_ref().map(table_name) {
                if let Some(query) = view.query.as_ref().and_then(|q| q.node.as_ref()) {
                    remember_view_columns(&name, query, folder);
                }
                retract_rename(&name, file);
                file.created.insert(name);
            }
            if no_transaction && !view.replace {
                hit(&RERUN_UNSAFE, "CREATE VIEW without OR REPLACE".into())
            }
        }
        NodeEnum::IndexStmt(index) => check_index(index, no_transaction, file, folder, &mut hit),
        NodeEnum::DropStmt(drop) => check_drop(drop, no_transaction, file, folder, &mut hit),
        NodeEnum::AlterTableStmt(alter) => check_alter_table(alter, no_transaction, file, folder, &mut hit),
        NodeEnum::RenameStmt(rename) => {
            let target = rename.relation.as_ref().map(table_name).unwrap_or_default();
            let live = !file.is_new(&target);
            match ObjectType::try_from(rename.rename_type) {
                Ok(ObjectType::ObjectColumn)
                    if live && !file.added_columns.contains(&(target.clone(), rename.subname.clone())) =>
                {
                    hit(&RENAME_COLUMN, format!("{target}.{} to {}", rename.subname, rename.newname))
                }
                Ok(ObjectType::ObjectTable) => {
                    let new = match target.split_once('.') {
                        Some((schema, _)) => format!("{schema}.{}", rename.newname),
                        None => rename.newname.clone(),
                    };
                    if live {
                        let detail = format!("{target} to {}", rename.newname);
                        hit(&RENAME_TABLE, detail.clone());
                        file.renamed.insert(target.clone(), (new.clone(), detail));
                        file.held.insert(new.clone(), format!("ALTER TABLE {target} RENAME"));
                    } else {
                        file.created.insert(new);
                    }
                }
                _ => {}
            }
            if no_transaction && !rename.missing_ok {
                hit(&RERUN_UNSAFE, "RENAME without IF EXISTS cannot run twice".into());
            }
        }
        NodeEnum::AlterObjectSchemaStmt(moved) if moved.object_type == ObjectType::ObjectTable as i32 => {
            if let Some(table) = existing(&moved.relation, file) {
                hit(&RENAME_TABLE, format!("{table} moved to schema {}", moved.newschema));
            }
        }
        NodeEnum::LockStmt(lock) => {
            let tables: Vec<String> = relations(&lock.relations).into_iter().filter(|t| !file.is_new(t)).collect();
            if !tables.is_empty() {
                hit(&LOCK_TABLE, "LOCK TABLE".into());
            }
            // Modes from ACCESS SHARE (1) to ACCESS EXCLUSIVE (8); SHARE (5) and up block writes.
            if lock.mode >= 5 {
                for table in tables {
                    file.held.insert(table, "LOCK TABLE".into());
                }
            }
        }
        NodeEnum::VacuumStmt(vacuum) => {
            let full =
                vacuum.options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "full"));
            if full {
                hit(&VACUUM_FULL, "VACUUM FULL".into());
            }
            if vacuum.is_vacuumcmd && !no_transaction {
                hit(&CONCURRENTLY_IN_TRANSACTION, "VACUUM".into());
            }
        }
        NodeEnum::ClusterStmt(cluster) if existing(&cluster.relation, file).is_some() || cluster.relation.is_none() => {
            hit(&CLUSTER, "CLUSTER".into());
        }
        NodeEnum::RefreshMatViewStmt(refresh) if existing(&refresh.relation, file).is_some() => {
            if refresh.skip_data {
                hit(&REFRESH_NO_DATA, "REFRESH MATERIALIZED VIEW ... WITH NO DATA".into());
            } else if !refresh.concurrent {
                hit(&REFRESH, "REFRESH MATERIALIZED VIEW".into());
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
            let table = match reindex.kind {
                k if k == pg_query::protobuf::ReindexObjectType::ReindexObjectIndex as i32 => {
                    let index = reindex.relation.as_ref().map(table_name).unwrap_or_default();
                    folder.indexes.get(&index).map(|(t, _)| t.clone()).or(Some(index))
                }
                _ => reindex.relation.as_ref().map(table_name),
            };
            if !concurrent && table.as_ref().is_none_or(|t| !file.is_new(t)) {
                hit(&REINDEX, table.unwrap_or_else(|| "the schema".into()));
            }
        }
        NodeEnum::TruncateStmt(truncate) => {
            let tables: Vec<String> = relations(&truncate.relations).into_iter().filter(|t| !file.is_new(t)).collect();
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
            let word = text.split_whitespace().next().unwrap_or("BEGIN").to_uppercase();
            match kind {
                TransactionStmtKind::TransStmtSavepoint
                | TransactionStmtKind::TransStmtRelease
                | TransactionStmtKind::TransStmtRollbackTo => {}
                // In a no-transaction file a block the file opens and closes is its own: it is
                // wrong only when it stays open.
                TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart if no_transaction => {
                    file.open_block = Some(word);
                }
                TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback if no_transaction => {
                    file.open_block = None;
                }
                _ => hit(&TRANSACTION_CONTROL, word),
            }
        }
        NodeEnum::InsertStmt(insert) => {
            let select = insert.select_stmt.as_ref().and_then(|s| s.node.as_ref());
            let guarded = matches!(select, Some(NodeEnum::SelectStmt(s)) if s.where_clause.is_some());
            if no_transaction && insert.on_conflict_clause.is_none() && !guarded {
                hit(&RERUN_UNSAFE, "INSERT without ON CONFLICT".into());
            }
            if let Some(select) = select {
                check_work(select, file, &mut hit);
            }
        }
        NodeEnum::UpdateStmt(update) => {
            let table = update.relation.as_ref().map(table_name).unwrap_or_default();
            if no_transaction && updates_from_itself(update) {
                hit(&RERUN_UNSAFE, format!("UPDATE {table} computes new values from the old ones"));
            }
            if update.where_clause.is_none() {
                work_on(&table, file, &mut hit);
            }
        }
        NodeEnum::DeleteStmt(delete) => {
            let table = delete.relation.as_ref().map(table_name).unwrap_or_default();
            if delete.where_clause.is_none() && !file.is_new(&table) {
                hit(&DELETE_ALL, table.clone());
                work_on(&table, file, &mut hit);
            }
        }
        NodeEnum::SelectStmt(select) => {
            if let Some(rel) = select.into_clause.as_ref().and_then(|i| i.rel.as_ref()) {
                file.created.insert(table_name(rel));
            }
            check_work(node, file, &mut hit);
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
        NodeEnum::CreateFunctionStmt(function) => {
            if let Some(name) = names_of(&function.funcname).last() {
                retract_drop(name, file);
            }
            if no_transaction && !function.replace {
                hit(&RERUN_UNSAFE, "CREATE FUNCTION without OR REPLACE".into())
            }
        }
        NodeEnum::CreateEnumStmt(_) | NodeEnum::CompositeTypeStmt(_) | NodeEnum::CreateDomainStmt(_)
            if no_transaction =>
        {
            hit(&RERUN_UNSAFE, "CREATE TYPE / DOMAIN cannot say IF NOT EXISTS".into())
        }
        _ => {}
    }
    let tree = serde_json::to_value(node).unwrap_or(Value::Null);
    if session_wide_set_config(&tree) {
        hit(&SESSION_STATE, "set_config()".into());
    }
    if !no_transaction && !matches!(node, NodeEnum::AlterEnumStmt(_)) {
        let strings = string_constants(&tree);
        for value in &file.enum_values {
            if strings.contains(value) {
                hit(&ENUM_VALUE_USED, format!("'{value}'"));
            }
        }
    }
}

/// The columns a view's query reads, when it reads one table.
fn remember_view_columns(view: &str, query: &NodeEnum, folder: &mut FolderState) {
    let NodeEnum::SelectStmt(select) = query else { return };
    let tables = relations(&select.from_clause);
    let [table] = &tables[..] else { return };
    let tree = serde_json::to_value(query).unwrap_or(Value::Null);
    walk(&tree, &mut |key, value| {
        if key == "ColumnRef" {
            if let Some(Value::Array(fields)) = value.get("fields") {
                if let Some(column) = fields.iter().rev().find_map(|f| first_key(f, "sval")).and_then(Value::as_str) {
                    folder.view_columns.insert((table.clone(), column.to_string()), view.to_string());
                }
            }
        }
    });
}

fn remember_table(name: &str, create: &pg_query::protobuf::CreateStmt, folder: &mut FolderState) {
    let kind = |c: &Constraint| ConstrType::try_from(c.contype).unwrap_or(ConstrType::Undefined);
    for element in &create.table_elts {
        match &element.node {
            Some(NodeEnum::ColumnDef(column)) => {
                let key = (name.to_string(), column.colname.clone());
                folder.columns.insert(key.clone(), type_text(&column.type_name));
                let not_null = column.is_not_null
                    || column.constraints.iter().any(|c| {
                        matches!(&c.node, Some(NodeEnum::Constraint(c)) if matches!(kind(c), ConstrType::ConstrNotnull | ConstrType::ConstrPrimary))
                    });
                if not_null {
                    folder.not_null.insert(key);
                }
            }
            Some(NodeEnum::Constraint(constraint)) if kind(constraint) == ConstrType::ConstrPrimary => {
                for column in names_of(&constraint.keys) {
                    folder.not_null.insert((name.to_string(), column));
                }
            }
            _ => {}
        }
    }
}

/// A table created with the old name of a table renamed earlier in the file: the old app
/// finds what it reads there, so the rename does not break it.
fn retract_rename(name: &str, file: &mut FileState) {
    if let Some((_, detail)) = file.renamed.get(name) {
        file.retracted.push((RENAME_TABLE.id, detail.clone()));
    }
    retract_drop(name, file);
}

/// A view or function dropped earlier in the file and made again: replaced, not gone.
fn retract_drop(name: &str, file: &mut FileState) {
    if file.dropped.contains(name) {
        file.retracted.push((DROP_OBJECT.id, name.to_string()));
    }
}

fn check_index(
    index: &pg_query::protobuf::IndexStmt,
    no_transaction: bool,
    file: &FileState,
    folder: &mut FolderState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let table = index.relation.as_ref().map(table_name).unwrap_or_default();
    let columns: Vec<String> = index
        .index_params
        .iter()
        .filter_map(|p| match &p.node {
            Some(NodeEnum::IndexElem(e)) if !e.name.is_empty() => Some(e.name.clone()),
            _ => None,
        })
        .collect();
    if !index.idxname.is_empty() {
        folder.indexes.insert(qualified(&table, &index.idxname), (table.clone(), columns));
    }
    let only = index.relation.as_ref().is_some_and(|r| !r.inh);
    let partitioned = folder.partitioned.contains(&table);
    if index.concurrent && !no_transaction {
        hit(&CONCURRENTLY_IN_TRANSACTION, "CREATE INDEX CONCURRENTLY".into());
    }
    if index.concurrent && partitioned && !only {
        hit(&CONCURRENTLY_PARTITIONED, format!("index on {table}"));
    }
    // The app only reads a materialized view, and SHARE lets readers in; ON ONLY a
    // partitioned parent builds nothing.
    let builds = !(folder.matviews.contains(&table) || only && partitioned);
    if !file.is_new(&table) && !index.concurrent && builds {
        hit(&CREATE_INDEX, format!("index on {table}"));
    }
    if no_transaction && !index.if_not_exists {
        hit(&RERUN_UNSAFE, "CREATE INDEX without IF NOT EXISTS".into());
    }
}

/// An index's name as the folder keys it: in its table's schema.
fn qualified(table: &str, name: &str) -> String {
    match table.split_once('.') {
        Some((schema, _)) => format!("{schema}.{name}"),
        None => name.to_string(),
    }
}

fn check_drop(
    drop: &pg_query::protobuf::DropStmt,
    no_transaction: bool,
    file: &mut FileState,
    folder: &mut FolderState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let names = names_of(&drop.objects);
    let (created, renamed) = (&file.created, &file.renamed);
    let live = |n: &String| !created.contains(n) && !renamed.values().any(|(new, _)| new == n);
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
            let dropped: Vec<String> = names.into_iter().filter(live).collect();
            if !dropped.is_empty() {
                hit(&DROP_TABLE, dropped.join(", "));
            }
            // Its ACCESS EXCLUSIVE lock stays until the file ends: readers wait for what follows.
            for name in dropped {
                file.held.insert(name, "DROP TABLE".into());
            }
        }
        Ok(kind @ (ObjectType::ObjectView | ObjectType::ObjectMatview)) => {
            folder.view_columns.retain(|_, view| !names.contains(view));
            for name in names.into_iter().filter(live) {
                hit(&DROP_OBJECT, name.clone());
                if kind == ObjectType::ObjectMatview {
                    file.held.insert(name.clone(), "DROP MATERIALIZED VIEW".into());
                }
                file.dropped.insert(name);
            }
        }
        // A schema holding tables the folder made; one it never put a table in is the
        // folder's own scratch space.
        Ok(ObjectType::ObjectSchema) => {
            for name in names {
                let prefix = format!("{name}.");
                if folder.columns.keys().any(|(table, _)| table.starts_with(&prefix)) {
                    hit(&DROP_OBJECT, format!("schema {name}"));
                }
            }
        }
        // CASCADE drops the columns of that type with it.
        Ok(ObjectType::ObjectType | ObjectType::ObjectDomain)
            if drop.behavior == pg_query::protobuf::DropBehavior::DropCascade as i32 =>
        {
            hit(&DROP_OBJECT, format!("type {} with CASCADE", names.join(", ")));
        }
        Ok(ObjectType::ObjectFunction | ObjectType::ObjectProcedure | ObjectType::ObjectRoutine) => {
            let functions: Vec<String> = drop
                .objects
                .iter()
                .filter_map(|o| match &o.node {
                    Some(NodeEnum::ObjectWithArgs(f)) => names_of(&f.objname).last().cloned(),
                    _ => None,
                })
                .collect();
            for name in functions {
                hit(&DROP_OBJECT, name.clone());
                file.dropped.insert(name);
            }
        }
        _ => {}
    }
    if no_transaction && !drop.missing_ok {
        hit(&RERUN_UNSAFE, "DROP without IF EXISTS".into());
    }
}

/// ALTER TABLE subcommands that do not block writes (SHARE UPDATE EXCLUSIVE or weaker).
const WEAK_ALTERS: [AlterTableType; 5] = [
    AlterTableType::AtValidateConstraint,
    AlterTableType::AtSetStatistics,
    AlterTableType::AtAttachPartition,
    AlterTableType::AtDetachPartitionFinalize,
    AlterTableType::AtClusterOn,
];

fn check_alter_table(
    alter: &pg_query::protobuf::AlterTableStmt,
    no_transaction: bool,
    file: &mut FileState,
    folder: &mut FolderState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let Some(table) = alter.relation.as_ref().map(table_name) else { return };
    let live = !file.is_new(&table);
    let mut blocking = false;
    for command in &alter.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = &command.node else { continue };
        let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
        let subtype = AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined);
        blocking |= !WEAK_ALTERS.contains(&subtype);
        let column_key = (table.clone(), cmd.name.clone());
        match subtype {
            AlterTableType::AtAddColumn => {
                if let Some(NodeEnum::ColumnDef(column)) = def {
                    let key = (table.clone(), column.colname.clone());
                    folder.columns.insert(key.clone(), type_text(&column.type_name));
                    file.added_columns.insert(key.clone());
                    if column_is_not_null(column) {
                        folder.not_null.insert(key.clone());
                        file.added_not_null.insert(key);
                    }
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
                    let only = alter.relation.as_ref().is_some_and(|r| !r.inh);
                    let check = constraint.contype == ConstrType::ConstrCheck as i32;
                    if only && check && folder.partitioned.contains(&table) {
                        hit(&ONLY_ON_PARTITIONED, format!("{table}.{}", constraint.conname));
                    }
                    remember_not_null_check(&table, constraint, folder);
                    if live {
                        check_new_constraint(&table, constraint, folder, hit);
                    }
                }
                if no_transaction {
                    hit(&RERUN_UNSAFE, "ADD CONSTRAINT cannot say IF NOT EXISTS".into());
                }
            }
            AlterTableType::AtValidateConstraint => {
                if let Some(check) = folder.not_null_checks.get_mut(&cmd.name) {
                    check.2 = true;
                }
                work_on(&table, file, hit);
            }
            AlterTableType::AtDropConstraint => {
                folder.not_null_checks.remove(&cmd.name);
            }
            AlterTableType::AtSetNotNull => {
                if live
                    && !folder.validated_not_null_check(&table, &cmd.name)
                    && !file.added_columns.contains(&column_key)
                {
                    hit(&SET_NOT_NULL, format!("{table}.{}", cmd.name));
                }
                folder.not_null.insert(column_key);
            }
            AlterTableType::AtAddIdentity if live && !file.added_columns.contains(&column_key) => {
                if matches!(def, Some(NodeEnum::Constraint(c)) if c.generated_when == "a") {
                    hit(&IDENTITY_ALWAYS, format!("{table}.{}", cmd.name));
                }
            }
            AlterTableType::AtDropNotNull => {
                folder.not_null.remove(&column_key);
            }
            AlterTableType::AtColumnDefault if def.is_none() && file.added_not_null.contains(&column_key) => {
                hit(&DEFAULT_DROPPED, format!("{table}.{}", cmd.name));
            }
            AlterTableType::AtAlterColumnType if live => {
                let Some(NodeEnum::ColumnDef(column)) = def else { continue };
                let new = type_text(&column.type_name);
                let old = folder.columns.get(&column_key).cloned();
                if let Some(view) = folder.view_columns.get(&column_key) {
                    // The file fails here: nothing is rewritten.
                    hit(&TYPE_UNDER_VIEW, format!("{table}.{}, read by {view}", cmd.name));
                } else if !safe_type_change(old.as_deref(), &new) {
                    let from = old.as_deref().map(|o| format!(" from {o}")).unwrap_or_default();
                    hit(&ALTER_COLUMN_TYPE, format!("{table}.{}{from} to {new}", cmd.name));
                }
                folder.columns.insert(column_key, new);
            }
            AlterTableType::AtSetLogged | AlterTableType::AtSetUnLogged if live => {
                let what = if subtype == AlterTableType::AtSetLogged { "SET LOGGED" } else { "SET UNLOGGED" };
                hit(&REWRITE, format!("{what} on {table}"));
            }
            AlterTableType::AtDetachPartition => {
                let partition = match def {
                    Some(NodeEnum::PartitionCmd(p)) => p.name.as_ref().map(table_name).unwrap_or_default(),
                    _ => String::new(),
                };
                hit(&DETACH_PARTITION, format!("{partition} from {table}"));
            }
            AlterTableType::AtDropColumn => {
                if live && !file.added_columns.contains(&column_key) {
                    hit(&DROP_COLUMN, format!("{table}.{}", cmd.name));
                }
                if no_transaction && !cmd.missing_ok {
                    hit(&RERUN_UNSAFE, "DROP COLUMN without IF EXISTS".into());
                }
            }
            _ => {}
        }
    }
    if live && blocking {
        file.held.entry(table.clone()).or_insert_with(|| format!("ALTER TABLE {table}"));
    }
}

fn column_is_not_null(column: &ColumnDef) -> bool {
    column.is_not_null
        || column.constraints.iter().any(|c| {
            matches!(&c.node, Some(NodeEnum::Constraint(c)) if matches!(ConstrType::try_from(c.contype), Ok(ConstrType::ConstrNotnull | ConstrType::ConstrPrimary)))
        })
}

/// A statement that works through every row of `table`: under a lock an earlier statement
/// of the file's transaction holds, the live app waits for it.
fn work_on(table: &str, file: &FileState, hit: &mut impl FnMut(&'static Rule, String)) {
    if file.is_new(table) || file.held.is_empty() {
        return;
    }
    let (locked, by) = file.held.iter().next().map(|(t, b)| (t.clone(), b.clone())).unwrap_or_default();
    hit(&WORK_UNDER_LOCK, format!("every row of {table}, while {by} holds its lock on {locked}"));
}

/// A query reading whole tables (no WHERE): work on each existing one.
fn check_work(query: &NodeEnum, file: &FileState, hit: &mut impl FnMut(&'static Rule, String)) {
    let NodeEnum::SelectStmt(select) = query else { return };
    if select.where_clause.is_some() {
        return;
    }
    for table in relations(&select.from_clause) {
        work_on(&table, file, hit);
    }
}

/// The tables named in a list of range nodes (FROM items, LOCK and TRUNCATE targets).
fn relations(nodes: &[pg_query::protobuf::Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|r| match &r.node {
            Some(NodeEnum::RangeVar(v)) => Some(table_name(v)),
            _ => None,
        })
        .collect()
}

/// `SET x = x + 1`: run twice, it changes the rows twice. Only the column as an operand of an
/// operator counts: `upper(x)`, `coalesce(x, 0)` give the same value again.
fn updates_from_itself(update: &pg_query::protobuf::UpdateStmt) -> bool {
    update.target_list.iter().any(|target| {
        let Some(NodeEnum::ResTarget(set)) = &target.node else { return false };
        let Some(NodeEnum::AExpr(expr)) = set.val.as_ref().and_then(|v| v.node.as_ref()) else { return false };
        [&expr.lexpr, &expr.rexpr].into_iter().flatten().any(|operand| match &operand.node {
            Some(NodeEnum::ColumnRef(column)) => names_of(&column.fields).last() == Some(&set.name),
            _ => false,
        })
    })
}

/// `set_config(name, value, false)`: the session's, not the transaction's.
fn session_wide_set_config(tree: &Value) -> bool {
    let mut found = false;
    walk(tree, &mut |key, value| {
        if key != "FuncCall" {
            return;
        }
        let name = value
            .get("funcname")
            .and_then(Value::as_array)
            .and_then(|parts| parts.iter().rev().find_map(|p| first_key(p, "sval")))
            .and_then(Value::as_str);
        if name.is_some_and(|n| n.eq_ignore_ascii_case("set_config")) {
            let local = value
                .get("args")
                .and_then(Value::as_array)
                .and_then(|a| a.get(2))
                .and_then(|a| first_key(a, "boolval"));
            let is_local = local.and_then(|b| b.get("boolval").or(Some(b))).and_then(Value::as_bool).unwrap_or(false);
            found |= !is_local;
        }
    });
    found
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
    let generated_stored =
        constraints.iter().any(|c| kind(c) == ConstrType::ConstrGenerated && c.generated_kind != "v");
    let identity = constraints.iter().any(|c| kind(c) == ConstrType::ConstrIdentity) || !column.identity.is_empty();
    let serial = matches!(
        type_text(&column.type_name).as_str(),
        "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "serial2"
    );
    let volatile_default = default.and_then(|d| d.raw_expr.as_ref()).is_some_and(|expr| {
        let tree = serde_json::to_value(expr.as_ref()).unwrap_or(Value::Null);
        function_calls(&tree).iter().any(|f| VOLATILE.contains(&f.as_str()))
    });
    if serial || volatile_default || generated_stored || identity {
        hit(&VOLATILE_DEFAULT, format!("{table}.{}", column.colname));
    }
    if not_null && default.is_none() && !serial && !generated_stored && !identity {
        hit(&NOT_NULL_WITHOUT_DEFAULT, format!("{table}.{}", column.colname));
    }
    // Without a default every row holds NULL: a foreign key has nothing to check.
    let all_null = default.is_none() && !serial && !identity && !generated_stored;
    for constraint in constraints {
        match kind(constraint) {
            ConstrType::ConstrPrimary | ConstrType::ConstrUnique => {
                hit(&UNIQUE_WITHOUT_INDEX, format!("{table}.{}", column.colname))
            }
            ConstrType::ConstrForeign if all_null => {}
            // Validated against every row, under the ADD COLUMN's ACCESS EXCLUSIVE lock.
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

fn check_new_constraint(
    table: &str,
    constraint: &Constraint,
    folder: &FolderState,
    hit: &mut impl FnMut(&'static Rule, String),
) {
    let name =
        if constraint.conname.is_empty() { table.to_string() } else { format!("{table}.{}", constraint.conname) };
    let kind = ConstrType::try_from(constraint.contype).unwrap_or(ConstrType::Undefined);
    let partitioned = folder.partitioned.contains(table);
    match kind {
        ConstrType::ConstrForeign if constraint.skip_validation && partitioned && folder.major < 18 => {
            hit(&NOT_VALID_PARTITIONED, name)
        }
        ConstrType::ConstrForeign | ConstrType::ConstrCheck if !constraint.skip_validation => {
            hit(&CONSTRAINT_NOT_VALID, name)
        }
        ConstrType::ConstrUnique | ConstrType::ConstrPrimary if constraint.indexname.is_empty() => {
            hit(&UNIQUE_WITHOUT_INDEX, name)
        }
        ConstrType::ConstrPrimary => {
            // USING INDEX: every key column becomes NOT NULL, with a scan for the ones that are not.
            let index = qualified(table, &constraint.indexname);
            let nullable: Vec<String> = match folder.indexes.get(&index) {
                Some((_, columns)) => columns
                    .iter()
                    .filter(|c| !folder.not_null.contains(&(table.to_string(), (*c).clone())))
                    .cloned()
                    .collect(),
                None => vec![constraint.indexname.clone()],
            };
            if !nullable.is_empty() {
                hit(&SET_NOT_NULL, format!("PRIMARY KEY USING INDEX sets {table}.{} NOT NULL", nullable.join(", ")));
            }
        }
        ConstrType::ConstrExclusion => hit(&UNIQUE_WITHOUT_INDEX, name),
        _ => {}
    }
}

/// `CHECK (col IS NOT NULL)`, once validated, makes a later SET NOT NULL on `col` cheap.
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
                    let validated = !constraint.skip_validation;
                    folder
                        .not_null_checks
                        .insert(constraint.conname.clone(), (table.to_string(), name.clone(), validated));
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
            let severity = if rule.severity == Severity::Error { "error" } else { "warning" };
            let hazard = rule.hazard.map_or("advice", Hazard::name);
            let row = format!("| `{}` | {severity} | {hazard} | {} | {} |", rule.id, rule.reason, rule.fix);
            assert!(readme.lines().any(|l| l == row), "the guide's rules table lacks, or differs from:\n{row}");
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

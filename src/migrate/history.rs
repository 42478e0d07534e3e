//! The history table: creating it, reading it, and recording applied (and reverted) files,
//! with the rollback tables beside it.

use std::collections::HashMap;

use futures_util::future::join;
use futures_util::StreamExt;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use super::files::{Migration, MigrationKind};
use super::rollback::{changes_text, Assessment, Compatibility, RollbackTables};
pub use super::row::{HistoryRow, RowState, Timestamp};
use super::table::statement_error;
pub use super::table::{is_temp_schema, HistoryError, HistoryTable};
use crate::db::session::Session;
use crate::identity::{Identity, MIGRUN_VERSION};

/// The history table on one session.
pub struct History<'a> {
    session: &'a Session,
    client: &'a Client,
    table: &'a HistoryTable,
}

impl<'a> History<'a> {
    /// The table `table` on `session`.
    pub fn new(session: &'a Session, table: &'a HistoryTable) -> History<'a> {
        History { session, client: &session.client, table }
    }

    fn error(&self, action: &'static str) -> impl Fn(tokio_postgres::Error) -> HistoryError + '_ {
        move |e| statement_error(self.table, action, &e)
    }

    fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                id bigserial PRIMARY KEY,
                version bigint UNIQUE,
                description text NOT NULL,
                kind text NOT NULL CHECK (kind IN ('versioned', 'repeatable')),
                checksum text NOT NULL,
                state text NOT NULL CHECK (state IN ('applied', 'started')),
                applied_at timestamptz NOT NULL DEFAULT now(),
                execution_ms bigint,
                applied_by text NOT NULL,
                migrun_version text NOT NULL,
                release text,
                ecs_task_arn text,
                image text,
                image_digest text,
                adopted_from text
            )",
            self.table.sql()
        )
    }

    /// Whether the table exists, asked of the catalog: a read of a missing table would be an
    /// ERROR in the server's log (and RDS log alerts fire on those), on every first run and
    /// every `wait` poll of a new database.
    pub async fn exists(&self) -> Result<bool, HistoryError> {
        let name = self.table.sql();
        let row = self
            .client
            .query_typed_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[(&name, Type::TEXT)])
            .await
            .map_err(self.error("look it up"))?;
        row.try_get(0).map_err(self.error("look it up"))
    }

    /// Reads every row: by binary COPY on a direct session (see `migrate::copy`), else by a
    /// SELECT in an unnamed statement, since COPY needs a prepared statement, which a pool in
    /// transaction mode may lose between messages (`wait` through the app's pooled URL). `*`,
    /// both, so that a table made by a release before `adopted_from` existed reads without it.
    async fn select(&self) -> Result<Vec<HistoryRow>, HistoryError> {
        let shape = |reason| HistoryError::Shape { table: self.table.to_string(), reason };
        let mut read = if self.session.is_direct() {
            let data = self.copy().await.map_err(self.error("read it"))?;
            super::copy::parse(&data).map_err(shape)?
        } else {
            let sql = format!("SELECT * FROM {}", self.table.sql());
            let rows = self.client.query_typed(&sql, &[]).await.map_err(self.error("read it"))?;
            rows.iter().map(row_of).collect::<Result<Vec<_>, _>>().map_err(shape)?
        };
        read.sort_unstable_by_key(|(id, _)| *id);
        Ok(read.into_iter().map(|(_, row)| row).collect())
    }

    async fn copy(&self) -> Result<Vec<u8>, tokio_postgres::Error> {
        let sql = format!("COPY {} TO STDOUT (FORMAT binary)", self.table.sql());
        let mut stream = std::pin::pin!(self.client.copy_out(&sql).await?);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data)
    }

    /// Reads the table; `None` when it does not exist yet. Read only.
    pub async fn read(&self) -> Result<Option<Vec<HistoryRow>>, HistoryError> {
        self.read_known(None).await
    }

    /// As `read`, when whether the table exists is already known (`Some`): one round trip
    /// less.
    pub async fn read_known(&self, exists: Option<bool>) -> Result<Option<Vec<HistoryRow>>, HistoryError> {
        let exists = match exists {
            Some(known) => known,
            None => self.exists().await?,
        };
        match exists {
            true => self.select().await.map(Some),
            false => Ok(None),
        }
    }

    /// Creates the table and reads it (empty, or what a run just before us wrote). Call with
    /// the advisory lock held: concurrent `CREATE TABLE IF NOT EXISTS` can fail. The read waits
    /// for the create's answer, so a refused create is the one error the server logs.
    pub async fn create_and_read(&self) -> Result<Vec<HistoryRow>, HistoryError> {
        self.client.batch_execute(&self.create_sql()).await.map_err(self.error("create it"))?;
        tracing::info!(history_table = %self.table, "history table created");
        self.select().await
    }

    /// The writer for this run. The insert, sent once per applied file, is prepared once (its
    /// plan is most of its cost), in the same round trip as the creation of the rollback
    /// tables beside the history; the rarer statements are sent unprepared.
    pub async fn writer(&self, identity: &'a Identity) -> Result<HistoryWriter<'a>, HistoryError> {
        let rollback = RollbackTables::of(self.table);
        let sql = format!(
            "WITH h AS (
                INSERT INTO {} (version, description, kind, checksum, state, execution_ms, applied_by, migrun_version, release, ecs_task_arn, image, image_digest)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, state = EXCLUDED.state,
                    applied_at = pg_catalog.now(), execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by,
                    migrun_version = EXCLUDED.migrun_version, release = EXCLUDED.release
                RETURNING id
             ), r AS (
                INSERT INTO {} (version, down_checksum, compatibility, changes)
                SELECT $1, $13, $14, $15 WHERE $1 IS NOT NULL
                ON CONFLICT (version) DO UPDATE SET down_checksum = EXCLUDED.down_checksum,
                    compatibility = EXCLUDED.compatibility, changes = EXCLUDED.changes
             )
             SELECT id FROM h",
            self.table.sql(),
            rollback.facts.sql()
        );
        let (created, prepared) =
            join(self.client.batch_execute(&rollback.create_sql()), self.client.prepare_typed(&sql, &INSERT_TYPES))
                .await;
        created.map_err(self.error("create the rollback tables beside it"))?;
        let insert = prepared.map_err(self.error("prepare the insert"))?;
        let insert = std::cell::RefCell::new(insert);
        Ok(HistoryWriter {
            client: self.client,
            table: self.table,
            rollback,
            identity,
            insert,
            sql,
            stale: Default::default(),
            assessments: HashMap::new(),
        })
    }
}

impl History<'_> {
    /// Records versioned files as applied without running them (`baseline`), in one
    /// transaction: creates the table if needed, adds `adopted_from` to a table made by an
    /// earlier release, and writes every row, or nothing. Call with the lock held.
    pub async fn adopt(
        &self,
        files: &[(u64, &str, &str)],
        adopted_from: &str,
        identity: &Identity,
    ) -> Result<(), HistoryError> {
        let table = self.table.sql();
        let prepare =
            format!("BEGIN; {}; ALTER TABLE {table} ADD COLUMN IF NOT EXISTS adopted_from text", self.create_sql());
        let versions: Vec<i64> = files.iter().map(|(v, _, _)| *v as i64).collect();
        let descriptions: Vec<&str> = files.iter().map(|(_, d, _)| *d).collect();
        let checksums: Vec<&str> = files.iter().map(|(_, _, c)| *c).collect();
        let insert = format!(
            "INSERT INTO {table} (version, description, kind, checksum, state, applied_by, migrun_version, release, ecs_task_arn, image, image_digest, adopted_from)
             SELECT v, d, 'versioned', c, 'applied', $4, $5, $6, $7, $8, $9, $10
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS f(v, d, c) ORDER BY v"
        );
        let result = async {
            self.client.batch_execute(&prepare).await.map_err(self.error("prepare it for a baseline"))?;
            let id = identity;
            self.client
                .execute(
                    &insert,
                    &[
                        &versions,
                        &descriptions,
                        &checksums,
                        &id.applied_by,
                        &MIGRUN_VERSION,
                        &id.release,
                        &id.ecs_task_arn,
                        &id.image,
                        &id.image_digest,
                        &adopted_from,
                    ],
                )
                .await
                .map_err(self.error("record the baseline"))?;
            self.client.batch_execute("COMMIT").await.map_err(self.error("commit the baseline"))
        }
        .await;
        if result.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        result
    }
}

/// The insert's parameter types.
const INSERT_TYPES: [Type; 15] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// The revert's parameter types.
const REVERT_TYPES: [Type; 10] = [
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// Records applied files.
pub struct HistoryWriter<'a> {
    client: &'a Client,
    table: &'a HistoryTable,
    rollback: RollbackTables,
    identity: &'a Identity,
    insert: std::cell::RefCell<Statement>,
    sql: String,
    /// A file may have run `DEALLOCATE`: prepare the insert again before its next use.
    stale: std::cell::Cell<bool>,
    /// Each pending version's compatibility, worked out above this layer (by lint's
    /// analysis); a version not in it is recorded as unknown.
    assessments: HashMap<u64, Assessment>,
}

impl HistoryWriter<'_> {
    /// Records these assessments with the versions they are of.
    pub fn with_assessments(mut self, assessments: HashMap<u64, Assessment>) -> Self {
        self.assessments = assessments;
        self
    }

    /// Notes that `migration` may deallocate the prepared insert (its text says `DEALLOCATE`),
    /// so the next record prepares it again.
    pub fn watch(&self, migration: &Migration) {
        if migration.sql.to_ascii_lowercase().contains("deallocate") {
            self.stale.set(true);
        }
    }

    async fn insert(&self) -> Result<Statement, HistoryError> {
        if self.stale.replace(false) {
            let fresh = self
                .client
                .prepare_typed(&self.sql, &INSERT_TYPES)
                .await
                .map_err(|e| self.error("prepare the insert", e))?;
            *self.insert.borrow_mut() = fresh;
        }
        Ok(self.insert.borrow().clone())
    }

    /// The table written to.
    pub fn table(&self) -> &HistoryTable {
        self.table
    }

    /// Records `migration` (inside the caller's transaction for transactional files) and
    /// returns the row id. A `started` row of a versioned file is overwritten in place.
    pub async fn record(
        &self,
        migration: &Migration,
        state: RowState,
        execution_ms: Option<i64>,
    ) -> Result<i64, HistoryError> {
        let version = migration.version().map(|v| v as i64);
        let kind = match migration.kind {
            MigrationKind::Versioned(_) => "versioned",
            MigrationKind::Repeatable => "repeatable",
        };
        let state = match state {
            RowState::Applied => "applied",
            RowState::Started => "started",
        };
        let identity = self.identity;
        let down_checksum = migration.down.as_ref().map(|d| d.checksum.as_str());
        let assessment = migration.version().and_then(|v| self.assessments.get(&v));
        let compatibility = assessment.map_or(Compatibility::Unknown, |a| a.compatibility).name();
        let changes = assessment.map(|a| changes_text(&a.changes)).unwrap_or_default();
        let insert = self.insert().await?;
        let row = self
            .client
            .query_one(
                &insert,
                &[
                    &version,
                    &migration.description,
                    &kind,
                    &migration.checksum,
                    &state,
                    &execution_ms,
                    &identity.applied_by,
                    &MIGRUN_VERSION,
                    &identity.release,
                    &identity.ecs_task_arn,
                    &identity.image,
                    &identity.image_digest,
                    &down_checksum,
                    &compatibility,
                    &changes,
                ],
            )
            .await
            .map_err(|e| self.error("record a migration", e))?;
        row.try_get(0).map_err(|e| self.error("record a migration", e))
    }

    /// Marks a `started` row applied once its `no-transaction` file has run to the end, and
    /// removes older unfinished rows of the same repeatable file.
    pub async fn mark_applied(&self, migration: &Migration, id: i64, execution_ms: i64) -> Result<(), HistoryError> {
        let table = self.table.sql();
        let update = format!(
            "UPDATE {table} SET state = 'applied', execution_ms = $2, applied_at = pg_catalog.now() WHERE id = $1"
        );
        self.client
            .query_typed(&update, &[(&id, Type::INT8), (&execution_ms, Type::INT8)])
            .await
            .map_err(|e| self.error("mark a migration finished", e))?;
        if migration.kind == MigrationKind::Repeatable {
            let cleanup = format!(
                "DELETE FROM {table} WHERE kind = 'repeatable' AND description = $1 AND state = 'started' AND id <> $2"
            );
            self.client
                .query_typed(&cleanup, &[(&migration.description, Type::TEXT), (&id, Type::INT8)])
                .await
                .map_err(|e| self.error("clean up unfinished rows", e))?;
        }
        Ok(())
    }

    /// Marks version `down`'s row started before its no-transaction down file runs: a run
    /// that stops in the middle leaves a version that is neither applied nor pending, which
    /// `up` (the up file again) or `down` (the down file again) finishes.
    pub async fn mark_reverting(&self, down: &Migration) -> Result<(), HistoryError> {
        let sql = format!("UPDATE {} SET state = 'started' WHERE version = $1", self.table.sql());
        let version = down.version().map(|v| v as i64);
        self.client
            .query_typed(&sql, &[(&version, Type::INT8)])
            .await
            .map_err(|e| self.error("mark a version being reverted", e))?;
        Ok(())
    }

    /// Records that down file `down` undid its version: the history row and the rollback row
    /// go (the version is pending again), and a row in the reverts table says who, when and
    /// how long; one statement, inside the down file's transaction when it has one.
    pub async fn revert(&self, down: &Migration, execution_ms: i64) -> Result<(), HistoryError> {
        let sql = format!(
            "WITH d AS (DELETE FROM {} WHERE version = $1 RETURNING description, checksum),
                  x AS (DELETE FROM {} WHERE version = $1)
             INSERT INTO {} (version, description, checksum, down_checksum, state, execution_ms, reverted_by, migrun_version, release, ecs_task_arn, image, image_digest)
             SELECT $1, description, checksum, $2, $10, $3, $4, $5, $6, $7, $8, $9 FROM d",
            self.table.sql(),
            self.rollback.facts.sql(),
            self.rollback.reverts.sql()
        );
        let id = self.identity;
        let version = down.version().map(|v| v as i64);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &version,
            &down.checksum,
            &execution_ms,
            &id.applied_by,
            &MIGRUN_VERSION,
            &id.release,
            &id.ecs_task_arn,
            &id.image,
            &id.image_digest,
            &"reverted",
        ];
        let typed: Vec<_> = params.iter().copied().zip(REVERT_TYPES).collect();
        self.client.query_typed(&sql, &typed).await.map_err(|e| self.error("record a revert", e))?;
        Ok(())
    }

    fn error(&self, action: &'static str, e: tokio_postgres::Error) -> HistoryError {
        statement_error(self.table, action, &e)
    }
}

/// One row, with its id (the order rows were written in). Every column is read by name and
/// as possibly NULL, so a row of another shape is an error, not a panic.
fn row_of(row: &tokio_postgres::Row) -> Result<(i64, HistoryRow), String> {
    fn column<'r, T: tokio_postgres::types::FromSql<'r>>(
        row: &'r tokio_postgres::Row,
        name: &str,
    ) -> Result<T, String> {
        row.try_get(name).map_err(|e| format!("column {name}: {}", crate::db::failure::error_chain(&e)))
    }
    let required = |name: &str, value: Option<String>| value.ok_or_else(|| format!("column {name} is NULL"));
    let id: i64 = column::<Option<i64>>(row, "id")?.ok_or("column id is NULL")?;
    let version = column::<Option<i64>>(row, "version")?
        .map(|v| u64::try_from(v).map_err(|_| format!("version {v}")))
        .transpose()?;
    let description = required("description", column(row, "description")?)?;
    let checksum = required("checksum", column(row, "checksum")?)?;
    let state = match required("state", column(row, "state")?)?.as_str() {
        "started" => RowState::Started,
        _ => RowState::Applied,
    };
    let at: std::time::SystemTime = column::<Option<_>>(row, "applied_at")?.ok_or("column applied_at is NULL")?;
    // A table made before `adopted_from` existed has no such column.
    let adopted_from = match row.columns().iter().any(|c| c.name() == "adopted_from") {
        true => column(row, "adopted_from")?,
        false => None,
    };
    let row = HistoryRow { version, description, checksum, state, applied_at: Timestamp::of(at), adopted_from };
    Ok((id, row))
}

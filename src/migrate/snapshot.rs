//! Schema snapshots: after every run that changed the database (`up`, `down`, `baseline`,
//! `repair`, `diff --accept`), the canonical schema it left behind goes into
//! `<history>_snapshots`, with its hash, the applied versions and a digest of the history
//! rows it corresponds to. `diff` compares the live database with the newest one.
//!
//! The text is stored as `text`: Postgres compresses a value that large itself (TOAST, pglz
//! or lz4 as `default_toast_compression` says), so a client needs no codec to read it back.
//! Only the newest `KEEP` snapshots are kept.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::table::{statement_error, HistoryError, HistoryTable};
use crate::catalog::schema::{self, ObjectDiff, ReadOptions, Schema};
use crate::identity::MIGRUN_VERSION;

/// How many snapshots are kept (the newest).
const KEEP: i64 = 100;

/// The suffix of the snapshot table's name.
const SUFFIX: &str = "_snapshots";

/// The snapshots next to one history table.
pub struct Snapshots<'a> {
    client: &'a Client,
    history: &'a HistoryTable,
    table: HistoryTable,
    /// The one schema read, for a fan-out schema target.
    scope: Option<String>,
}

/// A snapshot as read back.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: i64,
    /// When it was taken (the server's text form).
    pub taken_at: String,
    /// What took it: `up`, `down`, `baseline`, `repair`, `accept`.
    pub command: String,
    /// The applied versions then.
    pub versions: Vec<i64>,
    /// Whether the history is still as it was then (no version applied, reverted or
    /// repaired since without a snapshot).
    pub history_unchanged: bool,
    /// The PostgreSQL major it was read on.
    pub server_major: i32,
    pub schema: Schema,
}

/// What a new snapshot holds.
#[derive(Debug, Clone)]
pub struct Taken {
    pub id: i64,
    pub objects: usize,
    pub bytes: usize,
    pub hash: String,
    /// How long reading and recording it took.
    pub duration_ms: u64,
}

/// Every table of migrun's own that may sit in a database, as quoted names: the reader
/// leaves them out, so recording a run never counts as a change of the schema.
pub fn own_tables(history: &HistoryTable) -> Vec<String> {
    let mut names = vec![history.sql()];
    for suffix in ["_rollback", "_reverts", "_repairs", SUFFIX] {
        names.push(history.with_suffix(suffix).sql());
    }
    // `fanout`'s run table, when a target is also the coordination database.
    names.push("\"migrun_fanout\"".into());
    names
}

/// What to read for a snapshot: everything (in `scope`, when given), owners too (`diff
/// --owners` can then compare them).
pub fn read_options(history: &HistoryTable, scope: Option<&str>) -> ReadOptions {
    ReadOptions { owners: true, exclude: own_tables(history), schema: scope.map(str::to_string) }
}

impl Snapshot {
    /// In words, for reports and messages.
    pub fn describe(&self) -> String {
        let upto = self.versions.last().map(|v| format!(", versions up to {v}")).unwrap_or_default();
        format!("the snapshot recorded by `{}` at {}{upto}", self.command, self.taken_at)
    }

    /// Warns when the history changed after it was recorded.
    pub fn warn_if_stale(&self) {
        if !self.history_unchanged {
            tracing::warn!(snapshot = self.id, "the history changed after this snapshot was recorded (a run whose snapshot failed, or an older migrun): the versions applied since show as differences; migrun diff --scratch compares with the folder instead");
        }
    }
}

/// The live schema against the newest snapshot, on the session (under the lock, for
/// `--check-drift`): `None` when there is no snapshot yet.
pub async fn compare_with_latest(
    client: &Client,
    history: &HistoryTable,
    scope: Option<&str>,
) -> Result<Option<(Snapshot, Vec<ObjectDiff>)>, HistoryError> {
    let snapshots = Snapshots::new(client, history).scoped(scope);
    let Some(latest) = snapshots.latest().await? else { return Ok(None) };
    let major = schema::server_major(client).await.map_err(snapshots.error("read the server version"))?;
    let live =
        schema::read(client, major, &read_options(history, scope)).await.map_err(snapshots.error("read the schema"))?;
    latest.warn_if_stale();
    let objects = latest.schema.clone().without_owners().compare(&live.without_owners());
    Ok(Some((latest, objects)))
}

impl<'a> Snapshots<'a> {
    /// Records the schema after a run that changed the database without a snapshot inside its
    /// last transaction. A failure is a warning: the change itself is done.
    pub async fn take_or_warn(&self, command: &str) {
        match self.take(command).await {
            Ok(taken) => tracing::info!(
                objects = taken.objects,
                bytes = taken.bytes,
                duration_ms = taken.duration_ms,
                schema_hash = %taken.hash,
                "schema snapshot recorded"
            ),
            Err(error) => {
                tracing::warn!(%error, "schema snapshot not recorded; `migrun diff` compares with the previous one")
            }
        }
    }

    pub fn new(client: &'a Client, history: &'a HistoryTable) -> Snapshots<'a> {
        Snapshots { client, history, table: history.with_suffix(SUFFIX), scope: None }
    }

    /// The same snapshots, of schema `scope` only (`None`: the whole database).
    pub fn scoped(self, scope: Option<&str>) -> Self {
        Snapshots { scope: scope.map(str::to_string), ..self }
    }

    fn error(&self, action: &'static str) -> impl Fn(tokio_postgres::Error) -> HistoryError + '_ {
        move |e| statement_error(&self.table, action, &e)
    }

    /// The history's digest and applied versions, as SQL over the history table.
    fn history_sql(&self) -> String {
        format!(
            "SELECT encode(sha256(convert_to(coalesce(string_agg(concat_ws('|', version, kind, description, checksum, state),
                        E'\\n' ORDER BY kind, version, description), ''), 'UTF8')), 'hex') AS digest,
                    coalesce(array_agg(version ORDER BY version) FILTER (WHERE version IS NOT NULL AND state = 'applied'), '{{}}') AS versions
             FROM {}",
            self.history.sql()
        )
    }

    /// Reads the schema (in the client's open transaction, if any) and records it with
    /// `command`. Creates the table when it is missing.
    pub async fn take(&self, command: &str) -> Result<Taken, HistoryError> {
        let started = std::time::Instant::now();
        let table = self.table.sql();
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    taken_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
                    command text NOT NULL,
                    versions bigint[] NOT NULL,
                    history_digest text NOT NULL,
                    schema_hash text NOT NULL,
                    server_major int NOT NULL,
                    objects int NOT NULL,
                    bytes int NOT NULL,
                    schema text NOT NULL,
                    taken_by text NOT NULL DEFAULT current_user,
                    migrun_version text NOT NULL)"
            ))
            .await
            .map_err(self.error("create the snapshot table"))?;
        let major = schema::server_major(self.client).await.map_err(self.error("read the server version"))?;
        let schema = schema::read(self.client, major, &read_options(self.history, self.scope.as_deref()))
            .await
            .map_err(self.error("read the schema"))?;
        let (text, hash) = (schema.text(), schema.hash());
        let sql = format!(
            "WITH h AS ({history}),
             ins AS (INSERT INTO {table} (command, versions, history_digest, schema_hash, server_major, objects, bytes, schema, migrun_version)
                     SELECT $1, h.versions, h.digest, $2, $3, $4, $5, $6, $7 FROM h RETURNING id),
             old AS (DELETE FROM {table} WHERE id <= (SELECT id FROM ins) - $8 RETURNING 1)
             SELECT id FROM ins",
            history = self.history_sql()
        );
        let (objects, bytes) = (schema.objects() as i32, text.len() as i32);
        let row = self
            .client
            .query_typed_one(
                &sql,
                &[
                    (&command, Type::TEXT),
                    (&hash, Type::TEXT),
                    (&(major as i32), Type::INT4),
                    (&objects, Type::INT4),
                    (&bytes, Type::INT4),
                    (&text, Type::TEXT),
                    (&MIGRUN_VERSION, Type::TEXT),
                    (&KEEP, Type::INT8),
                ],
            )
            .await
            .map_err(self.error("record the snapshot"))?;
        let id = row.try_get(0).map_err(self.error("record the snapshot"))?;
        let duration_ms = started.elapsed().as_millis() as u64;
        Ok(Taken { id, objects: schema.objects(), bytes: text.len(), hash, duration_ms })
    }

    /// The newest snapshot, and whether the history still matches it; `None` when there is
    /// none (no table, or no row). Asks the catalog first: reading a missing table would be
    /// an ERROR in the server's log.
    pub async fn latest(&self) -> Result<Option<Snapshot>, HistoryError> {
        let name = self.table.sql();
        let exists = self
            .client
            .query_typed_one(
                "SELECT pg_catalog.to_regclass($1) IS NOT NULL AND pg_catalog.to_regclass($2) IS NOT NULL",
                &[(&name, Type::TEXT), (&self.history.sql(), Type::TEXT)],
            )
            .await
            .map_err(self.error("look it up"))?;
        if !exists.try_get::<_, bool>(0).map_err(self.error("look it up"))? {
            return Ok(None);
        }
        let sql = format!(
            "WITH h AS ({history})
             SELECT s.id, s.taken_at::text, s.command, s.versions, s.history_digest = h.digest, s.server_major, s.schema
             FROM {name} s, h ORDER BY s.id DESC LIMIT 1",
            history = self.history_sql()
        );
        let rows = self.client.query(&sql, &[]).await.map_err(self.error("read the newest snapshot"))?;
        let Some(row) = rows.first() else { return Ok(None) };
        let read = self.error("read the newest snapshot");
        let text: String = row.try_get(6).map_err(&read)?;
        let schema = Schema::parse(&text).map_err(|e| HistoryError::Shape {
            table: self.table.to_string(),
            reason: format!("the newest snapshot does not read back: {e}"),
        })?;
        Ok(Some(Snapshot {
            id: row.try_get(0).map_err(&read)?,
            taken_at: row.try_get(1).map_err(&read)?,
            command: row.try_get(2).map_err(&read)?,
            versions: row.try_get(3).map_err(&read)?,
            history_unchanged: row.try_get(4).map_err(&read)?,
            server_major: row.try_get(5).map_err(&read)?,
            schema,
        }))
    }
}

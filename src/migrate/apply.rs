//! Applying planned migrations: one transaction per file, or statement by statement for
//! `no-transaction` files, with `lock_timeout` retries.

use std::time::{Duration, Instant};

use futures_util::future::{join, join3};
use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::apply_error::{foreign_marker, line_column};
pub use super::apply_error::{ApplyError, FileFailure};
use super::compare::{ComparedFile, FileState};
use super::files::{Direction, Migration};
use super::history::{HistoryError, HistoryWriter, RowState};
use super::lock::{LockedSession, HELD_SQL};
use super::snapshot::Snapshots;
use super::split;
use crate::backoff::Backoff;
use crate::db::failure::PgFailure;
use crate::db::session::{Session, SessionSettings};
use crate::duration::Millis;
use crate::signals::{self, Interrupted, Shutdown};

/// SQLSTATE of a statement that gave up waiting for a lock (`lock_timeout`).
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE of a statement that cannot run inside a transaction block (CREATE INDEX
/// CONCURRENTLY, VACUUM, CREATE DATABASE, ALTER SYSTEM).
const ACTIVE_SQL_TRANSACTION: &str = "25001";
/// Longest pause between `lock_timeout` retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A file this run applied, for logs and the result event.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedFile {
    /// The file's path.
    pub file: String,
    /// Its version, when versioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// How long it took.
    pub duration_ms: u64,
}

/// How one statement ended, when it did not succeed.
enum Executed {
    Failed(tokio_postgres::Error),
    Interrupted(Interrupted),
}

/// How retries behave; from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// How many times a statement that hit lock_timeout is retried.
    pub lock_retries: u32,
    /// The first pause before a retry; it doubles each time.
    pub first_delay: Duration,
}

/// Applies files in order on the locked session, recording each in the history.
pub struct Applier<'a> {
    locked: &'a LockedSession,
    db: &'a Session,
    client: &'a Client,
    writer: HistoryWriter<'a>,
    settings: &'a SessionSettings,
    retry: RetryPolicy,
    shutdown: Shutdown,
    /// Puts the session back into the state migrun set up, after each file.
    restore: String,
    /// Up files are recorded as applied; down files as reverts.
    direction: Direction,
    /// Where the last file's transaction records the schema it leaves (see `snapshotting`).
    snapshots: Option<Snapshots<'a>>,
    /// The snapshot was taken with the last file.
    snapshot_taken: std::cell::Cell<bool>,
}

/// A failed attempt at a file or statement, before it is classified.
struct Attempt {
    pg: PgFailure,
    /// Characters of the sent text that precede the file's text (to map positions back).
    file_char_offset: usize,
    sent_prefix_chars: usize,
}

/// What the session looks like after a file's statements ran.
struct AfterFile {
    /// A transaction block is open: migrun's own (a transactional file), or one the file
    /// began and did not end (a no-transaction file).
    in_block: bool,
    /// The advisory lock is still held.
    lock_held: bool,
}

/// After a file: puts the session back into migrun's state (first, so that nothing of migrun's
/// runs under a timeout or role the file set), then asks whether a transaction block opened by
/// an earlier message is open and whether the lock `key` is held. A simple query on purpose:
/// its transaction starts when the message arrives, so outside a block the two timestamps are
/// equal (the extended protocol stamps its messages apart). The key is a number, not user text.
fn after_file_sql(restore: &str, key: i64) -> String {
    let held = HELD_SQL.replace("$1", &key.to_string());
    format!("{restore}; SELECT pg_catalog.statement_timestamp() <> pg_catalog.transaction_timestamp(), {held}")
}

impl<'a> Applier<'a> {
    /// An applier on the locked session, writing with `writer`.
    pub fn new(
        locked: &'a LockedSession,
        writer: HistoryWriter<'a>,
        settings: &'a SessionSettings,
        retry: RetryPolicy,
        shutdown: Shutdown,
    ) -> Applier<'a> {
        let db = locked.session();
        let restore = db.restore_sql();
        Applier {
            locked,
            db,
            client: &db.client,
            writer,
            settings,
            retry,
            shutdown,
            restore,
            direction: Direction::Up,
            snapshots: None,
            snapshot_taken: std::cell::Cell::new(false),
        }
    }

    /// The same applier, recording the schema in `snapshots` inside the last file's
    /// transaction, so that the schema and the history it belongs to commit together.
    /// A failed snapshot is rolled back to a savepoint and warned about: it never undoes a
    /// migration. See `snapshot_taken` for the files it cannot serve.
    pub fn snapshotting(self, snapshots: Snapshots<'a>) -> Self {
        Applier { snapshots: Some(snapshots), ..self }
    }

    /// Whether the last file's transaction took the snapshot; not when the last file run was
    /// a no-transaction file or the run stopped before it: the caller takes one after.
    pub fn snapshot_taken(&self) -> bool {
        self.snapshot_taken.get()
    }

    /// The same applier, running down files: each one's version is recorded as reverted.
    pub fn reverting(self) -> Self {
        Applier { direction: Direction::Down, ..self }
    }

    /// Runs the down files `downs` (newest first), appending each finished one to `reverted`.
    /// `unfinished` holds the versions whose last run stopped in the middle of a
    /// no-transaction file.
    pub async fn revert_all(
        &self,
        downs: &[&Migration],
        unfinished: &[u64],
        reverted: &mut Vec<AppliedFile>,
    ) -> Result<(), ApplyError> {
        for (at, down) in downs.iter().enumerate() {
            let again = down.version().is_some_and(|v| unfinished.contains(&v));
            self.run_file(down, again, at + 1 == downs.len(), reverted).await?;
        }
        Ok(())
    }

    /// Applies `steps` in order, appending each finished file to `applied` (so a failure still
    /// reports what went before it).
    pub async fn apply_all(
        &self,
        steps: &[&ComparedFile<'_>],
        applied: &mut Vec<AppliedFile>,
    ) -> Result<(), ApplyError> {
        for (at, entry) in steps.iter().enumerate() {
            let last = at + 1 == steps.len();
            self.run_file(entry.migration, entry.state == FileState::Unfinished, last, applied).await?;
        }
        Ok(())
    }

    /// Runs one file with its timeouts; `again` when a previous run started this
    /// no-transaction file and did not finish it; `last` when no file follows in this run.
    async fn run_file(
        &self,
        migration: &Migration,
        again: bool,
        last: bool,
        done: &mut Vec<AppliedFile>,
    ) -> Result<(), ApplyError> {
        // Between files: start nothing new.
        self.shutdown.check().map_err(|stop| ApplyError::Interrupted { stop, failure: None })?;
        let lock_timeout = migration.directives.lock_timeout.unwrap_or(self.settings.lock_timeout);
        let statement_timeout = migration.directives.statement_timeout.unwrap_or(self.settings.statement_timeout);
        let (starting, finished) = match self.direction {
            Direction::Up => ("applying", "applied"),
            Direction::Down => ("reverting", "reverted"),
        };
        tracing::info!(
            file = %migration.display_path(),
            version = migration.version(),
            transaction = !migration.directives.no_transaction,
            lock_timeout = %lock_timeout,
            statement_timeout = %statement_timeout,
            "{starting}"
        );
        let started = Instant::now();
        if migration.directives.no_transaction {
            self.apply_statements(migration, again, lock_timeout, statement_timeout).await?;
        } else {
            self.apply_in_transaction(migration, lock_timeout, statement_timeout, last).await?;
        }
        let file = AppliedFile {
            file: migration.display_path(),
            version: migration.version(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(file = %file.file, version = file.version, duration_ms = file.duration_ms, "{finished}");
        done.push(file);
        Ok(())
    }

    /// The file and its history row commit together, or neither does. Before the row is
    /// written, the session is put back into migrun's state and the lock is confirmed.
    async fn apply_in_transaction(
        &self,
        migration: &Migration,
        lock_timeout: Millis,
        statement_timeout: Millis,
        last: bool,
    ) -> Result<(), ApplyError> {
        // One round trip for BEGIN, the file's timeouts and its body; the numbers are validated
        // durations, not user text.
        let prefix = format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};\n",
            lock_timeout.to_setting(),
            statement_timeout.to_setting()
        );
        let text = format!("{prefix}{}", migration.sql);
        let mut backoff = Backoff::new(self.retry.first_delay, MAX_RETRY_DELAY);
        let mut attempt = 1;
        let started = loop {
            let started = Instant::now();
            match self.execute(&text).await {
                Ok(()) => break started,
                Err(Executed::Interrupted(stop)) => {
                    self.rollback().await;
                    return Err(self.interrupted(migration, stop, true));
                }
                Err(Executed::Failed(e)) => {
                    self.rollback().await;
                    let failed =
                        Attempt { pg: PgFailure::from_pg(&e), file_char_offset: 0, sent_prefix_chars: prefix.len() };
                    self.retry_or_fail(migration, failed, &mut attempt, &mut backoff).await?;
                }
            }
        };
        let ms = started.elapsed().as_millis() as i64;
        let after = self.after_file(migration).await?;
        if !after.in_block || !after.lock_held {
            self.rollback().await;
        }
        if !after.in_block {
            let pg = PgFailure::other("the file ended migrun's transaction itself (a procedure that commits?), so it is not recorded; make the file run inside one transaction, or mark it -- migrun:no-transaction");
            return Err(ApplyError::Failed { failure: FileFailure::new(migration, pg), in_transaction: true });
        }
        if !after.lock_held {
            return Err(ApplyError::LockLost { failure: self.no_position(migration), applied: false });
        }
        self.writer.watch(migration);
        let record = async {
            match self.direction {
                Direction::Up => self.writer.record(migration, RowState::Applied, Some(ms)).await.map(|_| ()),
                Direction::Down => self.writer.revert(migration, ms).await,
            }
        };
        if let Some(snapshots) = self.snapshots.as_ref().filter(|_| last) {
            record.await.map_err(|error| self.unrecorded(migration, error, true, None))?;
            self.snapshot_in_transaction(snapshots).await;
            return self.client.batch_execute("COMMIT").await.map_err(|e| self.db_failure(migration, &e, true));
        }
        // One round trip: if the row fails, the transaction is aborted and COMMIT rolls it back.
        let (recorded, committed) = join(record, self.client.batch_execute("COMMIT")).await;
        recorded.map_err(|error| self.unrecorded(migration, error, true, None))?;
        committed.map_err(|e| self.db_failure(migration, &e, true))
    }

    /// Takes the snapshot inside the open transaction, behind a savepoint.
    async fn snapshot_in_transaction(&self, snapshots: &Snapshots<'_>) {
        let command = match self.direction {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        let taken = async {
            self.client.batch_execute("SAVEPOINT migrun_snapshot").await.map_err(|e| e.to_string())?;
            match snapshots.take(command).await {
                Ok(taken) => Ok(taken),
                Err(error) => {
                    let undone = self.client.batch_execute("ROLLBACK TO SAVEPOINT migrun_snapshot").await;
                    Err(match undone {
                        Ok(()) => error.to_string(),
                        Err(e) => format!("{error}; then the rollback to its savepoint failed: {e}"),
                    })
                }
            }
        };
        match taken.await {
            Ok(taken) => {
                self.snapshot_taken.set(true);
                tracing::info!(objects = taken.objects, bytes = taken.bytes, duration_ms = taken.duration_ms, schema_hash = %taken.hash, "schema snapshot recorded");
            }
            Err(error) => {
                tracing::warn!(%error, "schema snapshot not recorded (the migration is); `migrun diff` compares with the previous one")
            }
        }
    }

    async fn rollback(&self) {
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!(error = %PgFailure::from_pg(&e), "rollback failed (the server rolls back on disconnect)");
        }
    }

    /// Restores the session; then whether the file left a transaction open, and whether the
    /// lock is still held. Inside a transactional file's transaction, the reset commits with it.
    async fn after_file(&self, migration: &Migration) -> Result<AfterFile, ApplyError> {
        let messages = self
            .client
            .simple_query(&after_file_sql(&self.restore, self.locked.key()))
            .await
            .map_err(|e| self.db_failure(migration, &e, !migration.directives.no_transaction))?;
        // The last row: the restore before the check may return rows of its own (set_config).
        let row = messages.iter().rev().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((row.try_get(0).ok()?? == "t", row.try_get(1).ok()?? == "t")),
            _ => None,
        });
        let (in_block, lock_held) =
            row.ok_or_else(|| self.db_failure_text(migration, "the session check returned no row"))?;
        Ok(AfterFile { in_block, lock_held })
    }

    /// Each statement runs alone, outside any transaction; the history row is marked started
    /// before and applied after, so an interrupted file is run again by the next run.
    async fn apply_statements(
        &self,
        migration: &Migration,
        again: bool,
        lock_timeout: Millis,
        statement_timeout: Millis,
    ) -> Result<(), ApplyError> {
        if again {
            tracing::warn!(file = %migration.display_path(), "a previous run started this no-transaction file and did not finish it; running it again (it must be idempotent)");
            self.report_invalid_indexes(migration).await?;
        }
        let started = Instant::now();
        let id = match self.direction {
            Direction::Up => Some(self.writer.record(migration, RowState::Started, None).await?),
            Direction::Down => {
                self.writer.mark_reverting(migration).await?;
                None
            }
        };
        // Sent on their own: a SET in the same string as a failing statement is rolled back with it.
        self.set_session_timeouts(migration, lock_timeout, statement_timeout).await?;
        for statement in split::split(&migration.sql) {
            if let Err(e) = self.apply_statement(migration, statement).await {
                // A statement that failed inside a block the file began leaves it aborted.
                self.rollback().await;
                return Err(e);
            }
        }
        let ms = started.elapsed().as_millis() as i64;
        let after = self.after_file(migration).await?;
        if after.in_block {
            self.rollback().await;
            self.client.batch_execute(&self.restore).await.map_err(|e| self.db_failure(migration, &e, false))?;
            return Err(ApplyError::OpenTransaction(self.no_position(migration)));
        }
        self.writer.watch(migration);
        // The statements ran: record that, whatever comes next.
        let recorded = match id {
            Some(id) => self.writer.mark_applied(migration, id, ms).await,
            None => self.writer.revert(migration, ms).await,
        };
        recorded.map_err(|error| self.unrecorded(migration, error, false, id))?;
        if !after.lock_held {
            return Err(ApplyError::LockLost { failure: self.no_position(migration), applied: true });
        }
        Ok(())
    }

    /// The file, without a position in it: the failure is not in its text.
    fn no_position(&self, migration: &Migration) -> FileFailure {
        FileFailure::new(migration, PgFailure::other("stopped after the file ran"))
    }

    fn unrecorded(
        &self,
        migration: &Migration,
        error: HistoryError,
        in_transaction: bool,
        id: Option<i64>,
    ) -> ApplyError {
        let pg = error.failure().cloned().unwrap_or_else(|| PgFailure::other(&error.to_string()));
        ApplyError::Unrecorded {
            failure: Box::new(FileFailure::new(migration, PgFailure { position: None, ..pg })),
            row: id.map(|id| (self.writer.table().sql(), id)),
            error: Box::new(error),
            in_transaction,
        }
    }

    async fn apply_statement(&self, migration: &Migration, statement: split::Statement<'_>) -> Result<(), ApplyError> {
        let index = split::concurrent_index_name(statement.text);
        let mut backoff = Backoff::new(self.retry.first_delay, MAX_RETRY_DELAY);
        let mut attempt = 1;
        loop {
            if let Some(name) = &index {
                self.drop_invalid_index(migration, name).await?;
            }
            match self.execute(statement.text).await {
                Ok(()) => return Ok(()),
                Err(Executed::Interrupted(stop)) => return Err(self.interrupted(migration, stop, false)),
                Err(Executed::Failed(e)) => {
                    let file_char_offset = migration.sql[..statement.offset].chars().count();
                    let failed = Attempt { pg: PgFailure::from_pg(&e), file_char_offset, sent_prefix_chars: 0 };
                    self.retry_or_fail(migration, failed, &mut attempt, &mut backoff).await?;
                }
            }
        }
    }

    /// Runs `sql`; on a stop request, asks the server to cancel it and waits for the statement
    /// to end (the grace period bounds the wait), so the session is clean for ROLLBACK and the
    /// lock release.
    async fn execute(&self, sql: &str) -> Result<(), Executed> {
        let statement = self.client.batch_execute(sql);
        tokio::pin!(statement);
        let stop = tokio::select! {
            done = &mut statement => return done.map_err(Executed::Failed),
            stop = self.shutdown.wait() => stop,
        };
        tracing::warn!(signal = %signals::name(&stop.signal), "stop requested: cancelling the running statement");
        if let Err(reason) = self.db.cancel().await {
            tracing::warn!(error = %reason, "cancel request failed; the statement runs until the grace period ends");
        }
        let _ = statement.await;
        Err(Executed::Interrupted(stop))
    }

    fn interrupted(&self, migration: &Migration, stop: Interrupted, in_transaction: bool) -> ApplyError {
        let effect = if in_transaction {
            "cancelled and rolled back: nothing of this file was applied"
        } else {
            "cancelled: this no-transaction file runs again on the next run"
        };
        let pg = PgFailure::other(&format!("{stop} while applying; {effect}"));
        ApplyError::Interrupted { stop, failure: Some(FileFailure::new(migration, pg)) }
    }

    /// Sleeps and returns for another attempt when the failure was `lock_timeout` and retries
    /// remain; otherwise returns the classified error.
    async fn retry_or_fail(
        &self,
        migration: &Migration,
        failed: Attempt,
        attempt: &mut u32,
        backoff: &mut Backoff,
    ) -> Result<(), ApplyError> {
        let failure = file_failure(migration, &failed);
        let in_transaction = !migration.directives.no_transaction;
        if failure.pg.connection_lost() {
            return Err(ApplyError::Lost { failure, in_transaction });
        }
        if failure.pg.read_only() && self.server_is_read_only().await {
            return Err(ApplyError::ReadOnly { failure, in_transaction });
        }
        if failure.pg.is(ACTIVE_SQL_TRANSACTION) && in_transaction {
            return Err(ApplyError::NeedsNoTransaction { failure, marker: foreign_marker(&migration.sql) });
        }
        if !failure.pg.is(LOCK_NOT_AVAILABLE) {
            return Err(ApplyError::Failed { failure, in_transaction });
        }
        if *attempt > self.retry.lock_retries {
            return Err(ApplyError::LockRetries { failure, attempts: *attempt });
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            file = %failure.file,
            attempt = *attempt,
            retries = self.retry.lock_retries,
            retry_in_ms = delay.as_millis() as u64,
            sqlstate = LOCK_NOT_AVAILABLE,
            error = %failure.pg.message,
            "lock_timeout: rolled back so the live workload is not blocked; retrying"
        );
        *attempt += 1;
        crate::counters::lock_retry();
        self.shutdown.sleep(delay).await.map_err(|stop| ApplyError::Interrupted { stop, failure: Some(failure) })
    }

    async fn set_session_timeouts(
        &self,
        migration: &Migration,
        lock: Millis,
        statement: Millis,
    ) -> Result<(), ApplyError> {
        let sql =
            format!("SET lock_timeout = {}; SET statement_timeout = {}", lock.to_setting(), statement.to_setting());
        self.client.batch_execute(&sql).await.map_err(|e| self.db_failure(migration, &e, false))
    }

    /// After a write was refused as read-only: whether the server refuses writes in the state
    /// migrun set up (a replica, or read-only by default), rather than because the file made
    /// its own session read-only.
    async fn server_is_read_only(&self) -> bool {
        let (_, _, read_only) = join3(
            self.client.batch_execute("ROLLBACK"),
            self.client.batch_execute(&self.restore),
            self.client.query_typed_one("SELECT pg_catalog.current_setting('transaction_read_only')", &[]),
        )
        .await;
        read_only.is_ok_and(|row| row.try_get::<_, &str>(0).is_ok_and(|value| value == "on"))
    }

    /// An interrupted `CREATE INDEX CONCURRENTLY` leaves an INVALID index that `IF NOT EXISTS`
    /// would then keep; drop it before building again.
    async fn drop_invalid_index(&self, migration: &Migration, name: &str) -> Result<(), ApplyError> {
        for index in self.invalid_indexes(migration, Some(name)).await? {
            tracing::warn!(file = %migration.display_path(), index = %index, "dropping the INVALID index an interrupted CREATE INDEX CONCURRENTLY left, before building it again");
            // The name comes from the catalog, quoted by format('%I').
            self.client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                .await
                .map_err(|e| self.db_failure(migration, &e, false))?;
        }
        Ok(())
    }

    async fn report_invalid_indexes(&self, migration: &Migration) -> Result<(), ApplyError> {
        let invalid = self.invalid_indexes(migration, None).await?;
        if !invalid.is_empty() {
            tracing::warn!(file = %migration.display_path(), invalid_indexes = ?invalid, "INVALID indexes in the database");
        }
        Ok(())
    }

    /// INVALID indexes, schema-qualified and quoted: every one, or those named `name` in the
    /// schemas on the search path (where an unqualified CREATE INDEX puts it).
    async fn invalid_indexes(&self, migration: &Migration, name: Option<&str>) -> Result<Vec<String>, ApplyError> {
        let rows = self
            .client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname)
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE NOT i.indisvalid
                   AND ($1::text IS NULL OR (c.relname = $1 AND n.nspname = ANY (current_schemas(false))))
                 ORDER BY 1",
                &[&name],
            )
            .await
            .map_err(|e| self.db_failure(migration, &e, false))?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(|e| self.db_failure(migration, &e, false))
    }

    fn db_failure_text(&self, migration: &Migration, text: &str) -> ApplyError {
        let failure = FileFailure::new(migration, PgFailure::other(text));
        ApplyError::Failed { failure, in_transaction: !migration.directives.no_transaction }
    }

    /// A failure of one of migrun's own statements about `migration`: no position in the file.
    fn db_failure(&self, migration: &Migration, e: &tokio_postgres::Error, in_transaction: bool) -> ApplyError {
        let pg = PgFailure::from_pg(e);
        let failure = FileFailure::new(migration, PgFailure { position: None, ..pg });
        if failure.pg.connection_lost() {
            return ApplyError::Lost { failure, in_transaction };
        }
        ApplyError::Failed { failure, in_transaction }
    }
}

/// Maps Postgres's 1-based character position in what was sent back to a line and column of
/// the file.
fn file_failure(migration: &Migration, attempt: &Attempt) -> FileFailure {
    let location = attempt
        .pg
        .position
        .and_then(|p| (p as usize).checked_sub(1 + attempt.sent_prefix_chars))
        .map(|index| line_column(&migration.sql, attempt.file_char_offset + index));
    FileFailure {
        line: location.map(|(line, _)| line),
        column: location.map(|(_, column)| column),
        ..FileFailure::new(migration, attempt.pg.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_other_tools_no_transaction_markers() {
        assert_eq!(
            foreign_marker("-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);"),
            Some("`-- no-transaction` (sqlx's marker)")
        );
        assert_eq!(
            foreign_marker("\n-- migrate:up\n-- migrate:no-transaction\nVACUUM;").map(|m| &m[..28]),
            Some("`-- migrate:no-transaction` ")
        );
        assert!(foreign_marker("-- +goose NO TRANSACTION\nVACUUM;").is_some());
        assert_eq!(foreign_marker("VACUUM;\n-- no-transaction"), None);
        assert_eq!(foreign_marker("-- nothing\nVACUUM;"), None);
    }

    #[test]
    fn maps_character_positions_to_lines() {
        let text = "-- héader\nCREATE TABLE t (\n  x int REFERENCES nope\n);\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 10), (2, 1));
        let nope = text.find("nope").unwrap();
        let nope_chars = text[..nope].chars().count();
        assert_eq!(line_column(text, nope_chars), (3, 20));
    }
}

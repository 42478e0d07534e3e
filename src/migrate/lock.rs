//! The session-level advisory lock that keeps two runs from migrating at once.
//!
//! Polled with `pg_try_advisory_lock` in autocommit, never a blocking `pg_advisory_lock` or an
//! open transaction: a waiter holding a snapshot would make the holder's
//! `CREATE INDEX CONCURRENTLY` wait for it, and the two would deadlock.

use std::time::{Duration, Instant};

use futures_util::future::join;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

use super::history::{self, HistoryError, HistoryTable};
use crate::backoff::Backoff;
use crate::db::failure::PgFailure;
use crate::db::session::{ConnectError, Session};
use crate::signals::{Interrupted, Shutdown};

/// How often a waiting run says who holds the lock.
const HOLDER_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Why the lock was not taken, or not released cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another session held it for all of `--lock-wait`.
    #[error("advisory lock {key} not acquired within {waited_s:.1}s{}; another migrun is running (safe to retry), or raise --lock-wait", holder_text(.holder))]
    Timeout { key: i64, waited_s: f64, holder: Option<Holder> },
    /// A lock statement failed.
    #[error("advisory lock {key}: {failure}")]
    Database { key: i64, failure: PgFailure },
    /// The server said the lock was not held at release.
    #[error("advisory lock {key} was not held at release; the connection changed backends (a transaction-pooling proxy?): point migrun at the database directly")]
    NotHeld { key: i64 },
    /// The session itself failed (lost, or behind a pooler).
    #[error(transparent)]
    Session(#[from] ConnectError),
    /// A stop was requested while waiting.
    #[error("{0} while waiting for the advisory lock")]
    Interrupted(#[from] Interrupted),
    /// The lock was lost while `exec --lock` ran its command.
    #[error("advisory lock {key} was lost while the command ran (the server ended migrun's session: a restart, a failover, pg_terminate_backend); the command was stopped, since another run may hold the lock now (safe to retry)")]
    Lost { key: i64 },
    /// The history table's name resolves to no usable table.
    #[error(transparent)]
    Table(#[from] HistoryError),
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => format!(" (held by {})", h.describe()),
        None => String::new(),
    }
}

/// The session holding the lock, from pg_locks and pg_stat_activity. Every column but the pid
/// may be NULL: without pg_read_all_stats (usual for RDS roles), another role's session shows
/// no address, start or application; a backend that just ended shows nothing at all.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    /// Its backend pid.
    pub pid: i32,
    /// Its role, when the view names it.
    pub role: Option<String>,
    /// Its application_name, when visible.
    pub application_name: Option<String>,
    /// Its client address: `local socket` for a visible session without one; `None` when
    /// the session's details are hidden from this role.
    pub client_addr: Option<String>,
    /// How long it has been connected, when visible.
    pub connected_s: Option<f64>,
}

impl Holder {
    /// `pid 123 (role app) application "x" from 10.0.0.5, connected 12s ago`, as far as known.
    fn describe(&self) -> String {
        let mut text = format!("pid {}", self.pid);
        if let Some(role) = &self.role {
            text.push_str(&format!(" role {role}"));
        }
        if let Some(name) = self.application_name.as_deref().filter(|n| !n.is_empty()) {
            text.push_str(&format!(" application {name:?}"));
        }
        match (&self.client_addr, self.connected_s) {
            (Some(addr), Some(seconds)) => text.push_str(&format!(" from {addr}, connected {seconds:.0}s ago")),
            (Some(addr), None) => text.push_str(&format!(" from {addr}")),
            (None, _) => text.push_str(", details hidden from this role (it lacks pg_read_all_stats)"),
        }
        text
    }
}

/// The default lock key for a history table: stable across versions of migrun, distinct per
/// table. Derived from the table's canonical name (see `HistoryTable::canonical`), so every
/// spelling of one table gives one key.
pub fn key_for(table: &HistoryTable) -> i64 {
    let digest = Sha256::digest(format!("migrun:{}", table.canonical()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// The lock to take: the configured key, or the one derived from the history table as the
/// server resolves its name.
#[derive(Debug, Clone, Copy)]
pub struct LockSpec<'a> {
    /// The history table, as configured.
    pub table: &'a HistoryTable,
    /// `--lock-key`, when given.
    pub key: Option<i64>,
}

/// The first lock attempt: the lock on the key of the likely table (`$1`: for an unqualified
/// name, the one in `public`), and what the server knows to check the guess: the schema an
/// unqualified CREATE TABLE would use, and the table the name resolves to (`$2`) against the
/// likely one (`$3`). The lock is taken only on a direct session (the backend's pid is the
/// start-up key's, `$4`): through a pooler nothing may be locked before it is known to keep
/// this session's server connection. Function calls only: in the cold backend every run
/// starts, a query over the catalogs costs milliseconds to plan.
const FIRST_TRY_SQL: &str =
    "SELECT CASE WHEN pg_catalog.pg_backend_pid() = $4 THEN pg_catalog.pg_try_advisory_lock($1) END,
    pg_catalog.pg_backend_pid(), pg_catalog.current_schema()::text,
    pg_catalog.to_regclass($2)::oid, pg_catalog.to_regclass($3)::oid";

/// SQL: whether this session holds the advisory lock `$1` (a bigint key shows in pg_locks as
/// classid, its high 32 bits, and objid, its low 32 bits). The function under the pg_locks
/// view, filtered by our own pid (so our own database): it runs after every applied file, and
/// the view costs more to plan than the check costs to run.
pub const HELD_SQL: &str = "EXISTS (SELECT 1 FROM pg_catalog.pg_lock_status() l
    WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.objsubid = 1
      AND l.classid = (($1::pg_catalog.int8 >> 32) & 4294967295)::pg_catalog.oid
      AND l.objid = ($1::pg_catalog.int8 & 4294967295)::pg_catalog.oid)";

/// A session that holds the advisory lock: the only way to hold it. Acquired on a session it
/// then owns; released, and the session closed, by `release`, the one place that unlocks. If
/// it is dropped instead (a panic), the server releases the lock when the session ends.
pub struct LockedSession {
    session: Session,
    key: i64,
    table: HistoryTable,
}

impl LockedSession {
    /// Takes the lock on `session`, polling up to `wait` with backoff and jitter and saying who
    /// holds it at the first miss and every 10 s after. The first attempt travels in one round
    /// trip with the session's first statement (its pid and protection) and says whether the
    /// history table exists; a pooled session is first checked to keep its server connection
    /// (see `Session::settle_pooled`). Returns the locked session and, when the lock was taken
    /// at once, whether the history table existed. On any failure the session is closed.
    pub async fn acquire(
        session: Session,
        target: LockSpec<'_>,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<(LockedSession, Option<bool>), LockError> {
        let outcome = async {
            let (started, first) = join(session.start(), first_try(&session, target)).await;
            started?;
            let FirstTry { locked, key, table, table_exists } = first?;
            let locked = match locked {
                Some(locked) => locked,
                None => {
                    session.settle_pooled().await?;
                    try_acquire(&session, key).await?
                }
            };
            if locked {
                tracing::info!(lock_key = key, history_table = %table, waited_ms = 0, "lock acquired");
                return Ok((key, table, table_exists));
            }
            poll(&session, key, wait, shutdown).await.map(|()| (key, table, None))
        }
        .await;
        match outcome {
            Ok((key, table, exists)) => Ok((LockedSession { session, key, table }, exists)),
            Err(e) => {
                // Not held: closing is all there is to do.
                session.close().await;
                Err(e)
            }
        }
    }

    /// The session the lock is held on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The history table, qualified with the schema it resolved to when the lock was taken.
    pub fn table(&self) -> &HistoryTable {
        &self.table
    }

    /// The lock's key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Asks the server whether this session still holds the lock (a session the server ended,
    /// or `pg_advisory_unlock_all()`, loses it).
    pub async fn still_held(&self) -> Result<bool, LockError> {
        let key = self.key;
        let row = self
            .session
            .client
            .query_typed_one(&format!("SELECT {HELD_SQL}"), &[(&key, Type::INT8)])
            .await
            .map_err(database(key))?;
        row.try_get(0).map_err(database(key))
    }

    /// Unlocks, checking the server's answer (`false` means the session we hold it on is not
    /// the one we think), and closes the session.
    pub async fn release(self) -> Result<(), LockError> {
        let key = self.key;
        let answer = self
            .session
            .client
            .query_typed_one("SELECT pg_catalog.pg_advisory_unlock($1)", &[(&key, Type::INT8)])
            .await;
        self.session.close().await;
        // NULL: the server did not know the lock at all.
        let released: Option<bool> = answer.and_then(|row| row.try_get(0)).map_err(database(key))?;
        if released != Some(true) {
            return Err(LockError::NotHeld { key });
        }
        tracing::debug!(lock_key = key, "lock released");
        Ok(())
    }

    /// Releases the lock after the work ended with `result`; the work's error wins over a
    /// failed release (which is logged: the lock then ends with the session).
    ///
    /// A run that succeeded without changing anything (the common no-op) on a direct session
    /// does not send an unlock: it ends the session, and the server releases a session's
    /// advisory locks as its backend exits on Terminate. That saves a round trip on every
    /// deploy, and loses nothing: the unlock's answer only matters after work that had to run
    /// under the lock. Through a pooler the backend outlives the session (only the pooler's
    /// reset query would release the lock), so the unlock is always sent.
    pub async fn release_after<T, E: From<LockError>>(self, result: Result<T, E>, changed: bool) -> Result<T, E> {
        match result {
            Ok(value) if !changed && self.session.is_direct() => {
                self.session.close().await;
                tracing::debug!(lock_key = self.key, "lock released with the session");
                Ok(value)
            }
            Ok(value) => {
                self.release().await?;
                Ok(value)
            }
            Err(e) => Err(self.release_after_error(e).await),
        }
    }

    /// Releases the lock after the work failed with `error`, which is returned: a failed
    /// release is only logged (the lock then ends with the session).
    pub async fn release_after_error<E>(self, error: E) -> E {
        if let Err(unlock) = self.release().await {
            tracing::warn!(error = %unlock, "lock release failed after an error; it ends with the session");
        }
        error
    }
}

/// How the first attempt went.
struct FirstTry {
    /// The lock is held now; `None` when it was not tried (a pooled session).
    locked: Option<bool>,
    /// Its key.
    key: i64,
    /// The history table, schema-qualified as the server resolved it.
    table: HistoryTable,
    /// Whether the table existed, when that was read with this lock held.
    table_exists: Option<bool>,
}

/// A failed lock statement.
fn database(key: i64) -> impl Fn(tokio_postgres::Error) -> LockError {
    move |e| LockError::Database { key, failure: PgFailure::from_pg(&e) }
}

/// The first attempt. A qualified name is its own table; an unqualified one is locked as the
/// table in `public` (where it nearly always is), and if the server resolves it elsewhere, that
/// lock is given back and the right one tried: one more round trip, only then.
async fn first_try(session: &Session, target: LockSpec<'_>) -> Result<FirstTry, LockError> {
    let configured = target.table;
    let guess = match configured.schema() {
        Some(_) => configured.clone(),
        None => configured.resolved_in("public"),
    };
    let guess_key = target.key.unwrap_or_else(|| key_for(&guess));
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 4] = [
        (&guess_key, Type::INT8),
        (&configured.sql(), Type::TEXT),
        (&guess.sql(), Type::TEXT),
        (&session.key_pid(), Type::INT4),
    ];
    let row = session.client.query_typed_one(FIRST_TRY_SQL, &params).await.map_err(database(guess_key))?;
    let column_error = database(guess_key);
    let pid: i32 = row.try_get(1).map_err(&column_error)?;
    session.check_backend(pid)?;
    let locked: Option<bool> = row.try_get(0).map_err(&column_error)?;
    let current: Option<String> = row.try_get(2).map_err(&column_error)?;
    let found: Option<u32> = row.try_get(3).map_err(&column_error)?;
    let likely: Option<u32> = row.try_get(4).map_err(&column_error)?;
    let unusable = |reason: String| HistoryError::Unusable { table: configured.to_string(), reason };
    let schema = match (configured.schema(), found, likely) {
        (Some(schema), _, _) => schema.to_string(),
        (None, Some(found), Some(likely)) if found == likely => "public".to_string(),
        (None, Some(found), _) => schema_of(session, found, guess_key).await?,
        (None, None, _) => {
            current.ok_or_else(|| unusable("the search_path names no existing schema to create it in".into()))?
        }
    };
    let table = configured.resolved_in(&schema);
    let key = target.key.unwrap_or_else(|| key_for(&table));
    if history::is_temp_schema(&schema) {
        return Err(unusable(format!(
            "it resolves to the session's temporary schema {schema}, which ends with the session"
        ))
        .into());
    }
    let exists = found.is_some();
    if key == guess_key {
        let table_exists = (locked == Some(true)).then_some(exists);
        return Ok(FirstTry { locked, key, table, table_exists });
    }
    if locked == Some(true) {
        session
            .client
            .query_typed_one("SELECT pg_catalog.pg_advisory_unlock($1)", &[(&guess_key, Type::INT8)])
            .await
            .map_err(database(guess_key))?;
    }
    // A pooled session tries nothing before `settle_pooled`.
    let locked = match locked {
        Some(_) => Some(try_acquire(session, key).await?),
        None => None,
    };
    Ok(FirstTry { locked, key, table, table_exists: None })
}

/// The schema of the table `oid` (an unqualified name found outside `public`).
async fn schema_of(session: &Session, oid: u32, key: i64) -> Result<String, LockError> {
    let row = session
        .client
        .query_typed_one(
            "SELECT n.nspname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[(&oid, Type::OID)],
        )
        .await
        .map_err(database(key))?;
    row.try_get(0).map_err(database(key))
}

/// One more attempt; true when the lock is now held by this session.
async fn try_acquire(session: &Session, key: i64) -> Result<bool, LockError> {
    let row = session
        .client
        .query_typed_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1), pg_catalog.pg_backend_pid()",
            &[(&key, Type::INT8)],
        )
        .await
        .map_err(database(key))?;
    session.check_backend(row.try_get(1).map_err(database(key))?)?;
    row.try_get(0).map_err(database(key))
}

/// Polls for the lock after a first miss, until `wait` runs out: the last try is made at the
/// deadline itself.
async fn poll(session: &Session, key: i64, wait: Duration, shutdown: &Shutdown) -> Result<(), LockError> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut last_report: Option<Instant> = None;
    loop {
        let Some(delay) = backoff.next_delay_until(deadline) else {
            let holder = holder(session, key).await?;
            crate::counters::lock_waited(started.elapsed().as_millis() as u64);
            return Err(LockError::Timeout { key, waited_s: started.elapsed().as_secs_f64(), holder });
        };
        if last_report.is_none_or(|at| at.elapsed() >= HOLDER_REPORT_EVERY) {
            let holder = holder(session, key).await?;
            log_waiting(key, started, holder.as_ref());
            last_report = Some(Instant::now());
        }
        shutdown.sleep(delay).await?;
        if try_acquire(session, key).await? {
            let waited_ms = started.elapsed().as_millis() as u64;
            crate::counters::lock_waited(waited_ms);
            tracing::info!(lock_key = key, waited_ms, "lock acquired");
            return Ok(());
        }
    }
}

fn log_waiting(key: i64, started: Instant, holder: Option<&Holder>) {
    let waited_s = started.elapsed().as_secs();
    match holder {
        Some(h) => tracing::info!(
            lock_key = key,
            waited_s,
            holder_pid = h.pid,
            holder_role = h.role.as_deref(),
            holder_application = h.application_name.as_deref(),
            holder_addr = h.client_addr.as_deref(),
            holder_connected_s = h.connected_s.map(|s| s.round() as u64),
            "waiting for the lock held by another session"
        ),
        None => tracing::info!(lock_key = key, waited_s, "waiting for the lock"),
    }
}

/// The session holding lock `key` in this database. Every column is read as possibly NULL
/// (see `Holder`); `client_addr` is told apart from a hidden one by `backend_start`, which a
/// visible client session always has.
async fn holder(session: &Session, key: i64) -> Result<Option<Holder>, LockError> {
    // A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
    let high = ((key as u64) >> 32) as i64;
    let low = ((key as u64) & 0xffff_ffff) as i64;
    let rows = session
        .client
        .query_typed(
            "SELECT l.pid, a.usename::text, a.application_name,
                    CASE WHEN a.backend_start IS NULL THEN NULL ELSE coalesce(pg_catalog.host(a.client_addr), 'local socket') END,
                    extract(epoch FROM pg_catalog.now() - a.backend_start)::float8
             FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
               AND l.classid::bigint = $1 AND l.objid::bigint = $2",
            &[(&high, Type::INT8), (&low, Type::INT8)],
        )
        .await
        .map_err(database(key))?;
    let Some(row) = rows.first() else { return Ok(None) };
    let column = database(key);
    // A lock of a prepared transaction has no pid.
    let Some(pid) = row.try_get::<_, Option<i32>>(0).map_err(&column)? else { return Ok(None) };
    Ok(Some(Holder {
        pid,
        role: row.try_get(1).map_err(&column)?,
        application_name: row.try_get(2).map_err(&column)?,
        client_addr: row.try_get(3).map_err(&column)?,
        connected_s: row.try_get(4).map_err(&column)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_described_as_far_as_this_role_may_see_it() {
        let visible = Holder {
            pid: 7,
            role: Some("app".into()),
            application_name: Some("migrun/0.1".into()),
            client_addr: Some("10.0.0.5".into()),
            connected_s: Some(12.4),
        };
        assert_eq!(visible.describe(), "pid 7 role app application \"migrun/0.1\" from 10.0.0.5, connected 12s ago");
        let hidden = Holder { pid: 8, role: None, application_name: None, client_addr: None, connected_s: None };
        assert_eq!(hidden.describe(), "pid 8, details hidden from this role (it lacks pg_read_all_stats)");
    }

    #[test]
    fn lock_key_is_stable_and_per_table() {
        let table = |name: &str| HistoryTable::parse(name).unwrap();
        assert_eq!(key_for(&table("migrun_history")), key_for(&table("MIGRUN_HISTORY")));
        assert_eq!(key_for(&table("migrun_history")), key_for(&table("public.migrun_history")));
        assert_ne!(key_for(&table("migrun_history")), key_for(&table("ops.migrun_history")));
        // The key must never change between versions: running tasks of two releases share it.
        assert_eq!(key_for(&table("migrun_history")), -4_028_659_133_243_882_200);
    }
}

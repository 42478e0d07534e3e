//! The session-level advisory lock that keeps two runs from migrating at once.
//!
//! Polled with `pg_try_advisory_lock` in autocommit, never a blocking `pg_advisory_lock` or an
//! open transaction: a waiter holding a snapshot would make the holder's
//! `CREATE INDEX CONCURRENTLY` wait for it, and the two would deadlock.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::types::Type;

use crate::backoff::Backoff;
use crate::connect::{ConnectError, Session};
use crate::error::PgFailure;
use crate::exit::ExitCode;
use crate::signals::{Interrupted, Shutdown};

/// How often a waiting run says who holds the lock.
const HOLDER_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("advisory lock {key} not acquired within {waited_s:.1}s{}; another migrun is running (safe to retry), or raise --lock-wait", holder_text(.holder))]
    Timeout { key: i64, waited_s: f64, holder: Option<Holder> },
    #[error("advisory lock {key}: {failure}")]
    Database { key: i64, failure: PgFailure },
    #[error("advisory lock {key} was not held at release; the connection changed backends (a transaction-pooling proxy?): point migrun at the database directly")]
    NotHeld { key: i64 },
    #[error(transparent)]
    Pooler(#[from] ConnectError),
    #[error("{0} while waiting for the advisory lock")]
    Interrupted(#[from] Interrupted),
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => format!(
            " (held by pid {} application {:?} from {}, connected {:.0}s ago)",
            h.pid, h.application_name, h.client_addr, h.connected_s
        ),
        None => String::new(),
    }
}

impl LockError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            LockError::Timeout { .. } => ExitCode::LockWait,
            LockError::Database { failure, .. } if failure.sqlstate.is_none() => ExitCode::Connect,
            LockError::Database { .. } => ExitCode::Internal,
            LockError::NotHeld { .. } => ExitCode::Usage,
            LockError::Pooler(e) => e.exit_code(),
            LockError::Interrupted(stop) => stop.exit_code(),
        }
    }
}

/// The session holding the lock, from pg_locks and pg_stat_activity.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub application_name: String,
    pub client_addr: String,
    pub connected_s: f64,
}

/// One attempt; true when the lock is now held by this session.
pub async fn try_acquire(session: &Session, key: i64) -> Result<bool, LockError> {
    let row = session
        .client
        .query_typed_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[(&key, Type::INT8)])
        .await
        .map_err(|e| LockError::Database { key, failure: PgFailure::from_pg(&e) })?;
    session.check_backend(row.get(1))?;
    Ok(row.get(0))
}

/// Waits for the lock up to `wait`, polling with backoff and jitter and saying who holds it
/// at the first miss and every 10 s after.
pub async fn acquire(session: &Session, key: i64, wait: Duration, shutdown: &Shutdown) -> Result<(), LockError> {
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut last_report: Option<Instant> = None;
    loop {
        if try_acquire(session, key).await? {
            tracing::info!(lock_key = key, waited_ms = started.elapsed().as_millis() as u64, "lock acquired");
            return Ok(());
        }
        let due = last_report.is_none_or(|at| at.elapsed() >= HOLDER_REPORT_EVERY);
        let delay = backoff.next_delay();
        let out_of_time = started.elapsed() + delay > wait;
        if due || out_of_time {
            let holder = holder(session, key).await?;
            if out_of_time {
                return Err(LockError::Timeout { key, waited_s: started.elapsed().as_secs_f64(), holder });
            }
            report(key, started, holder.as_ref());
            last_report = Some(Instant::now());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            stop = shutdown.wait() => return Err(stop.into()),
        }
    }
}

fn report(key: i64, started: Instant, holder: Option<&Holder>) {
    let waited_s = started.elapsed().as_secs();
    match holder {
        Some(h) => tracing::info!(
            lock_key = key,
            waited_s,
            holder_pid = h.pid,
            holder_application = %h.application_name,
            holder_addr = %h.client_addr,
            holder_connected_s = h.connected_s.round() as u64,
            "waiting for the lock held by another session"
        ),
        None => tracing::info!(lock_key = key, waited_s, "waiting for the lock"),
    }
}

async fn holder(session: &Session, key: i64) -> Result<Option<Holder>, LockError> {
    // A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
    let high = ((key as u64) >> 32) as i64;
    let low = ((key as u64) & 0xffff_ffff) as i64;
    let rows = session
        .client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
                    extract(epoch FROM now() - a.backend_start)::float8
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid::bigint = $1 AND l.objid::bigint = $2",
            &[&high, &low],
        )
        .await
        .map_err(|e| LockError::Database { key, failure: PgFailure::from_pg(&e) })?;
    Ok(rows.first().map(|row| Holder {
        pid: row.get(0),
        application_name: row.get(1),
        client_addr: row.get(2),
        connected_s: row.get(3),
    }))
}

/// Releases the lock; it must never outlive the run, and a `false` from Postgres means the
/// session we hold it on is not the one we think.
pub async fn release(session: &Session, key: i64) -> Result<(), LockError> {
    let row = session
        .client
        .query_typed_one("SELECT pg_advisory_unlock($1)", &[(&key, Type::INT8)])
        .await
        .map_err(|e| LockError::Database { key, failure: PgFailure::from_pg(&e) })?;
    if !row.get::<_, bool>(0) {
        return Err(LockError::NotHeld { key });
    }
    tracing::debug!(lock_key = key, "lock released");
    Ok(())
}

//! `wait` and `exec --wait`: poll the history until the schema is ready: every versioned file
//! applied, and every repeatable file applied at its current checksum (an app may need the
//! view a repeatable file creates).
//!
//! The migrations are someone else's to apply (the one-off task); this only reads. A database
//! that is ahead of these files (an older image during a rollout, or rolled back to) is fine
//! when every newer version was recorded as expand-only, and otherwise as `--on-newer-schema`
//! says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::compare::{self, FileState, MismatchError, Policy};
use super::files::Migration;
use super::history::{HistoryError, HistoryRow};
use super::rollback::Recorded;
use crate::backoff::Backoff;
use crate::db::session::ConnectError;
use crate::signals::{Interrupted, Shutdown};

/// How often a waiting run says what it is still waiting for.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Why the schema was not seen ready.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// `--wait-timeout` passed first.
    #[error("schema not ready after {waited_s:.0}s: {} migration(s) still not applied ({}); did the migration task run and succeed? (--wait-timeout to wait longer)", .missing.len(), preview(.missing))]
    Timeout { waited_s: f64, missing: Vec<String> },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Mismatch(#[from] MismatchError),
    #[error("{0} while waiting for the schema")]
    Interrupted(#[from] Interrupted),
    /// The database could not be read when the wait ended (down, restarting, failing over).
    #[error("the database was unavailable when the wait ended after {waited_s:.0}s: {reason}; is it up? (--wait-timeout to wait longer)")]
    Unavailable { waited_s: f64, reason: String },
    /// Reconnecting failed in a way waiting does not mend (a refused login, a bad secret).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// One read of the history, as the wait loop sees it.
pub enum Polled {
    /// The rows (none when the table does not exist yet).
    Rows(Vec<HistoryRow>),
    /// The database could not be read this time (a restart, a failover, a terminated
    /// session): the loop tries again, on a new session, until its deadline.
    Unavailable(String),
}

/// Where the wait loop reads the history: the command layer opens the session again behind
/// it when the server ends it.
pub trait HistorySource {
    /// Reads the history once, reconnecting first if the last read lost the session.
    async fn poll(&mut self, deadline: Instant) -> Result<Polled, WaitError>;
    /// What was recorded for rollbacks, on the session the last poll read from; asked only
    /// when the database has versions the files lack.
    async fn recorded(&mut self) -> Result<HashMap<u64, Recorded>, WaitError>;
}

fn preview(versions: &[String]) -> String {
    let mut text: Vec<String> = versions.iter().take(10).cloned().collect();
    if versions.len() > 10 {
        text.push(format!("and {} more", versions.len() - 10));
    }
    text.join(", ")
}

/// Returns once every versioned migration in `migrations` is recorded as applied, and every
/// repeatable one at its current checksum.
pub async fn until_ready(
    history: &mut impl HistorySource,
    migrations: &[Migration],
    policy: Policy,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<(), WaitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut last_report: Option<Instant> = None;
    let mut last_outage_report: Option<Instant> = None;
    let mut judged_ahead: Option<Vec<u64>> = None;
    loop {
        let rows = match history.poll(deadline).await? {
            Polled::Rows(rows) => rows,
            Polled::Unavailable(reason) => {
                let Some(delay) = backoff.next_delay_until(deadline) else {
                    return Err(WaitError::Unavailable { waited_s: started.elapsed().as_secs_f64(), reason });
                };
                if last_outage_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                    tracing::warn!(reason = %reason, waited_s = started.elapsed().as_secs(), "the database is unavailable; reconnecting until the wait ends");
                    last_outage_report = Some(Instant::now());
                }
                shutdown.sleep(delay).await?;
                continue;
            }
        };
        let mut comparison = compare::compare(migrations, &rows);
        // Versions a newer image applied: judged (and logged) once per set of them, on what
        // was recorded of them.
        if !comparison.missing.is_empty() {
            match judged_ahead.as_ref() == Some(&comparison.missing) {
                true => comparison.missing.clear(),
                false => {
                    judged_ahead = Some(comparison.missing.clone());
                    comparison = comparison.with_newer(&history.recorded().await?);
                }
            }
        }
        comparison.validate(Policy { allow_out_of_order: true, ..policy }, "the migrations directory")?;
        let missing: Vec<String> = comparison
            .entries
            .iter()
            .filter(|e| {
                matches!(
                    e.state,
                    FileState::Pending | FileState::OutOfOrder | FileState::Unfinished | FileState::Changed
                )
            })
            .map(|e| match e.migration.version() {
                Some(version) => version.to_string(),
                None => e.migration.display_path(),
            })
            .collect();
        if missing.is_empty() {
            tracing::info!(waited_ms = started.elapsed().as_millis() as u64, "schema ready");
            return Ok(());
        }
        // The last poll is made at the deadline itself.
        let Some(delay) = backoff.next_delay_until(deadline) else {
            return Err(WaitError::Timeout { waited_s: started.elapsed().as_secs_f64(), missing });
        };
        if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            tracing::info!(missing = missing.len(), versions = %preview(&missing), waited_s = started.elapsed().as_secs(), "waiting for migrations to be applied");
            last_report = Some(Instant::now());
        }
        shutdown.sleep(delay).await?;
    }
}

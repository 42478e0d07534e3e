//! `wait` and `exec --wait`: poll the history until the schema is ready: every versioned file
//! applied, and every repeatable file applied at its current checksum (an app may need the
//! view a repeatable file creates).
//!
//! The migrations are someone else's to apply (the one-off task); this only reads. A database
//! that is ahead of these files is fine (an older image during a rollout), and is logged.

use std::time::{Duration, Instant};

use super::compare::{self, FileState, MismatchError, Policy};
use super::files::Migration;
use super::history::{History, HistoryError};
use crate::backoff::Backoff;
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
    history: &History<'_>,
    migrations: &[Migration],
    policy: Policy,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<(), WaitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut last_report: Option<Instant> = None;
    let mut told_ahead = false;
    loop {
        let rows = history.read().await?.unwrap_or_default();
        let comparison = compare::compare(migrations, &rows);
        let drift = Policy { allow_missing: true, allow_out_of_order: true, ..policy };
        comparison.validate(drift, "")?;
        if !comparison.missing.is_empty() && !told_ahead {
            tracing::info!(versions = ?comparison.missing, "the database has versions these files do not (a newer image applied them); fine while waiting");
            told_ahead = true;
        }
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

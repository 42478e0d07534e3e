//! How a worker's part of a fan-out run ended: every target's recorded state, the counts, and
//! the ending that gives the exit code (partial, canary, failure rate, incomplete).

use std::collections::HashMap;

use super::ledger::Recorded;
use super::targets::Target;
use crate::exit::ExitCode;

/// The run as this worker saw it at the end.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every target, in the list's order, with its outcome in this run (none: pending).
    pub targets: Vec<(String, Option<Recorded>)>,
    /// Targets this worker finished, and how many of those failed.
    pub processed: usize,
    pub failed_here: usize,
    /// A canary target failed: no other target was touched.
    pub canary_failed: bool,
    /// This worker stopped taking targets: too many of its own failed.
    pub rate_stopped: bool,
}

/// The counts of a run, as every ending line states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub current: usize,
    pub total: usize,
    pub failed: usize,
    pub pending: usize,
    pub run_id: String,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Tally { current, total, failed, pending, run_id } = self;
        write!(f, "{current}/{total} current, {failed} failed, {pending} pending (run {run_id})")
    }
}

/// A run that did not leave every target current.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ending {
    #[error("fanout: a canary target failed; no other target was touched: {0}")]
    CanaryFailed(Tally),
    #[error("fanout: this worker stopped taking targets, over {failed} of its {processed} failed: {tally}")]
    FailureRate { failed: usize, processed: usize, tally: Tally },
    #[error("fanout: incomplete (deadline, or targets still claimed): {0}; safe to retry")]
    Incomplete(Tally),
    #[error("fanout: {tally}; failed: {}", .listed.join(", "))]
    PartialFailure { tally: Tally, listed: Vec<String> },
}

impl Ending {
    /// The exit code of this ending.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Ending::CanaryFailed(_) => ExitCode::CanaryFailed,
            Ending::FailureRate { .. } => ExitCode::FailureRateExceeded,
            Ending::Incomplete(_) => ExitCode::Incomplete,
            Ending::PartialFailure { .. } => ExitCode::PartialFailure,
        }
    }
}

impl Summary {
    /// The summary of `targets` from the run table's rows.
    pub fn of(targets: &[Target], recorded: &HashMap<String, Recorded>) -> Summary {
        Summary {
            targets: targets.iter().map(|t| (t.id.clone(), recorded.get(&t.id).cloned())).collect(),
            processed: 0,
            failed_here: 0,
            canary_failed: false,
            rate_stopped: false,
        }
    }

    /// The failed targets' rows, in the list's order.
    pub fn failed(&self) -> impl Iterator<Item = &Recorded> {
        self.targets.iter().filter_map(|(_, r)| r.as_ref()).filter(|r| !r.succeeded())
    }

    pub fn tally(&self, run_id: &str) -> Tally {
        let current = self.targets.iter().filter(|(_, r)| r.as_ref().is_some_and(Recorded::succeeded)).count();
        let failed = self.failed().count();
        let total = self.targets.len();
        Tally { current, total, failed, pending: total - current - failed, run_id: run_id.to_string() }
    }

    /// `Ok` when every target is current; else why not, the first reason in this order:
    /// canary, failure rate, pending targets, failed targets.
    pub fn ending(&self, run_id: &str) -> Result<(), Ending> {
        let tally = self.tally(run_id);
        if self.canary_failed {
            return Err(Ending::CanaryFailed(tally));
        }
        if self.rate_stopped {
            return Err(Ending::FailureRate { failed: self.failed_here, processed: self.processed, tally });
        }
        if tally.pending > 0 {
            return Err(Ending::Incomplete(tally));
        }
        if tally.failed > 0 {
            let listed = self.failed().take(10).map(|r| r.target.clone()).collect();
            return Err(Ending::PartialFailure { tally, listed });
        }
        Ok(())
    }
}

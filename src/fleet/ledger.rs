//! What a fan-out run records: a target's outcome as the run table holds it, the outcome of
//! one target's run as the worker receives it, and the failure of a statement on the run table.

use super::capacity::Refusal;
use crate::db::failure::PgFailure;
use crate::exit::ExitCode;

/// A target's recorded outcome in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub target: String,
    /// How its run ended.
    pub exit: ExitCode,
    /// The worker that recorded it (`applied_by:pid`).
    pub worker: String,
    /// Recorded after this worker started (by it or a peer of this wave), not by an earlier
    /// invocation of the run.
    pub fresh: bool,
}

impl Recorded {
    /// Whether the target is current.
    pub fn succeeded(&self) -> bool {
        self.exit == ExitCode::Success
    }
}

/// A statement on the coordination database failed.
#[derive(Debug, thiserror::Error)]
#[error("coordination database: cannot {action}: {failure}")]
pub struct CoordError {
    pub action: &'static str,
    pub failure: PgFailure,
}

/// One target's run, as it ended.
#[derive(Debug, Clone)]
pub struct TargetDone {
    pub exit: ExitCode,
    /// Its server's free connections, when this run read them: enough for K, or the refusal
    /// (the target was then not touched).
    pub server_check: Option<Result<(), Refusal>>,
    /// The target session's server process, when it got that far.
    pub backend_pid: Option<i32>,
    /// The versions it applied.
    pub versions: Vec<u64>,
    pub ms: i64,
    pub sqlstate: Option<String>,
    pub message: Option<String>,
}

impl TargetDone {
    /// A run that ended this way before touching anything.
    pub fn ended(exit: ExitCode, message: Option<String>) -> TargetDone {
        TargetDone { exit, server_check: None, backend_pid: None, versions: Vec::new(), ms: 0, sqlstate: None, message }
    }

    /// A target left alone because its server has too few free connections for K.
    pub fn refused(refusal: &Refusal) -> TargetDone {
        TargetDone::ended(ExitCode::Usage, Some(refusal.to_string()))
    }

    /// The applied versions as the run table stores them: `3,4,5`.
    pub fn versions_text(&self) -> String {
        self.versions.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

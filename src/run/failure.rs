//! The typed failures of the commands above the migration domain: how a fan-out ends early,
//! what `lint` and `verify` found, and the drift `diff` finds. Each is given its exit code in `run::error`.

use super::config::TargetSettingsError;
use crate::catalog::schema::ObjectDiff;
use crate::check::build::BuildError;
use crate::check::scratch::ScratchError;
use crate::db::failure::PgFailure;
use crate::fleet::capacity::Refusal;
use crate::fleet::summary::Ending;

/// How a fan-out ends early, each mapped to its exit code in `run::error`.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// No coordination database can be named.
    #[error("fanout: no coordination database: set --coord-url or DATABASE_URL")]
    NoCoordination,
    /// No connection slot on the coordination server came free before the deadline.
    #[error("fanout: no connection slot free on {server} (--max-conns-per-server {limit}) before the deadline; safe to retry")]
    NoSlot { server: String, limit: u32 },
    /// K is too many for a server's free connections.
    #[error(transparent)]
    Capacity(#[from] Refusal),
    /// A target's own settings cannot be made.
    #[error(transparent)]
    Target(#[from] TargetSettingsError),
    /// The run did not leave every target current.
    #[error(transparent)]
    Ended(#[from] Ending),
    /// `fanout status`: some targets are not current.
    #[error("fanout status: {behind} of {total} target(s) not current")]
    Behind { behind: usize, total: usize },
}

/// What `lint` and `verify` found that fails the run, or what kept them from running. Each
/// is given its exit code in `run::error`.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("lint: this migrun was built without Postgres's parser (cargo feature `lint`); use a release build")]
    #[cfg_attr(feature = "lint", allow(dead_code))]
    NoParser,
    #[error("lint: {errors} error(s), {warnings} warning(s) in {files} file(s){}", if *.warnings_fail { " (--strict: warnings fail)" } else { "" })]
    #[cfg_attr(not(feature = "lint"), allow(dead_code))]
    LintFindings { errors: usize, warnings: usize, files: usize, warnings_fail: bool },
    /// No scratch server could be had, or it failed under `verify`.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error("verify: {file}{} fails on an empty database: {message}", .line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    FailsFromEmpty { file: String, line: Option<usize>, message: String },
    #[error("verify: {count} case(s) not safe to run again; first: {file} ({case}): {problem}")]
    NotRerunnable { count: usize, file: String, case: String, problem: String },
    #[error("verify: upgrading from {from} gives another schema than installing from empty ({count} difference(s); first: {first})")]
    UpgradeDiffers { from: String, count: usize, first: String },
    #[error("verify: {count} down file(s) do not undo their up; first: {file}: {problem}{}", .first.as_ref().map(|d| format!(" (first: {d})")).unwrap_or_default())]
    DownDiffers { count: usize, file: String, problem: String, first: Option<String> },
    #[error("verify: rolling back to {from} with the down files gives another schema than {from} installs ({count} difference(s); first: {first})")]
    RollbackDiffers { from: String, count: usize, first: String },
    #[error("verify --strict: {0} statement(s) lock or rewrite existing tables")]
    Blocking(usize),
}

/// What `diff`, `--check-drift` and `schema` found that fails the run, or what kept them from
/// comparing. Each is given its exit code in `run::error`.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{command}: the live schema differs from {against} in {count} object(s); first: {first}{}; see `migrun diff`, then fix the database or record what it is with `migrun diff --accept`{}", if *.stale { " (the history changed after that snapshot was recorded: a run that stopped before recording one, or an older migrun; the versions applied since show as differences)" } else { "" }, if *.command == "diff" { "" } else { "; nothing was applied" })]
    Differs { command: &'static str, against: String, count: usize, first: String, stale: bool },
    #[error("diff: nothing to compare with: this database has no schema snapshot yet (every up, down, baseline and repair that changes it records one); compare with --against FILE or --scratch, or record the live schema with `migrun diff --accept`")]
    NoSnapshot,
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
    #[error("schema --check: {file} is not what the folder produces ({count} object(s) differ; first: {first}); run `migrun schema --write {file}` and commit it")]
    FileStale { file: String, count: usize, first: String },
    #[error("cannot read the schema from the catalogs: {0}")]
    Read(PgFailure),
    #[error("{0}")]
    Build(#[from] BuildError),
}

impl DriftError {
    pub fn read(e: tokio_postgres::Error) -> DriftError {
        DriftError::Read(PgFailure::from_pg(&e))
    }

    /// The live schema differs in `objects` (`first` among them).
    /// `stale`: the history changed after the snapshot compared with.
    pub fn differs(
        command: &'static str,
        against: &str,
        objects: &[ObjectDiff],
        first: &ObjectDiff,
        stale: bool,
    ) -> DriftError {
        let command = if command == "diff" { "diff" } else { "up --check-drift" };
        let (against, count, first) = (against.to_string(), objects.len(), first.summary());
        DriftError::Differs { command, against, count, first, stale }
    }
}

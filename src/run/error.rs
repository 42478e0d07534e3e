//! The top-level error of a run, and the one place each failure class is given its exit code.

use super::config::ConfigError;
use super::failure::{DriftError, FanoutError, ProveError};
use crate::check::build::BuildError;
use crate::check::scratch::ScratchError;
use crate::db::endpoint::EndpointError;
use crate::db::secrets::SecretError;
use crate::db::session::ConnectError;
use crate::exit::ExitCode;
use crate::fleet::ledger::CoordError;
use crate::fleet::targets::TargetsError;
use crate::fleet::worker::WorkError;
use crate::migrate::adopt::AdoptError;
use crate::migrate::apply::{ApplyError, FileFailure};
use crate::migrate::baseline::BaselineError;
use crate::migrate::compare::{MismatchError, UpToError};
use crate::migrate::convert::ConvertError;
use crate::migrate::files::FilesError;
use crate::migrate::history::HistoryError;
use crate::migrate::lock::LockError;
use crate::migrate::repair::RepairError;
use crate::migrate::revert::RevertError;
use crate::migrate::wait::WaitError;
use crate::signals::Interrupted;

/// Everything that can end a run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line could not be parsed (clap's message).
    #[error("{0}")]
    Usage(String),
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A migration file is invalid.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// No session could be opened or kept.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The advisory lock was not taken or not released.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A statement on the history table failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The history does not match the files.
    #[error(transparent)]
    Mismatch(#[from] MismatchError),
    /// `repair` was refused or failed.
    #[error(transparent)]
    Repair(#[from] RepairError),
    /// `baseline` was refused or failed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// `baseline --from`: the other tool's table cannot be adopted.
    #[error(transparent)]
    Adopt(#[from] AdoptError),
    /// `convert` was refused or failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// `down` was refused.
    #[error(transparent)]
    Revert(#[from] RevertError),
    /// `--target` names no version to stop at.
    #[error(transparent)]
    UpTo(#[from] UpToError),
    /// Applying a file failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Waiting for the schema failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// `exec --env-from-secret` failed.
    #[error(transparent)]
    EnvSecret(SecretError),
    /// A stop was requested.
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    /// `lint` / `verify` found what fails the run, or could not run.
    #[error(transparent)]
    Prove(#[from] ProveError),
    /// `diff`, `--check-drift`, `schema`: the schema differs, or could not be compared.
    #[error(transparent)]
    Drift(#[from] DriftError),
    /// `fanout`: the run ended early or incomplete.
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    /// `fanout`: the targets cannot be read.
    #[error(transparent)]
    Targets(#[from] TargetsError),
    /// `fanout`: the coordination database failed.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// stdout could not be written.
    #[error("cannot write to stdout: {0}")]
    Output(std::io::Error),
    /// migrun itself failed (the async runtime, a worker thread).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The exit code of this failure, as the table in docs/reference.md lists it.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Files(_) | Error::UpTo(_) => ExitCode::Usage,
            Error::Config(e) => Error::config_exit(e),
            Error::EnvSecret(e) => secret(e),
            Error::Connect(e) => connect(e),
            Error::Lock(e) => lock(e),
            Error::History(e) => history(e),
            Error::Mismatch(_) => ExitCode::HistoryMismatch,
            Error::Revert(RevertError::NoSuchVersion { .. }) => ExitCode::Usage,
            Error::Revert(RevertError::Refused(_)) => ExitCode::HistoryMismatch,
            Error::Apply(e) => apply(e),
            Error::Wait(e) => wait(e),
            Error::Repair(RepairError::Write(e)) => history(e),
            Error::Repair(_) => ExitCode::Usage,
            Error::Baseline(BaselineError::History(e)) => history(e),
            Error::Baseline(_) => ExitCode::Usage,
            Error::Adopt(AdoptError::Read { failure, .. }) if failure.connection_lost() => ExitCode::Connect,
            Error::Adopt(AdoptError::Read { .. }) => ExitCode::Internal,
            Error::Adopt(_) => ExitCode::Usage,
            Error::Convert(_) => ExitCode::Usage,
            Error::Interrupted(stop) => signal(stop),
            Error::Prove(e) => prove(e),
            Error::Drift(e) => drift(e),
            Error::Fanout(e) => fanout(e),
            Error::Targets(_) => ExitCode::Usage,
            Error::Coord(e) => coord(e),
            Error::Output(_) | Error::Internal(_) => ExitCode::Internal,
        }
    }

    /// A setting's failure: a secret reference's own class, else usage (exit 2).
    fn config_exit(e: &ConfigError) -> ExitCode {
        match e {
            ConfigError::Secret(e) => secret(e),
            _ => ExitCode::Usage,
        }
    }

    /// The migration that failed and where, when the failure is in a file.
    pub fn file_failure(&self) -> Option<&FileFailure> {
        match self {
            Error::Apply(e) => e.file_failure(),
            _ => None,
        }
    }
}

fn prove(e: &ProveError) -> ExitCode {
    match e {
        ProveError::NoParser => ExitCode::Usage,
        ProveError::LintFindings { .. } | ProveError::Blocking(_) => ExitCode::Findings,
        ProveError::Scratch(e) => scratch(e),
        ProveError::FailsFromEmpty { .. } => ExitCode::MigrationFailed,
        ProveError::NotRerunnable { .. } => ExitCode::NotRerunnable,
        ProveError::UpgradeDiffers { .. } => ExitCode::UpgradeDiffers,
        ProveError::DownDiffers { .. } | ProveError::RollbackDiffers { .. } => ExitCode::DownDiffers,
    }
}

/// No scratch server could be had, or it failed.
fn scratch(e: &ScratchError) -> ExitCode {
    match e {
        ScratchError::Unreachable { .. } | ScratchError::Tls { .. } => ExitCode::Connect,
        ScratchError::Interrupted(stop) => signal(stop),
        _ => ExitCode::Usage,
    }
}

fn drift(e: &DriftError) -> ExitCode {
    match e {
        DriftError::Differs { .. } | DriftError::FileStale { .. } => ExitCode::SchemaDrift,
        DriftError::NoSnapshot | DriftError::File { .. } => ExitCode::Usage,
        DriftError::Read(failure) if failure.connection_lost() => ExitCode::Connect,
        DriftError::Read(_) => ExitCode::Internal,
        DriftError::Build(BuildError::Fails { .. }) => ExitCode::MigrationFailed,
        DriftError::Build(BuildError::Scratch(e)) => scratch(e),
    }
}

fn fanout(e: &FanoutError) -> ExitCode {
    match e {
        FanoutError::NoCoordination | FanoutError::Capacity(_) => ExitCode::Usage,
        FanoutError::Target(e) => match e {
            super::config::TargetSettingsError::Config(e) => Error::config_exit(e),
            super::config::TargetSettingsError::SchemaTable(_) => ExitCode::Usage,
        },
        FanoutError::NoSlot { .. } => ExitCode::Incomplete,
        FanoutError::Ended(ending) => ending.exit_code(),
        FanoutError::Behind { .. } => ExitCode::PartialFailure,
    }
}

fn coord(e: &CoordError) -> ExitCode {
    match e.failure.connection_lost() {
        true => ExitCode::Connect,
        false => ExitCode::Internal,
    }
}

/// A stop of a fan-out worker of its own: the signal's code, or the coordination database's.
impl From<WorkError> for Error {
    fn from(e: WorkError) -> Error {
        match e {
            WorkError::Coord(e) => Error::Coord(e),
            WorkError::Interrupted(stop) => Error::Interrupted(stop),
        }
    }
}

fn signal(stop: &Interrupted) -> ExitCode {
    ExitCode::Signal(stop.signal)
}

fn secret(e: &SecretError) -> ExitCode {
    match e {
        SecretError::BadReference { .. } | SecretError::NotBuilt { .. } => ExitCode::Usage,
        SecretError::Transient { .. } => ExitCode::SecretsBusy,
        _ => ExitCode::Secret,
    }
}

fn connect(e: &ConnectError) -> ExitCode {
    match e {
        ConnectError::Endpoint(EndpointError::Secret(e)) => secret(e),
        ConnectError::Endpoint(EndpointError::IamCredentials(_)) => ExitCode::Secret,
        ConnectError::Endpoint(_)
        | ConnectError::TransactionPooler { .. }
        | ConnectError::PoolMode { .. }
        | ConnectError::Options { .. }
        | ConnectError::TlsSetup(_) => ExitCode::Usage,
        ConnectError::Unreachable { .. }
        | ConnectError::Refused { .. }
        | ConnectError::Lost { .. }
        | ConnectError::Tls { .. } => ExitCode::Connect,
        ConnectError::Interrupted(stop) => signal(stop),
    }
}

fn lock(e: &LockError) -> ExitCode {
    match e {
        LockError::Timeout { .. } | LockError::Lost { .. } => ExitCode::LockWait,
        LockError::Database { failure, .. } if failure.connection_lost() => ExitCode::Connect,
        LockError::Database { .. } => ExitCode::Internal,
        LockError::NotHeld { .. } => ExitCode::Usage,
        LockError::Session(e) => connect(e),
        LockError::Interrupted(stop) => signal(stop),
        LockError::Table(e) => history(e),
    }
}

fn history(e: &HistoryError) -> ExitCode {
    match e {
        HistoryError::Shape { .. } | HistoryError::Unusable { .. } => ExitCode::Usage,
        HistoryError::Statement { .. } if e.retryable() => ExitCode::Connect,
        HistoryError::Statement { .. } => ExitCode::Internal,
    }
}

fn apply(e: &ApplyError) -> ExitCode {
    match e {
        ApplyError::Failed { .. } | ApplyError::NeedsNoTransaction { .. } => ExitCode::MigrationFailed,
        ApplyError::LockRetries { .. } => ExitCode::LockRetries,
        ApplyError::Lost { .. } | ApplyError::ReadOnly { .. } => ExitCode::Connect,
        ApplyError::OpenTransaction(_) | ApplyError::LockLost { .. } => ExitCode::MigrationFailed,
        ApplyError::Unrecorded { error, .. } if error.retryable() => ExitCode::Connect,
        ApplyError::Unrecorded { .. } => ExitCode::Internal,
        ApplyError::History(e) => history(e),
        ApplyError::Interrupted { stop, .. } => signal(stop),
    }
}

fn wait(e: &WaitError) -> ExitCode {
    match e {
        WaitError::Timeout { .. } => ExitCode::WaitTimeout,
        WaitError::History(e) => history(e),
        WaitError::Mismatch(_) => ExitCode::HistoryMismatch,
        WaitError::Interrupted(stop) => signal(stop),
        WaitError::Unavailable { .. } => ExitCode::Connect,
        WaitError::Connect(e) => connect(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::failure::PgFailure;
    use crate::fleet::capacity::Refusal;
    use crate::fleet::summary::{Ending, Tally};

    fn tally() -> Tally {
        Tally { current: 1, total: 3, failed: 1, pending: 1, run_id: "r".into() }
    }
    use crate::migrate::compare::Drift;

    fn lost() -> PgFailure {
        PgFailure::other("connection closed")
    }

    fn said(code: &str) -> PgFailure {
        PgFailure { sqlstate: Some(code.into()), ..PgFailure::other("server message") }
    }

    fn file(pg: PgFailure) -> FileFailure {
        FileFailure { file: "sql/0001_a.sql".into(), version: Some(1), pg, line: None, column: None }
    }

    fn history(pg: PgFailure) -> HistoryError {
        HistoryError::Statement { table: "migrun_history".into(), action: "read it", failure: pg }
    }

    #[test]
    fn every_failure_class_has_its_documented_exit_code() {
        let stop = Interrupted { signal: 15 };
        let cases: Vec<(Error, i32)> = vec![
            (Error::Usage("unexpected argument".into()), 2),
            (ConfigError::NoDatabase.into(), 2),
            (ConfigError::Secret(SecretError::BadReference { reference: "arn:x".into() }).into(), 2),
            (FilesError::Empty { file: "sql/0001_a.sql".into() }.into(), 2),
            (Error::EnvSecret(SecretError::NotAnObject { name: "s".into() }), 3),
            (ConnectError::Endpoint(EndpointError::Secret(SecretError::NotAString { name: "s".into() })).into(), 3),
            (ConnectError::Endpoint(EndpointError::Libpq("PGPORT".into())).into(), 2),
            (
                ConnectError::Unreachable { server: "h".into(), attempts: 3, waited_s: 1.0, reason: "refused".into() }
                    .into(),
                4,
            ),
            (ConnectError::Refused { server: "h".into(), failure: said("28P01") }.into(), 4),
            (ConnectError::Lost { failure: lost() }.into(), 4),
            (ConnectError::Tls { server: "h".into(), reason: "UnknownIssuer".into() }.into(), 4),
            (ConnectError::TransactionPooler { server: "h".into(), first: 1, second: 2 }.into(), 2),
            (ConnectError::Interrupted(stop).into(), 143),
            (LockError::Timeout { key: 1, waited_s: 1.0, holder: None }.into(), 5),
            (LockError::Database { key: 1, failure: lost() }.into(), 4),
            (LockError::Database { key: 1, failure: said("42501") }.into(), 1),
            (LockError::NotHeld { key: 1 }.into(), 2),
            (LockError::Lost { key: 1 }.into(), 5),
            (LockError::Session(ConnectError::Lost { failure: lost() }).into(), 4),
            (LockError::Interrupted(Interrupted { signal: 2 }).into(), 130),
            (history(lost()).into(), 4),
            (history(said("42501")).into(), 1),
            (
                MismatchError::Drift(vec![Drift { file: "f".into(), recorded: "a".into(), current: "b".into() }])
                    .into(),
                7,
            ),
            (MismatchError::OutOfOrder { versions: vec![1], highest: 2 }.into(), 7),
            (MismatchError::Several(vec![MismatchError::OutOfOrder { versions: vec![1], highest: 2 }]).into(), 7),
            (UpToError::NoSuchVersion { target: 4, below: Some(3), above: None }.into(), 2),
            (UpToError::BelowApplied { target: 1, highest: 3 }.into(), 2),
            (ApplyError::Failed { failure: file(said("42703")), in_transaction: true }.into(), 6),
            (ApplyError::LockRetries { failure: file(said("55P03")), attempts: 11 }.into(), 8),
            (ApplyError::Lost { failure: file(lost()), in_transaction: true }.into(), 4),
            (ApplyError::Lost { failure: file(said("57P01")), in_transaction: false }.into(), 4),
            (ApplyError::ReadOnly { failure: file(said("25006")), in_transaction: true }.into(), 4),
            (ApplyError::OpenTransaction(file(lost())).into(), 6),
            (ApplyError::LockLost { failure: file(lost()), applied: true }.into(), 6),
            (
                ApplyError::Unrecorded {
                    failure: Box::new(file(said("42501"))),
                    error: Box::new(history(said("42501"))),
                    in_transaction: false,
                    row: None,
                }
                .into(),
                1,
            ),
            (
                ApplyError::Unrecorded {
                    failure: Box::new(file(lost())),
                    error: Box::new(history(lost())),
                    in_transaction: true,
                    row: None,
                }
                .into(),
                4,
            ),
            (history(said("25006")).into(), 4),
            (HistoryError::Shape { table: "t".into(), reason: "3 columns".into() }.into(), 2),
            (LockError::Table(HistoryError::Unusable { table: "t".into(), reason: "no schema".into() }).into(), 2),
            (ApplyError::History(history(lost())).into(), 4),
            (ApplyError::Interrupted { stop, failure: None }.into(), 143),
            (WaitError::Timeout { waited_s: 1.0, missing: vec!["2".into()] }.into(), 9),
            (
                WaitError::Mismatch(MismatchError::Missing { versions: vec![9], dir: "sql".into(), details: vec![] })
                    .into(),
                7,
            ),
            (WaitError::History(history(said("42P01"))).into(), 1),
            (Error::Interrupted(Interrupted { signal: 2 }), 130),
            (Error::Output(std::io::Error::other("stdout closed")), 1),
            (Error::Internal("no runtime".into()), 1),
            (ProveError::LintFindings { errors: 1, warnings: 0, files: 1, warnings_fail: false }.into(), 10),
            (ProveError::Blocking(2).into(), 10),
            (ProveError::Scratch(ScratchError::NoBinaries).into(), 2),
            (
                ProveError::Scratch(ScratchError::Unreachable { server: "db".into(), reason: "refused".into() }).into(),
                4,
            ),
            (ProveError::Scratch(ScratchError::Interrupted(stop)).into(), 143),
            (ProveError::FailsFromEmpty { file: "a".into(), line: Some(1), message: "x".into() }.into(), 6),
            (
                ProveError::NotRerunnable { count: 1, file: "a".into(), case: "c".into(), problem: "p".into() }.into(),
                11,
            ),
            (ProveError::UpgradeDiffers { from: "old".into(), count: 1, first: "d".into() }.into(), 12),
            (FanoutError::NoCoordination.into(), 2),
            (FanoutError::NoSlot { server: "db:5432".into(), limit: 4 }.into(), 16),
            (FanoutError::Capacity(Refusal { limit: 4, free: 6, server: "db:5432".into() }).into(), 2),
            (FanoutError::Ended(Ending::CanaryFailed(tally())).into(), 14),
            (FanoutError::Ended(Ending::FailureRate { failed: 20, processed: 20, tally: tally() }).into(), 15),
            (FanoutError::Ended(Ending::Incomplete(tally())).into(), 16),
            (FanoutError::Ended(Ending::PartialFailure { tally: tally(), listed: vec!["t".into()] }).into(), 13),
            (FanoutError::Behind { behind: 1, total: 2 }.into(), 13),
            (Error::from(WorkError::Interrupted(stop)), 143),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code().code(), code, "{error:?}");
        }
    }

    #[test]
    fn only_failures_in_a_file_carry_its_position() {
        let failed: Error = ApplyError::Failed { failure: file(said("42703")), in_transaction: true }.into();
        assert_eq!(failed.file_failure().map(|f| f.file.as_str()), Some("sql/0001_a.sql"));
        let timeout: Error = WaitError::Timeout { waited_s: 1.0, missing: vec!["2".into()] }.into();
        assert!(timeout.file_failure().is_none());
    }
}

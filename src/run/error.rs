//! The top-level error of a run, and the one place each failure class is given its exit code.

use super::config::ConfigError;
use crate::db::endpoint::EndpointError;
use crate::db::secrets::SecretError;
use crate::db::session::ConnectError;
use crate::exit::ExitCode;
use crate::migrate::apply::{ApplyError, FileFailure};
use crate::migrate::compare::MismatchError;
use crate::migrate::files::FilesError;
use crate::migrate::history::HistoryError;
use crate::migrate::lock::LockError;
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
    /// stdout or the result file could not be written.
    #[error("{0}")]
    Output(String),
}

impl Error {
    /// The exit code of this failure, as the README's table lists it.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Files(_) => ExitCode::Usage,
            Error::Config(ConfigError::Secret(e)) | Error::EnvSecret(e) => secret(e),
            Error::Config(_) => ExitCode::Usage,
            Error::Connect(e) => connect(e),
            Error::Lock(e) => lock(e),
            Error::History(e) => history(e),
            Error::Mismatch(_) => ExitCode::HistoryMismatch,
            Error::Apply(e) => apply(e),
            Error::Wait(e) => wait(e),
            Error::Interrupted(stop) => signal(stop),
            Error::Output(_) => ExitCode::Internal,
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

fn signal(stop: &Interrupted) -> ExitCode {
    ExitCode::Signal(stop.signal)
}

fn secret(e: &SecretError) -> ExitCode {
    match e {
        SecretError::BadReference { .. } => ExitCode::Usage,
        _ => ExitCode::Secret,
    }
}

fn connect(e: &ConnectError) -> ExitCode {
    match e {
        ConnectError::Endpoint(EndpointError::Secret(e)) => secret(e),
        ConnectError::Endpoint(_) | ConnectError::TransactionPooler { .. } | ConnectError::TlsSetup(_) => {
            ExitCode::Usage
        }
        ConnectError::Unreachable { .. }
        | ConnectError::Refused { .. }
        | ConnectError::Lost { .. }
        | ConnectError::Tls { .. } => ExitCode::Connect,
        ConnectError::Interrupted(stop) => signal(stop),
    }
}

fn lock(e: &LockError) -> ExitCode {
    match e {
        LockError::Timeout { .. } => ExitCode::LockWait,
        LockError::Database { failure, .. } if failure.connection_lost() => ExitCode::Connect,
        LockError::Database { .. } => ExitCode::Internal,
        LockError::NotHeld { .. } => ExitCode::Usage,
        LockError::Session(e) => connect(e),
        LockError::Interrupted(stop) => signal(stop),
    }
}

fn history(e: &HistoryError) -> ExitCode {
    match e.failure.connection_lost() {
        true => ExitCode::Connect,
        false => ExitCode::Internal,
    }
}

fn apply(e: &ApplyError) -> ExitCode {
    match e {
        ApplyError::Failed { .. } => ExitCode::MigrationFailed,
        ApplyError::LockRetries { .. } => ExitCode::LockRetries,
        ApplyError::Lost(_) => ExitCode::Connect,
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
    }
}

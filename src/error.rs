//! The top-level error of a run, and how each failure maps to one exit code.

use serde::Serialize;

use crate::apply::ApplyError;
use crate::config::ConfigError;
use crate::connect::ConnectError;
use crate::conninfo::TargetError;
use crate::exit::ExitCode;
use crate::history::HistoryError;
use crate::lock::LockError;
use crate::plan::PlanError;
use crate::signals::Interrupted;
use crate::source::SourceError;
use crate::wait::WaitError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("{0}")]
    Output(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(ConfigError::Secret(e)) => e.exit_code(),
            Error::Config(_) | Error::Source(_) => ExitCode::Usage,
            Error::Connect(e) => e.exit_code(),
            Error::Lock(e) => e.exit_code(),
            Error::History(e) => e.exit_code(),
            Error::Plan(e) => e.exit_code(),
            Error::Apply(e) => e.exit_code(),
            Error::Wait(e) => e.exit_code(),
            Error::Target(TargetError::Secret(e)) => e.exit_code(),
            Error::Target(_) => ExitCode::Usage,
            Error::Interrupted(stop) => stop.exit_code(),
            Error::Output(_) => ExitCode::Internal,
        }
    }

    /// The migration that failed and where, when the failure is in a file.
    pub fn failure(&self) -> Option<&FileFailure> {
        match self {
            Error::Apply(e) => e.file_failure(),
            _ => None,
        }
    }
}

/// What Postgres said about a failed statement, in the shape logs and the result event use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PgFailure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Postgres's own message (`message` in the result event is migrun's summary).
    #[serde(rename = "db_message")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based character position in the statement sent, when Postgres gave one.
    #[serde(skip)]
    pub position: Option<u32>,
}

impl PgFailure {
    pub fn from_pg(error: &tokio_postgres::Error) -> PgFailure {
        match error.as_db_error() {
            Some(db) => PgFailure {
                sqlstate: Some(db.code().code().to_string()),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
                position: match db.position() {
                    Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                    _ => None,
                },
            },
            None => PgFailure { sqlstate: None, message: chain(error), detail: None, hint: None, position: None },
        }
    }

    /// A failure migrun itself detected in what the server returned.
    pub fn other(message: &str) -> PgFailure {
        PgFailure { sqlstate: None, message: message.to_string(), detail: None, hint: None, position: None }
    }

    pub fn is(&self, sqlstate: &str) -> bool {
        self.sqlstate.as_deref() == Some(sqlstate)
    }
}

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// An error and its sources on one line: tokio-postgres puts the useful part
/// ("Connection refused") in the source, not in its own Display.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where in which file a migration failed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileFailure {
    pub file: String,
    pub version: Option<u64>,
    #[serde(flatten)]
    pub pg: PgFailure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

//! Why applying stopped: the file and position a migration failed at, what Postgres said, and
//! what happened to the file (rolled back, left half-applied, unrecorded).

use serde::Serialize;

use super::files::Migration;
use super::history::HistoryError;
use crate::db::failure::PgFailure;
use crate::signals::Interrupted;

/// Where in which file a migration failed, and what Postgres said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileFailure {
    /// The file's path.
    pub file: String,
    /// Its version, when versioned.
    pub version: Option<u64>,
    /// What Postgres said.
    #[serde(flatten)]
    pub pg: PgFailure,
    /// 1-based line in the file, when Postgres gave a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the file, when Postgres gave a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl FileFailure {
    /// A failure of the file at `file`, for tests elsewhere.
    #[cfg(test)]
    pub fn new_for_test(file: &str, pg: PgFailure) -> FileFailure {
        FileFailure { file: file.to_string(), version: None, pg, line: None, column: None }
    }

    /// A failure of `migration` with no position in it.
    pub fn new(migration: &Migration, pg: PgFailure) -> FileFailure {
        FileFailure { file: migration.display_path(), version: migration.version(), pg, line: None, column: None }
    }
}

/// Why applying stopped. Each says what happened to the file.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{}: {}{}; {}", .failure.file, .failure.pg, at_line(.failure), if *.in_transaction { "the file was rolled back" } else { "no-transaction file: statements before it stay applied and the file runs again next time" })]
    Failed { failure: FileFailure, in_transaction: bool },
    #[error("{}: {}{}; the file was rolled back. This statement cannot run inside a transaction: put `-- migrun:no-transaction` on the file's first line{}", .failure.file, .failure.pg, at_line(.failure), foreign_marker_text(.marker))]
    NeedsNoTransaction { failure: FileFailure, marker: Option<&'static str> },
    #[error("{}: still blocked after {attempts} attempts with lock_timeout: {}; the live workload holds conflicting locks (safe to retry later)", .failure.file, .failure.pg)]
    LockRetries { failure: FileFailure, attempts: u32 },
    #[error("{}: lost the database connection: {}; {}", .failure.file, .failure.pg, if *.in_transaction { "the file was rolled back (safe to retry)" } else { "no-transaction file: statements before the failure may be applied, and the next run runs the file again (safe to retry)" })]
    Lost { failure: FileFailure, in_transaction: bool },
    #[error("{}: the server is read-only (a replica, default_transaction_read_only, or the writer during a failover): {}; {} (safe to retry against the primary)", .failure.file, .failure.pg, if *.in_transaction { "the file was rolled back" } else { "the next run runs this no-transaction file again" })]
    ReadOnly { failure: FileFailure, in_transaction: bool },
    #[error("{}: left a transaction open (BEGIN or START TRANSACTION without COMMIT); migrun rolled it back, so what ran inside it is not applied and the file runs again next time: end the transaction in the file", .0.file)]
    OpenTransaction(FileFailure),
    #[error("{}: released migrun's advisory lock (pg_advisory_unlock_all(), DISCARD ALL, or an unlock of its key); {}; remove that statement from the file", .failure.file, if *.applied { "its statements ran and are recorded, but the run stops: another run may have started meanwhile" } else { "the file was rolled back" })]
    LockLost { failure: FileFailure, applied: bool },
    #[error("{}: {}", .failure.file, unrecorded_text(.error, .in_transaction, .row, &.failure.version))]
    Unrecorded { failure: Box<FileFailure>, error: Box<HistoryError>, in_transaction: bool, row: Option<(String, i64)> },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{}", interrupted_text(.stop, .failure))]
    Interrupted { stop: Interrupted, failure: Option<FileFailure> },
}

fn foreign_marker_text(marker: &Option<&'static str>) -> String {
    match marker {
        Some(marker) => format!(" (the file has {marker}, which migrun does not read)"),
        None => String::new(),
    }
}

/// Another tool's "no transaction" marker in the file's leading comments, as the message
/// names it.
pub fn foreign_marker(sql: &str) -> Option<&'static str> {
    const MARKERS: [(&str, &str); 4] = [
        ("no-transaction", "`-- no-transaction` (sqlx's marker)"),
        ("migrate:no-transaction", "`-- migrate:no-transaction` (dbmate's marker)"),
        ("migrate:up transaction:false", "`-- migrate:up transaction:false` (dbmate's marker)"),
        ("+goose no transaction", "`-- +goose NO TRANSACTION` (goose's marker)"),
    ];
    let header = sql.lines().map(str::trim).take_while(|l| l.is_empty() || l.starts_with("--"));
    header.filter_map(|l| l.strip_prefix("--")).find_map(|comment| {
        let comment = comment.trim().to_ascii_lowercase();
        MARKERS.iter().find(|(text, _)| comment == *text).map(|(_, named)| *named)
    })
}

fn unrecorded_text(
    error: &HistoryError,
    in_transaction: &bool,
    row: &Option<(String, i64)>,
    version: &Option<u64>,
) -> String {
    if *in_transaction {
        return format!("ran, but recording it failed, so the file was rolled back: {error}");
    }
    let recover = match (version, row) {
        (Some(version), _) => {
            format!("; if it cannot run twice, fix the cause and run `migrun repair --mark-applied {version}`")
        }
        (None, Some((table, id))) => format!(
            "; if it cannot run twice, fix the cause and run UPDATE {table} SET state = 'applied' WHERE id = {id}"
        ),
        (None, None) => String::new(),
    };
    format!("every statement succeeded, but marking the file applied failed: {error}; its history row stays 'started', so the next run runs the file again{recover}")
}

fn interrupted_text(stop: &Interrupted, failure: &Option<FileFailure>) -> String {
    match failure {
        Some(f) => format!("{}: {}", f.file, f.pg.message),
        None => format!("{stop} between files; no file was left half-applied"),
    }
}

fn at_line(failure: &FileFailure) -> String {
    match (failure.line, failure.column) {
        (Some(line), Some(column)) => format!(" (error at line {line}, column {column})"),
        _ => String::new(),
    }
}

impl ApplyError {
    /// The file that failed and where, when a file did.
    pub fn file_failure(&self) -> Option<&FileFailure> {
        match self {
            ApplyError::Failed { failure: f, .. }
            | ApplyError::NeedsNoTransaction { failure: f, .. }
            | ApplyError::LockRetries { failure: f, .. }
            | ApplyError::Lost { failure: f, .. }
            | ApplyError::ReadOnly { failure: f, .. }
            | ApplyError::OpenTransaction(f)
            | ApplyError::LockLost { failure: f, .. } => Some(f),
            ApplyError::Unrecorded { failure, .. } => Some(failure),
            ApplyError::Interrupted { failure, .. } => failure.as_ref(),
            ApplyError::History(_) => None,
        }
    }
}

/// 1-based line and column of the character at `char_index` (0-based).
pub fn line_column(text: &str, char_index: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in text.chars().take(char_index) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

//! What Postgres (or the connection to it) said when something failed, in the shape logs and
//! the result event use.

use serde::Serialize;

/// A failed statement or connection: the server's error fields, or the client's own words
/// when the server said nothing (the connection is gone).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PgFailure {
    /// The SQLSTATE; `None` when the failure came from the connection, not the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Postgres's own message (`message` in the result event is migrun's summary).
    #[serde(rename = "db_message")]
    pub message: String,
    /// Postgres's DETAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Postgres's HINT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based character position in the statement sent, when Postgres gave one.
    #[serde(skip)]
    pub position: Option<u32>,
}

impl PgFailure {
    /// Reads a driver error: the server's fields when it answered, else the error chain.
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
            None => PgFailure::other(&error_chain(error)),
        }
    }

    /// A failure migrun itself detected in what the server returned.
    pub fn other(message: &str) -> PgFailure {
        PgFailure { sqlstate: None, message: message.to_string(), detail: None, hint: None, position: None }
    }

    /// Whether Postgres answered with this SQLSTATE.
    pub fn is(&self, sqlstate: &str) -> bool {
        self.sqlstate.as_deref() == Some(sqlstate)
    }

    /// Whether the connection itself failed (the server never answered with an error): the
    /// one rule for "the connection is gone", which makes a failure retryable.
    pub fn connection_lost(&self) -> bool {
        self.sqlstate.is_none()
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
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

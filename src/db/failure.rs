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

    /// Whether the connection is gone: the client saw it break (no SQLSTATE), or the server
    /// ended the session (a shutdown or restart, `pg_terminate_backend`, a crash of another
    /// backend, a session timeout, a connection exception). The one rule that makes a failure
    /// retryable: nothing about the file is wrong.
    pub fn connection_lost(&self) -> bool {
        match self.sqlstate.as_deref() {
            None => true,
            Some(code) => code.starts_with("08") || SESSION_ENDED.contains(&code),
        }
    }

    /// Whether the server refused to write: a replica, `default_transaction_read_only`, or the
    /// writer endpoint while a failover is under way.
    pub fn read_only(&self) -> bool {
        self.is(READ_ONLY_TRANSACTION)
    }
}

/// `read_only_sql_transaction`.
const READ_ONLY_TRANSACTION: &str = "25006";

/// SQLSTATEs a server sends as it ends the session: admin shutdown (fast shutdown, restart,
/// failover, `pg_terminate_backend`), crash shutdown, cannot connect now, idle-session timeout,
/// idle-in-transaction timeout.
const SESSION_ENDED: [&str; 5] = ["57P01", "57P02", "57P03", "57P05", "25P03"];

impl PgFailure {
    /// A failure the server reported with `sqlstate`, for tests and for migrun's own checks.
    #[cfg(test)]
    pub fn said(sqlstate: &str) -> PgFailure {
        PgFailure { sqlstate: Some(sqlstate.to_string()), ..PgFailure::other("server message") }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_the_server_ended_is_a_lost_connection_and_a_statement_error_is_not() {
        for code in ["57P01", "57P02", "57P03", "57P05", "25P03", "08006", "08003", "08P01"] {
            assert!(PgFailure::said(code).connection_lost(), "{code}");
        }
        assert!(PgFailure::other("connection closed").connection_lost());
        for code in ["42P01", "57014", "55P03", "25006", "40P01", "23505"] {
            assert!(!PgFailure::said(code).connection_lost(), "{code}");
        }
        assert!(PgFailure::said("25006").read_only());
    }
}

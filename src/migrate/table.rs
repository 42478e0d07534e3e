//! The history table's name (validated, resolved, quoted) and the errors of statements on it
//! and the tables beside it: what every module that touches those tables shares.

use std::fmt;

use crate::db::failure::PgFailure;

/// A validated, optionally schema-qualified table name, lower-cased as Postgres folds it.
///
/// As configured it may be unqualified; once a run holds the lock it is the schema-qualified
/// name Postgres resolved at start (`resolved_in`), so that no later statement depends on a
/// `search_path` a migration file may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTable {
    schema: Option<String>,
    name: String,
}

impl HistoryTable {
    /// `migrun_history` or `ops.migrun_history`; plain identifiers only, so quoting is trivial.
    pub fn parse(text: &str) -> Option<HistoryTable> {
        let valid = |part: &str| {
            let mut bytes = part.bytes();
            matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && part.len() <= 63
        };
        let lower = text.to_ascii_lowercase();
        match lower.split_once('.') {
            Some((schema, name)) if valid(schema) && valid(name) => {
                Some(HistoryTable { schema: Some(schema.into()), name: name.into() })
            }
            None if valid(&lower) => Some(HistoryTable { schema: None, name: lower }),
            _ => None,
        }
    }

    /// Whether the name points into the session's temporary schema, which ends with the
    /// session: a history there forgets every run.
    pub fn is_temporary(&self) -> bool {
        self.schema.as_deref().is_some_and(is_temp_schema)
    }

    /// The same table, qualified with the schema Postgres resolved its name to.
    pub fn resolved_in(&self, schema: &str) -> HistoryTable {
        HistoryTable { schema: Some(schema.to_string()), name: self.name.clone() }
    }

    /// The table's own name, without its schema.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema given in the name, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// One name for one table, whatever the spelling: `migrun_history` for the table in
    /// `public` (the spelling the lock key was always derived from), `schema.name` otherwise.
    pub fn canonical(&self) -> String {
        match self.schema.as_deref() {
            None | Some("public") => self.name.clone(),
            Some(schema) => format!("{schema}.{}", self.name),
        }
    }

    /// The table next to this one whose name ends in `suffix` (`migrun_history_repairs`).
    /// Postgres cuts names at 63 bytes, and a cut name could be this table's own: a name that
    /// would be too long keeps a prefix of this one, a hash of the whole, and the suffix.
    pub fn with_suffix(&self, suffix: &str) -> HistoryTable {
        let whole = format!("{}{suffix}", self.name);
        if whole.len() <= MAX_IDENTIFIER {
            return HistoryTable { schema: self.schema.clone(), name: whole };
        }
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(self.name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect();
        // Plain identifiers are ASCII, so any byte boundary is a character boundary.
        let keep = MAX_IDENTIFIER - suffix.len() - hash.len() - 1;
        let name = format!("{}_{hash}{suffix}", &self.name[..keep.min(self.name.len())]);
        HistoryTable { schema: self.schema.clone(), name }
    }

    /// The quoted name to put in SQL text (identifiers cannot be bind parameters).
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

/// Postgres's longest identifier (NAMEDATALEN - 1), in bytes.
const MAX_IDENTIFIER: usize = 63;

/// `pg_temp`, or a session's own `pg_temp_N`.
pub fn is_temp_schema(schema: &str) -> bool {
    schema == "pg_temp" || schema.starts_with("pg_temp_")
}

impl fmt::Display for HistoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl HistoryError {
    /// Whether the session was lost under the statement (a restart, a failover, a terminated
    /// backend): the table itself may be fine.
    pub fn connection_lost(&self) -> bool {
        matches!(self, HistoryError::Statement { failure, .. } if failure.connection_lost())
    }
}

/// The history table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A statement on it failed.
    #[error("history table {table}: cannot {action}: {}", statement_text(.failure))]
    Statement {
        /// The table.
        table: String,
        /// What migrun was doing, as "cannot <action>".
        action: &'static str,
        /// What Postgres said.
        failure: PgFailure,
    },
    /// It is not migrun's history (a row has another shape).
    #[error("history table {table}: a row has an unexpected shape ({reason}); is this table migrun's history? Point --table / MIGRUN_TABLE at migrun's own table")]
    Shape { table: String, reason: String },
    /// Its name leads nowhere usable.
    #[error("history table {table}: {reason}; set --table / MIGRUN_TABLE to a table in an existing schema")]
    Unusable { table: String, reason: String },
}

/// A failed statement on `table`; a schema that does not exist is the configuration's fault.
pub(super) fn statement_error(table: &HistoryTable, action: &'static str, e: &tokio_postgres::Error) -> HistoryError {
    if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) {
        let reason = format!("schema {} does not exist", table.schema().unwrap_or("public"));
        return HistoryError::Unusable { table: table.to_string(), reason };
    }
    HistoryError::Statement { table: table.to_string(), action, failure: PgFailure::from_pg(e) }
}

fn statement_text(failure: &PgFailure) -> String {
    if failure.read_only() {
        return format!("the server is read-only (a replica, default_transaction_read_only, or the writer during a failover); safe to retry against the primary: {failure}");
    }
    if failure.is("42501") {
        return format!(
            "{failure}; the connecting role needs CREATE on the schema and INSERT, UPDATE, DELETE on the table"
        );
    }
    failure.to_string()
}

impl HistoryError {
    /// What Postgres said, when a statement failed.
    pub fn failure(&self) -> Option<&PgFailure> {
        match self {
            HistoryError::Statement { failure, .. } => Some(failure),
            HistoryError::Shape { .. } | HistoryError::Unusable { .. } => None,
        }
    }

    /// Whether trying again later may work: the connection was lost, or the server was
    /// read-only for a while.
    pub fn retryable(&self) -> bool {
        self.failure().is_some_and(|f| f.connection_lost() || f.read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_quotes_table_names() {
        let plain = HistoryTable::parse("migrun_history").unwrap();
        assert_eq!(plain.sql(), "\"migrun_history\"");
        let qualified = HistoryTable::parse("Ops.History").unwrap();
        assert_eq!(qualified.sql(), "\"ops\".\"history\"");
        assert_eq!(qualified.to_string(), "ops.history");
        for bad in ["", "a.b.c", "1abc", "a-b", "x\"; DROP TABLE y; --", "a."] {
            assert!(HistoryTable::parse(bad).is_none(), "{bad}");
        }
    }
}

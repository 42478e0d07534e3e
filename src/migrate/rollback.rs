//! What a rollback needs to know of each applied version, kept beside the history table so
//! that the history itself keeps the shape every released migrun reads (an old image rolled
//! back onto this database must still read it):
//! - `<history>_rollback`: per applied version, the checksum of its down file when the up was
//!   applied, and whether the version is backward compatible with the previous release's code;
//! - `<history>_reverts`: one row per version `down` undid (who, when, how long).

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::table::{HistoryError, HistoryTable};
use crate::db::failure::PgFailure;

/// Whether the code of the previous release still works on the schema after a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// Expand-only: adds tables, nullable columns, indexes, NOT VALID constraints, views.
    Expand,
    /// Contract: drops or renames what the old code may use, changes a type, adds NOT NULL.
    Contract,
    /// Not known: applied by a migrun that did not record it, adopted, or a build without lint.
    Unknown,
}

impl Compatibility {
    fn of_text(text: &str) -> Compatibility {
        match text {
            "expand" => Compatibility::Expand,
            "contract" => Compatibility::Contract,
            _ => Compatibility::Unknown,
        }
    }

    /// The name stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Compatibility::Expand => "expand",
            Compatibility::Contract => "contract",
            Compatibility::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--on-newer-schema`: what a run does when the database has versions its files lack and one
/// of them is a contract change, or not known to be expand-only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NewerSchema {
    /// Go on, logging it at info.
    Start,
    /// Go on, with a warning naming each such version and what it changed. The default: migrun
    /// cannot see what the old code reads, and in an expand/contract release the contract
    /// drops what the previous release had already stopped using, so refusing would turn a
    /// harmless app rollback into an outage of every task.
    #[default]
    Warn,
    /// Stop (exit 7) before anything is done.
    Refuse,
}

impl NewerSchema {
    pub fn parse(text: &str) -> Option<NewerSchema> {
        match text.trim().to_ascii_lowercase().as_str() {
            "start" => Some(NewerSchema::Start),
            "warn" => Some(NewerSchema::Warn),
            "refuse" => Some(NewerSchema::Refuse),
            _ => None,
        }
    }
}

/// A version's compatibility and, for a contract, what it changed (`drops column users.email`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub compatibility: Compatibility,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

impl Assessment {
    /// Nothing known.
    pub const UNKNOWN: Assessment = Assessment { compatibility: Compatibility::Unknown, changes: Vec::new() };
}

/// What was recorded of one applied version when its up ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The checksum of the version's down file then; `None` when it had none.
    pub down_checksum: Option<String>,
    pub assessment: Assessment,
}

/// The two tables beside `history`.
pub struct RollbackTables {
    pub facts: HistoryTable,
    pub reverts: HistoryTable,
}

impl RollbackTables {
    pub fn of(history: &HistoryTable) -> RollbackTables {
        RollbackTables { facts: history.with_suffix("_rollback"), reverts: history.with_suffix("_reverts") }
    }

    /// Creates both if missing; sent by every run that writes the history.
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version bigint PRIMARY KEY,
                down_checksum text,
                compatibility text NOT NULL CHECK (compatibility IN ('expand', 'contract', 'unknown')),
                changes text NOT NULL DEFAULT ''
            );
            CREATE TABLE IF NOT EXISTS {} (
                id bigserial PRIMARY KEY,
                version bigint NOT NULL,
                description text NOT NULL,
                checksum text NOT NULL,
                down_checksum text NOT NULL,
                state text NOT NULL CHECK (state IN ('reverted', 'started')),
                reverted_at timestamptz NOT NULL DEFAULT now(),
                execution_ms bigint,
                reverted_by text NOT NULL,
                migrun_version text NOT NULL,
                release text,
                ecs_task_arn text,
                image text,
                image_digest text
            )",
            self.facts.sql(),
            self.reverts.sql()
        )
    }
}

/// Changes are stored as one text, one change per line.
pub fn changes_text(changes: &[String]) -> String {
    changes.join("\n")
}

/// What was recorded for each version; empty when the table does not exist (a database no
/// migrun with down files has written). Read only.
pub async fn read(client: &Client, history: &HistoryTable) -> Result<HashMap<u64, Recorded>, HistoryError> {
    let tables = RollbackTables::of(history);
    let failed = |e: tokio_postgres::Error| HistoryError::Statement {
        table: tables.facts.to_string(),
        action: "read it",
        failure: PgFailure::from_pg(&e),
    };
    let name = tables.facts.sql();
    let exists = client
        .query_typed_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[(&name, Type::TEXT)])
        .await
        .map_err(failed)?;
    if !exists.try_get::<_, bool>(0).map_err(failed)? {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT version, down_checksum, compatibility, changes FROM {name}");
    let rows = client.query_typed(&sql, &[]).await.map_err(failed)?;
    let mut recorded = HashMap::new();
    for row in rows {
        let version: i64 = row.try_get(0).map_err(failed)?;
        let down_checksum: Option<String> = row.try_get(1).map_err(failed)?;
        let compatibility: String = row.try_get(2).map_err(failed)?;
        let changes: String = row.try_get(3).map_err(failed)?;
        let changes = changes.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        let assessment = Assessment { compatibility: Compatibility::of_text(&compatibility), changes };
        if let Ok(version) = u64::try_from(version) {
            recorded.insert(version, Recorded { down_checksum, assessment });
        }
    }
    Ok(recorded)
}

/// The assessment of `version`, unknown when nothing was recorded.
pub fn assessment_of(recorded: &HashMap<u64, Recorded>, version: u64) -> Assessment {
    recorded.get(&version).map_or(Assessment::UNKNOWN, |r| r.assessment.clone())
}

//! `repair`: fix the history by hand, one named file at a time, under the lock, with an audit
//! row for every change. Never anything the user did not name.

use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::files::Migration;
use super::history::{HistoryError, HistoryRow, HistoryTable, RowState};
use crate::db::failure::PgFailure;
use crate::identity::{Identity, MIGRUN_VERSION};

/// What to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairAction {
    /// Record the current checksum of an applied file that was edited on purpose.
    AcceptChecksum(u64),
    /// Remove a `started` row: the no-transaction file runs again next time.
    ForgetStarted(u64),
    /// Mark a `started` row applied: someone finished the file by hand.
    MarkApplied(u64),
}

/// One change to one history row.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `accept-checksum`, `forget-started` or `mark-applied`.
    pub action: &'static str,
    /// The row's version.
    pub version: u64,
    /// The file, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The checksum recorded before.
    pub old_checksum: String,
    /// The checksum recorded after (`accept-checksum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_checksum: Option<String>,
}

/// Why a repair was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("repair: the history has no row for version {0}; nothing to repair")]
    NoRow(u64),
    #[error("repair: version {version} is `{state}`, not applied; --accept-checksum is for an applied file that was edited (see --forget-started / --mark-applied)")]
    NotApplied { version: u64, state: &'static str },
    #[error("repair: version {0} is applied, not started; --forget-started and --mark-applied are for a no-transaction file that did not finish")]
    NotStarted(u64),
    #[error("repair: no migration file has version {0}; --accept-checksum records the current file's checksum")]
    NoFile(u64),
    #[error("repair: version {0} already matches its file; nothing to accept")]
    Unchanged(u64),
    #[error(transparent)]
    Write(#[from] HistoryError),
}

/// What `action` would change, checked against the files and the history.
pub fn plan(action: RepairAction, migrations: &[Migration], rows: &[HistoryRow]) -> Result<Change, RepairError> {
    let version = match action {
        RepairAction::AcceptChecksum(v) | RepairAction::ForgetStarted(v) | RepairAction::MarkApplied(v) => v,
    };
    let row = rows.iter().rev().find(|r| r.version == Some(version)).ok_or(RepairError::NoRow(version))?;
    let file = migrations.iter().find(|m| m.version() == Some(version));
    let change = |action, new_checksum| Change {
        action,
        version,
        file: file.map(Migration::display_path),
        old_checksum: row.checksum.clone(),
        new_checksum,
    };
    match action {
        RepairAction::AcceptChecksum(_) => {
            if row.state == RowState::Started {
                return Err(RepairError::NotApplied { version, state: "started" });
            }
            let file = file.ok_or(RepairError::NoFile(version))?;
            if file.checksum == row.checksum {
                return Err(RepairError::Unchanged(version));
            }
            Ok(change("accept-checksum", Some(file.checksum.clone())))
        }
        RepairAction::ForgetStarted(_) | RepairAction::MarkApplied(_) if row.state != RowState::Started => {
            Err(RepairError::NotStarted(version))
        }
        RepairAction::ForgetStarted(_) => Ok(change("forget-started", None)),
        RepairAction::MarkApplied(_) => Ok(change("mark-applied", None)),
    }
}

/// Makes `change` and its audit row in one transaction. The audit table is `<history>_repairs`
/// next to the history table.
pub async fn apply(
    client: &Client,
    table: &HistoryTable,
    change: &Change,
    identity: &Identity,
) -> Result<(), RepairError> {
    let history = table.sql();
    let audit = table.with_suffix("_repairs").sql();
    let failed = |action: &'static str| {
        move |e: tokio_postgres::Error| HistoryError::Statement {
            table: table.to_string(),
            action,
            failure: PgFailure::from_pg(&e),
        }
    };
    client.batch_execute("BEGIN").await.map_err(failed("begin the repair"))?;
    let result = async {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {audit} (
                    id bigserial PRIMARY KEY, version bigint NOT NULL, action text NOT NULL,
                    old_checksum text NOT NULL, new_checksum text, repaired_by text NOT NULL,
                    repaired_at timestamptz NOT NULL DEFAULT pg_catalog.now(), migrun_version text NOT NULL)"
            ))
            .await
            .map_err(failed("create the repair audit table"))?;
        let version = change.version as i64;
        let changed = match change.action {
            "accept-checksum" => {
                let sql = format!("UPDATE {history} SET checksum = $2 WHERE version = $1 AND state = 'applied'");
                client.query_typed(&sql, &[(&version, Type::INT8), (&change.new_checksum, Type::TEXT)]).await
            }
            "forget-started" => {
                let sql = format!("DELETE FROM {history} WHERE version = $1 AND state = 'started'");
                client.query_typed(&sql, &[(&version, Type::INT8)]).await
            }
            _ => {
                let sql = format!("UPDATE {history} SET state = 'applied', applied_at = pg_catalog.now() WHERE version = $1 AND state = 'started'");
                client.query_typed(&sql, &[(&version, Type::INT8)]).await
            }
        };
        changed.map_err(failed("change the row"))?;
        client
            .query_typed(
                &format!("INSERT INTO {audit} (version, action, old_checksum, new_checksum, repaired_by, migrun_version) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[
                    (&version, Type::INT8),
                    (&change.action, Type::TEXT),
                    (&change.old_checksum, Type::TEXT),
                    (&change.new_checksum, Type::TEXT),
                    (&identity.applied_by, Type::TEXT),
                    (&MIGRUN_VERSION, Type::TEXT),
                ],
            )
            .await
            .map_err(failed("record the repair"))?;
        client.batch_execute("COMMIT").await.map_err(failed("commit the repair"))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    Ok(result?)
}

//! What `status` and `plan` print on stdout: a table for people, JSON for machines.

use serde::Serialize;

use crate::db::session::SessionSettings;
use crate::migrate::compare::{ComparedFile, Comparison, FileState};

#[derive(Serialize)]
struct StatusRow<'a> {
    file: String,
    version: Option<u64>,
    kind: String,
    state: FileState,
    checksum: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_checksum: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_at: Option<String>,
}

#[derive(Serialize)]
struct StatusReport<'a> {
    files: Vec<StatusRow<'a>>,
    /// Applied versions that no file has.
    missing: &'a [u64],
    pending: usize,
}

fn state_word(state: FileState) -> &'static str {
    match state {
        FileState::Applied => "applied",
        FileState::Pending => "pending",
        FileState::OutOfOrder => "pending (out of order)",
        FileState::Unfinished => "unfinished (runs again)",
        FileState::Drifted => "DRIFTED (edited after apply)",
        FileState::Changed => "changed (re-applies)",
        FileState::Empty => "empty (holds no statement yet; up refuses it)",
    }
}

fn pending(comparison: &Comparison) -> usize {
    comparison
        .entries
        .iter()
        .filter(|e| !matches!(e.state, FileState::Applied | FileState::Drifted | FileState::Empty))
        .count()
}

/// `status`: every file with its state, as a table or JSON.
pub fn status(comparison: &Comparison, json: bool) -> String {
    if json {
        let report = StatusReport {
            files: comparison
                .entries
                .iter()
                .map(|e| StatusRow {
                    file: e.migration.display_path(),
                    version: e.migration.version(),
                    kind: e.migration.kind.to_string(),
                    state: e.state,
                    checksum: &e.migration.checksum,
                    recorded_checksum: e.recorded_checksum.as_deref().filter(|c| *c != e.migration.checksum),
                    applied_at: e.applied_at.map(|t| t.to_string()),
                })
                .collect(),
            missing: &comparison.missing,
            pending: pending(comparison),
        };
        return serde_json::to_string_pretty(&report).unwrap_or_default();
    }
    let mut out = String::new();
    let width = comparison.entries.iter().map(|e| e.migration.display_path().len()).max().unwrap_or(4).max(4);
    out.push_str(&format!("{:<width$}  {:<28}  {:<20}  checksum\n", "file", "state", "applied at"));
    for e in &comparison.entries {
        out.push_str(&format!(
            "{:<width$}  {:<28}  {:<20}  {}\n",
            e.migration.display_path(),
            state_word(e.state),
            e.applied_at.map_or_else(|| "-".to_string(), |t| t.to_string()),
            &e.migration.checksum[..12],
        ));
    }
    for version in &comparison.missing {
        out.push_str(&format!("{:<width$}  {:<28}\n", format!("(version {version})"), "MISSING (no file)"));
    }
    out.push_str(&format!("{} pending\n", pending(comparison)));
    out
}

#[derive(Serialize)]
struct PlanStep {
    file: String,
    version: Option<u64>,
    kind: String,
    reason: FileState,
    transaction: bool,
    lock_timeout: String,
    statement_timeout: String,
}

/// `plan`: what `up` would run, in order, as a list or JSON.
pub fn plan(steps: &[&ComparedFile], session: &SessionSettings, json: bool) -> String {
    let rows: Vec<PlanStep> = steps
        .iter()
        .map(|e| {
            let d = &e.migration.directives;
            PlanStep {
                file: e.migration.display_path(),
                version: e.migration.version(),
                kind: e.migration.kind.to_string(),
                reason: e.state,
                transaction: !d.no_transaction,
                lock_timeout: d.lock_timeout.unwrap_or(session.lock_timeout).to_string(),
                statement_timeout: d.statement_timeout.unwrap_or(session.statement_timeout).to_string(),
            }
        })
        .collect();
    if json {
        return serde_json::to_string_pretty(&rows).unwrap_or_default();
    }
    if rows.is_empty() {
        return "nothing to apply\n".to_string();
    }
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let mode = if r.transaction { "in a transaction" } else { "no transaction, statement by statement" };
        out.push_str(&format!(
            "{:>3}. {}  ({}; {}; lock_timeout {}, statement_timeout {})\n",
            n + 1,
            r.file,
            state_word(r.reason),
            mode,
            r.lock_timeout,
            r.statement_timeout
        ));
    }
    out
}

/// What `repair` changed (or would change).
pub fn repair(change: &crate::migrate::repair::Change, dry_run: bool, json: bool) -> String {
    if json {
        let value = serde_json::json!({ "dry_run": dry_run, "change": change });
        return format!("{value}\n");
    }
    let what = change.file.clone().unwrap_or_else(|| format!("version {}", change.version));
    let verb = if dry_run { "would" } else { "did" };
    let detail = match &change.new_checksum {
        Some(new) => format!("checksum {} -> {}", short(&change.old_checksum), short(new)),
        None => format!("row with checksum {}", short(&change.old_checksum)),
    };
    format!("repair {verb} {}: {what} (version {}), {detail}\n", change.action, change.version)
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

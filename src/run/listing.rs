//! Everything a command prints on stdout (its report): a table or summary for people, JSON for
//! machines, SARIF for code scanning. Logs and the result event go to stderr (`outcome`).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use super::error::Error;
#[cfg(feature = "lint")]
use crate::check::lint::Report;
#[cfg(feature = "lint")]
use crate::check::rules::{Severity, RULES};
use crate::check::verify::VerifyReport;
use crate::db::session::SessionSettings;
use crate::migrate::baseline::BaselinePlan;
use crate::migrate::compare::{ComparedFile, Comparison, FileState};
use crate::migrate::convert::Conversion;
use crate::migrate::rollback::{self, Assessment, Recorded};

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
    /// Recorded without running it: `baseline`, or the tool it was adopted from.
    #[serde(skip_serializing_if = "Option::is_none")]
    adopted_from: Option<&'a str>,
    /// An applied version's compatibility with the previous release (and what it changed).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    compatibility: Option<Assessment>,
    /// It has a down file.
    down: bool,
}

#[derive(Serialize)]
struct StatusReport<'a> {
    files: Vec<StatusRow<'a>>,
    /// Applied versions that no file has.
    missing: &'a [u64],
    /// Their compatibility, as recorded when they were applied.
    missing_compatibility: Vec<MissingRow>,
    pending: usize,
}

#[derive(Serialize)]
struct MissingRow {
    version: u64,
    #[serde(flatten)]
    compatibility: Assessment,
}

/// An applied versioned file's compatibility (unknown when nothing was recorded); none for
/// the rest.
fn compatibility_of(entry: &ComparedFile, recorded: &HashMap<u64, Recorded>) -> Option<Assessment> {
    let applied = matches!(entry.state, FileState::Applied | FileState::Drifted | FileState::Unfinished);
    let version = entry.migration.version().filter(|_| applied)?;
    Some(rollback::assessment_of(recorded, version))
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

/// The state as `status` prints it; a row recorded without running its file says so.
fn shown_state(entry: &ComparedFile) -> String {
    match (entry.state, entry.adopted_from.as_deref()) {
        (FileState::Applied, Some("baseline")) => "applied (baselined)".to_string(),
        (FileState::Applied, Some(tool)) => format!("applied (adopted from {tool})"),
        (state, _) => state_word(state).to_string(),
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
pub fn status(comparison: &Comparison, recorded: &HashMap<u64, Recorded>, json: bool) -> String {
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
                    adopted_from: e.adopted_from.as_deref(),
                    compatibility: compatibility_of(e, recorded),
                    down: e.migration.down.is_some(),
                })
                .collect(),
            missing: &comparison.missing,
            missing_compatibility: comparison
                .missing
                .iter()
                .map(|v| MissingRow { version: *v, compatibility: rollback::assessment_of(recorded, *v) })
                .collect(),
            pending: pending(comparison),
        };
        return serde_json::to_string_pretty(&report).unwrap_or_default();
    }
    let mut out = String::new();
    let width = comparison.entries.iter().map(|e| e.migration.display_path().len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:<30}  {:<20}  {:<12}  {:<4}  compatibility\n",
        "file", "state", "applied at", "checksum", "down"
    ));
    for e in &comparison.entries {
        out.push_str(&format!(
            "{:<width$}  {:<30}  {:<20}  {}  {:<4}  {}\n",
            e.migration.display_path(),
            shown_state(e),
            e.applied_at.map_or_else(|| "-".to_string(), |t| t.to_string()),
            &e.migration.checksum[..12],
            if e.migration.down.is_some() { "yes" } else { "-" },
            compatibility_of(e, recorded).map_or_else(|| "-".to_string(), |a| compatibility_text(&a)),
        ));
    }
    for version in &comparison.missing {
        let compatibility = compatibility_text(&rollback::assessment_of(recorded, *version));
        out.push_str(&format!(
            "{:<width$}  {:<30}  {:<20}  {:<12}  {:<4}  {compatibility}\n",
            format!("(version {version})"),
            "MISSING (no file)",
            "-",
            "-",
            "-"
        ));
    }
    out.push_str(&format!("{} pending\n", pending(comparison)));
    out
}

/// `contract (drop-column: users.email)`, `expand`, `unknown`.
fn compatibility_text(assessment: &Assessment) -> String {
    match assessment.changes.is_empty() {
        true => assessment.compatibility.to_string(),
        false => format!("{} ({})", assessment.compatibility, assessment.changes.join("; ")),
    }
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

/// `down --dry-run`: what would be undone, newest first.
pub fn down(steps: &[crate::migrate::revert::Step], json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string_pretty(steps).unwrap_or_default());
    }
    if steps.is_empty() {
        return "nothing to revert\n".to_string();
    }
    let mut out = String::new();
    for (n, step) in steps.iter().enumerate() {
        let mode = if step.transaction { "in a transaction" } else { "no transaction, statement by statement" };
        let again = if step.unfinished { "; a previous run stopped inside it, runs again" } else { "" };
        out.push_str(&format!("{:>3}. {}  (undoes version {}; {mode}{again})\n", n + 1, step.file, step.version));
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

/// What `baseline` recorded (or would record), and what it noticed.
pub fn baseline(plan: &BaselinePlan, dry_run: bool, json: bool) -> String {
    if json {
        let value = serde_json::json!({ "dry_run": dry_run, "baseline": plan });
        return format!("{value}\n");
    }
    let verb = if dry_run { "would record" } else { "recorded" };
    let source = match plan.adopted_from.as_str() {
        "baseline" => String::new(),
        tool => format!(" (from {tool}'s history)"),
    };
    let mut out = format!("baseline {verb} {} file(s) as applied without running them{source}:\n", plan.record.len());
    for r in &plan.record {
        out.push_str(&format!("  {}  {}\n", r.file, short(&r.checksum)));
    }
    if let Some(head) = &plan.alembic_head {
        out.push_str(&format!(
            "alembic head {head}: taken to be the version named; alembic keeps no earlier history\n"
        ));
    }
    let listed = [
        ("applied by the other tool, no file (not recorded)", plan.tool_only.iter().map(u64::to_string).collect()),
        (
            "files the other tool never applied (not recorded; they are below the highest adopted version, so `up` refuses them as out of order, exit 7, unless --allow-out-of-order, which runs them)",
            plan.never_applied.clone(),
        ),
        ("versions that are not whole numbers (not recorded)", plan.unmappable.clone()),
        ("rows the other tool does not count as applied", plan.ignored.clone()),
        ("pending: the next up runs them", plan.pending.clone()),
    ];
    for (what, items) in listed.iter().filter(|(_, items): &&(&str, Vec<String>)| !items.is_empty()) {
        out.push_str(&format!("{what}: {}\n", items.join(", ")));
    }
    if plan.repeatables_run_next > 0 {
        out.push_str(&format!(
            "{} repeatable file(s) not recorded: the next up runs them\n",
            plan.repeatables_run_next
        ));
    }
    out
}

/// What `convert` wrote.
pub fn convert(conversion: &Conversion, out_dir: &str) -> String {
    let mut out = String::new();
    for file in &conversion.files {
        let marker = if file.no_transaction { "  (-- migrun:no-transaction)" } else { "" };
        out.push_str(&format!("{} -> {out_dir}/{}{marker}\n", file.from, file.to));
    }
    out.push_str(&format!("{} file(s) written to {out_dir}", conversion.files.len()));
    if conversion.downs > 0 {
        out.push_str(&format!(" ({} of them down files: `migrun verify` proves each undoes its up)", conversion.downs));
    }
    if conversion.down_skipped > 0 {
        out.push_str(&format!(
            "; {} down migration(s) without a statement left out (no down file: `migrun down` refuses those versions)",
            conversion.down_skipped
        ));
    }
    out.push('\n');
    for skipped in &conversion.skipped {
        out.push_str(&format!("skipped {skipped}\n"));
    }
    out
}

/// One target's line of `fanout status`.
pub struct TargetState {
    pub id: String,
    /// `current`, `N pending`, or the outcome of the failure that kept it from being read.
    pub state: String,
    pub detail: Option<String>,
}

/// How many targets are not current.
pub fn behind(states: &[TargetState]) -> usize {
    states.iter().filter(|s| s.state != "current").count()
}

/// `fanout status`: each target's state, then the count of current ones.
pub fn fanout_status(states: &[TargetState], json: bool) -> String {
    let behind = behind(states);
    if json {
        let list: Vec<_> =
            states.iter().map(|s| json!({"target": s.id, "state": s.state, "detail": s.detail})).collect();
        let report = json!({"targets": list, "current": states.len() - behind, "behind": behind});
        return format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default());
    }
    let mut out = String::new();
    for s in states {
        let detail = s.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        out.push_str(&format!("{}  {}{detail}\n", s.id, s.state));
    }
    out.push_str(&format!("{} of {} current\n", states.len() - behind, states.len()));
    out
}
#[cfg(feature = "lint")]
/// `lint`'s findings for people.
pub fn lint(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "{}:{}:{}: {level} [{}] {}\n    fix: {}\n",
            f.file, f.line, f.column, f.rule, f.message, f.fix
        ));
    }
    for a in &report.allowed {
        out.push_str(&format!("{}:{}: allowed [{}]: {}\n", a.file, a.line, a.rule, a.reason));
    }
    let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
    out.push_str(&format!(
        "{} file(s), {} statement(s): {errors} error(s), {} warning(s), {} allowed\n",
        report.files,
        report.statements,
        report.findings.len() - errors,
        report.allowed.len()
    ));
    out
}

/// SARIF 2.1.0, as GitHub code scanning reads it.
#[cfg(feature = "lint")]
pub fn sarif(report: &Report) -> serde_json::Value {
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "shortDescription": { "text": r.reason },
                "help": { "text": r.fix },
                "defaultConfiguration": { "level": level(r.severity) },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": { "text": format!("{} Fix: {}", f.message, f.fix) },
                "locations": [{ "physicalLocation": {
                    "artifactLocation": { "uri": f.file },
                    "region": { "startLine": f.line, "startColumn": f.column },
                }}],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": { "name": "migrun", "informationUri": "https://github.com/migrun/migrun", "version": crate::identity::MIGRUN_VERSION, "rules": rules } },
            "results": results,
        }],
    })
}

/// `verify`'s summary for people.
pub fn verify(report: &VerifyReport) -> String {
    let mut out = String::new();
    for s in report.blocking() {
        let locks: Vec<String> = s.locks.iter().map(|l| format!("{} on {}", l.mode, l.table)).collect();
        let rewrite =
            if s.rewritten.is_empty() { String::new() } else { format!("; rewrites {}", s.rewritten.join(", ")) };
        out.push_str(&format!(
            "{}:{}: {} ({:.1} ms): {}{rewrite}\n",
            s.file,
            s.line,
            s.statement,
            s.duration_ms,
            locks.join(", ")
        ));
    }
    for r in &report.reruns {
        match &r.problem {
            None => out.push_str(&format!("{}: {}: ok\n", r.file, r.case)),
            Some(problem) => out.push_str(&format!("{}: {}: NOT SAFE: {problem}\n", r.file, r.case)),
        }
    }
    for d in &report.downs {
        match &d.problem {
            None => out.push_str(&format!("{}: undoes version {}: ok\n", d.file, d.version)),
            Some(problem) => {
                out.push_str(&format!("{}: DOES NOT UNDO version {}: {problem}\n", d.file, d.version));
                for line in &d.differences {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
    }
    if let Some(upgrade) = &report.upgrade {
        match &upgrade.rollback {
            Some(lines) if lines.is_empty() => {
                out.push_str(&format!("rollback to {}: same schema as {} installs\n", upgrade.from, upgrade.from))
            }
            Some(lines) => {
                out.push_str(&format!(
                    "rollback to {}: {} difference(s) from its schema:\n",
                    upgrade.from,
                    lines.len()
                ));
                for line in lines {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            None => {
                if let Some(why) = &upgrade.rollback_not_tried {
                    out.push_str(&format!("rollback to {}: not tried ({why})\n", upgrade.from));
                }
            }
        }
        match upgrade.differences.is_empty() {
            true => out.push_str(&format!("upgrade from {}: same schema as from empty\n", upgrade.from)),
            false => {
                out.push_str(&format!(
                    "upgrade from {}: {} difference(s) from installing from empty:\n",
                    upgrade.from,
                    upgrade.differences.len()
                ));
                for d in &upgrade.differences {
                    out.push_str(&format!("  {d}\n"));
                }
            }
        }
    }
    if let Some(failed) = &report.failed {
        out.push_str(&format!("{}: FAILED from empty: {}\n", failed.file, failed.message));
    }
    out.push_str(&format!(
        "{} file(s), {} statement(s) in {} ms: {} lock or rewrite existing tables; {} interruption case(s), {} not safe; {} down file(s), {} do not undo{}\n",
        report.files,
        report.statements.len(),
        report.duration_ms,
        report.blocking().count(),
        report.reruns.len(),
        report.reruns.iter().filter(|r| r.problem.is_some()).count(),
        report.downs.len(),
        report.downs.iter().filter(|d| d.problem.is_some()).count(),
        if report.invalid_index_cases { "" } else { " (INVALID-index cases skipped: not a superuser)" }
    ));
    out
}

/// Writes a report on stdout. stdout may be a closed pipe (`migrun status | head`): an error,
/// not a panic.
pub fn print(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(Error::Output)
}

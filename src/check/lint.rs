//! `migrun lint`: every file parsed by Postgres's own parser and checked against the rules,
//! in version order, with `-- migrun:allow <rule> <reason>` honoured on the line before a
//! statement.

use serde::Serialize;

use pg_query::NodeEnum;

use super::rules::{self, FileState, FolderState, Hazard, Hit, Rule, Severity};
use super::{parse, plpgsql};
use crate::migrate::files::Migration;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub rule: &'static str,
    pub severity: Severity,
    /// What goes wrong in a rollout (`blocks`, `breaks-old-app`, `fails`, `rerun`); none for advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hazard: Option<Hazard>,
    /// The reason, with what exactly.
    pub message: String,
    pub fix: &'static str,
}

/// What lint found in a folder.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings silenced by `-- migrun:allow`, with their reasons.
    pub allowed: Vec<Allowed>,
    pub files: usize,
    pub statements: usize,
}

/// A finding someone allowed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Allowed {
    pub file: String,
    pub line: usize,
    pub rule: &'static str,
    pub reason: String,
}

impl Report {
    /// Errors, and warnings too when `strict`.
    pub fn failing(&self, strict: bool) -> usize {
        self.findings.iter().filter(|f| strict || f.severity == Severity::Error).count()
    }
}

/// Lints `migrations` (in the order `up` runs them) for a folder that runs on PostgreSQL
/// `major`.
pub fn lint_for(migrations: &[Migration], major: u32) -> Report {
    lint_with(migrations, major, true)
}

/// As `lint_for`, with every `-- migrun:allow` ignored: what the files do, whatever was
/// judged safe for the rollout.
pub fn lint_all(migrations: &[Migration], major: u32) -> Report {
    lint_with(migrations, major, false)
}

fn lint_with(migrations: &[Migration], major: u32, honour_allows: bool) -> Report {
    let mut report = Report { files: migrations.len(), ..Report::default() };
    let mut folder = FolderState::for_major(major);
    for migration in migrations {
        lint_file(migration, &mut folder, &mut report, honour_allows);
    }
    for down in migrations.iter().filter_map(|m| m.down.as_deref()) {
        lint_down(down, major, &mut report, honour_allows);
    }
    report
}

/// A down file, with the rules whose hazard is the down itself failing, blocking the live app
/// or not running again: undoing what the up added is what a down is for, so the
/// `breaks-old-app` rules (and advice) are not asked of it.
fn lint_down(down: &Migration, major: u32, report: &mut Report, honour_allows: bool) {
    let mut own = Report::default();
    lint_file(down, &mut FolderState::for_major(major), &mut own, honour_allows);
    report.files += 1;
    report.statements += own.statements;
    report.findings.extend(own.findings.into_iter().filter(|f| f.hazard.is_some_and(|h| h != Hazard::BreaksOldApp)));
    report.allowed.extend(own.allowed);
}

fn lint_file(migration: &Migration, folder: &mut FolderState, report: &mut Report, honour_allows: bool) {
    let file = migration.display_path();
    let statements = match parse::parse(&migration.sql) {
        Ok(statements) => statements,
        Err(failure) => {
            report.findings.push(Finding {
                file,
                line: failure.line.unwrap_or(1),
                column: failure.column.unwrap_or(1),
                rule: rules::PARSE_ERROR.id,
                severity: rules::PARSE_ERROR.severity,
                hazard: rules::PARSE_ERROR.hazard,
                message: failure.message,
                fix: rules::PARSE_ERROR.fix,
            });
            return;
        }
    };
    report.statements += statements.len();
    let lines: Vec<&str> = migration.sql.lines().collect();
    let mut state = FileState::default();
    let no_transaction = migration.directives.no_transaction;
    let mut found: Vec<Finding> = Vec::new();
    for statement in &statements {
        let mut hits = rules::check(statement, no_transaction, &mut state, folder);
        if let NodeEnum::DoStmt(block) = &statement.node {
            hits.extend(check_do_block(block, &mut state, folder));
        }
        state.statement_done(no_transaction);
        let allows = allows_before(&lines, statement.line);
        for (line, allow) in &allows {
            if allow.is_none() {
                found.push(finding(&file, *line, 1, &rules::ALLOW_WITHOUT_REASON, String::new()));
            }
        }
        for Hit { rule, detail } in hits {
            let allowed = allows
                .iter()
                .filter(|_| honour_allows)
                .find_map(|(line, a)| a.as_ref().filter(|(id, _)| id == rule.id).map(|a| (line, a)));
            match allowed {
                Some((line, (_, reason))) => report.allowed.push(Allowed {
                    file: file.clone(),
                    line: *line,
                    rule: rule.id,
                    reason: reason.clone(),
                }),
                None => found.push(finding(&file, statement.line, statement.column, rule, detail)),
            }
        }
    }
    let (line, column) = statements.last().map_or((1, 1), |s| (s.line, s.column));
    for Hit { rule, detail } in state.finish() {
        found.push(finding(&file, line, column, rule, detail));
    }
    found.retain(|f| {
        !state.retracted.iter().any(|(rule, detail)| f.rule == *rule && f.message.starts_with(detail.as_str()))
    });
    report.findings.extend(found);
}

/// The rules on what a `DO` block runs, as if its statements were the file's; an EXECUTE of
/// a string built at run time is reported as not checked.
fn check_do_block(block: &pg_query::protobuf::DoStmt, state: &mut FileState, folder: &mut FolderState) -> Vec<Hit> {
    let mut language = "plpgsql".to_string();
    let mut source = None;
    for arg in &block.args {
        if let Some(NodeEnum::DefElem(d)) = &arg.node {
            let value = d.arg.as_ref().and_then(|a| match &a.node {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            });
            match d.defname.as_str() {
                "as" => source = value,
                "language" => language = value.unwrap_or_default().to_ascii_lowercase(),
                _ => {}
            }
        }
    }
    let mut hits = Vec::new();
    let Some(body) = source.filter(|_| language == "plpgsql").and_then(|s| plpgsql::body(&s)) else { return hits };
    for text in &body.statements {
        let Ok(inner) = parse::parse(text) else { continue };
        for statement in inner {
            let mut inner_hits = Vec::new();
            // A DO block runs in one transaction, whatever the file: CONCURRENTLY fails there.
            rules::check_node(&statement.node, &statement.text, false, state, folder, &mut inner_hits);
            hits.extend(inner_hits.into_iter().map(|h| Hit { detail: format!("in a DO block: {}", h.detail), ..h }));
        }
    }
    if body.dynamic > 0 {
        hits.push(Hit { rule: &rules::DYNAMIC_SQL, detail: format!("{} EXECUTE(s) in a DO block", body.dynamic) });
    }
    hits
}

fn finding(file: &str, line: usize, column: usize, rule: &'static Rule, detail: String) -> Finding {
    let message = if detail.is_empty() { rule.reason.to_string() } else { format!("{detail}: {}", rule.reason) };
    Finding {
        file: file.to_string(),
        line,
        column,
        rule: rule.id,
        severity: rule.severity,
        hazard: rule.hazard,
        message,
        fix: rule.fix,
    }
}

/// The `-- migrun:allow` comments in the comment lines right above line `first` (1-based):
/// (line, Some((rule, reason))) or (line, None) when the rule or the reason is missing.
type AllowLine = (usize, Option<(String, String)>);

fn allows_before(lines: &[&str], first: usize) -> Vec<AllowLine> {
    let mut found = Vec::new();
    let mut index = first.saturating_sub(1);
    while index > 0 {
        let line = lines.get(index - 1).map(|l| l.trim()).unwrap_or_default();
        let Some(comment) = line.strip_prefix("--") else { break };
        if let Some(rest) = comment.trim().strip_prefix("migrun:allow") {
            let mut words = rest.trim().splitn(2, char::is_whitespace);
            let rule = words.next().unwrap_or_default().to_string();
            let reason = words.next().unwrap_or_default().trim().to_string();
            found.push((index, (!rule.is_empty() && !reason.is_empty()).then_some((rule, reason))));
        }
        index -= 1;
    }
    found
}

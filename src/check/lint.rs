//! `migrun lint`: every file parsed by Postgres's own parser and checked against the rules,
//! in version order, with `-- migrun:allow <rule> <reason>` honoured on the line before a
//! statement.

use serde::Serialize;

use super::parse;
use super::rules::{self, FileState, FolderState, Hit, Rule, Severity};
use crate::migrate::files::Migration;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub rule: &'static str,
    pub severity: Severity,
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

/// Lints `migrations` (in the order `up` runs them).
pub fn lint(migrations: &[Migration]) -> Report {
    let mut report = Report { files: migrations.len(), ..Report::default() };
    let mut folder = FolderState::default();
    for migration in migrations {
        lint_file(migration, &mut folder, &mut report);
    }
    report
}

fn lint_file(migration: &Migration, folder: &mut FolderState, report: &mut Report) {
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
                message: failure.message,
                fix: rules::PARSE_ERROR.fix,
            });
            return;
        }
    };
    report.statements += statements.len();
    let lines: Vec<&str> = migration.sql.lines().collect();
    let mut state = FileState::default();
    for statement in &statements {
        let hits = rules::check(statement, migration.directives.no_transaction, &mut state, folder);
        let allows = allows_before(&lines, statement.line);
        for (line, allow) in &allows {
            if allow.is_none() {
                report.findings.push(finding(&file, *line, 1, &rules::ALLOW_WITHOUT_REASON, String::new()));
            }
        }
        for Hit { rule, detail } in hits {
            let allowed =
                allows.iter().find_map(|(line, a)| a.as_ref().filter(|(id, _)| id == rule.id).map(|a| (line, a)));
            match allowed {
                Some((line, (_, reason))) => report.allowed.push(Allowed {
                    file: file.clone(),
                    line: *line,
                    rule: rule.id,
                    reason: reason.clone(),
                }),
                None => report.findings.push(finding(&file, statement.line, statement.column, rule, detail)),
            }
        }
    }
}

fn finding(file: &str, line: usize, column: usize, rule: &'static Rule, detail: String) -> Finding {
    let message = if detail.is_empty() { rule.reason.to_string() } else { format!("{detail}: {}", rule.reason) };
    Finding { file: file.to_string(), line, column, rule: rule.id, severity: rule.severity, message, fix: rule.fix }
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

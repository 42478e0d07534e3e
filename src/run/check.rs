//! `lint` and `verify`: load the files, check them, print the report (human, JSON, SARIF), and
//! turn what was found into the run's outcome.

use std::path::Path;

#[cfg(feature = "lint")]
use serde_json::json;

use super::config::{DbSettings, Format, LintRequest, VerifyRequest};
use super::error::Error;
use super::print_stdout;
#[cfg(feature = "lint")]
use crate::check::lint::{self, Report};
#[cfg(feature = "lint")]
use crate::check::rules::{Severity, RULES};
use crate::check::scratch::{ScratchError, Server};
use crate::check::verify;
use crate::migrate::files::{self, Accept, Migration};
use crate::signals::Shutdown;

/// Reads the folder as `up` does, with `up`'s verdict on every file: a file `up` refuses
/// (bad names and directives, empty or only comments) is exit 2 here too, so a CI gate never
/// passes what the deploy refuses.
pub fn load(dir: &Path) -> Result<Vec<Migration>, Error> {
    Ok(files::load(dir, Accept { empty_dir: false, empty_files: false })?)
}

/// This build has no parser (`--no-default-features`, as `scripts/demo` builds).
#[cfg(not(feature = "lint"))]
pub fn lint(_db: &DbSettings, _request: &LintRequest) -> Result<(), Error> {
    Err(CheckError::NoParser.into())
}

/// `lint`: prints the findings; exit 10 when any is an error (or any at all, `strict`).
#[cfg(feature = "lint")]
pub fn lint(db: &DbSettings, request: &LintRequest) -> Result<(), Error> {
    let LintRequest { format, strict } = *request;
    let migrations = load(&db.dir)?;
    let report = lint::lint(&migrations);
    let text = match format {
        Format::Human => human(&report),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Sarif => format!("{}\n", serde_json::to_string_pretty(&sarif(&report)).unwrap_or_default()),
    };
    print_stdout(&text)?;
    let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = report.findings.len() - errors;
    tracing::info!(
        files = report.files,
        statements = report.statements,
        errors,
        warnings,
        allowed = report.allowed.len(),
        "linted"
    );
    match report.failing(strict) {
        0 => Ok(()),
        _ => Err(CheckError::LintFindings {
            errors,
            warnings,
            files: report.files,
            warnings_fail: strict && errors == 0,
        }
        .into()),
    }
}

#[cfg(feature = "lint")]
fn human(report: &Report) -> String {
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
fn sarif(report: &Report) -> serde_json::Value {
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

/// `verify`: runs the folder on a scratch Postgres, prints the report, and fails by class: a
/// file that fails from empty (6), a file that cannot run again after an interruption (11),
/// an upgrade path that gives another schema (12), and with `--strict` blocking locks or
/// rewrites of existing tables (10).
pub async fn verify(db: &DbSettings, request: &VerifyRequest, shutdown: &Shutdown) -> Result<(), Error> {
    let migrations = load(&db.dir)?;
    let previous = match request.from.as_deref() {
        Some(dir) => Some(load(dir)?),
        None => None,
    };
    if request.server_url.is_some() {
        verify::refuse_cluster_wide(migrations.iter().chain(previous.as_deref().unwrap_or_default()))
            .map_err(verify_error)?;
    }
    let server = match request.server_url.as_deref() {
        Some(url) => Server::at(url).await,
        None => Server::start().await,
    }
    .map_err(verify_error)?;
    let from =
        request.from.as_deref().zip(previous.as_deref()).map(|(dir, m)| (dir.to_str().unwrap_or("previous folder"), m));
    let report = verify::verify(&server, &migrations, from, shutdown).await.map_err(verify_error)?;
    drop(server);
    let text = match request.format.json() {
        true => format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()),
        false => summary(&report),
    };
    print_stdout(&text)?;
    let blocking = report.blocking().count();
    let not_rerunnable: Vec<&verify::Rerun> = report.reruns.iter().filter(|r| r.problem.is_some()).collect();
    tracing::info!(
        files = report.files,
        statements = report.statements.len(),
        blocking,
        reruns = report.reruns.len(),
        not_rerunnable = not_rerunnable.len(),
        duration_ms = report.duration_ms,
        "verified"
    );
    if let Some(failed) = &report.failed {
        let (file, line, message) = (failed.file.clone(), failed.line, failed.message.clone());
        return Err(CheckError::FailsFromEmpty { file, line, message }.into());
    }
    if let Some(first) = not_rerunnable.first() {
        return Err(CheckError::NotRerunnable {
            count: not_rerunnable.len(),
            file: first.file.clone(),
            case: first.case.to_string(),
            problem: first.problem.clone().unwrap_or_default(),
        }
        .into());
    }
    if let Some(upgrade) = report.upgrade.as_ref().filter(|u| !u.differences.is_empty()) {
        return Err(CheckError::UpgradeDiffers {
            from: upgrade.from.clone(),
            count: upgrade.differences.len(),
            first: upgrade.differences[0].to_string(),
        }
        .into());
    }
    if request.strict && blocking > 0 {
        return Err(CheckError::Blocking(blocking).into());
    }
    Ok(())
}

/// What `lint` and `verify` found that fails the run, or what kept them from running. Each
/// is given its exit code in `run::error`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("lint: this migrun was built without Postgres's parser (cargo feature `lint`); use a release build")]
    #[cfg_attr(feature = "lint", allow(dead_code))]
    NoParser,
    #[error("lint: {errors} error(s), {warnings} warning(s) in {files} file(s){}", if *.warnings_fail { " (--strict: warnings fail)" } else { "" })]
    LintFindings { errors: usize, warnings: usize, files: usize, warnings_fail: bool },
    /// No scratch server could be had, or it failed under `verify`.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error("verify: {file}{} fails on an empty database: {message}", .line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    FailsFromEmpty { file: String, line: Option<usize>, message: String },
    #[error("verify: {count} case(s) not safe to run again; first: {file} ({case}): {problem}")]
    NotRerunnable { count: usize, file: String, case: String, problem: String },
    #[error("verify: upgrading from {from} gives another schema than installing from empty ({count} difference(s); first: {first})")]
    UpgradeDiffers { from: String, count: usize, first: String },
    #[error("verify --strict: {0} statement(s) lock or rewrite existing tables")]
    Blocking(usize),
}

fn verify_error(e: ScratchError) -> Error {
    CheckError::Scratch(e).into()
}

fn summary(report: &verify::VerifyReport) -> String {
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
    if let Some(upgrade) = &report.upgrade {
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
        "{} file(s), {} statement(s) in {} ms: {} lock or rewrite existing tables; {} interruption case(s), {} not safe{}\n",
        report.files,
        report.statements.len(),
        report.duration_ms,
        report.blocking().count(),
        report.reruns.len(),
        report.reruns.iter().filter(|r| r.problem.is_some()).count(),
        if report.invalid_index_cases { "" } else { " (INVALID-index cases skipped: not a superuser)" }
    ));
    out
}

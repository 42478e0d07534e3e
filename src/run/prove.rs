//! `lint` and `verify`: load the files, prove them, print the report (human, JSON, SARIF), and
//! turn what was found into the run's outcome.

use std::path::Path;

#[cfg(feature = "lint")]
use super::config::Format;
use super::config::{DbSettings, LintRequest, VerifyRequest};
use super::error::Error;
use super::failure::ProveError;
use super::listing::{self, print};
#[cfg(feature = "lint")]
use crate::check::lint;
#[cfg(feature = "lint")]
use crate::check::rules::Severity;
use crate::check::scratch::{ScratchError, Server};
use crate::check::verify;
use crate::migrate::files::{self, Accept, Migration};
use crate::signals::Shutdown;

/// Reads the folder as `up` does, with `up`'s verdict on every file: a file `up` refuses
/// (bad names and directives, empty or only comments) is exit 2 here too, so a CI gate never
/// passes what the deploy refuses.
pub fn load(dir: &Path) -> Result<Vec<Migration>, Error> {
    Ok(files::load(dir, Accept::to_apply(false))?)
}

/// This build has no parser (`--no-default-features`, as `scripts/demo` builds).
#[cfg(not(feature = "lint"))]
pub fn lint(_db: &DbSettings, _request: &LintRequest) -> Result<(), Error> {
    Err(ProveError::NoParser.into())
}

/// `lint`: prints the findings; exit 10 when any is an error (or any at all, `strict`).
#[cfg(feature = "lint")]
pub fn lint(db: &DbSettings, request: &LintRequest) -> Result<(), Error> {
    let LintRequest { format, strict, pg_version } = *request;
    let migrations = load(&db.dir)?;
    let report = lint::lint_for(&migrations, pg_version.unwrap_or(crate::check::rules::OLDEST_MAJOR));
    let text = match format {
        Format::Human => listing::lint(&report),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Sarif => format!("{}\n", serde_json::to_string_pretty(&listing::sarif(&report)).unwrap_or_default()),
    };
    print(&text)?;
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
        _ => Err(ProveError::LintFindings {
            errors,
            warnings,
            files: report.files,
            warnings_fail: strict && errors == 0,
        }
        .into()),
    }
}

/// `verify`: runs the folder on a scratch Postgres, prints the report, and fails by class: a
/// file that fails from empty (6), a file that cannot run again after an interruption (11),
/// an upgrade path that gives another schema (12), a down file that does not undo its up or
/// a rollback to the previous folder that gives another schema (18), and with `--strict`
/// blocking locks or rewrites of existing tables (10).
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
        false => listing::verify(&report),
    };
    print(&text)?;
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
        return Err(ProveError::FailsFromEmpty { file, line, message }.into());
    }
    if let Some(first) = not_rerunnable.first() {
        return Err(ProveError::NotRerunnable {
            count: not_rerunnable.len(),
            file: first.file.clone(),
            case: first.case.to_string(),
            problem: first.problem.clone().unwrap_or_default(),
        }
        .into());
    }
    if let Some(upgrade) = report.upgrade.as_ref().filter(|u| !u.differences.is_empty()) {
        return Err(ProveError::UpgradeDiffers {
            from: upgrade.from.clone(),
            count: upgrade.differences.len(),
            first: upgrade.differences[0].to_string(),
        }
        .into());
    }
    let not_undone: Vec<&verify::DownCheck> = report.downs.iter().filter(|d| d.problem.is_some()).collect();
    if let Some(first) = not_undone.first() {
        return Err(ProveError::DownDiffers {
            count: not_undone.len(),
            file: first.file.clone(),
            problem: first.problem.clone().unwrap_or_default(),
            first: first.differences.first().cloned(),
        }
        .into());
    }
    if let Some((upgrade, rollback)) =
        report.upgrade.as_ref().and_then(|u| u.rollback.as_ref().map(|r| (u, r))).filter(|(_, r)| !r.is_empty())
    {
        return Err(ProveError::RollbackDiffers {
            from: upgrade.from.clone(),
            count: rollback.len(),
            first: rollback[0].clone(),
        }
        .into());
    }
    if request.strict && blocking > 0 {
        return Err(ProveError::Blocking(blocking).into());
    }
    Ok(())
}

fn verify_error(e: ScratchError) -> Error {
    ProveError::Scratch(e).into()
}

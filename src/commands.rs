//! `run`: resolve the configuration, do the command, report the outcome.
//!
//! `up`, `plan` and `status` share one path (load files, connect, read history, compare);
//! only `up` takes the lock and applies.

use std::io::Write;
use std::time::Instant;

use crate::apply::{Applied, Applier, RetryPolicy};
use crate::cli::Cli;
use crate::config::{self, Command, Config, Env, LogFormat};
use crate::connect::{self, ConnectError, Session};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::history::History;
use crate::log::{self, ResultEvent};
use crate::plan::{self, Comparison};
use crate::source::{self, Migration};
use crate::{lock, report};

/// What a run did, whatever its outcome.
#[derive(Default)]
struct Progress {
    applied: Vec<Applied>,
    pending_before: Option<usize>,
}

/// Runs one command line with the given environment and returns its exit code.
pub async fn run(cli: Cli, env: Env<'_>) -> ExitCode {
    let started = Instant::now();
    let format = config::log_format(cli.options.log_format);
    log::init(format, config::log_level(cli.options.log_level));
    let command_name = command_name(&cli);
    let config = match config::resolve(cli, env) {
        Ok(config) => config,
        Err(e) => {
            let error = Error::from(e);
            return finish(
                command_name,
                format,
                None,
                &Progress::default(),
                started,
                Err(error),
                "unknown",
            );
        }
    };
    let mut progress = Progress::default();
    let outcome = execute(&config, &mut progress).await;
    finish(
        command_name,
        format,
        config.result_file.as_deref(),
        &progress,
        started,
        outcome,
        &config.identity.applied_by,
    )
}

fn command_name(cli: &Cli) -> &'static str {
    use crate::cli::CommandArgs::*;
    match cli.command {
        Up { dry_run: false, .. } => "up",
        Up { dry_run: true, .. } | Plan { .. } => "plan",
        Status { .. } => "status",
        New { .. } => "new",
    }
}

fn finish(
    command: &str,
    format: LogFormat,
    result_file: Option<&std::path::Path>,
    progress: &Progress,
    started: Instant,
    outcome: Result<(), Error>,
    applied_by: &str,
) -> ExitCode {
    let mut exit = match &outcome {
        Ok(()) => ExitCode::Success,
        Err(e) => e.exit_code(),
    };
    if let Err(e) = &outcome {
        tracing::error!(
            exit_code = exit.code(),
            applied = progress.applied.len(),
            "{e}"
        );
    }
    let error_text = outcome.as_ref().err().map(|e| e.to_string());
    let failure = outcome.as_ref().err().and_then(Error::failure);
    let duration_ms = started.elapsed().as_millis() as u64;
    let event = ResultEvent::new(
        command,
        exit,
        &progress.applied,
        progress.pending_before,
        duration_ms,
        error_text,
        failure,
        applied_by,
    );
    if let Some(path) = result_file {
        if let Err(e) = event.write_to(path) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the result file");
            if exit == ExitCode::Success {
                exit = ExitCode::Internal;
            }
        }
    }
    event.emit(format);
    exit
}

async fn execute(config: &Config, progress: &mut Progress) -> Result<(), Error> {
    if let Command::New { description } = &config.command {
        let path = source::create_new(
            &config.dir,
            description,
            &crate::clock::Utc::now().compact(),
        )?;
        print_stdout(&format!("{}\n", path.display()))?;
        tracing::info!(file = %path.display(), "created");
        return Ok(());
    }
    let migrations = source::load(&config.dir)?;
    tracing::info!(
        command = config.command.name(),
        dir = %config.dir.display(),
        files = migrations.len(),
        history_table = %config.history_table,
        lock_key = config.lock_key,
        applied_by = %config.identity.applied_by,
        "configuration resolved"
    );
    let session = open_session(config).await?;
    match &config.command {
        Command::Up { target } => up(config, &session, &migrations, *target, progress).await,
        Command::Plan { target, json } => {
            let rows = History::new(&session.client, &config.history_table)
                .read_if_exists()
                .await?;
            let comparison = plan::compare(&migrations, &rows);
            comparison
                .validate(config.policy, &config.dir.display().to_string())
                .map_err(history_mismatch)?;
            let steps = comparison.steps(*target);
            progress.pending_before = Some(steps.len());
            print_stdout(&report::plan(&steps, &config.session, *json))
        }
        Command::Status { json } => {
            let rows = History::new(&session.client, &config.history_table)
                .read_if_exists()
                .await?;
            let comparison = plan::compare(&migrations, &rows);
            progress.pending_before = Some(comparison.steps(None).len());
            print_stdout(&report::status(&comparison, *json))?;
            comparison
                .validate(config.policy, &config.dir.display().to_string())
                .map_err(history_mismatch)
        }
        Command::New { .. } => Ok(()),
    }
}

async fn open_session(config: &Config) -> Result<Session, Error> {
    let (url, pg_config) = config.database.as_ref().ok_or(ConnectError::Missing)?;
    tracing::debug!(database_url = %url, "connecting");
    Ok(connect::connect(pg_config.clone(), &config.session, config.connect_timeout).await?)
}

/// Acquire; let result = work; release; result. The lock is released on every path that
/// still has a connection (and dies with the session on the others).
async fn up(
    config: &Config,
    session: &Session,
    migrations: &[Migration],
    target: Option<u64>,
    progress: &mut Progress,
) -> Result<(), Error> {
    lock::acquire(session, config.lock_key, config.lock_wait).await?;
    let result = migrate(config, session, migrations, target, progress).await;
    let released = lock::release(session, config.lock_key).await;
    match (result, released) {
        (Err(e), Err(unlock)) => {
            tracing::warn!(error = %unlock, "lock release failed after an error; it ends with the session");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), released) => Ok(released?),
    }
}

async fn migrate(
    config: &Config,
    session: &Session,
    migrations: &[Migration],
    target: Option<u64>,
    progress: &mut Progress,
) -> Result<(), Error> {
    // Read the history only now that the lock is held: another run may just have applied files.
    let history = History::new(&session.client, &config.history_table);
    let rows = history.ensure_and_read().await?;
    let comparison: Comparison = plan::compare(migrations, &rows);
    comparison
        .validate(config.policy, &config.dir.display().to_string())
        .map_err(history_mismatch)?;
    let steps = comparison.steps(target);
    progress.pending_before = Some(steps.len());
    tracing::info!(
        applied_before = rows.len(),
        pending = steps.len(),
        "history read"
    );
    if steps.is_empty() {
        return Ok(());
    }
    let writer = history.writer(&config.identity).await?;
    let retry = RetryPolicy {
        lock_retries: config.lock_retries,
        first_delay: config.retry_backoff,
    };
    let applier = Applier::new(&session.client, writer, &config.session, retry);
    Ok(applier.apply_all(&steps, &mut progress.applied).await?)
}

fn history_mismatch(e: plan::PlanError) -> Error {
    Error::Plan(e)
}

/// stdout may be a closed pipe (`migrun status | head`): an error, not a panic.
fn print_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(format!("cannot write to stdout: {e}")))
}

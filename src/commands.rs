//! `run`: resolve the configuration, do the command, report the outcome.
//!
//! `up`, `plan`, `status`, `wait` and `exec` share one path (load files, connect, read the
//! history); `up` and `exec --migrate` take the lock and apply through the same function.

use std::io::Write;
use std::time::Instant;

use futures_util::future::{join, join3};

use crate::apply::{Applied, Applier, RetryPolicy};
use crate::cli::Cli;
use crate::config::{self, Command, Config, Env, ExecMode, Identity, LogFormat};
use crate::connect::{self, ConnectError, Session};
use crate::conninfo::{self, Source};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::history::{AppliedRow, History, HistoryError};
use crate::log::{self, ResultEvent};
use crate::plan::{self, Comparison};
use crate::signals::Shutdown;
use crate::source::{self, Migration};
use crate::supervise::ChildSpec;
use crate::{lock, report, wait};

/// How a run ends: with an exit code, or by handing over to a child process (`exec`).
pub enum Outcome {
    Exit(ExitCode),
    Exec(Box<Handover>),
}

/// What `exec` hands to the supervisor: the command, the result event to write at its end, and
/// the lock to hold meanwhile (`--lock`).
pub struct Handover {
    pub child: ChildSpec,
    pub report: ExecReport,
    pub held: Option<HeldLock>,
}

/// `exec --lock`: the session holding the advisory lock while the command runs. It sits idle
/// meanwhile (TCP keepalives need no polling) and is released once the command has exited.
pub struct HeldLock {
    session: Session,
    key: i64,
}

impl HeldLock {
    pub async fn release(self) {
        match lock::release(&self.session, self.key).await {
            Ok(()) => tracing::info!(lock_key = self.key, "lock released"),
            Err(e) => tracing::warn!(error = %e, "lock release failed; it ends with the session"),
        }
        self.session.close().await;
    }
}

/// What the final result event of an `exec` needs once the child has exited.
pub struct ExecReport {
    started: Instant,
    format: LogFormat,
    result_file: Option<std::path::PathBuf>,
    applied: Vec<Applied>,
    identity: Identity,
}

impl ExecReport {
    /// Emits the result event for the child's exit and returns the exit code.
    pub fn finish(self, exit: ExitCode) -> ExitCode {
        let progress = Progress { applied: self.applied, pending_before: None };
        let outcome = match exit {
            ExitCode::Child(0) => Ok(()),
            other => Err(other),
        };
        emit_result("exec", self.format, self.result_file.as_deref(), &progress, self.started, outcome, &self.identity)
    }
}

/// One connected run: its settings, its session, the history table, and the stop signal.
struct Db<'a> {
    config: &'a Config,
    session: &'a Session,
    history: History<'a>,
    shutdown: &'a Shutdown,
}

impl<'a> Db<'a> {
    fn new(config: &'a Config, session: &'a Session, shutdown: &'a Shutdown) -> Db<'a> {
        Db { config, session, history: History::new(&session.client, &config.history_table), shutdown }
    }
}

/// What a run did, whatever its outcome.
#[derive(Default)]
struct Progress {
    applied: Vec<Applied>,
    pending_before: Option<usize>,
}

/// Runs one command line with the given environment; `shutdown` fires on SIGTERM/SIGINT.
pub async fn run(cli: Cli, env: Env<'_>, shutdown: Shutdown) -> Outcome {
    let started = Instant::now();
    let format = config::log_format(cli.options.log_format);
    log::init(format, config::log_level(cli.options.log_level));
    let command = command_name(&cli);
    let config = match config::resolve(cli, env) {
        Ok(config) => config,
        Err(e) => {
            return Outcome::Exit(finish(
                command,
                format,
                None,
                &Progress::default(),
                started,
                Err(e.into()),
                &Identity::default(),
            ))
        }
    };
    shutdown.set_grace(config.shutdown_grace);
    let mut config = config;
    if let Some(uri) = config.ecs_metadata_uri.clone() {
        if let Some(task) = crate::ecs::fetch(&uri).await {
            config.identity.add_task(task);
        }
    }
    let mut progress = Progress::default();
    let (result, held) = match &config.command {
        Command::Exec { mode: ExecMode::Lock { apply_sql }, .. } => {
            match hold_lock(&config, *apply_sql, &mut progress, &shutdown).await {
                Ok(held) => (Ok(()), Some(held)),
                Err(e) => (Err(e), None),
            }
        }
        _ => (execute(&config, &mut progress, &shutdown).await, None),
    };
    let identity = &config.identity;
    let (result, secret_env) = match (result, &config.command) {
        (Ok(()), Command::Exec { env_from, .. }) => match secret_env(env_from).await {
            Ok(vars) => (Ok(()), vars),
            Err(e) => (Err(e), Vec::new()),
        },
        (result, _) => (result, Vec::new()),
    };
    if result.is_err() {
        if let Some(held) = held {
            held.release().await;
            return Outcome::Exit(finish(
                command,
                format,
                config.result_file.as_deref(),
                &progress,
                started,
                result,
                identity,
            ));
        }
    }
    match (result, &config.command) {
        (Ok(()), Command::Exec { command: argv, .. }) => {
            let mut argv = argv.iter().cloned();
            let mut env = held.as_ref().map(|h| child_env(&config, &h.session)).unwrap_or_default();
            env.extend(secret_env);
            let child = ChildSpec { program: argv.next().unwrap_or_default(), args: argv.collect(), env };
            let report = ExecReport {
                started,
                format,
                result_file: config.result_file.clone(),
                applied: progress.applied,
                identity: identity.clone(),
            };
            Outcome::Exec(Box::new(Handover { child, report, held }))
        }
        (result, _) => {
            Outcome::Exit(finish(command, format, config.result_file.as_deref(), &progress, started, result, identity))
        }
    }
}

/// `--env-from-secret`: fetched after the database step, right before the command starts.
async fn secret_env(secrets: &[crate::secrets::SecretRef]) -> Result<Vec<(String, String)>, Error> {
    let mut vars = Vec::new();
    for secret in secrets {
        vars.extend(crate::secrets::env_from(secret).await.map_err(crate::conninfo::TargetError::from)?);
    }
    Ok(vars)
}

fn command_name(cli: &Cli) -> &'static str {
    use crate::cli::CommandArgs::*;
    match cli.command {
        Up { dry_run: false, .. } => "up",
        Up { dry_run: true, .. } | Plan { .. } => "plan",
        Status { .. } => "status",
        Wait { .. } => "wait",
        Exec { .. } => "exec",
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
    identity: &Identity,
) -> ExitCode {
    let failure = outcome.as_ref().err().and_then(Error::failure).cloned();
    let outcome = outcome.map_err(|e| {
        tracing::error!(exit_code = e.exit_code().code(), applied = progress.applied.len(), "{e}");
        (e.exit_code(), e.to_string())
    });
    let exit = match &outcome {
        Ok(()) => ExitCode::Success,
        Err((exit, _)) => *exit,
    };
    let error_text = outcome.err().map(|(_, text)| text);
    let duration_ms = started.elapsed().as_millis() as u64;
    let event = ResultEvent::new(
        command,
        exit,
        &progress.applied,
        progress.pending_before,
        duration_ms,
        error_text,
        failure.as_ref(),
        identity,
    );
    write_result(event, format, result_file, exit)
}

fn emit_result(
    command: &str,
    format: LogFormat,
    result_file: Option<&std::path::Path>,
    progress: &Progress,
    started: Instant,
    outcome: Result<(), ExitCode>,
    identity: &Identity,
) -> ExitCode {
    let exit = outcome.err().unwrap_or(ExitCode::Success);
    let duration_ms = started.elapsed().as_millis() as u64;
    let error = (exit != ExitCode::Success).then(|| format!("the command exited with {}", exit.code()));
    let event = ResultEvent::new(command, exit, &progress.applied, None, duration_ms, error, None, identity);
    write_result(event, format, result_file, exit)
}

fn write_result(
    event: ResultEvent,
    format: LogFormat,
    result_file: Option<&std::path::Path>,
    exit: ExitCode,
) -> ExitCode {
    let mut exit = exit;
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

async fn execute(config: &Config, progress: &mut Progress, shutdown: &Shutdown) -> Result<(), Error> {
    match &config.command {
        Command::New { description } => {
            let path = source::create_new(&config.dir, description, &crate::clock::Utc::now().compact())?;
            print_stdout(&format!("{}\n", path.display()))?;
            tracing::info!(file = %path.display(), "created");
            return Ok(());
        }
        Command::Exec { mode: ExecMode::NoDb, .. } => return Ok(()),
        _ => {}
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
    let session = open_session(config, shutdown).await?;
    let outcome = with_session(config, &session, &migrations, progress, shutdown).await;
    // Closed before any child starts: the supervisor holds no database connection.
    session.close().await;
    outcome
}

async fn with_session(
    config: &Config,
    session: &Session,
    migrations: &[Migration],
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let db = Db::new(config, session, shutdown);
    let history = &db.history;
    let (target, json) = match &config.command {
        Command::Up { target } => return up(&db, migrations, *target, progress).await,
        Command::Exec { mode: ExecMode::Migrate, .. } => return up(&db, migrations, None, progress).await,
        Command::Exec { mode: ExecMode::Wait { timeout }, .. } | Command::Wait { timeout } => {
            session.identify().await?;
            return Ok(wait::until_ready(history, migrations, config.policy, *timeout, shutdown).await?);
        }
        Command::Plan { target, json } => (Some(*target), *json),
        Command::Status { json } => (None, *json),
        Command::Exec { mode: ExecMode::Lock { .. }, .. } => return Ok(()),
        Command::Exec { mode: ExecMode::NoDb, .. } | Command::New { .. } => return Ok(()),
    };
    // Pipelined: one round trip.
    let (identified, rows) = join(session.identify(), history.read()).await;
    identified?;
    let rows = rows?.unwrap_or_default();
    let comparison = plan::compare(migrations, &rows);
    let dir = config.dir.display().to_string();
    match target {
        Some(target) => {
            comparison.validate(config.policy, &dir)?;
            let steps = comparison.steps(target);
            progress.pending_before = Some(steps.len());
            print_stdout(&report::plan(&steps, &config.session, json))
        }
        None => {
            progress.pending_before = Some(comparison.steps(None).len());
            print_stdout(&report::status(&comparison, json))?;
            Ok(comparison.validate(config.policy, &dir)?)
        }
    }
}

/// `exec --lock`: connect, take the lock (and apply our own files under it, if asked), and keep
/// the session for the duration of the command.
async fn hold_lock(
    config: &Config,
    apply_sql: bool,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<HeldLock, Error> {
    let migrations = if apply_sql { source::load(&config.dir)? } else { Vec::new() };
    tracing::info!(command = "exec --lock", apply_sql, lock_key = config.lock_key, "configuration resolved");
    let session = open_session(config, shutdown).await?;
    match lock_and_apply(&Db::new(config, &session, shutdown), &migrations, apply_sql, progress).await {
        Ok(()) => Ok(HeldLock { session, key: config.lock_key }),
        Err(e) => {
            session.close().await;
            Err(e)
        }
    }
}

async fn lock_and_apply(
    db: &Db<'_>,
    migrations: &[Migration],
    apply_sql: bool,
    progress: &mut Progress,
) -> Result<(), Error> {
    let (config, session, shutdown) = (db.config, db.session, db.shutdown);
    session.identify().await?;
    lock::acquire(session, config.lock_key, config.lock_wait, shutdown).await?;
    if !apply_sql {
        return Ok(());
    }
    let result = migrate(db, migrations, None, progress, None).await;
    if result.is_err() {
        if let Err(e) = lock::release(session, config.lock_key).await {
            tracing::warn!(error = %e, "lock release failed after an error; it ends with the session");
        }
    }
    result
}

/// What a wrapped tool needs to reach the same database with the same care: the connection as
/// DATABASE_URL and libpq variables, and migrun's timeouts through PGOPTIONS.
fn child_env(config: &Config, session: &Session) -> Vec<(String, String)> {
    let pg = &session.child_config;
    let mut env = vec![("DATABASE_URL".to_string(), session.child_url.clone())];
    match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => env.push(("PGHOST".into(), host.clone())),
        Some(tokio_postgres::config::Host::Unix(path)) => env.push(("PGHOST".into(), path.display().to_string())),
        None => {}
    }
    if let Some(port) = pg.get_ports().first() {
        env.push(("PGPORT".into(), port.to_string()));
    }
    if let Some(user) = pg.get_user() {
        env.push(("PGUSER".into(), user.to_string()));
    }
    if let Some(password) = pg.get_password() {
        env.push(("PGPASSWORD".into(), String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(dbname) = pg.get_dbname() {
        env.push(("PGDATABASE".into(), dbname.to_string()));
    }
    let options = format!(
        "-c lock_timeout={} -c statement_timeout={}",
        config.session.lock_timeout.to_setting(),
        config.session.statement_timeout.to_setting()
    );
    env.push(("PGOPTIONS".into(), options));
    env
}

/// Resolves the connection (fetching a secret if that is the source) and connects. When a
/// secret's password is refused, the secret is fetched once more and the login retried once:
/// a rotation may have landed between the fetch and the login.
async fn open_session(config: &Config, shutdown: &Shutdown) -> Result<Session, Error> {
    let source = config.database.as_ref().ok_or(ConnectError::Missing)?;
    if let Source::Url { url, .. } = source {
        tracing::debug!(database_url = %url, "connecting");
    }
    let target = conninfo::resolve(source, &config.tls_overrides, &config.libpq).await?;
    tracing::info!(source = source.kind(), sslmode = target.tls.mode.as_str(), "connection resolved");
    let connect = |target| connect::connect(target, &config.session, config.connect_timeout, shutdown);
    match connect(&target).await {
        Err(ConnectError::Refused { failure, .. }) if failure.is("28P01") && target.secret.is_some() => {
            tracing::warn!("the secret's password was refused; fetching the secret again in case it was just rotated");
            let fresh = conninfo::resolve(source, &config.tls_overrides, &config.libpq).await?;
            Ok(connect(&fresh).await?)
        }
        other => Ok(other?),
    }
}

/// Acquire; let result = work; release; result.
///
/// The first lock attempt travels in one round trip with `identify` and a read of the history:
/// the server runs them in the order sent, so when the lock is taken at once the history was
/// read after it was held. `join3` polls its futures in order, which sends them in order.
async fn up(db: &Db<'_>, migrations: &[Migration], target: Option<u64>, progress: &mut Progress) -> Result<(), Error> {
    let (config, session, history) = (db.config, db.session, &db.history);
    let key = config.lock_key;
    let (identified, first_try, prefetched) =
        join3(session.identify(), lock::try_acquire(session, key), history.read()).await;
    let held_at_once = first_try?;
    let result = match identified {
        Err(e) => Err(e.into()),
        Ok(()) if held_at_once => {
            tracing::info!(lock_key = key, waited_ms = 0, "lock acquired");
            migrate(db, migrations, target, progress, Some(prefetched)).await
        }
        Ok(()) => {
            // Not held yet: nothing to release if the wait fails.
            lock::acquire(session, key, config.lock_wait, db.shutdown).await?;
            migrate(db, migrations, target, progress, None).await
        }
    };
    let released = lock::release(session, key).await;
    match (result, released) {
        (Err(e), Err(unlock)) => {
            tracing::warn!(error = %unlock, "lock release failed after an error; it ends with the session");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), released) => Ok(released?),
    }
}

/// Compares and applies, with the lock held. `prefetched` is a history read made after the
/// lock was taken; without it the history is read now.
async fn migrate(
    db: &Db<'_>,
    migrations: &[Migration],
    target: Option<u64>,
    progress: &mut Progress,
    prefetched: Option<Result<Option<Vec<AppliedRow>>, HistoryError>>,
) -> Result<(), Error> {
    let (config, history) = (db.config, &db.history);
    let read = match prefetched {
        Some(read) => read?,
        None => history.read().await?,
    };
    let rows = match read {
        Some(rows) => rows,
        None => history.create_and_read().await?,
    };
    let comparison: Comparison = plan::compare(migrations, &rows);
    comparison.validate(config.policy, &config.dir.display().to_string())?;
    let steps = comparison.steps(target);
    progress.pending_before = Some(steps.len());
    tracing::info!(applied_before = rows.len(), pending = steps.len(), "history read");
    if steps.is_empty() {
        return Ok(());
    }
    let writer = history.writer(&config.identity).await?;
    let retry = RetryPolicy { lock_retries: config.lock_retries, first_delay: config.retry_backoff };
    let applier = Applier::new(db.session, writer, &config.session, retry, db.shutdown.clone());
    Ok(applier.apply_all(&steps, &mut progress.applied).await?)
}

/// stdout may be a closed pipe (`migrun status | head`): an error, not a panic.
fn print_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(format!("cannot write to stdout: {e}")))
}

//! `exec`: prepare the database (wait, migrate, or hold the lock), then run the command as a
//! supervised child and end with its exit code.
//!
//! The child starts after the async runtime is gone, so the supervisor holds no database
//! connection, except under `--lock`, whose session must outlive the command and is watched
//! while it runs.

use std::ffi::OsString;
use std::sync::mpsc;
use std::time::Duration;

use super::config::{CommandKind, Config, ConfigError, DbSettings, ExecMode, ExecRequest};
use super::database;
use super::error::Error;
use super::outcome::{Progress, Reporter};
use crate::db::secrets::{self, SecretRef};
use crate::db::session::Session;
use crate::db::url::{first_host, with_tls_params};
use crate::exit::ExitCode;
use crate::identity::Identity;
use crate::migrate::files::Accept;
use crate::migrate::lock::{LockError, LockedSession};
use crate::signals::{Shutdown, SignalHub, StopHandle};
use crate::supervise::{self, ChildSpec};

/// Runs `exec` to its end and returns the exit code.
pub fn exec(
    config: &Config,
    request: &ExecRequest,
    runtime: tokio::runtime::Runtime,
    hub: &SignalHub,
    reporter: &Reporter,
) -> ExitCode {
    let shutdown = hub.shutdown();
    let mut progress = Progress::default();
    let identity = reporter.identity();
    if let ExecMode::Lock { apply_sql } = request.mode {
        let held =
            runtime.block_on(hold_lock(&config.db, apply_sql, identity, &request.env_from, &mut progress, &shutdown));
        let (locked, secret_env) = match held {
            Ok(held) => held,
            Err(e) => return reporter.finish(&progress, Err(e)),
        };
        let mut env = request.inherited.to_vec();
        env.extend(child_env(&config.db, locked.session()));
        env.extend(secret_env);
        let spec = ChildSpec { dies_with_parent: true, ..child(&request.command, env) };
        let (pid_tx, pid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let watch = LockWatch { runtime, locked, stop: hub.stop_handle() };
        let watcher = std::thread::Builder::new().name("lock-watch".into()).spawn(move || watch.run(pid_rx, done_rx));
        let exit = supervise::run(&spec, hub, |pid| {
            let _ = pid_tx.send(pid);
        });
        drop(pid_tx);
        let _ = done_tx.send(());
        let Ok(Ok(watch)) = watcher.map(|w| w.join()) else {
            return reporter.finish(&progress, Err(Error::Internal("the lock watch thread failed".into())));
        };
        let (runtime, locked, lost) = watch;
        let key = locked.key();
        if let Err(e) = runtime.block_on(locked.release()) {
            if !lost {
                tracing::warn!(error = %e, "lock release failed; it ends with the session");
            }
        }
        if lost {
            return reporter.finish(&progress, Err(LockError::Lost { key }.into()));
        }
        return reporter.finish_command(&progress, exit);
    }
    // The command's secrets first: a broken one must fail the run at once (exit 3), not
    // after a whole wait that then reads as "did the migration run?".
    let prepared = runtime.block_on(async {
        let vars = secret_env(&request.env_from).await?;
        prepare(&config.db, request.mode, identity, &mut progress, &shutdown).await?;
        Ok(vars)
    });
    let env = match prepared {
        Ok(secret_env) => request.inherited.iter().cloned().chain(secret_env).collect(),
        Err(e) => return reporter.finish(&progress, Err(e)),
    };
    // Closed before the child starts: the supervisor holds no database connection.
    drop(runtime);
    let exit = supervise::run(&child(&request.command, env), hub, |_| {});
    reporter.finish_command(&progress, exit)
}

fn child(command: &[OsString], env: Vec<(String, String)>) -> ChildSpec {
    let mut argv = command.iter().cloned();
    ChildSpec { program: argv.next().unwrap_or_default(), args: argv.collect(), env, dies_with_parent: false }
}

/// How often `exec --lock` asks the server whether its session still holds the lock.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long one check may take before the lock counts as lost.
const CHECK_LIMIT: Duration = Duration::from_secs(5);

/// `exec --lock`: the lock must hold for as long as the command runs. A session the server
/// ends (restart, failover, `pg_terminate_backend`, a timeout) loses it, and another run may
/// then take it: the supervisor stops the command's whole tree (SIGTERM, then SIGKILL after
/// the grace period) and migrun exits with the lock's exit code once no process of it is left.
struct LockWatch {
    runtime: tokio::runtime::Runtime,
    locked: LockedSession,
    stop: StopHandle,
}

impl LockWatch {
    /// Watches until `done` (the command ended) or the lock is lost; returns the runtime, the
    /// session and whether the lock was lost.
    fn run(
        self,
        pid: mpsc::Receiver<libc::pid_t>,
        done: mpsc::Receiver<()>,
    ) -> (tokio::runtime::Runtime, LockedSession, bool) {
        // No pid: the command did not start.
        let Ok(pid) = pid.recv() else { return (self.runtime, self.locked, false) };
        loop {
            match done.recv_timeout(WATCH_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return (self.runtime, self.locked, false),
            }
            let check =
                self.runtime.block_on(async { tokio::time::timeout(CHECK_LIMIT, self.locked.still_held()).await });
            if matches!(check, Ok(Ok(true))) {
                continue;
            }
            let reason = match check {
                Ok(Ok(_)) => "the server says the session no longer holds it".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the check got no answer within {}s", CHECK_LIMIT.as_secs()),
            };
            tracing::error!(lock_key = self.locked.key(), pid, reason = %reason, "advisory lock lost while the command runs; stopping the command");
            self.stop.request();
            // The supervisor says when the command's tree is gone.
            let _ = done.recv();
            return (self.runtime, self.locked, true);
        }
    }
}

/// `--wait` (the default) or `--migrate`; `--no-db` does nothing.
async fn prepare(
    db: &DbSettings,
    mode: ExecMode,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    match mode {
        ExecMode::NoDb | ExecMode::Lock { .. } => Ok(()),
        ExecMode::Migrate => {
            let (session, migrations) =
                database::open_with_files(db, Accept::to_apply(db.policy.allow_empty), CommandKind::Exec, shutdown)
                    .await?;
            database::lock_and_apply(db, session, &migrations, None, identity, progress, shutdown).await
        }
        ExecMode::Wait { timeout } => {
            let (session, migrations) =
                database::open_with_files(db, Accept::to_apply(db.policy.allow_empty), CommandKind::Exec, shutdown)
                    .await?;
            database::wait_ready(db, session, &migrations, timeout, shutdown).await
        }
    }
}

/// `--lock`: fetch the command's secrets, connect, take the lock (and apply our own files under
/// it, if asked), and keep the locked session for the duration of the command.
async fn hold_lock(
    db: &DbSettings,
    apply_sql: bool,
    identity: &Identity,
    env_from: &[SecretRef],
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(LockedSession, Vec<(String, String)>), Error> {
    // The command's secrets first, as for --wait: a broken one fails before the lock wait.
    let vars = secret_env(env_from).await?;
    check_lock_contract(&vars)?;
    let (session, migrations) = if apply_sql {
        database::open_with_files(db, Accept::to_apply(db.policy.allow_empty), CommandKind::Exec, shutdown).await?
    } else {
        let session = database::open(db, shutdown).await?;
        tracing::info!(command = "exec --lock", apply_sql, "configuration resolved");
        (session, Vec::new())
    };
    let (locked, prefetched) = database::lock(db, session, shutdown).await?;
    let prepared = match apply_sql {
        true => database::apply_pending(db, &locked, &migrations, None, identity, progress, shutdown, prefetched).await,
        false => Ok(()),
    };
    match prepared {
        Ok(()) => Ok((locked, vars)),
        Err(e) => Err(locked.release_after_error(e).await),
    }
}

/// `--env-from-secret`: fetched before the database step, so a broken secret costs no wait.
/// A secret's keys win over the inherited environment (later secrets over earlier ones); every
/// key that overrides a variable is logged by name, never by value.
async fn secret_env(secrets: &[SecretRef]) -> Result<Vec<(String, String)>, Error> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for secret in secrets {
        for (key, value) in secrets::env_from(secret).await.map_err(Error::EnvSecret)? {
            let earlier = vars.iter().position(|(k, _)| *k == key);
            if earlier.is_some() || std::env::var_os(&key).is_some() {
                let over = if earlier.is_some() { "an earlier secret's key" } else { "the environment" };
                tracing::warn!(secret = %secret.name(), key = %key, "a secret's key overrides {over}");
            }
            if let Some(at) = earlier {
                vars.remove(at);
            }
            vars.push((key, value));
        }
    }
    Ok(vars)
}

/// Under `exec --lock` migrun hands the command its own connection (DATABASE_URL and the
/// libpq variables): a secret may not replace it, or the command would migrate another
/// database than the one whose lock migrun holds.
fn check_lock_contract(vars: &[(String, String)]) -> Result<(), ConfigError> {
    match vars.iter().find(|(key, _)| key == "DATABASE_URL" || key.starts_with("PG")) {
        Some((key, _)) => Err(ConfigError::ReservedSecretKey { key: key.clone() }),
        None => Ok(()),
    }
}

/// What a wrapped tool needs to reach the same database with the same care: the connection as
/// DATABASE_URL and libpq variables, TLS as migrun resolved it (in the string and as
/// PGSSLMODE/PGSSLROOTCERT, so a client that defaults to no TLS does not fall back to it), and
/// migrun's timeouts through PGOPTIONS, with the server-side timeouts that would end a long
/// tool run cleared (`idle_session_timeout` from 14, `transaction_timeout` from 17). A pooler
/// that refused migrun's start-up options would refuse the tool's too: then no PGOPTIONS.
fn child_env(db: &DbSettings, session: &Session) -> Vec<(String, String)> {
    let pg = &session.child_config;
    let tls = session.tls_settings();
    let root_cert = tls.root_cert.as_ref().map(|p| p.display().to_string());
    let url = with_tls_params(&session.child_url, tls.mode.as_str(), root_cert.as_deref());
    let mut env = vec![("DATABASE_URL".to_string(), url)];
    if let Some(host) = first_host(pg) {
        env.push(("PGHOST".into(), host));
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
    env.push(("PGSSLMODE".into(), tls.mode.as_str().to_string()));
    if let Some(path) = root_cert {
        env.push(("PGSSLROOTCERT".into(), path));
    }
    if !session.options_sent() {
        tracing::warn!("the command gets no PGOPTIONS (migrun's timeouts): the server refused start-up options, and would refuse the command's too");
        return env;
    }
    let mut options = vec![
        format!("-c lock_timeout={}", db.session.lock_timeout.to_setting()),
        format!("-c statement_timeout={}", db.session.statement_timeout.to_setting()),
    ];
    if session.server_major() >= 14 {
        options.push("-c idle_session_timeout=0".into());
    }
    if session.server_major() >= 17 {
        options.push("-c transaction_timeout=0".into());
    }
    if let Some(theirs) = pg.get_options().filter(|o| !o.trim().is_empty()) {
        options.insert(0, theirs.to_string());
    }
    env.push(("PGOPTIONS".into(), options.join(" ")));
    env
}

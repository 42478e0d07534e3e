//! The commands that read or change the database: `up`, `plan`, `status` and `wait`, and the
//! one path that applies pending migrations under the lock (`up`, `exec --migrate`,
//! `exec --lock`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join;

use super::config::{
    BaselineRequest, BaselineSource, CommandKind, ConfigError, DbSettings, DownRequest, Format, RepairRequest, UpTo,
};
use super::error::Error;
use super::failure::DriftError;
use super::listing;
use super::outcome::Progress;
use crate::check::compat;
use crate::db::connect;
use crate::db::session::{ConnectError, Session};
use crate::identity::Identity;
use crate::migrate::adopt;
use crate::migrate::apply::Applier;
use crate::migrate::baseline;
use crate::migrate::compare;
use crate::migrate::files::{self, Migration};
use crate::migrate::history::{History, HistoryRow};
use crate::migrate::lock::{LockSpec, LockedSession};
use crate::migrate::repair;
use crate::migrate::revert;
use crate::migrate::rollback::{self, Recorded};
use crate::migrate::snapshot::{self, Snapshots};
use crate::migrate::wait;
use crate::signals::Shutdown;

/// `up`: applies pending migrations (up to `up_to`) under the lock.
pub async fn up(
    db: &DbSettings,
    identity: &Identity,
    up_to: Option<UpTo>,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (session, migrations) =
        open_with_files(db, files::Accept::to_apply(db.policy.allow_empty), CommandKind::Up, shutdown).await?;
    lock_and_apply(db, session, &migrations, up_to, identity, progress, shutdown).await
}

/// `down`: under the lock, undoes applied versions newest first with their down files, or
/// refuses with nothing run. `--dry-run` prints the plan, read only, without the lock.
pub async fn down(
    db: &DbSettings,
    identity: &Identity,
    request: &DownRequest,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let accept = files::Accept::to_apply(db.policy.allow_empty);
    if request.dry_run {
        let (migrations, rows, recorded) = files_and_history(db, accept, CommandKind::Down, shutdown).await?;
        let steps = plan_down(db, &migrations, &rows, &recorded, request.target)?;
        progress.pending_before = Some(steps.len());
        return listing::print(&listing::down(&steps, request.format.json()));
    }
    let (session, migrations) = open_with_files(db, accept, CommandKind::Down, shutdown).await?;
    let (locked, table_exists) = lock(db, session, shutdown).await?;
    progress.backend_pid = Some(locked.session().backend_pid()).filter(|pid| *pid != 0);
    let result = revert_under_lock(db, &locked, &migrations, request, identity, progress, shutdown, table_exists).await;
    let changed = !progress.applied.is_empty();
    locked.release_after(result, changed).await
}

/// What `down` would undo, checked as `up` checks the history first (an edited up file
/// refuses: its down was written for the file as applied).
fn plan_down<'m>(
    db: &DbSettings,
    migrations: &'m [Migration],
    rows: &[HistoryRow],
    recorded: &HashMap<u64, Recorded>,
    target: revert::Target,
) -> Result<Vec<revert::Step<'m>>, Error> {
    let mut comparison = compare::compare(migrations, rows);
    // Versions only the database has are the plan's business (it names them in range);
    // pending or out-of-order files are not undone, so neither is a reason to stop.
    let missing = std::mem::take(&mut comparison.missing);
    let policy = compare::Policy { allow_out_of_order: true, ..db.policy };
    comparison.validate(policy, &db.dir.display().to_string())?;
    comparison.missing = missing;
    let steps = revert::plan(&comparison, recorded, migrations, target)?;
    for step in &steps {
        if recorded.get(&step.version).and_then(|r| r.down_checksum.as_ref()).is_none() {
            tracing::warn!(version = step.version, file = %step.file, "no down file was recorded when this version was applied (an older migrun, a baseline, or a down file written later): it cannot be checked against the one tested with the up");
        }
    }
    Ok(steps)
}

#[allow(clippy::too_many_arguments)]
async fn revert_under_lock(
    db: &DbSettings,
    locked: &LockedSession,
    migrations: &[Migration],
    request: &DownRequest,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
    table_exists: Option<bool>,
) -> Result<(), Error> {
    let history = History::new(locked.session(), locked.table());
    let rows = history.read_known(table_exists).await?.unwrap_or_default();
    let recorded = match rows.is_empty() {
        true => HashMap::new(),
        false => rollback::read(&locked.session().client, locked.table()).await?,
    };
    let steps = plan_down(db, migrations, &rows, &recorded, request.target)?;
    progress.pending_before = Some(steps.len());
    tracing::info!(applied_before = rows.len(), to_revert = steps.len(), "history read");
    if steps.is_empty() {
        return Ok(());
    }
    let writer = history.writer(identity).await?;
    let snapshots = Snapshots::new(&locked.session().client, locked.table()).scoped(db.schema_scope.as_deref());
    let applier =
        Applier::new(locked, writer, &db.session, db.retry, shutdown.clone()).reverting().snapshotting(snapshots);
    let downs: Vec<&Migration> = steps.iter().map(|s| s.down).collect();
    let unfinished: Vec<u64> = steps.iter().filter(|s| s.unfinished).map(|s| s.version).collect();
    let result = applier.revert_all(&downs, &unfinished, &mut progress.applied).await;
    if !progress.applied.is_empty() && !applier.snapshot_taken() {
        Snapshots::new(&locked.session().client, locked.table())
            .scoped(db.schema_scope.as_deref())
            .take_or_warn("down")
            .await;
    }
    Ok(result?)
}

/// `plan` (and `up --dry-run`): prints what `up` would run. Read only.
pub async fn plan(
    db: &DbSettings,
    up_to: Option<UpTo>,
    format: Format,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (migrations, rows, recorded) =
        files_and_history(db, files::Accept::TO_SHOW, CommandKind::Plan, shutdown).await?;
    let comparison = compare::compare(&migrations, &rows).with_newer(&recorded);
    comparison.validate(db.policy, &db.dir.display().to_string())?;
    if let Some(target) = up_to {
        comparison.check_up_to(target.0)?;
    }
    let steps = comparison.steps(up_to.map(|u| u.0));
    progress.pending_before = Some(steps.len());
    // Files that hold no statement yet are shown, after what would run: `up` refuses them.
    let empty = comparison.entries.iter().filter(|e| e.state == compare::FileState::Empty);
    let shown: Vec<_> = steps.iter().copied().chain(empty).collect();
    listing::print(&listing::plan(&shown, &db.session, format.json()))
}

/// `status`: prints every file's state; fails (exit 7) when the history does not match.
pub async fn status(
    db: &DbSettings,
    format: Format,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (migrations, rows, recorded) =
        files_and_history(db, files::Accept::TO_SHOW, CommandKind::Status, shutdown).await?;
    let comparison = compare::compare(&migrations, &rows).with_newer(&recorded);
    progress.pending_before = Some(comparison.steps(None).len());
    listing::print(&listing::status(&comparison, &recorded, format.json()))?;
    Ok(comparison.validate(db.policy, &db.dir.display().to_string())?)
}

/// `wait`: returns once every versioned file is applied. Read only.
pub async fn wait(db: &DbSettings, timeout: Duration, shutdown: &Shutdown) -> Result<(), Error> {
    let (session, migrations) =
        open_with_files(db, files::Accept::to_apply(db.policy.allow_empty), CommandKind::Wait, shutdown).await?;
    wait_ready(db, session, &migrations, timeout, shutdown).await
}

/// `repair`: under the lock, checks the named row against the files, prints the change, and
/// makes it (with its audit row) unless `--dry-run`.
pub async fn repair(
    db: &DbSettings,
    identity: &Identity,
    request: &RepairRequest,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (session, migrations) =
        open_with_files(db, files::Accept::to_apply(db.policy.allow_empty), CommandKind::Repair, shutdown).await?;
    let (locked, table_exists) = lock(db, session, shutdown).await?;
    let result = async {
        let history = History::new(locked.session(), locked.table());
        let rows = history.read_known(table_exists).await?.unwrap_or_default();
        let change = repair::plan(request.action, &migrations, &rows)?;
        if !request.dry_run {
            repair::apply(&locked.session().client, locked.table(), &change, identity).await?;
            tracing::info!(action = change.action, version = change.version, "history repaired");
            Snapshots::new(&locked.session().client, locked.table())
                .scoped(db.schema_scope.as_deref())
                .take_or_warn("repair")
                .await;
        }
        listing::print(&listing::repair(&change, request.dry_run, request.format.json()))
    }
    .await;
    let changed = result.is_ok() && !request.dry_run;
    locked.release_after(result, changed).await
}

/// `baseline`: under the lock, checks that migrun's history is empty, works out the versions
/// to record (reading the other tool's table, which is left as it is), prints them, and
/// records them in one transaction unless `--dry-run`.
pub async fn baseline(
    db: &DbSettings,
    identity: &Identity,
    request: &BaselineRequest,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (session, migrations) =
        open_with_files(db, files::Accept::to_apply(db.policy.allow_empty), CommandKind::Baseline, shutdown).await?;
    let (locked, table_exists) = lock(db, session, shutdown).await?;
    let result = async {
        let client = &locked.session().client;
        let history = History::new(locked.session(), locked.table());
        let rows = history.read_known(table_exists).await?.unwrap_or_default();
        let source = match &request.source {
            BaselineSource::UpTo(version) => baseline::Source::UpTo(*version),
            BaselineSource::Tool { tool, table, up_to } => {
                let read = adopt::read(client, *tool, table).await?;
                baseline::Source::Tool { tool: *tool, history: read, up_to: *up_to }
            }
        };
        let table = locked.table().to_string();
        let plan = baseline::plan(&source, &migrations, &rows, &table, request.ignore_differences)?;
        if !request.dry_run {
            let files: Vec<(u64, &str, &str)> =
                plan.record.iter().map(|r| (r.version, r.description.as_str(), r.checksum.as_str())).collect();
            history.adopt(&files, &plan.adopted_from, identity).await?;
            tracing::info!(
                adopted_from = %plan.adopted_from,
                recorded = plan.record.len(),
                highest = plan.record.last().map(|r| r.version),
                "baseline recorded"
            );
            Snapshots::new(client, locked.table()).scoped(db.schema_scope.as_deref()).take_or_warn("baseline").await;
        }
        listing::print(&listing::baseline(&plan, request.dry_run, request.format.json()))
    }
    .await;
    let changed = result.is_ok() && !request.dry_run;
    locked.release_after(result, changed).await
}

/// `wait` and `exec --wait`: polls until the schema is ready, on `session` and, when the server
/// ends it (a restart, a failover, `pg_terminate_backend`), on a new one: the connection is
/// resolved again (a secret fetched again, which also covers a rotation) until the wait's
/// deadline. The session is closed at the end.
pub async fn wait_ready(
    db: &DbSettings,
    session: Session,
    migrations: &[Migration],
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    session.start().await?;
    let mut source = Reopening { db, session: Some(session), shutdown };
    let waited = wait::until_ready(&mut source, migrations, db.policy, timeout, shutdown).await;
    if let Some(session) = source.session {
        session.close().await;
    }
    Ok(waited?)
}

/// The wait loop's history, on a session opened again whenever the last one was lost.
struct Reopening<'a> {
    db: &'a DbSettings,
    session: Option<Session>,
    shutdown: &'a Shutdown,
}

impl wait::HistorySource for Reopening<'_> {
    async fn poll(&mut self, deadline: Instant) -> Result<wait::Polled, wait::WaitError> {
        let session = match self.session.take() {
            Some(session) => session,
            None => match self.reopen(deadline).await? {
                Ok(session) => session,
                Err(reason) => return Ok(wait::Polled::Unavailable(reason)),
            },
        };
        let read = History::new(&session, &self.db.history_table).read().await;
        match read {
            Ok(rows) => {
                self.session = Some(session);
                Ok(wait::Polled::Rows(rows.unwrap_or_default()))
            }
            Err(e) if e.connection_lost() => Ok(wait::Polled::Unavailable(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn recorded(&mut self) -> Result<HashMap<u64, Recorded>, wait::WaitError> {
        match &self.session {
            Some(session) => Ok(rollback::read(&session.client, &self.db.history_table).await?),
            None => Ok(HashMap::new()),
        }
    }
}

impl Reopening<'_> {
    /// A new session, or why there is none yet (the server still down); an error when waiting
    /// cannot mend it.
    async fn reopen(&self, deadline: Instant) -> Result<Result<Session, String>, wait::WaitError> {
        let Some(spec) = self.db.connection.as_ref() else {
            return Ok(Err("no connection configured".into()));
        };
        let limit = deadline.saturating_duration_since(Instant::now()).min(self.db.connect_timeout);
        let opened = connect::open(spec, &self.db.session, limit.max(Duration::from_millis(100)), self.shutdown).await;
        let started = match opened {
            Ok(session) => session.start().await.map(|()| session),
            Err(e) => Err(e),
        };
        match started {
            Ok(session) => {
                tracing::info!(backend_pid = session.backend_pid(), "reconnected while waiting for the schema");
                Ok(Ok(session))
            }
            // The server is still down or went again: waiting may mend that.
            Err(e @ (ConnectError::Unreachable { .. } | ConnectError::Lost { .. })) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads the migration files while the connection opens (TCP, TLS, authentication): a run pays
/// for the slower of the two, not for both. No statement is sent before every file validated:
/// a bad file fails the run (exit 2) at once, whatever the connection is doing, and a session
/// that is already open is closed politely.
pub async fn open_with_files(
    db: &DbSettings,
    accept: files::Accept,
    command: CommandKind,
    shutdown: &Shutdown,
) -> Result<(Session, Vec<Migration>), Error> {
    let dir = db.dir.clone();
    let files = tokio::task::spawn_blocking(move || files::load(&dir, accept));
    let connecting = open(db, shutdown);
    tokio::pin!(files, connecting);
    let (session, migrations) = tokio::select! {
        loaded = &mut files => {
            let migrations = joined(loaded)?;
            (connecting.await?, migrations)
        }
        opened = &mut connecting => match joined(files.await) {
            Ok(migrations) => (opened?, migrations),
            Err(e) => {
                if let Ok(session) = opened {
                    session.close().await;
                }
                return Err(e);
            }
        },
    };
    tracing::info!(
        command = command.name(),
        dir = %db.dir.display(),
        files = migrations.len(),
        history_table = %db.history_table,
        "configuration resolved"
    );
    Ok((session, migrations))
}

fn joined(
    loaded: Result<Result<Vec<Migration>, files::FilesError>, tokio::task::JoinError>,
) -> Result<Vec<Migration>, Error> {
    match loaded {
        Ok(read) => Ok(read?),
        Err(e) => Err(Error::Internal(format!("reading the migration files failed: {e}"))),
    }
}

/// Opens a session with the configured connection.
pub async fn open(db: &DbSettings, shutdown: &Shutdown) -> Result<Session, Error> {
    let spec = db.connection.as_ref().ok_or(ConfigError::NoDatabase)?;
    Ok(connect::open(spec, &db.session, db.connect_timeout, shutdown).await?)
}

/// Acquire; let result = work; release; result. The first lock attempt travels in one round
/// trip with a read of the history, so a run with nothing to do costs one round trip.
pub async fn lock_and_apply(
    db: &DbSettings,
    session: Session,
    migrations: &[Migration],
    up_to: Option<UpTo>,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let (locked, table_exists) = lock(db, session, shutdown).await?;
    progress.backend_pid = Some(locked.session().backend_pid()).filter(|pid| *pid != 0);
    let result = apply_pending(db, &locked, migrations, up_to, identity, progress, shutdown, table_exists).await;
    let changed = !progress.applied.is_empty();
    locked.release_after(result, changed).await
}

/// Takes the lock on `session` (see `LockedSession::acquire`); with it, whether the history
/// table existed when the lock was taken, if the first attempt could tell.
pub async fn lock(
    db: &DbSettings,
    session: Session,
    shutdown: &Shutdown,
) -> Result<(LockedSession, Option<bool>), Error> {
    let target = LockSpec { table: &db.history_table, key: db.lock_key };
    Ok(LockedSession::acquire(session, target, db.lock_wait, shutdown).await?)
}

/// Compares and applies, with the lock held. `table_exists` says whether the history table
/// existed when the lock was taken (`None`: not known, asked now). Every statement names the
/// history table as it resolved when the lock was taken.
#[allow(clippy::too_many_arguments)]
pub async fn apply_pending(
    db: &DbSettings,
    locked: &LockedSession,
    migrations: &[Migration],
    up_to: Option<UpTo>,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
    table_exists: Option<bool>,
) -> Result<(), Error> {
    let history = History::new(locked.session(), locked.table());
    let rows = match history.read_known(table_exists).await? {
        Some(rows) => rows,
        None => history.create_and_read().await?,
    };
    let mut comparison = compare::compare(migrations, &rows);
    if !comparison.missing.is_empty() {
        comparison = comparison.with_newer(&rollback::read(&locked.session().client, locked.table()).await?);
    }
    comparison.validate(db.policy, &db.dir.display().to_string())?;
    if let Some(target) = up_to {
        comparison.check_up_to(target.0)?;
    }
    let steps = comparison.steps(up_to.map(|u| u.0));
    progress.pending_before = Some(steps.len());
    tracing::info!(applied_before = rows.len(), pending = steps.len(), "history read");
    if db.check_drift {
        check_drift(db, locked).await?;
    }
    if steps.is_empty() {
        return Ok(());
    }
    let pending: Vec<&Migration> = steps.iter().map(|e| e.migration).collect();
    let writer = history.writer(identity).await?.with_assessments(compat::assess(&pending));
    let snapshots = Snapshots::new(&locked.session().client, locked.table()).scoped(db.schema_scope.as_deref());
    let applier = Applier::new(locked, writer, &db.session, db.retry, shutdown.clone()).snapshotting(snapshots);
    let result = applier.apply_all(&steps, &mut progress.applied).await;
    if !progress.applied.is_empty() && !applier.snapshot_taken() {
        Snapshots::new(&locked.session().client, locked.table())
            .scoped(db.schema_scope.as_deref())
            .take_or_warn("up")
            .await;
    }
    Ok(result?)
}

/// `--check-drift`: with the lock held, before anything is applied, the live schema must be
/// the newest snapshot's. No snapshot yet (a new database, or one migrated before snapshots)
/// passes with a note: there is nothing to hold it to.
async fn check_drift(db: &DbSettings, locked: &LockedSession) -> Result<(), Error> {
    let client = &locked.session().client;
    let compared = snapshot::compare_with_latest(client, locked.table(), db.schema_scope.as_deref()).await?;
    let Some((latest, objects)) = compared else {
        tracing::info!("no schema snapshot yet: nothing to check drift against (this run records one)");
        return Ok(());
    };
    let Some(first) = objects.first() else {
        tracing::info!(snapshot = latest.id, "no drift: the live schema is the last snapshot's");
        return Ok(());
    };
    for object in &objects {
        tracing::warn!(kind = %object.kind, name = %object.name, lines = %object.lines.join("; "), "drift");
    }
    Err(DriftError::differs("--check-drift", &latest.describe(), &objects, first, !latest.history_unchanged).into())
}

/// The files and the history, read without the lock on a session closed after it.
/// With them, what was recorded for rollbacks (read only when the database has versions the
/// files lack, or for `status`, which shows every version's compatibility).
async fn files_and_history(
    db: &DbSettings,
    accept: files::Accept,
    command: CommandKind,
    shutdown: &Shutdown,
) -> Result<(Vec<Migration>, Vec<HistoryRow>, HashMap<u64, Recorded>), Error> {
    let (session, migrations) = open_with_files(db, accept, command, shutdown).await?;
    let read = async {
        let rows = read_history(db, &session).await?;
        let ahead = rows.iter().filter_map(|r| r.version).any(|v| !migrations.iter().any(|m| m.version() == Some(v)));
        let recorded = match ahead || matches!(command, CommandKind::Status | CommandKind::Down) {
            true => rollback::read(&session.client, &db.history_table).await?,
            false => HashMap::new(),
        };
        Ok::<_, Error>((rows, recorded))
    }
    .await;
    session.close().await;
    let (rows, recorded) = read?;
    Ok((migrations, rows, recorded))
}

/// Starts the session and reads the history (the session's first statement travels with the
/// catalog lookup); no table means no rows.
async fn read_history(db: &DbSettings, session: &Session) -> Result<Vec<HistoryRow>, Error> {
    let history = History::new(session, &db.history_table);
    let (started, rows) = join(session.start(), history.read()).await;
    started?;
    Ok(rows?.unwrap_or_default())
}

/// How many files `up` would run on the configured database (0: current); an error when the
/// history does not match the files or the database cannot be read. Read only.
pub async fn pending(db: &DbSettings, shutdown: &Shutdown) -> Result<usize, Error> {
    let (migrations, rows, recorded) =
        files_and_history(db, files::Accept::to_apply(db.policy.allow_empty), CommandKind::Up, shutdown).await?;
    let comparison = compare::compare(&migrations, &rows).with_newer(&recorded);
    comparison.validate(db.policy, &db.dir.display().to_string())?;
    Ok(comparison.steps(None).len())
}

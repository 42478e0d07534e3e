//! `fanout up` and `fanout status`: the command layer's side of the fan-out engine in
//! `fleet::worker`. It reads the targets, joins the run through the coordination database,
//! runs each target as `up` does (the [`TargetRunner`] here), and turns the summary into the
//! result event and the exit code.

use std::time::{Duration, Instant};

use futures_util::stream::StreamExt;
use serde_json::json;
use tracing::Instrument;

use super::config::{CommandKind, DbSettings, FanoutRequest};
use super::database;
use super::error::Error;
use super::failure::FanoutError;
use super::listing;
use super::outcome::Progress;
use crate::db::secrets::{self, SecretRef};
use crate::fleet::capacity::ServerCheck;
use crate::fleet::coord::{self, Coordinator};
use crate::fleet::ledger::TargetDone;
use crate::fleet::summary::Summary;
use crate::fleet::targets::{self, Target, TargetKind};
use crate::fleet::worker::{self, Coordination, TargetRunner};
use crate::identity::Identity;
use crate::migrate::files::{self, Accept};
use crate::signals::Shutdown;

/// Reads the targets from their source, once.
async fn load(db: &DbSettings, request: &FanoutRequest, shutdown: &Shutdown) -> Result<Vec<Target>, Error> {
    let source = request.source.trim();
    let unreadable = |reason: String| targets::TargetsError::Unreadable { origin: targets::origin(source), reason };
    let text = if let Some(path) = source.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?
    } else if let Some(reference) = source.strip_prefix("secret:") {
        let secret = SecretRef::parse(reference, None).map_err(|e| Error::Config(e.into()))?;
        let value = secrets::fetch(&secret).await.map_err(Error::EnvSecret)?;
        targets::secret_lines(&value).map_err(unreadable)?
    } else if let Some(url) = source.strip_prefix("sql:") {
        let query = request
            .targets_query
            .as_deref()
            .ok_or_else(|| unreadable("sql: needs --targets-query, a query returning one target per row".into()))?;
        let catalog = db.with_connection(request.shared.spec(url)?);
        let session = database::open(&catalog, shutdown).await?;
        let rows = session.client.query(query, &[]).await;
        session.close().await;
        let rows = rows.map_err(|e| unreadable(crate::db::failure::PgFailure::from_pg(&e).to_string()))?;
        rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()).collect::<Vec<_>>().join("\n")
    } else {
        return Err(targets::TargetsError::BadSource(targets::origin(source)).into());
    };
    let mut list = targets::parse(source, &text, request.base_url.as_deref())?;
    if let Some(only) = &request.only {
        list.retain(|t| &t.id == only);
        if list.is_empty() {
            return Err(targets::TargetsError::NotATarget(only.clone()).into());
        }
    }
    Ok(list)
}

/// The default run id's second part: the files' checksums, hashed.
fn files_hash(files: &[files::Migration]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.checksum.as_bytes());
    }
    hasher.finalize()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The run's names, for every line it writes.
#[derive(Clone, Copy)]
struct RunIds<'a> {
    run_id: &'a str,
    hash: &'a str,
}

/// Each target run as `up` runs: its own session, lock and history.
struct UpRunner<'a> {
    db: &'a DbSettings,
    request: &'a FanoutRequest,
    identity: &'a Identity,
    ids: RunIds<'a>,
}

impl TargetRunner for UpRunner<'_> {
    async fn run(&self, target: &Target, check: ServerCheck, stop: &Shutdown) -> TargetDone {
        let span = tracing::info_span!("target", run_id = %self.ids.run_id, targets_hash = %self.ids.hash, target = %target.id);
        self.up(target, check == ServerCheck::Read, stop).instrument(span).await
    }
}

impl UpRunner<'_> {
    /// One target's `up`; with `read_capacity`, its server's free connections are read first
    /// on the target's own session, and a K too large for them leaves the target alone.
    async fn up(&self, target: &Target, read_capacity: bool, stop: &Shutdown) -> TargetDone {
        let started = Instant::now();
        let mut progress = Progress::default();
        let mut server_check = None;
        let result = async {
            let own = self
                .db
                .for_target(target, &self.request.shared, self.request.base_url.as_deref())
                .map_err(FanoutError::from)?;
            let (session, migrations) =
                // Each target's lines say `up`: it runs as `up` does.
                database::open_with_files(&own, Accept::to_apply(own.policy.allow_empty), CommandKind::Up, stop).await?;
            if read_capacity {
                let refusal = match coord::free_connections(&session.client).await {
                    Ok(free) => {
                        let refusal = self.request.settings.capacity.refusal(free, &target.server);
                        server_check = Some(refusal.clone().map_or(Ok(()), Err));
                        refusal.map(|r| Error::Fanout(r.into()))
                    }
                    Err(e) => Some(Error::Coord(e)),
                };
                if let Some(refusal) = refusal {
                    session.close().await;
                    return Err(refusal);
                }
            }
            database::lock_and_apply(&own, session, &migrations, None, self.identity, &mut progress, stop).await
        }
        .await;
        let (exit, sqlstate, message) = match &result {
            Ok(()) => (crate::exit::ExitCode::Success, None, None),
            Err(e) => (e.exit_code(), e.file_failure().and_then(|f| f.pg.sqlstate.clone()), Some(e.to_string())),
        };
        TargetDone {
            exit,
            server_check,
            backend_pid: progress.backend_pid,
            versions: progress.applied.iter().filter_map(|a| a.version).collect(),
            ms: started.elapsed().as_millis() as i64,
            sqlstate,
            message,
        }
    }
}

/// `fanout up`.
pub async fn up(
    db: &DbSettings,
    request: &FanoutRequest,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let mut targets = load(db, request, shutdown).await?;
    let hash = targets::list_hash(&targets);
    let files_hash = files_hash(&files::load(&db.dir, Accept::to_apply(false))?);
    let run_id = request.run_id.clone().unwrap_or_else(|| format!("run-{hash}-{files_hash}"));
    let worker_name = format!("{}:{}", identity.applied_by, std::process::id());
    tracing::info!(targets = targets.len(), targets_hash = %hash, run_id = %run_id, worker = %worker_name, "fanout starts");
    // Every line of this worker names the run and the target list (and, inside a target's
    // run, the target: lines of targets in flight at once interleave).
    let span = tracing::info_span!("fanout", run_id = %run_id, targets_hash = %hash);
    let ids = RunIds { run_id: &run_id, hash: &hash };
    async {
        let (coord, coord_server) = join(db, request, &mut targets, &run_id, &worker_name, shutdown).await?;
        let runner = UpRunner { db, request, identity, ids };
        let summary =
            worker::work_through(&targets, &coord, &coord_server, &runner, &request.settings, shutdown).await?;
        report(&summary, ids, progress);
        summary.ending(&run_id).map_err(|e| Error::Fanout(e.into()))?;
        tracing::info!(current = targets.len(), "fanout: every target is current");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Joins the run through the coordination database: its session, holding a connection slot
/// of its own, after checking K against the server's free connections. Returns it with the
/// coordination server's `host:port` (the targets' servers unified with it).
async fn join(
    db: &DbSettings,
    request: &FanoutRequest,
    targets: &mut [Target],
    run_id: &str,
    worker_name: &str,
    shutdown: &Shutdown,
) -> Result<(Coordinator, String), Error> {
    let coord_url = request
        .coord_url
        .clone()
        .or_else(|| request.base_url.clone())
        .or_else(|| {
            targets.iter().find_map(|t| match &t.kind {
                TargetKind::Database(url) => Some(url.clone()),
                TargetKind::Schema(_) => None,
            })
        })
        .ok_or(FanoutError::NoCoordination)?;
    let coord_db = db.with_connection(request.shared.spec(&coord_url)?);
    let capacity = request.settings.capacity;
    let mut coord_server = targets::server_of(&coord_url).unwrap_or_default();
    if capacity.per_server.is_some() {
        // Each server counted once, however the lines spell it.
        targets::unify_servers(targets, &mut [&mut coord_server]).await;
    }
    // The coordination session is one of migrun's connections to its server too, so it holds
    // a slot. Without a free one, the session is closed at once (before it joins the run)
    // while this worker waits: an idle session must not push the server past K. With the
    // worker count known, W slots are kept for these sessions and that never happens.
    let slot_deadline = Instant::now() + request.settings.deadline.unwrap_or(Duration::from_secs(600));
    // The slot is held until the session ends, never given back while it is open.
    let mut coord = loop {
        let session = database::open(&coord_db, shutdown).await?;
        let coord = Coordinator::new(session.client, run_id, worker_name);
        let (Some(slots), Some(limit)) = (capacity.coord_slots(), capacity.per_server) else { break coord };
        if coord.try_slot(&coord_server, slots).await?.is_some() {
            break coord;
        }
        drop(coord);
        if Instant::now() >= slot_deadline {
            return Err(Error::Fanout(FanoutError::NoSlot { server: coord_server, limit }));
        }
        shutdown.sleep(Duration::from_millis(200 + u64::from(std::process::id() % 100))).await?;
    };
    if capacity.per_server.is_some() {
        if let Some(refusal) = capacity.refusal(coord.free_connections().await?, &coord_server) {
            return Err(Error::Fanout(refusal.into()));
        }
    }
    coord.join().await?;
    Ok((coord, coord_server))
}

/// The result event's `fanout` and `targets` fields.
fn report(summary: &Summary, ids: RunIds, progress: &mut Progress) {
    let tally = summary.tally(ids.run_id);
    progress.fanout = Some(json!({
        "run_id": ids.run_id,
        "targets_hash": ids.hash,
        "targets": tally.total,
        "current": tally.current,
        "failed": tally.failed,
        "pending": tally.pending,
        "this_worker": { "processed": summary.processed, "failed": summary.failed_here },
        "failed_targets": summary.failed().take(20).map(|r| json!({"target": r.target, "outcome": r.exit.outcome()})).collect::<Vec<_>>(),
    }));
    progress.targets = Some(json!(summary
        .targets
        .iter()
        .map(|(id, recorded)| match recorded {
            Some(r) =>
                json!({"target": id, "outcome": r.exit.outcome(), "exit_code": r.exit.code(), "worker": r.worker}),
            None => json!({"target": id, "outcome": "pending"}),
        })
        .collect::<Vec<_>>()));
}

/// `fanout status`: every target's state, read only; exit 13 unless every one is current.
pub async fn status(db: &DbSettings, request: &FanoutRequest, shutdown: &Shutdown) -> Result<(), Error> {
    let targets = load(db, request, shutdown).await?;
    let mut states = Vec::with_capacity(targets.len());
    let mut stream = futures_util::stream::iter(targets.iter().map(|target| async move {
        let pending = match db.for_target(target, &request.shared, request.base_url.as_deref()) {
            Ok(own) => database::pending(&own, shutdown).await,
            Err(e) => Err(Error::Fanout(e.into())),
        };
        let state = match pending {
            Ok(0) => listing::TargetState { id: target.id.clone(), state: "current".into(), detail: None },
            Ok(n) => listing::TargetState { id: target.id.clone(), state: format!("{n} pending"), detail: None },
            Err(e) => listing::TargetState {
                id: target.id.clone(),
                state: e.exit_code().outcome().to_string(),
                detail: Some(e.to_string()),
            },
        };
        state
    }))
    .buffered(request.settings.concurrency.max(1));
    while let Some(state) = stream.next().await {
        states.push(state);
    }
    listing::print(&listing::fanout_status(&states, request.format.json()))?;
    match listing::behind(&states) {
        0 => Ok(()),
        behind => Err(Error::Fanout(FanoutError::Behind { behind, total: states.len() })),
    }
}

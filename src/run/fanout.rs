//! `fanout up` and `fanout status`: every target brought up to date (or shown), each in its own
//! session with its own lock, history and result, by identical workers that share the work
//! through a coordination database (see `fleet::coord`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use tracing::Instrument;

use super::config::{Command, Config, FanoutRequest};
use super::database;
use super::error::Error;
use super::outcome::Progress;
use super::print_stdout;
use crate::db::endpoint::{ConnectionSpec, Source};
use crate::db::secrets::{self, SecretRef};
use crate::db::url::DatabaseUrl;
use crate::exit::ExitCode;
use crate::fleet::coord::{self, Coordinator, Recorded};
use crate::fleet::targets::{self, Target, TargetKind};
use crate::identity::Identity;
use crate::migrate::history::HistoryTable;
use crate::signals::Shutdown;

/// How often a worker says how far the run is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// The failure rate is judged over at least this many of a worker's targets.
const FAILURE_RATE_FLOOR: usize = 20;

/// Reads the targets from their source, once.
async fn load(config: &Config, request: &FanoutRequest, shutdown: &Shutdown) -> Result<Vec<Target>, Error> {
    let source = request.source.trim();
    let base = request.base_url.as_deref();
    let unreadable = |reason: String| targets::TargetsError::Unreadable { origin: targets::origin(source), reason };
    let text = if let Some(path) = source.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?
    } else if let Some(reference) = source.strip_prefix("secret:") {
        let secret =
            SecretRef::parse(reference, None).map_err(|e| Error::Config(super::config::ConfigError::Secret(e)))?;
        let value = secrets::fetch(&secret).await.map_err(Error::EnvSecret)?;
        secret_lines(&value).map_err(unreadable)?
    } else if let Some(url) = source.strip_prefix("sql:") {
        let query = request
            .targets_query
            .as_deref()
            .ok_or_else(|| unreadable("sql: needs --targets-query, a query returning one target per row".into()))?;
        let mut catalog = config.clone();
        catalog.connection = Some(spec(request, url)?);
        let session = database::open(&catalog, shutdown).await?;
        let rows = session.client.query(query, &[]).await;
        session.close().await;
        let rows = rows.map_err(|e| unreadable(crate::db::failure::PgFailure::from_pg(&e).to_string()))?;
        rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()).collect::<Vec<_>>().join("\n")
    } else {
        return Err(targets::TargetsError::BadSource(targets::origin(source)).into());
    };
    let mut list = targets::parse(source, &text, base)?;
    if let Some(only) = &request.only {
        list.retain(|t| &t.id == only);
        if list.is_empty() {
            return Err(targets::TargetsError::NotATarget(only.clone()).into());
        }
    }
    Ok(list)
}

/// A secret's targets: a JSON list of target lines, or `{"template": "...{id}...", "ids": [...]}`.
fn secret_lines(value: &str) -> Result<String, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|_| "the secret is not JSON (a list of targets)".to_string())?;
    let strings = |v: &serde_json::Value| -> Result<Vec<String>, String> {
        v.as_array()
            .ok_or("expected a JSON list")?
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| "a list item is not a string".to_string()))
            .collect()
    };
    match &parsed {
        serde_json::Value::Array(_) => Ok(strings(&parsed)?.join("\n")),
        serde_json::Value::Object(object) => {
            let template =
                object.get("template").and_then(|t| t.as_str()).ok_or("expected a list, or {\"template\", \"ids\"}")?;
            let ids = strings(object.get("ids").unwrap_or(&serde_json::Value::Null))?;
            Ok(ids.iter().map(|id| template.replace("{id}", id)).collect::<Vec<_>>().join("\n"))
        }
        _ => Err("expected a JSON list of targets".into()),
    }
}

/// A connection to `url` with the run's TLS settings and libpq variables.
fn spec(request: &FanoutRequest, url: &str) -> Result<ConnectionSpec, Error> {
    let (url, config, tls) = DatabaseUrl::parse(url.to_string()).map_err(super::config::ConfigError::from)?;
    Ok(ConnectionSpec {
        source: Source::Url { url, config: Box::new(config), tls },
        tls: request.tls.clone(),
        libpq: request.libpq.clone(),
    })
}

/// The configuration of one target's run: its connection; for a schema, `search_path` set to it
/// (a start-up option, so every file starts there) and the history table inside it (which
/// gives it a lock of its own).
fn target_config(config: &Config, request: &FanoutRequest, target: &Target) -> Result<Config, Error> {
    let mut own = config.clone();
    own.command = Command::Up { up_to: None };
    match &target.kind {
        TargetKind::Database(url) => own.connection = Some(spec(request, url)?),
        TargetKind::Schema(schema) => {
            let base = request.base_url.as_deref().unwrap_or_default();
            let mut connection = spec(request, base)?;
            if let Source::Url { config: pg, .. } = &mut connection.source {
                let options = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
                pg.options(format!("{options}-c search_path={schema}"));
            }
            own.connection = Some(connection);
            // Never the base table: a schema's history (and its lock) must be its own.
            own.history_table = HistoryTable::parse(&format!("{schema}.{}", config.history_table.name()))
                .ok_or_else(|| Error::Usage(format!("schema:{schema}: no history table can be named in it")))?;
            own.lock_key = None;
        }
    }
    Ok(own)
}

/// One target's outcome.
struct Done {
    exit: ExitCode,
    /// Its server's free connections, when this run read them: enough for K, or the refusal
    /// (the target was then not touched).
    server_check: Option<Result<(), String>>,
    /// The target session's server process, when it got that far.
    backend_pid: Option<i32>,
    versions: Vec<u64>,
    ms: i64,
    sqlstate: Option<String>,
    message: Option<String>,
}

impl Done {
    /// A target left alone because its server has too few free connections for K.
    fn refused(message: String) -> Done {
        Done {
            exit: ExitCode::Usage,
            server_check: None,
            backend_pid: None,
            versions: Vec::new(),
            ms: 0,
            sqlstate: None,
            message: Some(message),
        }
    }
}

/// What a target's run knows of its server's free connections.
enum ServerCheck {
    /// Nothing to read: no K, the coordination server (read when the worker joined), or a
    /// server another of this worker's targets reads.
    Known,
    /// Read them first, on the target's own session: K must be at most half of them.
    Read(u32),
    /// K was too many for them: the target is left alone.
    Refused(String),
}

/// A target's run (see [`ServerCheck`]).
async fn migrate(
    config: &Config,
    request: &FanoutRequest,
    target: &Target,
    identity: &Identity,
    shutdown: &Shutdown,
    check: ServerCheck,
) -> Done {
    let check_limit = match check {
        ServerCheck::Refused(refusal) => return Done::refused(refusal),
        ServerCheck::Read(limit) => Some(limit),
        ServerCheck::Known => None,
    };
    let started = Instant::now();
    let mut progress = Progress::default();
    let mut server_check = None;
    let result = match target_config(config, request, target) {
        Ok(own) => {
            async {
                let (session, migrations) = database::open_with_files(&own, shutdown).await?;
                if let Some(limit) = check_limit {
                    let refusal = match coord::free_connections(&session.client).await {
                        Ok(free) => {
                            let refusal = plan_refusal(limit, free, &target.server);
                            server_check = Some(refusal.clone().map_or(Ok(()), Err));
                            refusal.map(Error::Usage)
                        }
                        Err(e) => Some(Error::Coord(e)),
                    };
                    if let Some(refusal) = refusal {
                        session.close().await;
                        return Err(refusal);
                    }
                }
                database::migrate_locked(&own, session, &migrations, None, identity, &mut progress, shutdown).await
            }
            .await
        }
        Err(e) => Err(e),
    };
    let versions = progress.applied.iter().filter_map(|a| a.version).collect();
    let ms = started.elapsed().as_millis() as i64;
    match result {
        Ok(()) => Done {
            exit: ExitCode::Success,
            server_check,
            backend_pid: progress.backend_pid,
            versions,
            ms,
            sqlstate: None,
            message: None,
        },
        Err(e) => Done {
            exit: e.exit_code(),
            server_check,
            backend_pid: progress.backend_pid,
            versions,
            ms,
            sqlstate: e.file_failure().and_then(|f| f.pg.sqlstate.clone()),
            message: Some(e.to_string()),
        },
    }
}

/// Why `--max-conns-per-server limit` is refused on `server` with `free` connections free.
fn plan_refusal(limit: u32, free: i64, server: &str) -> Option<String> {
    (i64::from(limit) > free / 2).then(|| {
        format!(
            "fanout: --max-conns-per-server {limit} is more than half of the {free} free connections on {server}; lower it"
        )
    })
}

/// The canary's size: N targets, or P% of them (at least one).
fn canary_size(text: Option<&str>, total: usize) -> Result<usize, Error> {
    let Some(text) = text.map(str::trim) else { return Ok(0) };
    let bad = || Error::Usage(format!("--canary: `{text}` is not a count (5) or a share (2%)"));
    let size = match text.strip_suffix('%') {
        Some(percent) => {
            let p: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            ((total as f64) * p / 100.0).ceil() as usize
        }
        None => text.parse().map_err(|_| bad())?,
    };
    Ok(size.clamp(usize::from(total > 0), total))
}

/// Where this worker starts in the shared order: an engine's index, when there is one, spreads
/// the first pass (fewer collisions); it is never needed for correctness.
fn first_pass_offset(total: usize) -> usize {
    let index = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse::<usize>().ok());
    let size = std::env::var("AWS_BATCH_JOB_ARRAY_SIZE").ok().and_then(|s| s.trim().parse::<usize>().ok());
    match (index, size) {
        (Some(i), Some(n)) if n > 0 && total > 0 => i * total / n % total,
        (Some(i), _) if total > 0 => i.wrapping_mul(7919) % total,
        // No index: a start of its own (from the process id and the clock), so identical
        // workers do not all race for the same next target.
        _ if total > 0 => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            (std::process::id() as usize).wrapping_mul(2654435761).wrapping_add(nanos as usize) % total
        }
        _ => 0,
    }
}

/// The slots a target session may take on its server, out of `limit`: on the coordination
/// server, those not kept for the workers' coordination sessions.
fn target_slots(request: &FanoutRequest, on_coord_server: bool, limit: u32) -> std::ops::Range<u32> {
    match request.workers {
        Some(workers) if on_coord_server => workers.min(limit)..limit,
        _ => 0..limit,
    }
}

/// The slots a coordination session may take: the W kept for them when the worker count is
/// known (a late worker then always finds one), else any of the K.
fn coord_slots(request: &FanoutRequest, limit: u32) -> std::ops::Range<u32> {
    match request.workers {
        Some(workers) => 0..workers.min(limit),
        None => 0..limit,
    }
}

/// What became of a finished target's claim.
enum Settled {
    Recorded,
    Interrupted,
    Requeued,
    /// The coordination database is gone: nothing could be recorded.
    Unrecorded,
}

/// What a worker knows of a server's free connections (with K, for servers other than the
/// coordination one, read on the first target's own session).
enum ServerState {
    /// The target with this index is reading them; the server's other targets wait.
    Checking(usize),
    Fine,
    /// K is too many for them: the server's targets are recorded as refused, never touched.
    Refused(String),
}

/// A worker: the targets, the coordination session, and what it did.
struct Worker<'a> {
    config: &'a Config,
    request: &'a FanoutRequest,
    identity: &'a Identity,
    shutdown: &'a Shutdown,
    targets: &'a [Target],
    coord: &'a Coordinator,
    /// `host:port` of the coordination server.
    coord_server: &'a str,
    ids: RunIds<'a>,
    deadline: Option<Instant>,
    /// What the targets' runs are stopped by: a signal, or the deadline (which cancels the
    /// targets in flight, as SIGTERM does, and leaves them unrecorded).
    target_stop: Shutdown,
    started: Instant,
    processed: usize,
    failed: usize,
    stopped: Option<ExitCode>,
    last_progress: Instant,
    /// Servers other than the coordination one whose free connections this worker reads or
    /// has read.
    servers: HashMap<String, ServerState>,
}

impl Worker<'_> {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether a target needs nothing more from this worker: done since it started (by it or
    /// a peer), or failed in an earlier invocation of the run (tried again with
    /// `--retry-failed`). A target current from an earlier invocation is visited again: one
    /// connection, and a no-op when nothing changed.
    fn finished(&self, recorded: Option<&Recorded>) -> bool {
        match recorded {
            Some(r) if r.fresh => true,
            Some(r) if r.outcome != "success" => !self.request.retry_failed,
            _ => false,
        }
    }

    /// Works through `indices` until each is recorded in this run (by this worker or another),
    /// the deadline passes, or this worker stops taking targets.
    async fn work(&mut self, indices: &[usize]) -> Result<(), Error> {
        let mut recorded = self.coord.recorded().await?;
        let mut queue: VecDeque<(usize, u8)> = indices.iter().map(|i| (*i, 0)).collect();
        let mut in_flight = FuturesUnordered::new();
        let mut running: HashMap<usize, Instant> = HashMap::new();
        // Targets waiting for their server's free connections to be read.
        let mut deferred: Vec<(usize, u8)> = Vec::new();
        // Set when the coordination database failed a statement.
        let mut lost: Option<Error> = None;
        loop {
            // Take targets while there is room. A failed statement on the coordination
            // database stops the taking; the targets in flight still finish (below).
            let dispatched = async {
                while lost.is_none()
                    && in_flight.len() < self.request.concurrency as usize
                    && self.stopped.is_none()
                    && !self.past_deadline()
                    && self.shutdown.requested().is_none()
                {
                    let Some((index, attempt)) = queue.pop_front() else { break };
                    let target = &self.targets[index];
                    // Claims are re-entrant within this worker's session: never take one twice.
                    if running.contains_key(&index) {
                        continue;
                    }
                    let retry_now = attempt > 0;
                    if !retry_now && self.finished(recorded.get(&target.id)) {
                        continue;
                    }
                    if !self.coord.try_claim(&target.id).await? {
                        continue; // another worker has it; checked again when the queue runs dry
                    }
                    // Another worker may have finished it between the read and the claim.
                    if let Some(now) = self.coord.recorded_one(&target.id).await? {
                        recorded.insert(target.id.clone(), now);
                    }
                    if !retry_now && self.finished(recorded.get(&target.id)) {
                        self.coord.release(&target.id).await?;
                        continue;
                    }
                    match self.servers.get(&target.server) {
                        // Too few free connections for K: recorded as refused, never connected to.
                        Some(ServerState::Refused(refusal)) => {
                            let refusal = ServerCheck::Refused(refusal.clone());
                            running.insert(index, Instant::now());
                            in_flight.push(self.start(target, refusal, index, attempt, None));
                            continue;
                        }
                        // Another target is reading them: this one waits for the answer.
                        Some(ServerState::Checking(_)) => {
                            self.coord.release(&target.id).await?;
                            deferred.push((index, attempt));
                            continue;
                        }
                        _ => {}
                    }
                    // All of the server's slots taken: give the claim back and let the targets in
                    // flight (which hold slots) finish; never wait here while they cannot run.
                    let Some(slot) = self.try_slot(&target.server).await? else {
                        self.coord.release(&target.id).await?;
                        queue.push_front((index, attempt));
                        break;
                    };
                    let check = match self.request.max_conns_per_server {
                        Some(limit)
                            if target.server != self.coord_server && !self.servers.contains_key(&target.server) =>
                        {
                            self.servers.insert(target.server.clone(), ServerState::Checking(index));
                            ServerCheck::Read(limit)
                        }
                        _ => ServerCheck::Known,
                    };
                    running.insert(index, Instant::now());
                    in_flight.push(self.start(target, check, index, attempt, slot));
                }
                Ok::<(), Error>(())
            }
            .await;
            if let Err(e) = dispatched {
                self.lose_coordination(&mut lost, e);
            }
            if self.last_progress.elapsed() >= PROGRESS_EVERY {
                self.progress(&recorded, &running);
            }
            // The next target to finish; while a slow one runs, progress still comes every 10 s.
            let next = tokio::select! {
                next = in_flight.next() => next,
                () = tokio::time::sleep_until((self.last_progress + PROGRESS_EVERY).into()), if !in_flight.is_empty() => {
                    self.progress(&recorded, &running);
                    continue;
                }
            };
            let Some((index, attempt, slot, done)) = next else {
                // Nothing running here: stopped, done, or waiting for targets other workers hold.
                self.shutdown.check()?;
                if let Some(e) = lost.take() {
                    return Err(e);
                }
                if self.stopped.is_some() || self.past_deadline() {
                    return Ok(());
                }
                queue.extend(deferred.drain(..));
                if !queue.is_empty() {
                    // Waiting for a connection slot other workers hold.
                    self.shutdown.sleep(Duration::from_millis(50)).await?;
                    continue;
                }
                recorded = self.coord.recorded().await?;
                let open: Vec<usize> =
                    indices.iter().copied().filter(|i| !self.finished(recorded.get(&self.targets[*i].id))).collect();
                if open.is_empty() || self.stopped.is_some() || self.past_deadline() {
                    return Ok(());
                }
                if self.last_progress.elapsed() >= PROGRESS_EVERY {
                    self.progress(&recorded, &running);
                }
                self.shutdown.sleep(Duration::from_millis(200)).await?;
                queue.extend(open.into_iter().map(|i| (i, 0)));
                continue;
            };
            let target = &self.targets[index];
            running.remove(&index);
            if matches!(self.servers.get(&target.server), Some(ServerState::Checking(checker)) if *checker == index) {
                match &done.server_check {
                    Some(Ok(())) => self.servers.insert(target.server.clone(), ServerState::Fine),
                    Some(Err(refusal)) => {
                        tracing::error!(server = %target.server, "{refusal}");
                        self.servers.insert(target.server.clone(), ServerState::Refused(refusal.clone()))
                    }
                    // Never read (the connection failed first): the next target reads them.
                    None => self.servers.remove(&target.server),
                };
                for waiting in deferred.drain(..).rev() {
                    queue.push_front(waiting);
                }
            }
            let versions: Vec<String> = done.versions.iter().map(u64::to_string).collect();
            let settled = match lost {
                Some(_) => Settled::Unrecorded,
                None => match self.settle(target, attempt, slot, &done, &versions).await {
                    Ok(settled) => settled,
                    Err(e) => {
                        self.lose_coordination(&mut lost, e);
                        Settled::Unrecorded
                    }
                },
            };
            match settled {
                Settled::Interrupted => continue,
                Settled::Requeued => {
                    queue.push_back((index, 1));
                    continue;
                }
                Settled::Unrecorded if matches!(done.exit, ExitCode::Signal(_)) => continue,
                Settled::Recorded | Settled::Unrecorded => {}
            }
            self.processed += 1;
            let ok = done.exit == ExitCode::Success;
            if !ok {
                self.failed += 1;
            }
            tracing::info!(
                target = %target.id,
                outcome = done.exit.outcome(),
                versions = %versions.join(","),
                ms = done.ms,
                sqlstate = done.sqlstate.as_deref().unwrap_or(""),
                recorded = matches!(settled, Settled::Recorded),
                "target done"
            );
            if let Some(rate) = self.request.max_failure_rate {
                if self.processed >= FAILURE_RATE_FLOOR && (self.failed as f64) > rate * (self.processed as f64) {
                    tracing::error!(
                        failed = self.failed,
                        processed = self.processed,
                        max_failure_rate = rate,
                        "failure rate exceeded: this worker takes no more targets"
                    );
                    self.stopped = Some(ExitCode::FailureRateExceeded);
                }
            }
            recorded.insert(
                target.id.clone(),
                Recorded {
                    target: target.id.clone(),
                    outcome: done.exit.outcome().into(),
                    exit_code: done.exit.code(),
                    worker: String::new(),
                    fresh: true,
                },
            );
        }
    }

    /// After a target's run: its connection slot and claim given back, and its outcome
    /// recorded, unless it was interrupted (left for the next run) or is tried once more.
    async fn settle(
        &self,
        target: &Target,
        attempt: u8,
        slot: Option<i32>,
        done: &Done,
        versions: &[String],
    ) -> Result<Settled, Error> {
        if let Some(slot) = slot {
            // On the coordination server, the slot is free once the backend is gone.
            if let (Some(pid), true) = (done.backend_pid, target.server == self.coord_server) {
                self.coord.wait_gone(pid).await?;
            }
            self.coord.release_slot(&target.server, slot).await?;
        }
        // Stopped by a signal, rolled back and unlocked by its own run: neither done nor the
        // target's failure, so it is left to a peer or the next run, unrecorded.
        if matches!(done.exit, ExitCode::Signal(_)) {
            match self.shutdown.requested() {
                None if self.past_deadline() => {
                    tracing::warn!(target = %target.id, "the deadline passed: cancelled, left for the next run")
                }
                _ => tracing::warn!(target = %target.id, "interrupted: left for the next run"),
            }
            self.coord.release(&target.id).await?;
            return Ok(Settled::Interrupted);
        }
        // lock_timeout exhaustion (or another run's lock) is the live workload's doing:
        // one more try, at the end of the queue.
        if matches!(done.exit, ExitCode::LockRetries | ExitCode::LockWait) && attempt == 0 {
            tracing::warn!(target = %target.id, outcome = done.exit.outcome(), "requeued once");
            self.coord.release(&target.id).await?;
            return Ok(Settled::Requeued);
        }
        self.coord
            .record(
                &target.id,
                done.exit.outcome(),
                done.exit.code(),
                &versions.join(","),
                done.ms,
                done.sqlstate.as_deref(),
                done.message.as_deref(),
            )
            .await?;
        self.coord.release(&target.id).await?;
        Ok(Settled::Recorded)
    }

    /// The coordination database failed a statement: this worker's claims went with its
    /// session, so it takes no more targets; those in flight finish (each under its own lock),
    /// unrecorded, and the next run visits them again.
    fn lose_coordination(&self, lost: &mut Option<Error>, error: Error) {
        if lost.is_none() {
            tracing::error!(
                error = %error,
                "coordination database lost: finishing the targets in flight, taking no more"
            );
            *lost = Some(error);
        }
    }

    /// A target's run, as a future that says which target (and slot) it was.
    fn start<'t>(
        &self,
        target: &'t Target,
        check: ServerCheck,
        index: usize,
        attempt: u8,
        slot: Option<i32>,
    ) -> impl std::future::Future<Output = (usize, u8, Option<i32>, Done)> + 't
    where
        Self: 't,
    {
        let (config, request, identity, stop) = (self.config, self.request, self.identity, self.target_stop.clone());
        let span = tracing::info_span!("target", run_id = %self.ids.run_id, targets_hash = %self.ids.hash, target = %target.id);
        async move { (index, attempt, slot, migrate(config, request, target, identity, &stop, check).await) }
            .instrument(span)
    }

    /// A connection slot on `server`: `Some(None)` without a limit, `None` when all are taken.
    async fn try_slot(&self, server: &str) -> Result<Option<Option<i32>>, Error> {
        let Some(limit) = self.request.max_conns_per_server else { return Ok(Some(None)) };
        let slots = target_slots(self.request, server == self.coord_server, limit);
        Ok(self.coord.try_slot(server, slots).await?.map(Some))
    }

    fn progress(&mut self, recorded: &HashMap<String, Recorded>, running: &HashMap<usize, Instant>) {
        self.last_progress = Instant::now();
        let total = self.targets.len();
        let done = self.targets.iter().filter(|t| recorded.contains_key(&t.id)).count();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let eta_s = if rate > 0.0 { ((total - done) as f64 / rate).round() as u64 } else { 0 };
        let slowest = running
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(i, at)| (self.targets[*i].id.as_str(), at.elapsed().as_millis() as u64));
        tracing::info!(
            done,
            total,
            rate_per_s = (rate * 10.0).round() / 10.0,
            eta_s,
            slowest = slowest.map(|(id, _)| id).unwrap_or(""),
            slowest_ms = slowest.map(|(_, ms)| ms).unwrap_or(0),
            "fanout progress"
        );
    }
}

/// `fanout up`.
pub async fn up(
    config: &Config,
    request: &FanoutRequest,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let mut targets = load(config, request, shutdown).await?;
    let hash = targets::list_hash(&targets);
    let files = super::check::load(&config.dir)?;
    let files_hash = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for file in &files {
            hasher.update(file.checksum.as_bytes());
        }
        hasher.finalize()[..4].iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let run_id = request.run_id.clone().unwrap_or_else(|| format!("run-{hash}-{files_hash}"));
    let worker_name = format!("{}:{}", identity.applied_by, std::process::id());
    tracing::info!(targets = targets.len(), targets_hash = %hash, run_id = %run_id, worker = %worker_name, "fanout starts");
    // Every line of this worker names the run and the target list (and, inside a target's
    // run, the target: lines of targets in flight at once interleave).
    let span = tracing::info_span!("fanout", run_id = %run_id, targets_hash = %hash);
    let ids = RunIds { run_id: &run_id, hash: &hash, worker_name: &worker_name };
    join_and_work(config, request, identity, progress, shutdown, &mut targets, ids).instrument(span).await
}

/// The run's names, for every line it writes.
#[derive(Clone, Copy)]
struct RunIds<'a> {
    run_id: &'a str,
    hash: &'a str,
    worker_name: &'a str,
}

/// Joins the run through the coordination database, works through the targets, and sums up.
async fn join_and_work(
    config: &Config,
    request: &FanoutRequest,
    identity: &Identity,
    progress: &mut Progress,
    shutdown: &Shutdown,
    targets: &mut [Target],
    ids: RunIds<'_>,
) -> Result<(), Error> {
    let RunIds { run_id, hash, worker_name } = ids;
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
        .ok_or_else(|| Error::Usage("fanout: no coordination database: set --coord-url or DATABASE_URL".into()))?;
    let mut coord_config = config.clone();
    coord_config.connection = Some(spec(request, &coord_url)?);
    let mut coord_server = targets::server_of(&coord_url).unwrap_or_default();
    if request.max_conns_per_server.is_some() {
        // Each server counted once, however the lines spell it.
        targets::unify_servers(targets, &mut [&mut coord_server]).await;
    }
    let targets: &[Target] = targets;
    // The coordination session is one of migrun's connections to its server too, so it holds
    // a slot. Without a free one, the session is closed at once (before it joins the run)
    // while this worker waits: an idle session must not push the server past K. With the
    // worker count known, W slots are kept for these sessions and that never happens.
    let slot_deadline = Instant::now() + request.deadline.unwrap_or(Duration::from_secs(600));
    // The slot is held until the session ends, never given back while it is open.
    let mut coord = loop {
        let session = database::open(&coord_config, shutdown).await?;
        let coord = Coordinator::new(session.client, run_id, worker_name);
        let Some(limit) = request.max_conns_per_server else { break coord };
        if coord.try_slot(&coord_server, coord_slots(request, limit)).await?.is_some() {
            break coord;
        }
        drop(coord);
        if Instant::now() >= slot_deadline {
            return Err(Error::Fanout(
                ExitCode::Incomplete,
                format!(
                    "fanout: no connection slot free on {coord_server} (--max-conns-per-server {limit}) before the deadline; safe to retry"
                ),
            ));
        }
        shutdown.sleep(Duration::from_millis(200 + u64::from(std::process::id() % 100))).await?;
    };
    if let Some(limit) = request.max_conns_per_server {
        if let Some(refusal) = plan_refusal(limit, coord.free_connections().await?, &coord_server) {
            return Err(Error::Usage(refusal));
        }
    }
    coord.join().await?;

    let order = targets::stable_order(targets);
    let canary = if request.only.is_some() { 0 } else { canary_size(request.canary.as_deref(), targets.len())? };
    let started = Instant::now();
    let mut worker = Worker {
        config,
        request,
        identity,
        shutdown,
        targets,
        coord: &coord,
        coord_server: &coord_server,
        ids,
        deadline: request.deadline.map(|d| started + d),
        target_stop: shutdown.until(request.deadline.map(|d| started + d)),
        started,
        processed: 0,
        failed: 0,
        stopped: None,
        last_progress: started,
        servers: HashMap::new(),
    };
    let mut canary_failed = false;
    if canary > 0 {
        worker.work(&order[..canary]).await?;
        let recorded = coord.recorded().await?;
        canary_failed =
            order[..canary].iter().any(|i| recorded.get(&targets[*i].id).is_some_and(|r| r.outcome != "success"));
    }
    if !canary_failed {
        let rest = &order[canary..];
        let offset = first_pass_offset(rest.len());
        let rotated: Vec<usize> = rest[offset..].iter().chain(&rest[..offset]).copied().collect();
        worker.work(&rotated).await?;
    }

    let recorded = coord.recorded().await?;
    let succeeded = targets.iter().filter(|t| recorded.get(&t.id).is_some_and(|r| r.outcome == "success")).count();
    let failed: Vec<&Recorded> =
        targets.iter().filter_map(|t| recorded.get(&t.id)).filter(|r| r.outcome != "success").collect();
    let pending = targets.len() - succeeded - failed.len();
    progress.fanout = Some(json!({
        "run_id": run_id,
        "targets_hash": hash,
        "targets": targets.len(),
        "current": succeeded,
        "failed": failed.len(),
        "pending": pending,
        "this_worker": { "processed": worker.processed, "failed": worker.failed },
        "failed_targets": failed.iter().take(20).map(|r| json!({"target": r.target, "outcome": r.outcome})).collect::<Vec<_>>(),
    }));
    progress.targets = Some(json!(targets
        .iter()
        .map(|t| match recorded.get(&t.id) {
            Some(r) => json!({"target": t.id, "outcome": r.outcome, "exit_code": r.exit_code, "worker": r.worker}),
            None => json!({"target": t.id, "outcome": "pending"}),
        })
        .collect::<Vec<_>>()));
    let summary =
        format!("{succeeded}/{} current, {} failed, {pending} pending (run {run_id})", targets.len(), failed.len());
    if canary_failed {
        return Err(Error::Fanout(
            ExitCode::CanaryFailed,
            format!("fanout: a canary target failed; no other target was touched: {summary}"),
        ));
    }
    if let Some(stop) = worker.stopped {
        return Err(Error::Fanout(
            stop,
            format!(
                "fanout: this worker stopped taking targets, over {} of its {} failed: {summary}",
                worker.failed, worker.processed
            ),
        ));
    }
    if pending > 0 {
        return Err(Error::Fanout(
            ExitCode::Incomplete,
            format!("fanout: incomplete (deadline, or targets still claimed): {summary}; safe to retry"),
        ));
    }
    if !failed.is_empty() {
        let listed: Vec<&str> = failed.iter().take(10).map(|r| r.target.as_str()).collect();
        return Err(Error::Fanout(
            ExitCode::PartialFailure,
            format!("fanout: {summary}; failed: {}", listed.join(", ")),
        ));
    }
    tracing::info!(current = succeeded, "fanout: every target is current");
    Ok(())
}

/// `fanout status`: every target's state, read only; exit 13 unless every one is current.
pub async fn status(config: &Config, request: &FanoutRequest, shutdown: &Shutdown) -> Result<(), Error> {
    let targets = load(config, request, shutdown).await?;
    let mut states = Vec::with_capacity(targets.len());
    let mut stream = futures_util::stream::iter(targets.iter().map(|target| async move {
        let state = match target_config(config, request, target) {
            Ok(own) => match database::pending(&own, shutdown).await {
                Ok(0) => ("current".to_string(), None),
                Ok(n) => (format!("{n} pending"), None),
                Err(e) => (e.exit_code().outcome().to_string(), Some(e.to_string())),
            },
            Err(e) => (e.exit_code().outcome().to_string(), Some(e.to_string())),
        };
        (target.id.clone(), state)
    }))
    .buffered(request.concurrency.max(1) as usize);
    while let Some((id, (state, detail))) = stream.next().await {
        states.push((id, state, detail));
    }
    let behind = states.iter().filter(|(_, s, _)| s != "current").count();
    let text = if request.json {
        let list: Vec<_> = states.iter().map(|(id, s, d)| json!({"target": id, "state": s, "detail": d})).collect();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({"targets": list, "current": states.len() - behind, "behind": behind}))
                .unwrap_or_default()
        )
    } else {
        let mut out = String::new();
        for (id, state, detail) in &states {
            out.push_str(&format!(
                "{id}  {state}{}\n",
                detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ));
        }
        out.push_str(&format!("{} of {} current\n", states.len() - behind, states.len()));
        out
    };
    print_stdout(&text)?;
    match behind {
        0 => Ok(()),
        n => Err(Error::Fanout(
            ExitCode::PartialFailure,
            format!("fanout status: {n} of {} target(s) not current", states.len()),
        )),
    }
}

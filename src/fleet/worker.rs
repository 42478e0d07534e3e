//! One worker of a fan-out run. It takes targets through claims in the coordination database,
//! runs up to C at once, each within its server's connection slots, and settles each outcome:
//! recorded, tried once more (a lock the live workload held), or left for the next run (a
//! signal, the deadline). It stops taking targets on a signal, at the deadline, past the
//! failure rate, or when the coordination database fails. The database sits behind two
//! traits ([`TargetRunner`], [`Coordination`]) so that the loop is tested with fakes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::capacity::{Capacity, Gate, ServerCheck, Servers};
use super::ledger::{CoordError, Recorded, TargetDone};
use super::summary::Summary;
use super::targets::{self, Target};
use crate::exit::ExitCode;
use crate::signals::{Interrupted, Shutdown};

/// How often a worker says how far the run is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// The failure rate is judged over at least this many of a worker's targets.
const FAILURE_RATE_FLOOR: usize = 20;

/// Brings one target up to date.
#[allow(async_fn_in_trait)] // used within the crate, on one thread: no Send bound to state
pub trait TargetRunner {
    /// Runs `target` under its own lock, stopping as on SIGTERM when `stop` fires. With
    /// [`ServerCheck::Read`], first reads the server's free connections on the target's own
    /// session; with [`ServerCheck::Refused`] it is never called.
    async fn run(&self, target: &Target, check: ServerCheck, stop: &Shutdown) -> TargetDone;
}

/// The run table and the claims workers share.
#[allow(async_fn_in_trait)]
pub trait Coordination {
    /// Every outcome recorded in this run so far, by target.
    async fn recorded(&self) -> Result<HashMap<String, Recorded>, CoordError>;
    /// One target's recorded outcome (read after each claim).
    async fn recorded_one(&self, target: &str) -> Result<Option<Recorded>, CoordError>;
    /// Claims `target`: true when no other worker holds it. A worker's claims end with it.
    async fn try_claim(&self, target: &str) -> Result<bool, CoordError>;
    /// Gives a claim back.
    async fn release(&self, target: &str) -> Result<(), CoordError>;
    /// Takes one of `server`'s connection slots numbered in `slots`; `None` when all are taken.
    async fn try_slot(&self, server: &str, slots: Range<u32>) -> Result<Option<i32>, CoordError>;
    /// Gives a connection slot back.
    async fn release_slot(&self, server: &str, slot: i32) -> Result<(), CoordError>;
    /// Records `target`'s outcome (a later attempt overwrites an earlier one).
    async fn record(&self, target: &str, done: &TargetDone) -> Result<(), CoordError>;
    /// Waits until server process `pid` on the coordination server is gone.
    async fn wait_gone(&self, pid: i32) -> Result<(), CoordError>;
}

/// `--canary`: N targets, or P% of them, migrated first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Canary {
    None,
    Count(usize),
    Percent(f64),
}

impl Canary {
    /// `5` or `2%`; `None` when the text is neither.
    pub fn parse(text: &str) -> Option<Canary> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(percent) => {
                let p: f64 = percent.trim().parse().ok()?;
                (0.0..=100.0).contains(&p).then_some(Canary::Percent(p))
            }
            None => text.parse().ok().map(Canary::Count),
        }
    }

    /// How many of `total` targets: at least one when asked for any, at most all.
    pub fn size(self, total: usize) -> usize {
        let size = match self {
            Canary::None => return 0,
            Canary::Count(n) => n,
            Canary::Percent(p) => ((total as f64) * p / 100.0).ceil() as usize,
        };
        size.clamp(usize::from(total > 0), total)
    }
}

/// Where this worker starts in the shared order: an engine's index spreads the first pass
/// (fewer collisions); it is never needed for correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `JOB_COMPLETION_INDEX` / `AWS_BATCH_JOB_ARRAY_INDEX`, and the array's size when known.
    Index { index: usize, size: Option<usize> },
    /// No index: a start of its own (from the process id and the clock), so identical
    /// workers do not all race for the same next target.
    Seed(usize),
}

impl Start {
    /// The offset into a list of `total` targets.
    pub fn offset(self, total: usize) -> usize {
        if total == 0 {
            return 0;
        }
        match self {
            Start::Index { index, size: Some(n) } if n > 0 => index * total / n % total,
            Start::Index { index, .. } => index.wrapping_mul(7919) % total,
            Start::Seed(seed) => seed % total,
        }
    }
}

/// How a worker works through the targets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Targets run at once (C).
    pub concurrency: usize,
    pub capacity: Capacity,
    pub canary: Canary,
    pub max_failure_rate: Option<f64>,
    /// Take no new target after this long; cancel those in flight.
    pub deadline: Option<Duration>,
    /// Run targets this run recorded as failed again.
    pub retry_failed: bool,
    pub start: Start,
}

impl Default for Settings {
    /// `fanout up` without flags: four at once, no limits, no canary, no deadline.
    fn default() -> Settings {
        Settings {
            concurrency: 4,
            capacity: Capacity::default(),
            canary: Canary::None,
            max_failure_rate: None,
            deadline: None,
            retry_failed: false,
            start: Start::Seed(0),
        }
    }
}

/// A stop of the worker's own: a signal, or the coordination database failing.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

/// Works through `targets` (canary first, when asked) and sums up. `coord_server` is the
/// coordination server's `host:port`, its capacity already checked.
pub async fn work_through<R: TargetRunner, C: Coordination>(
    targets: &[Target],
    coord: &C,
    coord_server: &str,
    runner: &R,
    settings: &Settings,
    shutdown: &Shutdown,
) -> Result<Summary, WorkError> {
    let started = Instant::now();
    let deadline = settings.deadline.map(|d| started + d);
    let mut worker = Worker {
        targets,
        coord,
        coord_server,
        runner,
        settings,
        shutdown,
        deadline,
        target_stop: shutdown.until(deadline),
        started,
        processed: 0,
        failed: 0,
        rate_stopped: false,
        last_progress: started,
        servers: Servers::default(),
    };
    let order = targets::stable_order(targets);
    let canary = settings.canary.size(targets.len());
    let mut canary_failed = false;
    if canary > 0 {
        worker.work(&order[..canary]).await?;
        let recorded = coord.recorded().await?;
        canary_failed = order[..canary].iter().any(|i| recorded.get(&targets[*i].id).is_some_and(|r| !r.succeeded()));
    }
    if !canary_failed {
        let rest = &order[canary..];
        let offset = settings.start.offset(rest.len());
        let rotated: Vec<usize> = rest[offset..].iter().chain(&rest[..offset]).copied().collect();
        worker.work(&rotated).await?;
    }
    let mut summary = Summary::of(targets, &coord.recorded().await?);
    summary.processed = worker.processed;
    summary.failed_here = worker.failed;
    summary.canary_failed = canary_failed;
    summary.rate_stopped = worker.rate_stopped;
    Ok(summary)
}

/// A target's run as it finished: which target, its attempt and slot, and how it ended.
struct Finished {
    index: usize,
    attempt: u8,
    slot: Option<i32>,
    done: TargetDone,
}

type Running<'a> = Pin<Box<dyn Future<Output = Finished> + 'a>>;

/// One pass over a list of targets: what is queued, running, waiting, and known recorded.
struct Pass<'a> {
    indices: Vec<usize>,
    recorded: HashMap<String, Recorded>,
    /// Target indices and their attempt (0, or 1 when tried once more).
    queue: VecDeque<(usize, u8)>,
    in_flight: FuturesUnordered<Running<'a>>,
    running: HashMap<usize, Instant>,
    /// Targets waiting for their server's free connections to be read.
    deferred: Vec<(usize, u8)>,
    /// Set when the coordination database failed a statement.
    lost: Option<WorkError>,
}

/// What became of a finished target's claim.
enum Settled {
    Recorded,
    Interrupted,
    Requeued,
    /// The coordination database is gone: nothing could be recorded.
    Unrecorded,
}

struct Worker<'a, R, C> {
    targets: &'a [Target],
    coord: &'a C,
    coord_server: &'a str,
    runner: &'a R,
    settings: &'a Settings,
    shutdown: &'a Shutdown,
    deadline: Option<Instant>,
    /// What the targets' runs are stopped by: a signal, or the deadline (which cancels the
    /// targets in flight, as SIGTERM does, and leaves them unrecorded).
    target_stop: Shutdown,
    started: Instant,
    processed: usize,
    failed: usize,
    rate_stopped: bool,
    last_progress: Instant,
    servers: Servers,
}

impl<'a, R: TargetRunner, C: Coordination> Worker<'a, R, C> {
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
            Some(r) if !r.succeeded() => !self.settings.retry_failed,
            _ => false,
        }
    }

    fn taking(&self, pass: &Pass) -> bool {
        pass.lost.is_none()
            && pass.in_flight.len() < self.settings.concurrency
            && !self.rate_stopped
            && !self.past_deadline()
            && self.shutdown.requested().is_none()
    }

    /// Works through `indices` until each is recorded in this run (by this worker or another),
    /// the deadline passes, or this worker stops taking targets.
    async fn work(&mut self, indices: &[usize]) -> Result<(), WorkError> {
        let mut pass = Pass {
            indices: indices.to_vec(),
            recorded: self.coord.recorded().await?,
            queue: indices.iter().map(|i| (*i, 0)).collect(),
            in_flight: FuturesUnordered::new(),
            running: HashMap::new(),
            deferred: Vec::new(),
            lost: None,
        };
        loop {
            // A failed statement on the coordination database stops the taking; the targets
            // in flight still finish (below).
            if let Err(e) = self.take(&mut pass).await {
                lose_coordination(&mut pass.lost, e);
            }
            if self.last_progress.elapsed() >= PROGRESS_EVERY {
                self.progress(&pass);
            }
            // The next target to finish; while a slow one runs, progress still comes every 10 s.
            let next = tokio::select! {
                next = pass.in_flight.next() => next,
                () = tokio::time::sleep_until((self.last_progress + PROGRESS_EVERY).into()), if !pass.in_flight.is_empty() => {
                    self.progress(&pass);
                    continue;
                }
            };
            match next {
                Some(finished) => self.finish(&mut pass, finished).await,
                None if self.idle(&mut pass).await? => return Ok(()),
                None => {}
            }
        }
    }

    /// Takes targets while there is room.
    async fn take(&mut self, pass: &mut Pass<'a>) -> Result<(), WorkError> {
        while self.taking(pass) {
            let Some((index, attempt)) = pass.queue.pop_front() else { break };
            let target = &self.targets[index];
            // Claims are re-entrant within this worker's session: never take one twice.
            if pass.running.contains_key(&index) {
                continue;
            }
            let retry_now = attempt > 0;
            if !retry_now && self.finished(pass.recorded.get(&target.id)) {
                continue;
            }
            if !self.coord.try_claim(&target.id).await? {
                continue; // another worker has it; checked again when the queue runs dry
            }
            // Another worker may have finished it between the read and the claim.
            if let Some(now) = self.coord.recorded_one(&target.id).await? {
                pass.recorded.insert(target.id.clone(), now);
            }
            if !retry_now && self.finished(pass.recorded.get(&target.id)) {
                self.coord.release(&target.id).await?;
                continue;
            }
            match self.servers.gate(&target.server) {
                Gate::Refused(refusal) => {
                    self.start(pass, index, attempt, None, ServerCheck::Refused(refusal));
                    continue;
                }
                Gate::Wait => {
                    self.coord.release(&target.id).await?;
                    pass.deferred.push((index, attempt));
                    continue;
                }
                Gate::Open => {}
            }
            // All of the server's slots taken: give the claim back and let the targets in
            // flight (which hold slots) finish; never wait here while they cannot run.
            let Some(slot) = self.try_slot(&target.server).await? else {
                self.coord.release(&target.id).await?;
                pass.queue.push_front((index, attempt));
                break;
            };
            let check = self.servers.check_for(&self.settings.capacity, &target.server, self.coord_server, index);
            self.start(pass, index, attempt, slot, check);
        }
        Ok(())
    }

    /// Nothing running here: stopped, done, or waiting for targets other workers hold. True
    /// when the pass is over.
    async fn idle(&mut self, pass: &mut Pass<'a>) -> Result<bool, WorkError> {
        self.shutdown.check()?;
        if let Some(e) = pass.lost.take() {
            return Err(e);
        }
        if self.rate_stopped || self.past_deadline() {
            return Ok(true);
        }
        pass.queue.extend(pass.deferred.drain(..));
        if !pass.queue.is_empty() {
            // Waiting for a connection slot other workers hold.
            self.shutdown.sleep(Duration::from_millis(50)).await?;
            return Ok(false);
        }
        pass.recorded = self.coord.recorded().await?;
        let open: Vec<usize> =
            pass.indices.iter().copied().filter(|i| !self.finished(pass.recorded.get(&self.targets[*i].id))).collect();
        if open.is_empty() {
            return Ok(true);
        }
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.progress(pass);
        }
        self.shutdown.sleep(Duration::from_millis(200)).await?;
        pass.queue.extend(open.into_iter().map(|i| (i, 0)));
        Ok(false)
    }

    /// A target's run has ended: its server's check taken in, its claim settled, and the
    /// counts (and the failure rate) brought up to date.
    async fn finish(&mut self, pass: &mut Pass<'a>, finished: Finished) {
        let Finished { index, attempt, slot, done } = finished;
        let target = &self.targets[index];
        pass.running.remove(&index);
        if self.servers.settle(&target.server, index, &done.server_check) {
            for waiting in pass.deferred.drain(..).rev() {
                pass.queue.push_front(waiting);
            }
        }
        let settled = match pass.lost {
            Some(_) => Settled::Unrecorded,
            None => match self.settle(target, attempt, slot, &done).await {
                Ok(settled) => settled,
                Err(e) => {
                    lose_coordination(&mut pass.lost, e.into());
                    Settled::Unrecorded
                }
            },
        };
        match settled {
            Settled::Interrupted => return,
            Settled::Requeued => {
                pass.queue.push_back((index, 1));
                return;
            }
            Settled::Unrecorded if matches!(done.exit, ExitCode::Signal(_)) => return,
            Settled::Recorded | Settled::Unrecorded => {}
        }
        self.processed += 1;
        if done.exit != ExitCode::Success {
            self.failed += 1;
        }
        tracing::info!(
            target = %target.id,
            outcome = done.exit.outcome(),
            versions = %done.versions_text(),
            ms = done.ms,
            sqlstate = done.sqlstate.as_deref().unwrap_or(""),
            recorded = matches!(settled, Settled::Recorded),
            "target done"
        );
        self.judge_failure_rate();
        let recorded = Recorded { target: target.id.clone(), exit: done.exit, worker: String::new(), fresh: true };
        pass.recorded.insert(target.id.clone(), recorded);
    }

    fn judge_failure_rate(&mut self) {
        let Some(rate) = self.settings.max_failure_rate else { return };
        if self.processed >= FAILURE_RATE_FLOOR && (self.failed as f64) > rate * (self.processed as f64) {
            tracing::error!(
                failed = self.failed,
                processed = self.processed,
                max_failure_rate = rate,
                "failure rate exceeded: this worker takes no more targets"
            );
            self.rate_stopped = true;
        }
    }

    /// After a target's run: its connection slot and claim given back, and its outcome
    /// recorded, unless it was interrupted (left for the next run) or is tried once more.
    async fn settle(
        &self,
        target: &Target,
        attempt: u8,
        slot: Option<i32>,
        done: &TargetDone,
    ) -> Result<Settled, CoordError> {
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
        self.coord.record(&target.id, done).await?;
        self.coord.release(&target.id).await?;
        Ok(Settled::Recorded)
    }

    /// Starts a target's run, as a future that says which target (and slot) it was.
    fn start(&self, pass: &mut Pass<'a>, index: usize, attempt: u8, slot: Option<i32>, check: ServerCheck) {
        let (runner, target, stop) = (self.runner, &self.targets[index], self.target_stop.clone());
        pass.running.insert(index, Instant::now());
        pass.in_flight.push(Box::pin(async move {
            let done = match check {
                ServerCheck::Refused(refusal) => TargetDone::refused(&refusal),
                check => runner.run(target, check, &stop).await,
            };
            Finished { index, attempt, slot, done }
        }));
    }

    /// A connection slot on `server`: `Some(None)` without a limit, `None` when all are taken.
    async fn try_slot(&self, server: &str) -> Result<Option<Option<i32>>, CoordError> {
        let Some(slots) = self.settings.capacity.target_slots(server == self.coord_server) else {
            return Ok(Some(None));
        };
        Ok(self.coord.try_slot(server, slots).await?.map(Some))
    }

    fn progress(&mut self, pass: &Pass) {
        self.last_progress = Instant::now();
        let total = self.targets.len();
        let done = self.targets.iter().filter(|t| pass.recorded.contains_key(&t.id)).count();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let eta_s = if rate > 0.0 { ((total - done) as f64 / rate).round() as u64 } else { 0 };
        let slowest = pass
            .running
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

/// The coordination database failed a statement: this worker's claims went with its
/// session, so it takes no more targets; those in flight finish (each under its own lock),
/// unrecorded, and the next run visits them again.
fn lose_coordination(lost: &mut Option<WorkError>, error: WorkError) {
    if lost.is_none() {
        tracing::error!(error = %error, "coordination database lost: finishing the targets in flight, taking no more");
        *lost = Some(error);
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

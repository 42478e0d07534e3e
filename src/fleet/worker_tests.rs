//! The fan-out loop with a coordination table and targets in memory: workers share one table
//! as the real ones share one database, each through a session whose claims end with it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::*;
use crate::db::failure::PgFailure;
use crate::fleet::summary::Ending;
use crate::fleet::targets::TargetKind;

/// The coordination database: claims and slots by session, and the run table.
#[derive(Default)]
struct Table {
    claims: HashMap<String, usize>,
    slots: HashMap<(String, i32), usize>,
    rows: HashMap<String, Recorded>,
    /// Record statements that succeed before every later one fails (a lost database).
    records_left: Option<usize>,
}

/// One worker's coordination session.
struct Session {
    table: Rc<RefCell<Table>>,
    id: usize,
}

impl Session {
    fn open(table: &Rc<RefCell<Table>>, id: usize) -> Session {
        Session { table: Rc::clone(table), id }
    }
}

/// A session that ends gives up its advisory locks, as Postgres does.
impl Drop for Session {
    fn drop(&mut self) {
        let mut table = self.table.borrow_mut();
        table.claims.retain(|_, s| *s != self.id);
        table.slots.retain(|_, s| *s != self.id);
    }
}

impl Coordination for Session {
    async fn recorded(&self) -> Result<HashMap<String, Recorded>, CoordError> {
        Ok(self.table.borrow().rows.clone())
    }

    async fn recorded_one(&self, target: &str) -> Result<Option<Recorded>, CoordError> {
        Ok(self.table.borrow().rows.get(target).cloned())
    }

    async fn try_claim(&self, target: &str) -> Result<bool, CoordError> {
        // A round trip: the other workers run meanwhile.
        tokio::task::yield_now().await;
        let mut table = self.table.borrow_mut();
        match table.claims.get(target) {
            Some(holder) if *holder != self.id => Ok(false),
            _ => {
                table.claims.insert(target.to_string(), self.id);
                Ok(true)
            }
        }
    }

    async fn release(&self, target: &str) -> Result<(), CoordError> {
        let mut table = self.table.borrow_mut();
        if table.claims.get(target) == Some(&self.id) {
            table.claims.remove(target);
        }
        Ok(())
    }

    async fn try_slot(&self, server: &str, slots: Range<u32>) -> Result<Option<i32>, CoordError> {
        let mut table = self.table.borrow_mut();
        let free = slots.map(|n| n as i32).find(|n| !table.slots.contains_key(&(server.to_string(), *n)));
        if let Some(n) = free {
            table.slots.insert((server.to_string(), n), self.id);
        }
        Ok(free)
    }

    async fn release_slot(&self, server: &str, slot: i32) -> Result<(), CoordError> {
        self.table.borrow_mut().slots.remove(&(server.to_string(), slot));
        Ok(())
    }

    async fn record(&self, target: &str, done: &TargetDone) -> Result<(), CoordError> {
        let mut table = self.table.borrow_mut();
        match &mut table.records_left {
            Some(0) => {
                return Err(CoordError { action: "record an outcome", failure: PgFailure::other("connection closed") })
            }
            Some(n) => *n -= 1,
            None => {}
        }
        let row =
            Recorded { target: target.to_string(), exit: done.exit, worker: format!("w{}", self.id), fresh: true };
        table.rows.insert(target.to_string(), row);
        Ok(())
    }

    async fn wait_gone(&self, _pid: i32) -> Result<(), CoordError> {
        Ok(())
    }
}

/// What a run does at its start, once.
type AtStart = RefCell<Option<(usize, Box<dyn FnOnce()>)>>;

/// Targets that end as scripted, and what they did.
#[derive(Default)]
struct Runner {
    /// The exit of each attempt, by target; success when the script has no more.
    script: HashMap<String, Vec<ExitCode>>,
    /// Every target fails this way (unless scripted).
    all: Option<ExitCode>,
    /// Targets whose run lasts until it is stopped (a long migration).
    hang: HashSet<String>,
    /// Runs that never end, not even when stopped: their worker dies with them.
    stuck: HashSet<String>,
    /// At the start of the Nth run (from 1): the run fires this and then lasts until stopped.
    at_start: AtStart,
    starts: Cell<usize>,
    attempts: RefCell<HashMap<String, usize>>,
    applied: RefCell<HashMap<String, usize>>,
    /// Most runs in flight at once.
    peak: Cell<usize>,
    now: Cell<usize>,
}

impl TargetRunner for Runner {
    async fn run(&self, target: &Target, _check: ServerCheck, stop: &Shutdown) -> TargetDone {
        let id = target.id.clone();
        let attempt = {
            let mut attempts = self.attempts.borrow_mut();
            let n = attempts.entry(id.clone()).or_default();
            *n += 1;
            *n - 1
        };
        self.starts.set(self.starts.get() + 1);
        self.now.set(self.now.get() + 1);
        self.peak.set(self.peak.get().max(self.now.get()));
        let fire = {
            let mut at_start = self.at_start.borrow_mut();
            match at_start.take() {
                Some((n, fire)) if n == self.starts.get() => Some(fire),
                other => {
                    *at_start = other;
                    None
                }
            }
        };
        let hangs = fire.is_some() || self.hang.contains(&id);
        if let Some(fire) = fire {
            fire();
        }
        if self.stuck.contains(&id) {
            std::future::pending::<()>().await;
        }
        let exit = if hangs {
            ExitCode::Signal(stop.wait().await.signal)
        } else {
            tokio::task::yield_now().await;
            let scripted = self.script.get(&id).and_then(|s| s.get(attempt)).copied();
            scripted.or(self.all).unwrap_or(ExitCode::Success)
        };
        self.now.set(self.now.get() - 1);
        if exit == ExitCode::Success {
            *self.applied.borrow_mut().entry(id).or_default() += 1;
        }
        TargetDone { versions: vec![1], ..TargetDone::ended(exit, None) }
    }
}

fn targets(n: usize) -> Vec<Target> {
    (0..n)
        .map(|i| Target {
            id: format!("db{}:5432/t{i}", i % 3),
            kind: TargetKind::Database(format!("postgres://db{}/t{i}", i % 3)),
            server: format!("db{}:5432", i % 3),
        })
        .collect()
}

fn settings() -> Settings {
    Settings { concurrency: 3, ..Settings::default() }
}

fn exits(table: &Rc<RefCell<Table>>) -> HashMap<String, ExitCode> {
    table.borrow().rows.iter().map(|(k, r)| (k.clone(), r.exit)).collect()
}

fn never() -> Shutdown {
    Shutdown::manual().1
}

#[tokio::test]
async fn workers_share_the_targets_through_claims_and_apply_each_once() {
    let list = targets(40);
    let table = Rc::new(RefCell::new(Table::default()));
    let (a, b, c) = (Session::open(&table, 1), Session::open(&table, 2), Session::open(&table, 3));
    let runner = Runner::default();
    let stop = never();
    let (one, two, three) = (
        Settings { start: Start::Index { index: 0, size: Some(3) }, ..settings() },
        Settings { start: Start::Index { index: 1, size: Some(3) }, ..settings() },
        Settings { start: Start::Seed(7), ..settings() },
    );
    let (ra, rb, rc) = tokio::join!(
        work_through(&list, &a, "coord:5432", &runner, &one, &stop),
        work_through(&list, &b, "coord:5432", &runner, &two, &stop),
        work_through(&list, &c, "coord:5432", &runner, &three, &stop),
    );
    for summary in [ra, rb, rc] {
        assert_eq!(summary.expect("a worker finishes").ending("r"), Ok(()));
    }
    let applied = runner.applied.borrow();
    assert_eq!(applied.len(), 40, "every target applied");
    assert!(applied.values().all(|n| *n == 1), "each once: {applied:?}");
    let workers: HashSet<String> = table.borrow().rows.values().map(|r| r.worker.clone()).collect();
    assert!(workers.len() > 1, "the work was shared: {workers:?}");
    assert!(table.borrow().claims.is_empty(), "no claim left");
}

#[tokio::test]
async fn a_lock_timeout_is_tried_once_more_then_recorded() {
    let list = targets(6);
    let (flaky, locked) = (list[0].id.clone(), list[1].id.clone());
    let runner = Runner {
        script: HashMap::from([
            (flaky.clone(), vec![ExitCode::LockRetries]),
            (locked.clone(), vec![ExitCode::LockWait, ExitCode::LockWait, ExitCode::Success]),
        ]),
        ..Runner::default()
    };
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let summary = work_through(&list, &session, "coord:5432", &runner, &settings(), &never()).await.expect("works");
    assert_eq!(runner.attempts.borrow()[&flaky], 2);
    assert_eq!(runner.attempts.borrow()[&locked], 2, "once more, not again and again");
    assert_eq!(exits(&table)[&flaky], ExitCode::Success);
    assert_eq!(exits(&table)[&locked], ExitCode::LockWait);
    let ending = summary.ending("r").expect_err("one failed");
    assert_eq!(ending.exit_code(), ExitCode::PartialFailure);
    assert!(matches!(&ending, Ending::PartialFailure { listed, .. } if *listed == [locked.clone()]), "{ending}");
}

#[tokio::test]
async fn a_failed_canary_stops_the_run_before_any_other_target() {
    let list = targets(10);
    let runner = Runner { all: Some(ExitCode::MigrationFailed), ..Runner::default() };
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let canary = Settings { canary: Canary::Count(2), ..settings() };
    let summary = work_through(&list, &session, "coord:5432", &runner, &canary, &never()).await.expect("works");
    let first_two: HashSet<String> = targets::stable_order(&list)[..2].iter().map(|i| list[*i].id.clone()).collect();
    let touched: HashSet<String> = runner.attempts.borrow().keys().cloned().collect();
    assert_eq!(touched, first_two, "only the canary ran");
    let ending = summary.ending("r").expect_err("canary failed");
    assert_eq!(ending.exit_code(), ExitCode::CanaryFailed);
    assert!(ending.to_string().contains("0/10 current, 2 failed, 8 pending (run r)"), "{ending}");

    // A canary that passes lets the rest run.
    let runner = Runner::default();
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let canary = Settings { canary: Canary::Percent(25.0), ..settings() };
    let summary = work_through(&list, &session, "coord:5432", &runner, &canary, &never()).await.expect("works");
    assert_eq!(summary.ending("r"), Ok(()));
    assert_eq!(runner.applied.borrow().len(), 10);
}

#[tokio::test]
async fn past_the_failure_rate_this_worker_takes_no_more_targets() {
    let list = targets(30);
    let runner = Runner { all: Some(ExitCode::MigrationFailed), ..Runner::default() };
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let rate = Settings { concurrency: 1, max_failure_rate: Some(0.5), ..settings() };
    let summary = work_through(&list, &session, "coord:5432", &runner, &rate, &never()).await.expect("works");
    assert_eq!(runner.attempts.borrow().len(), FAILURE_RATE_FLOOR, "judged over the first 20, then stopped");
    let ending = summary.ending("r").expect_err("stopped");
    assert_eq!(ending, Ending::FailureRate { failed: 20, processed: 20, tally: summary.tally("r") });
    assert_eq!(ending.exit_code(), ExitCode::FailureRateExceeded);

    // Under the rate, every target runs and the run is a partial failure.
    let half: HashMap<String, Vec<ExitCode>> =
        list.iter().step_by(3).map(|t| (t.id.clone(), vec![ExitCode::MigrationFailed])).collect();
    let runner = Runner { script: half, ..Runner::default() };
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let summary = work_through(&list, &session, "coord:5432", &runner, &rate, &never()).await.expect("works");
    assert_eq!(summary.ending("r").map_err(|e| e.exit_code()), Err(ExitCode::PartialFailure));
    assert_eq!(runner.attempts.borrow().len(), 30);
}

#[tokio::test]
async fn the_deadline_cancels_the_targets_in_flight_and_leaves_them_for_the_next_run() {
    let list = targets(6);
    let runner = Runner { hang: list.iter().map(|t| t.id.clone()).collect(), ..Runner::default() };
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let deadline = Settings { concurrency: 2, deadline: Some(Duration::from_millis(50)), ..settings() };
    let summary = work_through(&list, &session, "coord:5432", &runner, &deadline, &never()).await.expect("works");
    assert_eq!(runner.starts.get(), 2, "no target taken after the deadline");
    assert!(table.borrow().rows.is_empty(), "the cancelled ones are not recorded");
    assert!(table.borrow().claims.is_empty(), "their claims are given back");
    let ending = summary.ending("r").expect_err("incomplete");
    assert_eq!(ending.exit_code(), ExitCode::Incomplete);
    assert!(ending.to_string().contains("6 pending"), "{ending}");
}

#[tokio::test]
async fn sigterm_stops_the_taking_and_leaves_the_targets_in_flight_unrecorded() {
    let list = targets(12);
    let (switch, stop) = Shutdown::manual();
    let runner = Runner::default();
    *runner.at_start.borrow_mut() = Some((
        5,
        Box::new(move || {
            switch.send_replace(Some(15));
        }),
    ));
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let one = Settings { concurrency: 1, ..settings() };
    let result = work_through(&list, &session, "coord:5432", &runner, &one, &stop).await;
    assert!(matches!(result, Err(WorkError::Interrupted(Interrupted { signal: 15 }))), "{result:?}");
    assert_eq!(runner.starts.get(), 5, "nothing taken after the signal");
    assert_eq!(table.borrow().rows.len(), 4, "the four finished are recorded, the fifth is not");
    assert!(table.borrow().rows.values().all(Recorded::succeeded));
    assert!(table.borrow().claims.is_empty());
}

#[tokio::test]
async fn a_dead_workers_targets_go_to_the_others_and_run_once() {
    let list = targets(9);
    let stuck = list[targets::stable_order(&list)[0]].id.clone();
    let table = Rc::new(RefCell::new(Table::default()));
    let dying = Runner { stuck: HashSet::from([stuck.clone()]), ..Runner::default() };
    let started = Rc::new(tokio::sync::Notify::new());
    let fire = Rc::clone(&started);
    *dying.at_start.borrow_mut() = Some((1, Box::new(move || fire.notify_one())));
    let session = Session::open(&table, 1);
    let one = Settings { concurrency: 2, ..settings() };
    let quiet = never();
    {
        let run = work_through(&list, &session, "coord:5432", &dying, &one, &quiet);
        tokio::select! {
            _ = run => panic!("the worker with a stuck target finished"),
            () = started.notified() => {}
        }
    }
    assert_eq!(table.borrow().claims.get(&stuck), Some(&1), "the dying worker held its claim");
    drop(session); // the worker dies: its session ends, and its claims with it

    let survivor = Runner::default();
    let other = Session::open(&table, 2);
    let summary = work_through(&list, &other, "coord:5432", &survivor, &one, &never()).await.expect("works");
    assert_eq!(summary.ending("r"), Ok(()));
    for target in &list {
        let once = dying.applied.borrow().get(&target.id).copied().unwrap_or(0)
            + survivor.applied.borrow().get(&target.id).copied().unwrap_or(0);
        assert_eq!(once, 1, "{} applied {once} times", target.id);
    }
    assert_eq!(survivor.applied.borrow().get(&stuck), Some(&1));
}

#[tokio::test]
async fn losing_the_coordination_database_finishes_the_running_and_takes_no_more() {
    let list = targets(20);
    let runner = Runner::default();
    let table = Rc::new(RefCell::new(Table { records_left: Some(3), ..Table::default() }));
    let session = Session::open(&table, 1);
    let result = work_through(&list, &session, "coord:5432", &runner, &settings(), &never()).await;
    assert!(matches!(&result, Err(WorkError::Coord(e)) if e.action == "record an outcome"), "{result:?}");
    assert_eq!(table.borrow().rows.len(), 3);
    let started = runner.starts.get();
    assert!(started <= 3 + 3, "at most C more after the failure: {started}");
    assert_eq!(runner.now.get(), 0, "every run in flight finished");
}

#[tokio::test]
async fn slots_bound_the_runs_per_server_and_a_refused_server_is_never_touched() {
    // Three servers, K = 1: at most one run per server at once, whatever C is.
    let list = targets(12);
    let runner = Runner::default();
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let one_each = Settings { concurrency: 8, capacity: Capacity { per_server: Some(1), workers: None }, ..settings() };
    let summary = work_through(&list, &session, "coord:5432", &runner, &one_each, &never()).await.expect("works");
    assert_eq!(summary.ending("r"), Ok(()));
    assert!(runner.peak.get() <= 3, "peak {} with 3 servers and K = 1", runner.peak.get());

    // The first target of each server reads its free connections; one server is refused.
    struct Refusing(Runner);
    impl TargetRunner for Refusing {
        async fn run(&self, target: &Target, check: ServerCheck, stop: &Shutdown) -> TargetDone {
            let mut done = self.0.run(target, check.clone(), stop).await;
            if check == ServerCheck::Read {
                let refusal = (target.server == "db1:5432").then(|| super::super::capacity::Refusal {
                    limit: 1,
                    free: 1,
                    server: target.server.clone(),
                });
                done.server_check = Some(refusal.clone().map_or(Ok(()), Err));
                if let Some(refusal) = refusal {
                    done = TargetDone { server_check: done.server_check, ..TargetDone::refused(&refusal) };
                }
            }
            done
        }
    }
    let refusing = Refusing(Runner::default());
    let table = Rc::new(RefCell::new(Table::default()));
    let session = Session::open(&table, 1);
    let summary = work_through(&list, &session, "coord:5432", &refusing, &one_each, &never()).await.expect("works");
    let on_db1 = list.iter().filter(|t| t.server == "db1:5432").count();
    let refused: Vec<&Recorded> = summary.failed().collect();
    assert_eq!(refused.len(), on_db1, "every target of the refused server is recorded refused");
    assert!(refused.iter().all(|r| r.exit == ExitCode::Usage));
    let ran_on_db1 = refusing.0.attempts.borrow().keys().filter(|id| id.starts_with("db1:")).count();
    assert_eq!(ran_on_db1, 1, "only the reader connected to the refused server");
}

#[test]
fn canary_and_start_resolve_against_the_list() {
    assert_eq!(Canary::parse("5"), Some(Canary::Count(5)));
    assert_eq!(Canary::parse(" 2% "), Some(Canary::Percent(2.0)));
    assert_eq!(Canary::parse("150%"), None);
    assert_eq!(Canary::parse("five"), None);
    assert_eq!(Canary::Percent(2.0).size(1000), 20);
    assert_eq!(Canary::Percent(0.1).size(10), 1, "at least one");
    assert_eq!(Canary::Count(50).size(10), 10, "at most all");
    assert_eq!(Canary::None.size(10), 0);
    assert_eq!(Start::Index { index: 2, size: Some(4) }.offset(100), 50);
    assert_eq!(Start::Seed(12345).offset(0), 0);
}

//! Signals: one handler for the whole process, installed first thing in `main`.
//!
//! PID 1 ignores SIGTERM unless a handler is installed, so the handler must exist before
//! anything slow (secrets, connecting). While migrating, the first SIGTERM/SIGINT asks the run
//! to stop cleanly (cancel the statement, roll back, release the lock); a second one, or
//! `--shutdown-grace` passing, ends the process at once and the server rolls back. While
//! supervising a child (`exec`), every signal goes to the supervisor, which forwards it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{
    SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGINT, SIGIO, SIGPROF, SIGQUIT, SIGTERM, SIGTSTP, SIGURG, SIGUSR1, SIGUSR2,
    SIGVTALRM, SIGWINCH, SIGXCPU, SIGXFSZ,
};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

/// Signals forwarded to the child of `exec`: every catchable one, as tini does, except SIGCHLD
/// (the supervisor's own), the synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT,
/// SIGTRAP, SIGSYS: about migrun itself), SIGPIPE (migrun's own writes), and SIGTTIN/SIGTTOU
/// (terminal job control of migrun's own group). An unhandled one would kill migrun and
/// orphan the child.
pub const FORWARDED: [i32; 18] = [
    SIGTERM,
    SIGINT,
    SIGHUP,
    SIGQUIT,
    SIGUSR1,
    SIGUSR2,
    SIGWINCH,
    SIGALRM,
    SIGCONT,
    SIGTSTP,
    SIGURG,
    SIGIO,
    SIGPROF,
    SIGVTALRM,
    SIGXCPU,
    SIGXFSZ,
    libc::SIGPWR,
    libc::SIGSTKFLT,
];

/// A run was stopped by this signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", name(.signal))]
pub struct Interrupted {
    /// The signal number.
    pub signal: i32,
}

/// The conventional name of a signal, for logs.
pub fn name(signal: &i32) -> String {
    match *signal {
        SIGTERM => "SIGTERM".into(),
        SIGINT => "SIGINT".into(),
        SIGHUP => "SIGHUP".into(),
        SIGQUIT => "SIGQUIT".into(),
        SIGUSR1 => "SIGUSR1".into(),
        SIGUSR2 => "SIGUSR2".into(),
        SIGWINCH => "SIGWINCH".into(),
        SIGCHLD => "SIGCHLD".into(),
        SIGALRM => "SIGALRM".into(),
        SIGCONT => "SIGCONT".into(),
        SIGTSTP => "SIGTSTP".into(),
        n => format!("signal {n}"),
    }
}

/// Writes the last line of a run that must end at once (second signal, grace passed): given
/// the signal and why, it returns the line to print. Set by the command layer, which knows the
/// log format and the result event; this module only knows when.
pub type AbortLine = Box<dyn Fn(i32, &str) -> String + Send + Sync>;

struct State {
    supervising: AtomicBool,
    grace_ms: AtomicU64,
    abort_line: Mutex<Option<AbortLine>>,
}

/// Owns the process's signal handling.
pub struct SignalHub {
    events: mpsc::Receiver<Received>,
    injector: mpsc::Sender<Received>,
    shutdown: Shutdown,
    state: Arc<State>,
}

/// What the signal thread and [`StopHandle`]s put on the hub's queue.
enum Received {
    Signal(i32),
    Stop,
}

/// What the supervisor of `exec`'s child waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A signal reached migrun.
    Signal(i32),
    /// Another part of migrun asked for the command to be stopped (`exec --lock` lost its lock).
    StopRequested,
    /// The deadline passed first.
    Deadline,
}

/// Asks the supervisor to stop the command, from another thread.
#[derive(Clone)]
pub struct StopHandle(mpsc::Sender<Received>);

impl StopHandle {
    /// Queues the request; the supervisor acts on it as on a SIGTERM of its own.
    pub fn request(&self) {
        let _ = self.0.send(Received::Stop);
    }
}

/// Tells async code that a stop was requested. Cloning is cheap.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<i32>>,
}

impl Shutdown {
    /// A handle no signal reaches, and the switch that fires it: for tests of code that
    /// stops on a signal.
    #[cfg(test)]
    pub fn manual() -> (watch::Sender<Option<i32>>, Shutdown) {
        let (tx, rx) = watch::channel(None);
        (tx, Shutdown { rx })
    }

    /// The signal that asked for a stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Resolves when a stop is requested.
    pub async fn wait(&self) -> Interrupted {
        let mut rx = self.rx.clone();
        // The value is copied out first: no borrow of the channel lives across an await.
        let requested = rx.wait_for(Option::is_some).await.map(|signal| signal.unwrap_or(SIGTERM));
        match requested {
            Ok(signal) => Interrupted { signal },
            // The hub lives as long as the process; a closed channel never fires.
            Err(_) => std::future::pending().await,
        }
    }

    /// Sleeps for `delay` unless a stop is requested first: every retry loop waits with this.
    pub async fn sleep(&self, delay: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            stop = self.wait() => Err(stop),
        }
    }

    /// A handle that also fires at `deadline` (as if by SIGALRM, the timer's signal): work
    /// given it is cancelled the way a SIGTERM cancels it. Needs a tokio runtime.
    pub fn until(&self, deadline: Option<Instant>) -> Shutdown {
        let Some(deadline) = deadline else { return self.clone() };
        let (tx, rx) = watch::channel(self.requested());
        let parent = self.clone();
        tokio::spawn(async move {
            let signal = tokio::select! {
                stop = parent.wait() => stop.signal,
                () = tokio::time::sleep_until(deadline.into()) => SIGALRM,
                () = tx.closed() => return,
            };
            tx.send_replace(Some(signal));
        });
        Shutdown { rx }
    }

    /// `Err(Interrupted)` when a stop was requested; for checks between steps.
    pub fn check(&self) -> Result<(), Interrupted> {
        match self.requested() {
            Some(signal) => Err(Interrupted { signal }),
            None => Ok(()),
        }
    }
}

impl SignalHub {
    /// Installs the handlers and the thread that receives signals.
    pub fn install() -> std::io::Result<SignalHub> {
        let mut signals = Signals::new(FORWARDED.iter().copied().chain([SIGCHLD]))?;
        let (events_tx, events) = mpsc::channel();
        let injector = events_tx.clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let state = Arc::new(State {
            supervising: AtomicBool::new(false),
            grace_ms: AtomicU64::new(20_000),
            abort_line: Mutex::new(None),
        });
        let thread_state = Arc::clone(&state);
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                let _ = events_tx.send(Received::Signal(signal));
                if thread_state.supervising.load(Ordering::SeqCst) || !matches!(signal, SIGTERM | SIGINT) {
                    continue;
                }
                if shutdown_tx.borrow().is_some() {
                    abort(
                        &thread_state,
                        signal,
                        "second signal: exiting at once; the server rolls back the open transaction",
                    );
                }
                shutdown_tx.send_replace(Some(signal));
                start_grace_timer(Arc::clone(&thread_state), signal);
            }
        })?;
        Ok(SignalHub { events, injector, shutdown: Shutdown { rx: shutdown_rx }, state })
    }

    /// A handle for async code to notice stop requests.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// How long a clean stop may take after the first signal (`--shutdown-grace`).
    pub fn set_grace(&self, grace: Duration) {
        self.state.grace_ms.store(grace.as_millis() as u64, Ordering::SeqCst);
    }

    /// How long a clean stop may take after the first signal.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.state.grace_ms.load(Ordering::SeqCst))
    }

    /// What to print as the last line when the process must end at once.
    pub fn set_abort_line(&self, line: AbortLine) {
        if let Ok(mut slot) = self.state.abort_line.lock() {
            *slot = Some(line);
        }
    }

    /// From now on every signal is the supervisor's to handle. Returns the stop request that
    /// came before, if any (then the child must not start). Signals from before are dropped.
    pub fn begin_supervising(&self) -> Option<i32> {
        self.state.supervising.store(true, Ordering::SeqCst);
        while self.events.try_recv().is_ok() {}
        self.shutdown.requested()
    }

    /// A handle other threads use to ask the supervisor to stop the command.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.injector.clone())
    }

    /// The next event, waiting at most until `deadline` (for ever without one).
    pub fn next_event(&self, deadline: Option<Instant>) -> Event {
        let received = match deadline {
            None => self.events.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => self.events.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(Received::Signal(signal)) => Event::Signal(signal),
            Ok(Received::Stop) => Event::StopRequested,
            // The hub holds a sender itself, so the queue is never disconnected.
            Err(_) => Event::Deadline,
        }
    }
}

/// After the first signal the run has `--shutdown-grace` to stop cleanly (ECS sends SIGKILL
/// after its stopTimeout, 30 s by default; 20 s leaves time to log and exit).
fn start_grace_timer(state: Arc<State>, signal: i32) {
    let grace = Duration::from_millis(state.grace_ms.load(Ordering::SeqCst));
    let _ = std::thread::Builder::new().name("grace".into()).spawn(move || {
        std::thread::sleep(grace);
        if !state.supervising.load(Ordering::SeqCst) {
            abort(
                &state,
                signal,
                "shutdown grace period passed: exiting at once; the server rolls back the open transaction",
            );
        }
    });
}

/// Ends the process at once with 128 + `signal`, the abort line last on stderr. stderr stays
/// locked through the exit, so no other thread's log line can come after it.
fn abort(state: &State, signal: i32, why: &str) -> ! {
    let line = match state.abort_line.lock() {
        Ok(slot) => slot.as_ref().map(|line| line(signal, why)),
        Err(_) => None,
    };
    let line = line.unwrap_or_else(|| format!("migrun: {why}"));
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(format!("{line}\n").as_bytes());
    std::process::exit(128 + signal)
}

//! Signals: one handler for the whole process, installed first thing in `main`.
//!
//! PID 1 ignores SIGTERM unless a handler is installed, so the handler must exist before
//! anything slow (secrets, connecting). While migrating, the first SIGTERM/SIGINT asks the run
//! to stop cleanly (cancel the statement, roll back, release the lock); a second one, or
//! `--shutdown-grace` passing, ends the process at once and the server rolls back. While
//! supervising a child (`exec`), every signal goes to the supervisor, which forwards it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

use crate::exit::ExitCode;

/// Signals forwarded to the child of `exec`.
pub const FORWARDED: [i32; 7] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

/// A run was stopped by this signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", name(.signal))]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Signal(self.signal)
    }
}

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
        n => format!("signal {n}"),
    }
}

struct State {
    supervising: AtomicBool,
    grace_ms: AtomicU64,
}

impl State {
    fn new() -> State {
        State { supervising: AtomicBool::new(false), grace_ms: AtomicU64::new(20_000) }
    }
}

/// Owns the process's signal handling.
pub struct SignalHub {
    events: mpsc::Receiver<i32>,
    shutdown: Shutdown,
    state: Arc<State>,
}

/// Tells async code that a stop was requested. Cloning is cheap.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<i32>>,
    state: Arc<State>,
}

impl Shutdown {
    /// A handle that never fires, for callers without signals.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(None);
        // Keep the sender alive so `wait` pends instead of seeing a closed channel.
        std::mem::forget(tx);
        Shutdown { rx, state: Arc::new(State::new()) }
    }

    /// How long a clean stop may take after the first signal (`--shutdown-grace`).
    pub fn set_grace(&self, grace: Duration) {
        self.state.grace_ms.store(grace.as_millis() as u64, Ordering::SeqCst);
    }

    /// The signal that asked for a stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Resolves when a stop is requested.
    pub async fn wait(&self) -> Interrupted {
        let mut rx = self.rx.clone();
        let signal = match rx.wait_for(Option::is_some).await {
            Ok(signal) => signal.unwrap_or(SIGTERM),
            Err(_) => return std::future::pending().await,
        };
        Interrupted { signal }
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
    pub fn install() -> std::io::Result<SignalHub> {
        let mut signals = Signals::new(FORWARDED.iter().copied().chain([SIGCHLD]))?;
        let (events_tx, events) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let state = Arc::new(State::new());
        let thread_state = Arc::clone(&state);
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                let _ = events_tx.send(signal);
                if thread_state.supervising.load(Ordering::SeqCst) || !matches!(signal, SIGTERM | SIGINT) {
                    continue;
                }
                if shutdown_tx.borrow().is_some() {
                    crate::log::abort(
                        signal,
                        "second signal: exiting at once; the server rolls back the open transaction",
                    );
                }
                shutdown_tx.send_replace(Some(signal));
                start_grace_timer(Arc::clone(&thread_state), signal);
            }
        })?;
        let shutdown = Shutdown { rx: shutdown_rx, state: Arc::clone(&state) };
        Ok(SignalHub { events, shutdown, state })
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// From now on every signal is the supervisor's to handle. Returns the stop request that
    /// came before, if any (then the child must not start). Signals from before are dropped.
    pub fn begin_supervising(&self) -> Option<i32> {
        self.state.supervising.store(true, Ordering::SeqCst);
        while self.events.try_recv().is_ok() {}
        self.shutdown.requested()
    }

    /// The next signal; blocks.
    pub fn next(&self) -> Option<i32> {
        self.events.recv().ok()
    }
}

/// After the first signal the run has `--shutdown-grace` to stop cleanly (ECS sends SIGKILL
/// after its stopTimeout, 30 s by default; 20 s leaves time to log and exit).
fn start_grace_timer(state: Arc<State>, signal: i32) {
    let grace = Duration::from_millis(state.grace_ms.load(Ordering::SeqCst));
    let _ = std::thread::Builder::new().name("grace".into()).spawn(move || {
        std::thread::sleep(grace);
        if !state.supervising.load(Ordering::SeqCst) {
            crate::log::abort(
                signal,
                "shutdown grace period passed: exiting at once; the server rolls back the open transaction",
            );
        }
    });
}

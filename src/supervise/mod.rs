//! `exec`'s child: start it, forward signals to its process group, stop its whole tree, reap
//! zombies, pass on its exit status.
//!
//! Runs after the async runtime is gone (database connections closed; under `exec --lock` only
//! the lock session, watched on its own thread), on plain threads, so the supervising process
//! stays small. migrun is a subreaper: every process the command starts is migrun's to reap
//! (as PID 1 does, like tini), and `waitpid(-1)` is safe because by now the command is the only
//! process migrun started.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::Command;

use std::time::{Duration, Instant};

use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use crate::exit::ExitCode;
use crate::signals::{self, Event, SignalHub};

mod tree;
mod watchdog;

use watchdog::Watchdog;

/// The command `exec` runs once the schema is ready.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program, looked up on PATH.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment (their values are never logged).
    pub env: Vec<(String, String)>,
    /// The command's process group is killed (SIGKILL) if migrun dies first, even by SIGKILL
    /// (PR_SET_PDEATHSIG for the child, the watchdog for its group), and migrun's sessions
    /// stay open until the group is gone: under `exec --lock` it must never run on without
    /// the lock.
    pub dies_with_parent: bool,
}

/// Runs the child and its whole process tree to their end and returns the exit code migrun
/// should exit with (the child's own). `started` learns the child's pid once it runs; another
/// thread stops the command through the hub's [`signals::StopHandle`].
pub fn run(spec: &ChildSpec, hub: &SignalHub, started: impl FnOnce(libc::pid_t)) -> ExitCode {
    if let Some(signal) = hub.begin_supervising() {
        tracing::warn!(signal = %signals::name(&signal), "stop requested before the command started; not starting it");
        return ExitCode::Signal(signal);
    }
    // Give the heap the database phase used back to the system: the supervisor lives as long
    // as the app, and its RSS counts against the task's memory.
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe { libc::malloc_trim(0) };
    let program = spec.program.to_string_lossy().into_owned();
    let mut command = Command::new(&spec.program);
    command.args(&spec.args).envs(spec.env.iter().map(|(k, v)| (k, v)));
    // Before the subreaper: the watchdog must not be a descendant of migrun. As PID 1 it
    // would be (orphans are PID 1's), and it is not needed: when PID 1 dies, the kernel ends
    // every process of its namespace, the command's group with it.
    let pid1 = std::process::id() == 1;
    let watchdog = if spec.dies_with_parent {
        die_with_parent(&mut command);
        if pid1 {
            None
        } else {
            Watchdog::start()
        }
    } else {
        None
    };
    tree::become_subreaper();
    let terminal = own_process_group(&mut command);
    if let Some(watchdog) = &watchdog {
        watchdog.announce_from_child(&mut command);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // The watchdog sees its pipe close and, the group being empty, exits quietly.
            drop(watchdog);
            return spawn_failure(
                &program,
                &e,
                spec.env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()),
            );
        }
    };
    let pid = child.id() as libc::pid_t;
    // The child is reaped below with waitpid, not through this handle.
    drop(child);
    let exported: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
    tracing::info!(command = %program, pid, pid1, exported = ?exported, "started");
    started(pid);
    let exit = Supervisor { pid, grace: hub.grace(), exit: None, kill_at: None, stopping: false }.run(hub);
    if let Some(watchdog) = watchdog {
        watchdog.dismiss();
    }
    if terminal {
        take_back_terminal();
    }
    exit
}

/// The supervision of one command, as tini -g defines it: signals go to the command's process
/// group; a stop (SIGTERM or SIGINT to migrun, or a stop request) starts the grace period,
/// which ends in SIGKILL of the whole tree; when the command exits, what it left running gets
/// SIGTERM and the same grace. It ends when no process of the tree is left.
struct Supervisor {
    pid: libc::pid_t,
    grace: Duration,
    /// The command's own exit code, once it exited.
    exit: Option<ExitCode>,
    /// When the tree gets SIGKILL, once a stop began.
    kill_at: Option<Instant>,
    /// Whether the tree was told to stop (SIGTERM to every process of it).
    stopping: bool,
}

impl Supervisor {
    fn run(mut self, hub: &SignalHub) -> ExitCode {
        loop {
            match hub.next_event(self.kill_at) {
                Event::Signal(SIGCHLD) => {
                    if let Some(code) = tree::reap(self.pid) {
                        self.exit = Some(code);
                        self.stop_leftovers();
                    }
                }
                Event::Signal(signal) => self.forward(signal),
                Event::StopRequested => self.stop_tree("stop requested"),
                Event::Deadline => self.kill_tree(),
            }
            if let Some(exit) = self.exit.filter(|_| tree::is_empty()) {
                if self.stopping {
                    tracing::info!(
                        pid = self.pid,
                        exit_code = exit.code(),
                        "the command was stopped; no process it started is left"
                    );
                }
                return exit;
            }
        }
    }

    /// A signal to migrun goes to the command's group; the first SIGTERM or SIGINT also starts
    /// the grace period. A later one is only forwarded: an app may handle several.
    fn forward(&mut self, signal: i32) {
        tracing::info!(signal = %signals::name(&signal), pid = self.pid, "forwarding signal to the command's process group");
        tree::signal_group(self.pid, signal);
        if matches!(signal, SIGTERM | SIGINT) {
            self.kill_at.get_or_insert(Instant::now() + self.grace);
        }
    }

    /// Asks every process of the tree to stop (SIGTERM), with the grace period to do it.
    fn stop_tree(&mut self, why: &str) {
        let outside = tree::signal_tree(self.pid, SIGTERM);
        tracing::info!(
            pid = self.pid,
            outside_group = outside,
            grace_s = self.grace.as_secs_f64(),
            "{why}: SIGTERM to every process of the command"
        );
        self.stopping = true;
        self.kill_at.get_or_insert(Instant::now() + self.grace);
    }

    /// The command exited: what it started and left running is stopped too.
    fn stop_leftovers(&mut self) {
        if self.stopping || tree::is_empty() {
            return;
        }
        let left = tree::count();
        tracing::warn!(pid = self.pid, left, "the command exited, but processes it started still run; stopping them");
        self.stop_tree("the command exited");
    }

    /// The grace period passed: SIGKILL to the whole tree, and again every second while any
    /// process of it is left (one may fork while the tree is walked).
    fn kill_tree(&mut self) {
        let left = tree::count();
        tracing::warn!(
            pid = self.pid,
            left,
            grace_s = self.grace.as_secs_f64(),
            "the command outlived the shutdown grace; killing every process of it"
        );
        tree::signal_tree(self.pid, libc::SIGKILL);
        self.stopping = true;
        self.kill_at = Some(Instant::now() + Duration::from_secs(1));
    }
}

/// The child leads a process group of its own, and when stdin is a terminal its group becomes
/// the terminal's foreground group, as tini does: a Ctrl-C then reaches the child once, from
/// the terminal, instead of once from the terminal and once more forwarded by migrun (which
/// shared its group). Returns whether stdin is a terminal.
fn own_process_group(command: &mut Command) -> bool {
    // SAFETY: isatty on our own stdin.
    let terminal = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    // SAFETY: setpgid, getpid, sigprocmask and tcsetpgrp are async-signal-safe, as pre_exec
    // requires.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if terminal {
                give_terminal_to(libc::getpid());
            }
            Ok(())
        });
    }
    terminal
}

/// Gives the terminal back to migrun's group once the child is gone (for the result line and
/// the shell after it).
fn take_back_terminal() {
    // SAFETY: getpgrp has no preconditions; see give_terminal_to.
    unsafe { give_terminal_to(libc::getpgrp()) };
}

/// Makes `group` the terminal's foreground group. A background group that takes the terminal
/// gets SIGTTOU unless it blocks it, so it is blocked meanwhile on this thread.
///
/// # Safety
/// Only async-signal-safe calls (pthread_sigmask, tcsetpgrp): fit for pre_exec.
unsafe fn give_terminal_to(group: libc::pid_t) {
    let mut block: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut block);
    libc::sigaddset(&mut block, libc::SIGTTOU);
    let mut previous: libc::sigset_t = std::mem::zeroed();
    libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
    libc::tcsetpgrp(libc::STDIN_FILENO, group);
    libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
}

/// PR_SET_PDEATHSIG: the kernel sends SIGKILL to the child when the thread that started it
/// ends. That is the main thread (run is called on it), which ends only with the process.
fn die_with_parent(command: &mut Command) {
    // SAFETY: getpid is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: prctl and getppid are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // migrun died between fork and prctl: do not run without it.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("migrun exited before the command started"));
            }
            Ok(())
        });
    }
}

/// 127 when the command does not exist, 126 when it cannot be executed (a missing `#!`
/// interpreter included), as shells do.
/// `path` is the command's own PATH when its environment sets one (a secret may): the
/// command was looked up there, not on migrun's.
fn spawn_failure(program: &str, error: &std::io::Error, path: Option<&str>) -> ExitCode {
    if error.raw_os_error() == Some(libc::E2BIG) {
        let what =
            "the command's arguments and environment are too large to start it (E2BIG); make the environment smaller";
        tracing::error!(command = %program, error = %error, exit_code = 126, "{program}: {what}");
        return ExitCode::Child(126);
    }
    let (code, what) = match (error.kind(), find_program(program, path)) {
        // The file is there, so what is missing is its interpreter.
        (ErrorKind::NotFound, Some(path)) => match interpreter(&path) {
            Some(interpreter) => {
                (126, format!("bad interpreter {interpreter}: no such file; fix the #! line or install it"))
            }
            None => (126, "cannot execute; check that it is an executable file".to_string()),
        },
        (ErrorKind::NotFound, None) => (127, "command not found; check CMD and PATH".to_string()),
        _ => (126, "cannot execute; check that it is an executable file".to_string()),
    };
    tracing::error!(command = %program, error = %error, exit_code = code, "{program}: {what}");
    ExitCode::Child(code)
}

/// Where the command is: the path itself when it has a `/`, else the first match on `path`
/// (the command's PATH), or on migrun's own when the command's environment sets none.
fn find_program(program: &str, path: Option<&str>) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = match path {
        Some(path) => std::ffi::OsString::from(path),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// The interpreter a script's `#!` line names.
fn interpreter(path: &std::path::Path) -> Option<String> {
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut std::fs::File::open(path).ok()?, &mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}

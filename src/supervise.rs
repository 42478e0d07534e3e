//! `exec`'s child: start it, forward signals to it, reap zombies, pass on its exit status.
//!
//! Runs after the async runtime is gone (database connections closed), on plain threads, so
//! the supervising process stays small. When migrun is PID 1 it reaps every orphan that the
//! kernel re-parents to it, as tini does; `waitpid(-1)` is safe because by now the child is
//! the only process migrun started.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::Command;

use signal_hook::consts::SIGCHLD;

use crate::exit::ExitCode;
use crate::signals::{self, SignalHub};

/// The command `exec` runs once the schema is ready.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program, looked up on PATH.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment (their values are never logged).
    pub env: Vec<(String, String)>,
    /// The child is killed (SIGKILL) if migrun dies first, even by SIGKILL: under
    /// `exec --lock` it must never run on without the lock.
    pub dies_with_parent: bool,
}

/// Runs the child to its end and returns the exit code migrun should exit with. `started`
/// learns the child's pid once it runs.
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
    if spec.dies_with_parent {
        die_with_parent(&mut command);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return spawn_failure(&program, &e),
    };
    let pid = child.id() as libc::pid_t;
    // The child is reaped below with waitpid, not through this handle.
    drop(child);
    let exported: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
    tracing::info!(command = %program, pid, pid1 = std::process::id() == 1, exported = ?exported, "started");
    started(pid);
    loop {
        match hub.next() {
            Some(SIGCHLD) => {
                if let Some(status) = reap(pid) {
                    return status;
                }
            }
            // The signal thread is gone (it never ends on its own): wait for the child plainly.
            None => return wait_for(pid),
            Some(signal) => {
                tracing::info!(signal = %signals::name(&signal), pid, "forwarding signal");
                // SAFETY: sending a signal to our own child's pid, which has not been reaped yet.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }
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

/// 127 when the command does not exist, 126 when it cannot be executed, as shells do.
fn spawn_failure(program: &str, error: &std::io::Error) -> ExitCode {
    let (code, what) = match error.kind() {
        ErrorKind::NotFound => (127, "command not found; check CMD and PATH"),
        _ => (126, "cannot execute; check that it is an executable file"),
    };
    tracing::error!(command = %program, error = %error, exit_code = code, "{program}: {what}");
    ExitCode::Child(code)
}

fn wait_for(pid: libc::pid_t) -> ExitCode {
    let mut status = 0;
    // SAFETY: waitpid with a valid out-pointer on our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return ExitCode::Internal;
    }
    ExitCode::of_child(decode(status))
}

fn decode(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Reaps every exited child without blocking; returns the main child's status once it exited.
fn reap(main: libc::pid_t) -> Option<ExitCode> {
    let mut result = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid != main {
            tracing::debug!(pid, "reaped an orphaned process");
            continue;
        }
        let code = decode(status);
        tracing::info!(pid, exit_code = code, "command exited");
        result = Some(ExitCode::of_child(code));
    }
}

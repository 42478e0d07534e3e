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
    let terminal = own_process_group(&mut command);
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
    let exit = supervise(pid, hub);
    if terminal {
        take_back_terminal();
    }
    exit
}

/// Forwards signals to the child until it exits; returns its exit code.
fn supervise(pid: libc::pid_t, hub: &SignalHub) -> ExitCode {
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
                // A background group that takes the terminal gets SIGTTOU unless it blocks it.
                let mut block: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut block);
                libc::sigaddset(&mut block, libc::SIGTTOU);
                let mut previous: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_BLOCK, &block, &mut previous);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
                libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
            }
            Ok(())
        });
    }
    terminal
}

/// Gives the terminal back to migrun's group once the child is gone (for the result line and
/// the shell after it).
fn take_back_terminal() {
    // SAFETY: signal mask changes on this thread and tcsetpgrp on our own stdin.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
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

/// 127 when the command does not exist, 126 when it cannot be executed (a missing `#!`
/// interpreter included), as shells do.
fn spawn_failure(program: &str, error: &std::io::Error) -> ExitCode {
    let (code, what) = match (error.kind(), find_program(program)) {
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

/// Where the command is: the path itself when it has a `/`, else the first match on PATH.
fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
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

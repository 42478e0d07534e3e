//! `exec --lock`'s watchdog: the command's process group dies with migrun, even when migrun is
//! killed by SIGKILL, and the lock stays held until the group is gone.
//!
//! A process forked from migrun before the command starts (not exec'd: it runs the few lines
//! below, async-signal-safe, allocation-free), detached from migrun (double fork, own
//! session, every signal ignored). It holds the read end of a pipe whose write end only
//! migrun holds: end of file without a word from migrun means migrun is gone, and the
//! watchdog kills the group with SIGKILL until it is empty. Being a fork, it also holds a copy
//! of every descriptor migrun had, the lock session's socket among them, so the server keeps
//! that session (and the advisory lock) until the watchdog exits: after the group is gone.
//!
//! It cannot cover a process that left the group (`setsid`, a daemon): once migrun is dead,
//! nothing knows it was the command's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The byte migrun writes when the command's tree ended under its own supervision.
const DISMISS: u8 = b'D';
/// How long the watchdog keeps killing before it gives up on a group that does not empty
/// (a process stuck in the kernel), in 10 ms steps.
const KILL_STEPS: u32 = 3000;

/// migrun's end of the pipe to its watchdog.
pub struct Watchdog {
    pipe: OwnedFd,
}

impl Watchdog {
    /// Forks the watchdog. Call before the command starts (and before migrun becomes a
    /// subreaper, so the watchdog is not migrun's descendant). None when it cannot start; the
    /// command then has only PR_SET_PDEATHSIG.
    pub fn start() -> Option<Watchdog> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot start the watchdog (pipe)");
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let line = format!(
            "{{\"level\":\"ERROR\",\"message\":\"migrun ended before the command it supervised; its watchdog kills the command's process group, and the lock is released once the group is gone\",\"migrun_pid\":{}}}\n",
            std::process::id()
        );
        match fork_detached(read.as_raw_fd(), write.as_raw_fd(), line.as_bytes()) {
            Ok(()) => Some(Watchdog { pipe: write }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the watchdog (fork)");
                None
            }
        }
    }

    /// Makes the command tell the watchdog its group, from inside the forked child once it
    /// has its own group and before it execs: the watchdog knows the group before the command
    /// runs a single instruction of its own. (Told by migrun after the spawn, a migrun killed
    /// in between left a running command that no watchdog knew.) Register after the
    /// `setpgid` pre-exec step.
    pub fn announce_from_child(&self, command: &mut std::process::Command) {
        let pipe = self.pipe.as_raw_fd();
        // SAFETY: getpid and write are async-signal-safe, as pre_exec requires; the pipe's
        // write end is open in the child until exec (it is close-on-exec).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, move || {
                let pgid = libc::getpid().to_ne_bytes();
                if libc::write(pipe, pgid.as_ptr().cast(), pgid.len()) != pgid.len() as isize {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The command's tree ended under migrun: the watchdog exits without killing anything.
    pub fn dismiss(self) {
        self.send(&[DISMISS]);
    }

    fn send(&self, bytes: &[u8]) {
        // SAFETY: writing a small buffer (under PIPE_BUF, so atomic) to our own pipe.
        unsafe { libc::write(self.pipe.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// Forks twice, so the watchdog is nobody's child in migrun's tree, and waits for the middle
/// process. Signals are blocked around the forks: the copies must never run migrun's handlers.
fn fork_detached(read: i32, write: i32, line: &[u8]) -> std::io::Result<()> {
    // SAFETY: sigfillset and pthread_sigmask on this thread's own mask.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: the child only calls async-signal-safe functions (below) and never returns.
    let middle = unsafe { libc::fork() };
    if middle == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::fork() == 0 {
                watchdog_main(read, write, line);
            }
            libc::_exit(0);
        }
    }
    let forked = if middle < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    if middle > 0 {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(middle, &mut status, 0) };
    }
    // SAFETY: restoring this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    forked
}

/// The watchdog itself. Async-signal-safe calls only: it is a fork of a threaded process.
unsafe fn watchdog_main(read: i32, write: i32, line: &[u8]) -> ! {
    libc::close(write);
    libc::setsid();
    for signal in 1..libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let empty: libc::sigset_t = std::mem::zeroed();
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    let mut pgid = [0u8; 4];
    if !read_full(read, &mut pgid) {
        libc::_exit(0);
    }
    let pgid = libc::pid_t::from_ne_bytes(pgid);
    let mut word = [0u8; 1];
    if read_full(read, &mut word) {
        // Dismissed (or any word at all: migrun is alive to say it).
        libc::_exit(0);
    }
    // migrun is gone. A group that is already empty (the command never started, or ended
    // with migrun) needs nothing and says nothing.
    if libc::kill(-pgid, 0) != 0 && *libc::__errno_location() == libc::ESRCH {
        libc::_exit(0);
    }
    libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
    let pause = libc::timespec { tv_sec: 0, tv_nsec: 10_000_000 };
    for _ in 0..KILL_STEPS {
        if libc::kill(-pgid, libc::SIGKILL) != 0 && *libc::__errno_location() == libc::ESRCH {
            break;
        }
        libc::nanosleep(&pause, std::ptr::null_mut());
    }
    libc::_exit(0)
}

/// Reads exactly `buffer.len()` bytes; false on end of file or an error.
unsafe fn read_full(fd: i32, buffer: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = libc::read(fd, buffer[filled..].as_mut_ptr().cast(), buffer.len() - filled);
        if n > 0 {
            filled += n as usize;
        } else if n == 0 || *libc::__errno_location() != libc::EINTR {
            return false;
        }
    }
    true
}

//! The command's process tree: its process group, and every process it started.
//!
//! migrun is a child subreaper (as PID 1 it is the reaper anyway), so a process whose parent
//! exits is re-parented to migrun instead of to init: every process the command started stays
//! a descendant of migrun for as long as it runs, even one that left the group (`setsid`).
//! The tree is empty exactly when migrun has no child left, zombies included.

use crate::exit::ExitCode;

/// Makes migrun the reaper of everything the command starts.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper; a process that leaves the command's group may outlive it");
    }
}

/// Sends `signal` to the command's process group (the command leads it: its pgid is its pid).
pub fn signal_group(pgid: libc::pid_t, signal: i32) {
    // SAFETY: kill with a negative pid signals that group; at worst ESRCH (it is empty).
    unsafe { libc::kill(-pgid, signal) };
}

/// Sends `signal` to the group and to every other descendant of migrun (one that left the
/// group). Returns how many processes outside the group it reached.
pub fn signal_tree(pgid: libc::pid_t, signal: i32) -> usize {
    signal_group(pgid, signal);
    let outside: Vec<libc::pid_t> =
        descendants(std::process::id() as libc::pid_t).into_iter().filter(|d| d.pgid != pgid).map(|d| d.pid).collect();
    for pid in &outside {
        // SAFETY: a descendant of migrun; one that exited meanwhile is a zombie of ours (never
        // reused until reaped) or already gone (ESRCH).
        unsafe { libc::kill(*pid, signal) };
    }
    outside.len()
}

/// Whether migrun has no child left, running or exited: no process of the tree remains.
pub fn is_empty() -> bool {
    // SAFETY: waitid with a zeroed out-struct; WNOWAIT leaves any exited child to be reaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let found = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    found == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// How many processes of the tree still run.
pub fn count() -> usize {
    descendants(std::process::id() as libc::pid_t).len()
}

/// Reaps every exited child without blocking; returns the command's status once it exited.
pub fn reap(main: libc::pid_t) -> Option<ExitCode> {
    let mut result = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid != main {
            tracing::debug!(pid, "reaped a process the command started");
            continue;
        }
        let code = decode(status);
        tracing::info!(pid, exit_code = code, "command exited");
        result = Some(ExitCode::of_child(code));
    }
}

/// A wait status as shells report it: the exit code, or 128 + N for death by signal N.
pub fn decode(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: libc::pid_t,
    ppid: libc::pid_t,
    pgid: libc::pid_t,
}

/// Every live descendant of `root`, from `/proc`.
fn descendants(root: libc::pid_t) -> Vec<Process> {
    let all: Vec<Process> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .collect();
    under(root, &all)
}

/// The processes of `all` whose parent chain reaches `root`.
fn under(root: libc::pid_t, all: &[Process]) -> Vec<Process> {
    let mut found: Vec<Process> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in all.iter().filter(|p| p.ppid == parent && p.pid != root) {
            if !found.contains(process) {
                found.push(*process);
                frontier.push(process.pid);
            }
        }
    }
    found
}

/// `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses, so the fields are
/// read after the last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(Process { pid, ppid, pgid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) tool) S 17 4240 4240 0 -1 4194304 0 0";
        assert_eq!(parse_stat(line), Some(Process { pid: 4242, ppid: 17, pgid: 4240 }));
        assert_eq!(parse_stat("4243 (sh) Z 17 4240 4240 0"), None, "a zombie no longer runs");
    }

    #[test]
    fn descendants_follow_the_parent_chain() {
        let p = |pid, ppid, pgid| Process { pid, ppid, pgid };
        let all = [p(1, 0, 1), p(10, 1, 10), p(11, 10, 11), p(12, 11, 11), p(13, 12, 13), p(20, 1, 20)];
        let mut found: Vec<_> = under(10, &all).iter().map(|p| p.pid).collect();
        found.sort();
        assert_eq!(found, [11, 12, 13]);
    }
}

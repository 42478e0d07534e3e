//! Exit codes: the one place their numbers are written (mirrored by the table in docs/reference.md).

/// How a run ended, as the process exit status.
///
/// 5 and 8 mean "safe to retry"; 6 and 7 mean "stop the rollout".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The schema is current (migrations applied, or nothing to do).
    Success,
    /// An unexpected failure outside any migration file (for example the history table
    /// cannot be created or the result file cannot be written).
    Internal,
    /// Usage, configuration or migration files invalid; nothing was done.
    Usage,
    /// Credentials or a secret could not be resolved.
    Secret,
    /// The database is unreachable or refused the login.
    Connect,
    /// The advisory lock was not acquired within `--lock-wait`. Safe to retry.
    LockWait,
    /// A migration failed and was rolled back. Stop the rollout.
    MigrationFailed,
    /// The history does not match the files (drift, missing, out of order). Stop the rollout.
    HistoryMismatch,
    /// `lock_timeout` retries were exhausted. Safe to retry.
    LockRetries,
    /// `--wait` gave up before the schema was ready.
    WaitTimeout,
    /// `lint` found errors (or warnings, with `--strict`); `verify --strict` measured locks
    /// or rewrites on existing tables.
    Findings,
    /// `verify`: a no-transaction file fails, or leaves another schema, when run again after
    /// an interruption (or a repeatable file when run twice).
    NotRerunnable,
    /// `verify --from`: upgrading from the previous folder gives another schema than
    /// installing from empty.
    UpgradeDiffers,
    /// `fanout`: some targets failed; the others are current.
    PartialFailure,
    /// `fanout`: a canary target failed; no other target was touched.
    CanaryFailed,
    /// `fanout`: this worker stopped taking targets: too many of its targets failed.
    FailureRateExceeded,
    /// `fanout`: the deadline passed or targets are still claimed or untouched. Safe to retry.
    Incomplete,
    /// Secrets Manager throttled or failed the call (after the SDK's retries). Safe to retry.
    SecretsBusy,
    /// `verify`: a down file does not restore the schema from before its up (or up, down, up
    /// differs from up); `verify --from`: rolling back to the previous folder gives another
    /// schema than the previous release's.
    DownDiffers,
    /// `diff`, `up --check-drift`, `schema --check`: the live schema is not what was recorded
    /// after the last run (or the committed file, or the folder). Stop the rollout.
    SchemaDrift,
    /// Interrupted by a signal (128 + signal number, as shells report it).
    Signal(i32),
    /// `exec`: the child's own exit status (128 + N when signal N killed it; 127 command not
    /// found, 126 not executable, as shells do).
    Child(i32),
}

impl ExitCode {
    /// Every code of migrun's own (signals and a child's status aside), in order.
    pub const ALL: [ExitCode; 20] = [
        ExitCode::Success,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Secret,
        ExitCode::Connect,
        ExitCode::LockWait,
        ExitCode::MigrationFailed,
        ExitCode::HistoryMismatch,
        ExitCode::LockRetries,
        ExitCode::WaitTimeout,
        ExitCode::Findings,
        ExitCode::NotRerunnable,
        ExitCode::UpgradeDiffers,
        ExitCode::PartialFailure,
        ExitCode::CanaryFailed,
        ExitCode::FailureRateExceeded,
        ExitCode::Incomplete,
        ExitCode::SecretsBusy,
        ExitCode::DownDiffers,
        ExitCode::SchemaDrift,
    ];

    /// The code a process status stands for (a fan-out run table's `exit_code`): migrun's
    /// own codes, 128 + N for signal N, anything else a child's status.
    pub fn from_code(code: i32) -> ExitCode {
        match Self::ALL.iter().find(|e| e.code() == code) {
            Some(exit) => *exit,
            None if (129..=192).contains(&code) => ExitCode::Signal(code - 128),
            None => ExitCode::Child(code),
        }
    }

    /// The exit status of `exec`'s child as migrun's own: 0 is success like any other run.
    pub fn of_child(status: i32) -> ExitCode {
        match status {
            0 => ExitCode::Success,
            n => ExitCode::Child(n),
        }
    }

    /// The process exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Internal => 1,
            ExitCode::Usage => 2,
            ExitCode::Secret => 3,
            ExitCode::Connect => 4,
            ExitCode::LockWait => 5,
            ExitCode::MigrationFailed => 6,
            ExitCode::HistoryMismatch => 7,
            ExitCode::LockRetries => 8,
            ExitCode::WaitTimeout => 9,
            ExitCode::Findings => 10,
            ExitCode::NotRerunnable => 11,
            ExitCode::UpgradeDiffers => 12,
            ExitCode::PartialFailure => 13,
            ExitCode::CanaryFailed => 14,
            ExitCode::FailureRateExceeded => 15,
            ExitCode::Incomplete => 16,
            ExitCode::SecretsBusy => 17,
            ExitCode::DownDiffers => 18,
            ExitCode::SchemaDrift => 19,
            ExitCode::Signal(signal) => 128 + signal,
            ExitCode::Child(code) => code,
        }
    }

    /// The result event's `outcome`: one word per exit code, for dashboards and alerts.
    pub fn outcome(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Internal => "internal_error",
            ExitCode::Usage => "invalid_input",
            ExitCode::Secret => "secret_unavailable",
            ExitCode::Connect => "database_unreachable",
            ExitCode::LockWait => "lock_wait_timeout",
            ExitCode::MigrationFailed => "migration_failed",
            ExitCode::HistoryMismatch => "history_mismatch",
            ExitCode::LockRetries => "lock_retries_exhausted",
            ExitCode::WaitTimeout => "wait_timeout",
            ExitCode::Findings => "findings",
            ExitCode::NotRerunnable => "not_rerunnable",
            ExitCode::UpgradeDiffers => "upgrade_differs",
            ExitCode::PartialFailure => "partial_failure",
            ExitCode::CanaryFailed => "canary_failed",
            ExitCode::FailureRateExceeded => "failure_rate_exceeded",
            ExitCode::Incomplete => "incomplete",
            ExitCode::SecretsBusy => "secrets_manager_busy",
            ExitCode::DownDiffers => "down_differs",
            ExitCode::SchemaDrift => "schema_drift",
            ExitCode::Signal(_) => "interrupted",
            ExitCode::Child(_) => "child_failed",
        }
    }

    /// Whether running the same command again may succeed without a change to files or data.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ExitCode::Connect
                | ExitCode::LockWait
                | ExitCode::LockRetries
                | ExitCode::WaitTimeout
                | ExitCode::Incomplete
                | ExitCode::SecretsBusy
                | ExitCode::Signal(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_readme_table() {
        let table = [
            (ExitCode::Success, 0),
            (ExitCode::Internal, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Secret, 3),
            (ExitCode::Connect, 4),
            (ExitCode::LockWait, 5),
            (ExitCode::MigrationFailed, 6),
            (ExitCode::HistoryMismatch, 7),
            (ExitCode::LockRetries, 8),
            (ExitCode::WaitTimeout, 9),
            (ExitCode::Findings, 10),
            (ExitCode::NotRerunnable, 11),
            (ExitCode::UpgradeDiffers, 12),
            (ExitCode::PartialFailure, 13),
            (ExitCode::CanaryFailed, 14),
            (ExitCode::FailureRateExceeded, 15),
            (ExitCode::Incomplete, 16),
            (ExitCode::SecretsBusy, 17),
            (ExitCode::DownDiffers, 18),
            (ExitCode::SchemaDrift, 19),
            (ExitCode::Signal(2), 130),
            (ExitCode::Signal(15), 143),
        ];
        for (exit, number) in table {
            assert_eq!(exit.code(), number, "{exit:?}");
        }
    }

    #[test]
    fn the_reference_table_lists_every_code_with_its_outcome() {
        let readme = include_str!("../docs/reference.md");
        let table = &readme[readme.find("# Exit codes").expect("an exit-code section")..];
        let rows: Vec<(String, String)> = table
            .lines()
            .skip_while(|l| !l.starts_with("| code"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].to_string(), cells[2].trim_matches('`').to_string())
            })
            .collect();
        let all = ExitCode::ALL;
        for exit in all {
            let row = rows.iter().find(|(code, _)| *code == exit.code().to_string());
            assert_eq!(row.map(|(_, outcome)| outcome.as_str()), Some(exit.outcome()), "{exit:?} in {rows:?}");
        }
        let signals = rows.iter().find(|(code, _)| code == "130 / 143").map(|(_, o)| o.as_str());
        assert_eq!(signals, Some(ExitCode::Signal(15).outcome()));
        assert_eq!(rows.len(), all.len() + 1, "every row is a code migrun has: {rows:?}");
        // The result event's `retryable`, as the reference lists it.
        let listed = readme
            .split_once("`retryable` is `true` exactly for the codes")
            .and_then(|(_, rest)| rest.split_once('(')?.1.split_once(')'))
            .map(|(list, _)| list.split(',').map(|n| n.trim().to_string()).collect::<Vec<_>>())
            .expect("the reference lists the retryable codes");
        let mut retryable: Vec<String> = all.iter().filter(|e| e.retryable()).map(|e| e.code().to_string()).collect();
        retryable.extend(["130".to_string(), "143".to_string()]);
        assert_eq!(listed, retryable);
    }

    #[test]
    fn a_recorded_code_reads_back_as_the_same_exit() {
        for exit in ExitCode::ALL.into_iter().chain([ExitCode::Signal(15), ExitCode::Child(200)]) {
            assert_eq!(ExitCode::from_code(exit.code()), exit);
        }
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(ExitCode::LockWait.retryable());
        assert!(ExitCode::LockRetries.retryable());
        assert!(!ExitCode::MigrationFailed.retryable());
        assert!(!ExitCode::HistoryMismatch.retryable());
        assert!(!ExitCode::Success.retryable());
    }
}

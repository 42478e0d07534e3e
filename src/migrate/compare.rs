//! Comparing the files with the history: what is applied, what is pending, what is wrong.
//!
//! Pure logic over already-read data, so every rule here is unit tested without a database.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::files::{Migration, MigrationKind};
use super::history::{HistoryRow, RowState, Timestamp};
use super::rollback::{self, Assessment, Compatibility, NewerSchema, Recorded};

/// Which mismatches between files and history only warn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// `--allow-drift`: an edited applied file only warns.
    pub allow_drift: bool,
    /// `--allow-missing`: applied versions without a file only warn.
    pub allow_missing: bool,
    /// `--allow-out-of-order`: pending versions below the highest applied one are applied.
    pub allow_out_of_order: bool,
    /// `--allow-empty`: a directory without migration files is not an error.
    pub allow_empty: bool,
    /// `--on-newer-schema`: what to do when the database has versions these files lack and
    /// one of them is not known to be expand-only.
    pub on_newer_schema: NewerSchema,
}

/// What the history says of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Applied with the same checksum.
    Applied,
    /// Not applied yet.
    Pending,
    /// Pending, but lower than the highest applied version.
    OutOfOrder,
    /// A `no-transaction` file that started and did not finish: it runs again.
    Unfinished,
    /// Applied, and the file changed since.
    Drifted,
    /// A repeatable file whose checksum differs from the last applied one.
    Changed,
    /// Not applied, and it holds no statement yet (listed by `status` and `plan` only).
    Empty,
}

/// One migration file and what the history says of it.
#[derive(Debug, Clone)]
pub struct ComparedFile<'m> {
    /// The file.
    pub migration: &'m Migration,
    /// What the history says of it.
    pub state: FileState,
    /// The checksum in its history row, if it has one.
    pub recorded_checksum: Option<String>,
    /// When it was applied, if it was.
    pub applied_at: Option<Timestamp>,
    /// Recorded without running it: `baseline`, or the tool it was adopted from.
    pub adopted_from: Option<String>,
}

/// The files, each with its state, and the versions only the history has.
#[derive(Debug)]
pub struct Comparison<'m> {
    /// Every file, in order.
    pub entries: Vec<ComparedFile<'m>>,
    /// Applied versions that no file has (the database is ahead of these files).
    pub missing: Vec<u64>,
    /// What was recorded of the `missing` versions when they were applied (read only when
    /// there are some: see [`Comparison::with_newer`]); a version not in it is unknown.
    pub newer: HashMap<u64, Assessment>,
}

/// `--target` names no version it could stop at.
#[derive(Debug, thiserror::Error)]
pub enum UpToError {
    #[error("--target {target}: no migration file has this version (nearest: {}); give the version of a file", nearest(.below, .above))]
    NoSuchVersion { target: u64, below: Option<u64>, above: Option<u64> },
    #[error("--target {target} is below the highest applied version {highest}: nothing would be applied (`up` never undoes: `migrun down --to {target}` does); give {highest} or higher")]
    BelowApplied { target: u64, highest: u64 },
}

fn nearest(below: &Option<u64>, above: &Option<u64>) -> String {
    match (below, above) {
        (Some(b), Some(a)) => format!("{b} below, {a} above"),
        (Some(b), None) => format!("{b} below, none above"),
        (None, Some(a)) => format!("none below, {a} above"),
        (None, None) => "no versioned files at all".to_string(),
    }
}

/// The history does not match the files.
#[derive(Debug, thiserror::Error)]
pub enum MismatchError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; also, "))]
    Several(Vec<MismatchError>),
    #[error("{} applied migration(s) were edited since: {}; restore the files (or run with --allow-drift to only warn)", .0.len(), drift_list(.0))]
    Drift(Vec<Drift>),
    #[error("the database has version(s) {} that {dir} does not, and not all are known to be backward compatible with this release: {}; deploy an image with those files, or go ahead with --on-newer-schema warn (or --allow-missing)", join(.versions), .details.join(", "))]
    Missing { versions: Vec<u64>, dir: String, details: Vec<String> },
    #[error("pending version(s) {} are lower than the highest applied version {highest}; renumber them above it, or run with --allow-out-of-order", join(.versions))]
    OutOfOrder { versions: Vec<u64>, highest: u64 },
}

/// An applied file that was edited since.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// The file.
    pub file: String,
    /// The checksum recorded when it was applied.
    pub recorded: String,
    /// The file's checksum now.
    pub current: String,
}

fn drift_list(drifts: &[Drift]) -> String {
    drifts
        .iter()
        .map(|d| format!("{} (recorded {}, file now {})", d.file, d.recorded, d.current))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `7 (contract: drop-column: users.email)`, `8 (unknown: applied before migrun recorded it)`.
fn newer_detail(version: u64, assessment: &Assessment) -> String {
    match (assessment.compatibility, assessment.changes.is_empty()) {
        (Compatibility::Unknown, _) => format!("{version} (compatibility unknown: not recorded when it was applied)"),
        (c, true) => format!("{version} ({c})"),
        (c, false) => format!("{version} ({c}: {})", assessment.changes.join("; ")),
    }
}

fn join(versions: &[u64]) -> String {
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Compares the files with the history rows.
pub fn compare<'m>(migrations: &'m [Migration], history: &[HistoryRow]) -> Comparison<'m> {
    let mut by_version: HashMap<u64, &HistoryRow> = HashMap::new();
    let mut last_repeatable: HashMap<&str, &HistoryRow> = HashMap::new();
    for row in history {
        match row.version {
            Some(v) => {
                by_version.insert(v, row);
            }
            // Rows are in id order, so the last applied one wins.
            None if row.state == RowState::Applied => {
                last_repeatable.insert(&row.description, row);
            }
            None => {}
        }
    }
    let highest = history.iter().filter_map(|r| r.version).max();
    let entries = migrations
        .iter()
        .map(|migration| {
            let row = match migration.kind {
                MigrationKind::Versioned(v) => by_version.get(&v).copied(),
                MigrationKind::Repeatable => last_repeatable.get(migration.description.as_str()).copied(),
            };
            let state = match (migration.kind, row) {
                (_, None) if migration.empty => FileState::Empty,
                (MigrationKind::Versioned(_), Some(r)) if r.state == RowState::Started => FileState::Unfinished,
                (MigrationKind::Versioned(_), Some(r)) if r.checksum != migration.checksum => FileState::Drifted,
                (MigrationKind::Versioned(v), None) if highest.is_some_and(|h| v < h) => FileState::OutOfOrder,
                (MigrationKind::Versioned(_), None) => FileState::Pending,
                (MigrationKind::Repeatable, Some(r)) if r.checksum != migration.checksum => FileState::Changed,
                (MigrationKind::Repeatable, None) => FileState::Pending,
                (_, Some(_)) => FileState::Applied,
            };
            ComparedFile {
                migration,
                state,
                recorded_checksum: row.map(|r| r.checksum.clone()),
                applied_at: row.filter(|r| r.state == RowState::Applied).map(|r| r.applied_at),
                adopted_from: row.and_then(|r| r.adopted_from.clone()),
            }
        })
        .collect();
    let known: std::collections::HashSet<u64> = migrations.iter().filter_map(Migration::version).collect();
    let missing: BTreeMap<u64, ()> = by_version.keys().filter(|v| !known.contains(v)).map(|v| (*v, ())).collect();
    Comparison { entries, missing: missing.into_keys().collect(), newer: HashMap::new() }
}

impl Comparison<'_> {
    /// Checks the history against the policy; problems that are allowed are logged as warnings.
    pub fn validate(&self, policy: Policy, dir: &str) -> Result<(), MismatchError> {
        let drift: Vec<Drift> = self
            .entries
            .iter()
            .filter(|e| e.state == FileState::Drifted)
            .map(|e| Drift {
                file: e.migration.display_path(),
                recorded: e.recorded_checksum.clone().unwrap_or_default(),
                current: e.migration.checksum.clone(),
            })
            .collect();
        // Every class in one run: fixing them one run at a time is a deploy each.
        let mut problems = Vec::new();
        if !drift.is_empty() {
            if !policy.allow_drift {
                problems.push(MismatchError::Drift(drift));
            } else {
                for d in &drift {
                    tracing::warn!(file = %d.file, recorded = %d.recorded, current = %d.current, "applied migration was edited (allowed by --allow-drift)");
                }
            }
        }
        if let Err(missing) = self.judge_newer(policy, dir) {
            problems.push(missing);
        }
        let out_of_order: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.state == FileState::OutOfOrder)
            .filter_map(|e| e.migration.version())
            .collect();
        if !out_of_order.is_empty() && !policy.allow_out_of_order {
            problems.push(MismatchError::OutOfOrder { versions: out_of_order, highest: self.highest_applied() });
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(MismatchError::Several(problems)),
        }
    }

    /// Records what is known of the versions only the database has.
    pub fn with_newer(mut self, recorded: &HashMap<u64, Recorded>) -> Self {
        self.newer = self.missing.iter().map(|v| (*v, rollback::assessment_of(recorded, *v))).collect();
        self
    }

    /// Versions only the database has: fine when all are expand-only (the old code runs on
    /// the newer schema); otherwise as `--on-newer-schema` (and `--allow-missing`) say, each
    /// such version named with what it changed.
    fn judge_newer(&self, policy: Policy, dir: &str) -> Result<(), MismatchError> {
        if self.missing.is_empty() {
            return Ok(());
        }
        let assessment = |v: &u64| self.newer.get(v).cloned().unwrap_or(Assessment::UNKNOWN);
        let breaking: Vec<(u64, Assessment)> = self
            .missing
            .iter()
            .map(|v| (*v, assessment(v)))
            .filter(|(_, a)| a.compatibility != Compatibility::Expand)
            .collect();
        if breaking.is_empty() {
            tracing::info!(versions = ?self.missing, "the database has versions these files do not, all expand-only (backward compatible with this release): going ahead");
            return Ok(());
        }
        let details: Vec<String> = breaking.iter().map(|(v, a)| newer_detail(*v, a)).collect();
        match (policy.allow_missing, policy.on_newer_schema) {
            (false, NewerSchema::Refuse) => {
                Err(MismatchError::Missing { versions: self.missing.clone(), dir: dir.to_string(), details })
            }
            (false, NewerSchema::Start) => {
                tracing::info!(versions = ?self.missing, not_expand_only = %details.join(", "), "the database has versions these files do not; going ahead (--on-newer-schema start)");
                Ok(())
            }
            _ => {
                for ((version, a), detail) in breaking.iter().zip(&details) {
                    tracing::warn!(version, compatibility = %a.compatibility, changes = ?a.changes, "the database has a newer version these files do not, not known to be backward compatible: {detail}; going ahead anyway (--on-newer-schema refuse stops here)");
                }
                Ok(())
            }
        }
    }

    /// The highest version the database has applied (0 for none).
    fn highest_applied(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.recorded_checksum.is_some() && e.state != FileState::Unfinished)
            .filter_map(|e| e.migration.version())
            .chain(self.missing.iter().copied())
            .max()
            .unwrap_or_default()
    }

    /// `--target` must name a version a file has, at or above what is applied: anything else
    /// would quietly apply nothing.
    pub fn check_up_to(&self, target: u64) -> Result<(), UpToError> {
        let versions: Vec<u64> = self.entries.iter().filter_map(|e| e.migration.version()).collect();
        if !versions.contains(&target) {
            let below = versions.iter().copied().filter(|v| *v < target).max();
            let above = versions.iter().copied().filter(|v| *v > target).min();
            return Err(UpToError::NoSuchVersion { target, below, above });
        }
        let highest = self.highest_applied();
        if target < highest {
            return Err(UpToError::BelowApplied { target, highest });
        }
        Ok(())
    }

    /// What `up` runs, in order: versioned files up to `target`, then changed repeatable files
    /// (only when no versioned file is left pending: they are written against the newest schema).
    pub fn steps(&self, target: Option<u64>) -> Vec<&ComparedFile<'_>> {
        let runs = |e: &&ComparedFile| {
            matches!(e.state, FileState::Pending | FileState::OutOfOrder | FileState::Unfinished | FileState::Changed)
        };
        let versioned: Vec<&ComparedFile> = self
            .entries
            .iter()
            .filter(runs)
            .filter(|e| matches!(e.migration.kind, MigrationKind::Versioned(v) if target.is_none_or(|t| v <= t)))
            .collect();
        let versioned_left = self
            .entries
            .iter()
            .filter(runs)
            .any(|e| matches!(e.migration.kind, MigrationKind::Versioned(v) if target.is_some_and(|t| v > t)));
        let repeatable = self
            .entries
            .iter()
            .filter(runs)
            .filter(|e| e.migration.kind == MigrationKind::Repeatable && !versioned_left);
        versioned.into_iter().chain(repeatable).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::files::Directives;

    fn file(kind: MigrationKind, description: &str, checksum: &str) -> Migration {
        let name = match kind {
            MigrationKind::Versioned(v) => format!("sql/{v:04}_{description}.sql"),
            MigrationKind::Repeatable => format!("sql/R__{description}.sql"),
        };
        Migration {
            kind,
            description: description.into(),
            path: name.into(),
            sql: "SELECT 1".into(),
            checksum: checksum.into(),
            directives: Directives::default(),
            empty: false,
            down: None,
        }
    }

    fn row(_id: i64, version: Option<u64>, description: &str, checksum: &str, state: RowState) -> HistoryRow {
        HistoryRow {
            version,
            description: description.into(),
            checksum: checksum.into(),
            state,
            applied_at: Timestamp(0),
            adopted_from: None,
        }
    }

    fn states(c: &Comparison) -> Vec<FileState> {
        c.entries.iter().map(|e| e.state).collect()
    }

    #[test]
    fn classifies_each_file() {
        let files = vec![
            file(MigrationKind::Versioned(1), "a", "c1"),
            file(MigrationKind::Versioned(2), "b", "c2-edited"),
            file(MigrationKind::Versioned(3), "c", "c3"),
            file(MigrationKind::Versioned(5), "e", "c5"),
            file(MigrationKind::Versioned(6), "f", "c6"),
            file(MigrationKind::Repeatable, "views", "v2"),
            file(MigrationKind::Repeatable, "funcs", "f1"),
        ];
        let history = vec![
            row(1, Some(1), "a", "c1", RowState::Applied),
            row(2, Some(2), "b", "c2", RowState::Applied),
            row(3, Some(4), "d", "c4", RowState::Applied),
            row(4, Some(5), "e", "c5", RowState::Started),
            row(5, None, "views", "v1", RowState::Applied),
            row(6, None, "funcs", "f0", RowState::Applied),
            row(7, None, "funcs", "f1", RowState::Applied),
        ];
        let c = compare(&files, &history);
        use FileState::*;
        assert_eq!(states(&c), vec![Applied, Drifted, OutOfOrder, Unfinished, Pending, Changed, Applied]);
        assert_eq!(c.missing, vec![4]);
    }

    #[test]
    fn each_mismatch_fails_unless_allowed() {
        let files =
            vec![file(MigrationKind::Versioned(1), "a", "edited"), file(MigrationKind::Versioned(2), "b", "c2")];
        let drifted = compare(&files, &[row(1, Some(1), "a", "c1", RowState::Applied)]);
        let error = drifted.validate(Policy::default(), "sql").unwrap_err();
        assert!(error.to_string().contains("sql/0001_a.sql (recorded c1, file now edited)"), "{error}");
        assert!(drifted.validate(Policy { allow_drift: true, ..Policy::default() }, "sql").is_ok());

        let files = vec![file(MigrationKind::Versioned(2), "b", "c2")];
        let missing = compare(
            &files,
            &[row(1, Some(1), "a", "c1", RowState::Applied), row(2, Some(2), "b", "c2", RowState::Applied)],
        );
        let refuse = Policy { on_newer_schema: NewerSchema::Refuse, ..Policy::default() };
        assert!(
            matches!(missing.validate(refuse, "sql"), Err(MismatchError::Missing { ref versions, .. }) if versions == &[1])
        );
        assert!(missing.validate(Policy { allow_missing: true, ..refuse }, "sql").is_ok());
        assert!(missing.validate(Policy { on_newer_schema: NewerSchema::Warn, ..refuse }, "sql").is_ok());
        // Recorded expand-only: the old code runs on it, whatever the policy.
        let expand = Recorded {
            down_checksum: None,
            assessment: Assessment { compatibility: Compatibility::Expand, changes: vec![] },
        };
        let missing = missing.with_newer(&HashMap::from([(1, expand)]));
        assert!(missing.validate(refuse, "sql").is_ok());
        let contract = Recorded {
            down_checksum: None,
            assessment: Assessment { compatibility: Compatibility::Contract, changes: vec!["drop-column: t.x".into()] },
        };
        let missing = missing.with_newer(&HashMap::from([(1, contract)]));
        let error = missing.validate(refuse, "sql").unwrap_err().to_string();
        assert!(error.contains("1 (contract: drop-column: t.x)"), "{error}");

        let files = vec![file(MigrationKind::Versioned(1), "a", "c1"), file(MigrationKind::Versioned(3), "c", "c3")];
        let gap = compare(&files, &[row(1, Some(3), "c", "c3", RowState::Applied)]);
        assert!(
            matches!(gap.validate(Policy::default(), "sql"), Err(MismatchError::OutOfOrder { ref versions, highest: 3 }) if versions == &[1])
        );
        let allowed = Policy { allow_out_of_order: true, ..Policy::default() };
        assert!(gap.validate(allowed, "sql").is_ok());
        assert_eq!(gap.steps(None).len(), 1);
    }

    #[test]
    fn steps_run_versioned_up_to_target_then_repeatables() {
        let files = vec![
            file(MigrationKind::Versioned(1), "a", "c1"),
            file(MigrationKind::Versioned(2), "b", "c2"),
            file(MigrationKind::Versioned(10), "c", "c10"),
            file(MigrationKind::Repeatable, "views", "v1"),
        ];
        let c = compare(&files, &[]);
        let names = |steps: Vec<&ComparedFile>| steps.iter().map(|e| e.migration.display_path()).collect::<Vec<_>>();
        let all = ["sql/0001_a.sql", "sql/0002_b.sql", "sql/0010_c.sql", "sql/R__views.sql"];
        assert_eq!(names(c.steps(None)), all);
        assert_eq!(names(c.steps(Some(2))), all[..2]);
        assert_eq!(names(c.steps(Some(10))), all);
    }
}

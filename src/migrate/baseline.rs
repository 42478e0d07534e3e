//! `baseline`: adopt a database whose schema already exists. Versioned files are recorded as
//! applied without running them, up to a named version or as another tool's history says.

use std::collections::BTreeSet;

use serde::Serialize;

use super::adopt::{Tool, ToolHistory};
use super::files::Migration;
use super::history::{HistoryError, HistoryRow};

/// Where the versions to record come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Every versioned file up to and including this version.
    UpTo(u64),
    /// What another tool's history table says; Alembic also needs the migrun version its head
    /// corresponds to.
    Tool { tool: Tool, history: ToolHistory, up_to: Option<u64> },
}

/// One file to record.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub version: u64,
    pub file: String,
    #[serde(skip)]
    pub description: String,
    pub checksum: String,
}

/// What `baseline` records (or would record), and what it noticed.
#[derive(Debug, Clone, Serialize)]
pub struct BaselinePlan {
    /// `baseline`, or the tool's name: written to each row's `adopted_from`.
    pub adopted_from: String,
    /// The rows to write, by version.
    pub record: Vec<Recorded>,
    /// Versions the other tool applied that no migrun file has.
    pub tool_only: Vec<u64>,
    /// Files below the highest adopted version that the other tool never applied.
    pub never_applied: Vec<String>,
    /// Files above what is adopted: the next `up` runs them.
    pub pending: Vec<String>,
    /// The other tool's versions that cannot be migrun versions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmappable: Vec<String>,
    /// The other tool's rows that it does not count as applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Alembic's head revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alembic_head: Option<String>,
    /// Repeatable files are not recorded: the next `up` runs them.
    pub repeatables_run_next: usize,
}

/// Why nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline: history table {table} already has {rows} row(s); baseline adopts a database migrun has never run on (use `migrun status`, or `migrun repair` for one row)")]
    NotEmpty { table: String, rows: usize },
    #[error("baseline: no versioned migration file has version {0}; name the version of an existing file (see `migrun status`)")]
    NoFile(u64),
    #[error("baseline --from alembic: the database is at Alembic revision {0}; Alembic keeps only its current head, and its revisions are Python scripts migrun cannot match to files, so name the migrun version this head corresponds to: migrun baseline --from alembic <version>")]
    AlembicNeedsVersion(String),
    #[error("baseline --from alembic: alembic_version is empty; Alembic never applied a revision here, so there is nothing to adopt (use `migrun up`)")]
    AlembicEmpty,
    #[error("baseline --from {tool}: the history does not match the files; nothing recorded. {}. Fix the files (see `migrun convert`) or pass --ignore-differences to record only the versions both have", differences(.tool_only, .never_applied, .unmappable))]
    Differences { tool: Tool, tool_only: Vec<u64>, never_applied: Vec<String>, unmappable: Vec<String> },
    #[error("baseline --from {0}: no version it applied has a migration file; nothing to record")]
    NothingToAdopt(Tool),
    #[error(transparent)]
    History(#[from] HistoryError),
}

fn differences(tool_only: &[u64], never_applied: &[String], unmappable: &[String]) -> String {
    let mut parts = Vec::new();
    if !tool_only.is_empty() {
        let versions: Vec<String> = tool_only.iter().map(u64::to_string).collect();
        parts.push(format!("applied by the other tool but no file: {}", versions.join(", ")));
    }
    if !never_applied.is_empty() {
        parts.push(format!("files the other tool never applied: {}", never_applied.join(", ")));
    }
    if !unmappable.is_empty() {
        parts.push(format!("versions that are not whole numbers: {}", unmappable.join(", ")));
    }
    parts.join("; ")
}

/// What `source` would record, checked against the files and migrun's own (empty) history.
pub fn plan(
    source: &Source,
    migrations: &[Migration],
    rows: &[HistoryRow],
    table: &str,
    ignore_differences: bool,
) -> Result<BaselinePlan, BaselineError> {
    if !rows.is_empty() {
        return Err(BaselineError::NotEmpty { table: table.to_string(), rows: rows.len() });
    }
    let versioned: Vec<(u64, &Migration)> = migrations.iter().filter_map(|m| m.version().map(|v| (v, m))).collect();
    let files: BTreeSet<u64> = versioned.iter().map(|(v, _)| *v).collect();
    let up_to_files = |limit: u64| -> BTreeSet<u64> { files.iter().copied().filter(|v| *v <= limit).collect() };
    let mut plan = BaselinePlan {
        adopted_from: "baseline".into(),
        record: Vec::new(),
        tool_only: Vec::new(),
        never_applied: Vec::new(),
        pending: Vec::new(),
        unmappable: Vec::new(),
        ignored: Vec::new(),
        alembic_head: None,
        repeatables_run_next: migrations.len() - versioned.len(),
    };
    let adopted: BTreeSet<u64> = match source {
        Source::UpTo(version) => {
            if !files.contains(version) {
                return Err(BaselineError::NoFile(*version));
            }
            up_to_files(*version)
        }
        Source::Tool { tool: Tool::Alembic, history, up_to } => {
            plan.adopted_from = Tool::Alembic.name().into();
            let head = history.head.clone().ok_or(BaselineError::AlembicEmpty)?;
            let version = up_to.ok_or_else(|| BaselineError::AlembicNeedsVersion(head.clone()))?;
            plan.alembic_head = Some(head);
            if !files.contains(&version) {
                return Err(BaselineError::NoFile(version));
            }
            up_to_files(version)
        }
        Source::Tool { tool, history, .. } => {
            plan.adopted_from = tool.name().into();
            plan.unmappable = history.unmappable.clone();
            plan.ignored = history.ignored.clone();
            let mut claimed = history.each.clone();
            if let Some(limit) = history.up_to {
                claimed.extend(up_to_files(limit));
                claimed.insert(limit);
            }
            // A baseline covers the files below it; the baseline version itself is no script.
            if let Some(limit) = history.baseline {
                claimed.extend(up_to_files(limit));
            }
            plan.tool_only = claimed.difference(&files).copied().collect();
            let adopted: BTreeSet<u64> = claimed.intersection(&files).copied().collect();
            if let Some(highest) = claimed.last() {
                plan.never_applied = versioned
                    .iter()
                    .filter(|(v, _)| v < highest && !claimed.contains(v))
                    .map(|(_, m)| m.display_path())
                    .collect();
            }
            let consistent = plan.tool_only.is_empty() && plan.never_applied.is_empty() && plan.unmappable.is_empty();
            if !consistent && !ignore_differences {
                return Err(BaselineError::Differences {
                    tool: *tool,
                    tool_only: plan.tool_only,
                    never_applied: plan.never_applied,
                    unmappable: plan.unmappable,
                });
            }
            if adopted.is_empty() {
                return Err(BaselineError::NothingToAdopt(*tool));
            }
            adopted
        }
    };
    let highest = adopted.last().copied().unwrap_or(0);
    for (version, migration) in &versioned {
        if adopted.contains(version) {
            plan.record.push(Recorded {
                version: *version,
                file: migration.display_path(),
                description: migration.description.clone(),
                checksum: migration.checksum.clone(),
            });
        } else if *version > highest {
            plan.pending.push(migration.display_path());
        }
    }
    Ok(plan)
}

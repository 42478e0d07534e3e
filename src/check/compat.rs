//! Whether a version is backward compatible with the previous release's code, decided by
//! lint's analysis: a finding that breaks the old app (a drop, a rename, a truncate), a type
//! change, or a NOT NULL the old app's inserts do not satisfy makes it a contract; anything
//! else is expand-only. An allowed finding still counts: `-- migrun:allow` says the rollout is
//! safe, not that the old code does not use what went.

use std::collections::HashMap;

use crate::migrate::files::Migration;
use crate::migrate::rollback::Assessment;

/// Each versioned file's assessment, in the order `up` runs them; a file Postgres's parser
/// refuses, or a build without lint, is unknown (not in the map).
#[cfg(feature = "lint")]
pub fn assess(migrations: &[&Migration]) -> HashMap<u64, Assessment> {
    use super::lint;
    use super::rules::{self, Hazard};
    use crate::migrate::rollback::Compatibility;
    // The newest major: rules that differ by major are about locks, not compatibility.
    const MAJOR: u32 = 18;
    let contract_rules = [rules::ALTER_COLUMN_TYPE.id, rules::SET_NOT_NULL.id, rules::NOT_NULL_WITHOUT_DEFAULT.id];
    // The up files alone: a down's findings say nothing about the old code.
    let owned: Vec<Migration> = migrations.iter().map(|m| Migration { down: None, ..(*m).clone() }).collect();
    let report = lint::lint_all(&owned, MAJOR);
    let mut assessments = HashMap::new();
    for migration in migrations {
        let Some(version) = migration.version() else { continue };
        let file = migration.display_path();
        let findings: Vec<&lint::Finding> = report.findings.iter().filter(|f| f.file == file).collect();
        if findings.iter().any(|f| f.rule == rules::PARSE_ERROR.id) {
            continue;
        }
        let changes: Vec<String> = findings
            .iter()
            .filter(|f| f.hazard == Some(Hazard::BreaksOldApp) || contract_rules.contains(&f.rule))
            .map(|f| change_text(f))
            .collect();
        let compatibility = if changes.is_empty() { Compatibility::Expand } else { Compatibility::Contract };
        assessments.insert(version, Assessment { compatibility, changes });
    }
    assessments
}

/// Without lint, nothing is known.
#[cfg(not(feature = "lint"))]
pub fn assess(_migrations: &[&Migration]) -> HashMap<u64, Assessment> {
    HashMap::new()
}

/// `drop-column: users.email`: the rule and what exactly, without the rule's reason.
#[cfg(feature = "lint")]
fn change_text(finding: &super::lint::Finding) -> String {
    let reason = super::rules::RULES.iter().find(|r| r.id == finding.rule).map_or("", |r| r.reason);
    let detail = finding.message.strip_suffix(reason).unwrap_or(&finding.message).trim_end_matches(": ");
    match detail.is_empty() {
        true => finding.rule.to_string(),
        false => format!("{}: {detail}", finding.rule),
    }
}

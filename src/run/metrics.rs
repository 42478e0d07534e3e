//! CloudWatch Embedded Metric Format on the result event (`--metrics emf`): the awslogs
//! driver ships the line as it is, and CloudWatch Logs turns the `_aws` block's references
//! into metrics, with no agent and no API call. The values are members of the event itself
//! (EMF's "target members"); `command` and `outcome` are already there as strings.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::counters;
use crate::identity::Identity;

/// The namespace the metrics land in.
const NAMESPACE: &str = "migrun";

/// What the run did, as the metrics need it.
pub struct RunFacts<'a> {
    pub files_applied: usize,
    /// 1 when a migration file failed (or fan-out targets failed: their count), else 0.
    pub files_failed: usize,
    pub identity: &'a Identity,
    /// `fanout`: the run's counts and every target's outcome.
    pub fanout: Option<&'a Value>,
    pub targets: Option<&'a Value>,
    /// Milliseconds since the Unix epoch, for `_aws.Timestamp`.
    pub now_ms: u64,
}

/// The members to add to the result event: `_aws` and the metric and dimension values it
/// references (duration_ms and exit_code are the event's own).
pub fn emf(facts: &RunFacts) -> Map<String, Value> {
    let counts = counters::read();
    let mut members = Map::new();
    let mut metrics: Vec<(&str, &str)> = vec![
        ("duration_ms", "Milliseconds"),
        ("files_applied", "Count"),
        ("files_failed", "Count"),
        ("lock_wait_ms", "Milliseconds"),
        ("lock_retries", "Count"),
        ("connect_attempts", "Count"),
        ("exit_code", "None"),
    ];
    members.insert("files_applied".into(), json!(facts.files_applied));
    members.insert("files_failed".into(), json!(facts.files_failed));
    members.insert("lock_wait_ms".into(), json!(counts.lock_wait_ms));
    members.insert("lock_retries".into(), json!(counts.lock_retries));
    members.insert("connect_attempts".into(), json!(counts.connect_attempts));
    // `command` alone: an alarm on a value whatever the outcome (a lock waited for too long).
    let mut dimensions = vec![vec!["command"], vec!["command", "outcome"]];
    if let (Some(cluster), Some(family)) = (&facts.identity.ecs_cluster, &facts.identity.ecs_family) {
        members.insert("ecs_cluster".into(), json!(cluster));
        members.insert("ecs_family".into(), json!(family));
        dimensions.push(vec!["command", "outcome", "ecs_cluster", "ecs_family"]);
    }
    let outcome_names = fanout_members(facts, &mut members);
    for name in &outcome_names {
        metrics.push((name.as_str(), "Count"));
    }
    if facts.fanout.is_some() {
        for name in ["targets", "targets_current", "targets_failed", "targets_pending"] {
            metrics.push((name, "Count"));
        }
    }
    let definitions: Vec<Value> = metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect();
    members.insert(
        "_aws".into(),
        json!({
            "Timestamp": facts.now_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": definitions}],
        }),
    );
    members
}

/// `fanout`: the run's counts (`targets`, `targets_current`...) and one
/// `targets_outcome_<outcome>` count per outcome its targets ended with; returns the names of
/// the latter.
fn fanout_members(facts: &RunFacts, members: &mut Map<String, Value>) -> Vec<String> {
    let Some(fanout) = facts.fanout else { return Vec::new() };
    for (member, key) in [
        ("targets", "targets"),
        ("targets_current", "current"),
        ("targets_failed", "failed"),
        ("targets_pending", "pending"),
    ] {
        members.insert(member.into(), json!(fanout[key].as_u64().unwrap_or(0)));
    }
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    for target in facts.targets.and_then(Value::as_array).into_iter().flatten() {
        if let Some(outcome) = target["outcome"].as_str() {
            *by_outcome.entry(format!("targets_outcome_{outcome}")).or_default() += 1;
        }
    }
    for (name, count) in &by_outcome {
        members.insert(name.clone(), json!(count));
    }
    by_outcome.into_keys().collect()
}

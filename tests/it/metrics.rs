//! `--metrics emf`: the result line carries CloudWatch's Embedded Metric Format, checked
//! against the specification's rules (tests/fixtures/emf/schema.json, with check-jsonschema)
//! and its references, with the values a dashboard or alarm reads.

use std::path::Path;
use std::process::Command;

use crate::harness::*;
use crate::services::serve_json;

/// The result line, checked: under 8 KB, valid EMF, every reference naming a member of the
/// right type (a metric a number, a dimension a string).
fn checked_line(run: &Run) -> serde_json::Value {
    let line = run.stderr.lines().last().unwrap_or_default();
    assert!(line.len() < 8 * 1024, "the result line is {} bytes", line.len());
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("line.json");
    std::fs::write(&file, line).expect("write the line");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/emf/schema.json");
    let out = Command::new(tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "{}{}\n{line}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let event: serde_json::Value = serde_json::from_str(line).expect("JSON");
    for directive in event["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            for name in set.as_array().expect("a set") {
                let name = name.as_str().expect("a reference");
                assert!(event[name].is_string(), "dimension {name} is not a string member: {line}");
            }
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("a name");
            assert!(event[name].is_number(), "metric {name} is not a number member: {line}");
        }
    }
    event
}

fn metric_names(event: &serde_json::Value) -> Vec<String> {
    event["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .map(|m| m.iter().filter_map(|d| d["Name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn a_run_carries_its_metrics_by_command_and_outcome() {
    let db = TestDb::new();
    let run = db.migrun().dir(&example_sql()).env("MIGRUN_METRICS", "emf").args(["up"]).run();
    run.assert_code(0);
    let event = checked_line(&run);
    assert_eq!(event["_aws"]["CloudWatchMetrics"][0]["Namespace"], "migrun");
    assert_eq!(
        event["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["command"], ["command", "outcome"]])
    );
    for name in [
        "duration_ms",
        "files_applied",
        "files_failed",
        "lock_wait_ms",
        "lock_retries",
        "connect_attempts",
        "exit_code",
    ] {
        assert!(metric_names(&event).iter().any(|n| n == name), "{name} in {event}");
    }
    assert_eq!(event["files_applied"], 4);
    assert_eq!(event["files_failed"], 0);
    assert_eq!(event["exit_code"], 0);
    assert!(event["connect_attempts"].as_u64().unwrap_or(0) >= 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let stamp = event["_aws"]["Timestamp"].as_u64().expect("timestamp");
    assert!(stamp <= now && now - stamp < 60_000, "{stamp} vs {now}");
    // The human line is what it was; so is a JSON line without the setting.
    let human = db.migrun().dir(&example_sql()).args(["up", "--metrics", "emf", "--log-format", "human"]).run();
    human.assert_code(0);
    assert!(
        !human.stderr.contains("_aws")
            && human.stderr.lines().last().unwrap_or_default().starts_with("result: success")
    );
    let plain = db.migrun().dir(&example_sql()).args(["up"]).run();
    assert!(!plain.stderr.contains("_aws"), "{}", plain.stderr);
}

/// A failed file, a long message: files_failed 1, the outcome dimension, still under 8 KB.
#[test]
fn a_failure_counts_and_the_line_stays_small() {
    let db = TestDb::new();
    let long = "x".repeat(5000);
    let dir = sql_dir(&[("0001_bad.sql", &format!("SELECT 1/0 AS \"{}\";\n", &long[..60]))]);
    std::fs::write(dir.path().join("0002_long.sql"), format!("-- {long}\nSELECT 1;\n")).expect("write");
    let run = db.migrun().dir(dir.path()).args(["up", "--metrics", "emf"]).run();
    run.assert_code(6);
    let event = checked_line(&run);
    assert_eq!(event["outcome"], "migration_failed");
    assert_eq!(event["files_failed"], 1);
    assert_eq!(event["exit_code"], 6);
}

/// Time spent waiting for another run's lock is counted (here until --lock-wait gives up).
#[test]
fn lock_wait_is_measured() {
    let db = TestDb::new();
    db.migrun().dir(&example_sql()).args(["up"]).run().assert_code(0);
    let mut holder = db.client();
    holder.batch_execute("SELECT pg_advisory_lock(-4028659133243882200)").expect("hold the lock");
    let run = db.migrun().dir(&example_sql()).args(["up", "--metrics", "emf", "--lock-wait", "1500ms"]).run();
    run.assert_code(5);
    let event = checked_line(&run);
    assert!(event["lock_wait_ms"].as_u64().unwrap_or(0) >= 1400, "{event}");
    assert_eq!(event["outcome"], "lock_wait_timeout");
    drop(holder);
}

/// On ECS, the cluster and task family are dimensions too.
#[test]
fn ecs_cluster_and_family_are_dimensions() {
    let db = TestDb::new();
    let task = serde_json::json!({
        "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
        "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef",
        "Family": "backend-migrate", "Revision": "42",
    });
    let container = serde_json::json!({"Name": "app", "Image": "backend:abc123"});
    let base = serve_json(vec![("/v4/m".into(), container.to_string()), ("/v4/m/task".into(), task.to_string())]);
    let run = db
        .migrun()
        .env("ECS_CONTAINER_METADATA_URI_V4", &format!("{base}/v4/m"))
        .dir(&example_sql())
        .args(["up", "--metrics", "emf"])
        .run();
    run.assert_code(0);
    let event = checked_line(&run);
    assert_eq!(event["ecs_cluster"], "prod");
    assert_eq!(event["ecs_family"], "backend-migrate");
    let dimensions = &event["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
    assert_eq!(dimensions[2], serde_json::json!(["command", "outcome", "ecs_cluster", "ecs_family"]));
}

/// A fan-out run counts its targets, in total and by outcome.
#[test]
fn fanout_counts_targets_by_outcome() {
    let dbs: Vec<TestDb> = (0..3).map(|_| TestDb::new()).collect();
    let targets = tempfile::NamedTempFile::new().expect("targets");
    std::fs::write(targets.path(), dbs.iter().map(|d| format!("{}\n", d.url())).collect::<String>()).expect("write");
    let run = Migrun::new()
        .env("DATABASE_URL", &dbs[0].url())
        .dir(&example_sql())
        .args(["fanout", "up", "--metrics", "emf", "--targets", &format!("file:{}", targets.path().display())])
        .run();
    run.assert_code(0);
    let event = checked_line(&run);
    assert_eq!(event["targets"], 3);
    assert_eq!(event["targets_current"], 3);
    assert_eq!(event["targets_outcome_success"], 3);
    assert!(metric_names(&event).iter().any(|n| n == "targets_outcome_success"), "{event}");
}

#[test]
fn an_unknown_metrics_format_is_refused() {
    let run = Migrun::offline(&example_sql()).env("MIGRUN_METRICS", "prometheus").args(["status"]).run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("--metrics / MIGRUN_METRICS: `prometheus` is not valid; expected none or emf"),
        "{}",
        run.stderr
    );
}

//! `migrun lint` on real inputs: the labelled set (every rule's unsafe forms fire, its safe
//! forms stay quiet, tables created in the same file included), parse errors with their
//! position, the output formats and the exit codes.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::{fixture, sql_dir, Migrun, Run};

/// One case of tests/fixtures/lint/labelled.sql.
pub struct Case {
    pub expected: BTreeSet<String>,
    pub what: String,
    pub files: Vec<String>,
}

pub fn labelled() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("lint/labelled.sql")).expect("labelled set");
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- case: ") {
            let (rules, what) = header.split_once('|').expect("-- case: <rules> | <what>");
            let expected = rules.split(',').map(str::trim).filter(|r| *r != "safe").map(str::to_string).collect();
            cases.push(Case { expected, what: what.trim().to_string(), files: vec![String::new()] });
        } else if let Some(case) = cases.last_mut() {
            if line == "-- file" {
                case.files.push(String::new());
            } else if let Some(file) = case.files.last_mut() {
                file.push_str(line);
                file.push('\n');
            }
        }
    }
    cases
}

fn lint(dir: &Path, args: &[&str]) -> Run {
    Migrun::new().env("MIGRUN_DIR", &dir.display().to_string()).arg_path(Path::new("lint")).args(args).run()
}

fn case_dir(case: &Case) -> tempfile::TempDir {
    let named: Vec<(String, String)> =
        case.files.iter().enumerate().map(|(i, body)| (format!("{:04}_case.sql", i + 1), body.clone())).collect();
    let refs: Vec<(&str, &str)> = named.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    sql_dir(&refs)
}

fn rules_of(run: &Run) -> BTreeSet<String> {
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_rule_fires_on_its_unsafe_forms_and_stays_quiet_on_safe_ones() {
    let cases = labelled();
    let statements: usize = cases.iter().map(|c| c.files.iter().map(|f| f.matches(';').count()).sum::<usize>()).sum();
    assert!(cases.len() >= 80 && statements >= 80, "{} cases, {statements} statements", cases.len());
    let mut wrong = Vec::new();
    let mut fired = BTreeSet::new();
    for case in &cases {
        let dir = case_dir(case);
        let run = lint(dir.path(), &["--format", "json"]);
        let found = rules_of(&run);
        // Exit 10 for an error, 0 for warnings only (without --strict), never anything else.
        if found != case.expected || !(run.code == 0 || run.code == 10) || (case.expected.is_empty() && run.code != 0) {
            wrong.push(format!("{}: expected {:?}, found {found:?} (exit {})", case.what, case.expected, run.code));
        }
        fired.extend(found);
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    // Every rule but the parse error has a case.
    for rule in [
        "create-index-not-concurrent",
        "drop-index-not-concurrent",
        "concurrently-in-transaction",
        "constraint-not-valid",
        "unique-without-index",
        "set-not-null",
        "alter-column-type",
        "add-column-volatile-default",
        "add-column-not-null-without-default",
        "rename-column",
        "rename-table",
        "drop-column",
        "drop-table",
        "lock-table",
        "vacuum-full",
        "cluster",
        "refresh-not-concurrent",
        "truncate",
        "enum-value-used-in-transaction",
        "rerun-unsafe",
        "session-state",
        "transaction-control",
        "allow-without-reason",
    ] {
        assert!(fired.contains(rule), "no case makes {rule} fire");
    }
}

#[test]
fn a_parse_error_names_the_file_line_and_column_like_postgres() {
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        ("0002_b.sql", "SELECT 1;\nALTER TABLE a ADD COLUMN;\n"),
    ]);
    let run = lint(dir.path(), &[]);
    run.assert_code(10);
    let expected =
        format!("{}:2:25: error [parse-error] syntax error at or near \";\"", dir.path().join("0002_b.sql").display());
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
    assert_eq!(run.result()["outcome"], "findings");
}

#[test]
fn warnings_pass_unless_strict_and_allow_needs_a_reason() {
    let dir = sql_dir(&[("0001_a.sql", "ALTER TABLE users RENAME COLUMN a TO b;\n")]);
    let run = lint(dir.path(), &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("warning [rename-column] users.a to b"), "{}", run.stdout);
    assert!(run.stdout.contains("fix: expand/contract"), "{}", run.stdout);
    lint(dir.path(), &["--strict"]).assert_code(10);
    let allowed = sql_dir(&[(
        "0001_a.sql",
        "-- migrun:allow rename-column nothing reads column a since v41\nALTER TABLE users RENAME COLUMN a TO b;\n",
    )]);
    let run = lint(allowed.path(), &["--strict"]);
    run.assert_code(0);
    assert!(run.stdout.contains("allowed [rename-column]: nothing reads column a since v41"), "{}", run.stdout);
    // The directive does not disturb `up`: it is a comment to the file loader.
    Migrun::new()
        .dir(allowed.path())
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .args(["plan", "--connect-timeout", "0"])
        .run();
}

#[test]
fn sarif_output_is_what_code_scanning_reads() {
    let dir = sql_dir(&[("0001_a.sql", "CREATE INDEX users_email ON users (email);\n")]);
    let run = lint(dir.path(), &["--format", "sarif"]);
    run.assert_code(10);
    let sarif: serde_json::Value = serde_json::from_str(&run.stdout).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "migrun");
    assert!(run0["tool"]["driver"]["rules"].as_array().is_some_and(|r| r.len() >= 20));
    let result = &run0["results"][0];
    assert_eq!(result["ruleId"], "create-index-not-concurrent");
    assert_eq!(result["level"], "error");
    let region = &result["locations"][0]["physicalLocation"]["region"];
    assert_eq!((region["startLine"].as_u64(), region["startColumn"].as_u64()), (Some(1), Some(1)));
    assert!(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        .as_str()
        .is_some_and(|u| u.ends_with("0001_a.sql")));
    lint(dir.path(), &["--format", "xml"]).assert_code(2);
}

#[test]
fn the_example_folder_lints_clean() {
    lint(&crate::harness::example_sql(), &["--strict"]).assert_code(0);
}

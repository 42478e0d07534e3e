//! `migrun lint` on real inputs: the measured cases (the binary's verdict on each is what
//! Postgres measured), parse errors with their position, the output formats and the exit
//! codes.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::{fixture, sql_dir, Migrun, Run};

/// One case of tests/fixtures/lint/cases.sql, with what Postgres measured for it
/// (measured.txt, written by the lint ground-truth test in src/check/lint_truth.rs).
pub struct Case {
    pub what: String,
    pub files: Vec<String>,
    pub measured: BTreeSet<String>,
    pub known: bool,
}

pub fn measured_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("lint/cases.sql")).expect("cases.sql");
    let measured = std::fs::read_to_string(fixture("lint/measured.txt")).expect("measured.txt");
    let mut verdicts = measured.lines().filter(|l| !l.starts_with('#')).map(|l| {
        let hazards = l.split('\t').nth(2).expect("case, class, hazards");
        hazards.split(' ').filter(|h| *h != "safe").map(str::to_string).collect::<BTreeSet<String>>()
    });
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- case: ") {
            let what = header.split_once('|').expect("-- case: <class> | <what>").1.trim().to_string();
            let measured = verdicts.next().expect("measured.txt has a line per case");
            cases.push(Case { what, files: vec![String::new()], measured, known: false });
        } else if let Some(case) = cases.last_mut() {
            if line.starts_with("-- known: ") {
                case.known = true;
            } else if line == "-- file" {
                case.files.push(String::new());
            } else if let Some(file) = case.files.last_mut() {
                file.push_str(line);
                file.push('\n');
            }
        }
    }
    assert!(verdicts.next().is_none(), "measured.txt has more lines than cases.sql has cases");
    cases
}

fn lint(dir: &Path, args: &[&str]) -> Run {
    Migrun::new().env("MIGRUN_DIR", &dir.display().to_string()).arg_path(Path::new("lint")).args(args).run()
}

/// The case's folder: the live database's migration first, as the measurement ran it.
fn case_dir(case: &Case) -> tempfile::TempDir {
    let live = std::fs::read_to_string(fixture("lint/live.sql")).expect("live.sql");
    let mut named = vec![("0001_live.sql".to_string(), live)];
    named.extend(case.files.iter().enumerate().map(|(i, body)| (format!("{:04}_case.sql", i + 2), body.clone())));
    let refs: Vec<(&str, &str)> = named.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    sql_dir(&refs)
}

#[test]
fn the_binary_agrees_with_what_postgres_measured_on_every_case() {
    let cases = measured_cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut wrong = Vec::new();
    let mut fired = BTreeSet::new();
    for case in &cases {
        let dir = case_dir(case);
        let run = lint(dir.path(), &["--format", "json"]);
        // A folder the loader refuses is the `fails` verdict: lint exits 2 before any rule.
        let hazards: BTreeSet<String> = if run.code == 2 {
            BTreeSet::from(["fails".to_string()])
        } else {
            let report: serde_json::Value =
                serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
            let findings = report["findings"].as_array().expect("findings").clone();
            let live = findings.iter().filter(|f| f["file"].as_str().is_some_and(|p| !p.ends_with("0001_live.sql")));
            let mut hazards = BTreeSet::new();
            for f in live {
                fired.insert(f["rule"].as_str().unwrap_or_default().to_string());
                if let Some(h) = f["hazard"].as_str() {
                    hazards.insert(h.to_string());
                }
            }
            // Exit 10 for an error, 0 for warnings only (without --strict), never anything else.
            if !(run.code == 0 || run.code == 10) {
                wrong.push(format!("{}: exit {}", case.what, run.code));
            }
            hazards
        };
        if (hazards == case.measured) == case.known {
            wrong.push(format!("{}: measured {:?}, lint says {hazards:?}", case.what, case.measured));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    // Every rule but the parse error and the allow comment fires on some case.
    let ids: Vec<String> = {
        std::fs::read_to_string(fixture("../../docs/guide.md"))
            .expect("guide")
            .lines()
            .filter(|l| matches!(l.split('|').nth(2).map(str::trim), Some("error" | "warning")))
            .filter_map(|l| l.strip_prefix("| `").and_then(|r| r.split('`').next()).map(str::to_string))
            .filter(|id| id != "parse-error" && id != "allow-without-reason")
            .collect()
    };
    assert!(ids.len() >= 30, "{} rule ids in the guide's table", ids.len());
    for rule in ids {
        assert!(fired.contains(&rule), "no case makes {rule} fire");
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

#[test]
fn the_target_major_decides_what_depends_on_it() {
    // Measured: PostgreSQL 15 refuses a NOT VALID foreign key on a partitioned table; 18 takes it
    // (the lint test measures 15 on every run; 18 was measured by hand, see BENCHMARKS.md).
    let dir = sql_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE users (id int PRIMARY KEY);\nCREATE TABLE m (v int, at date) PARTITION BY RANGE (at);\n",
        ),
        ("0002_b.sql", "ALTER TABLE m ADD CONSTRAINT m_fk FOREIGN KEY (v) REFERENCES users (id) NOT VALID;\n"),
    ]);
    let default = lint(dir.path(), &["--format", "json"]);
    default.assert_code(10);
    assert!(default.stdout.contains("not-valid-on-partitioned"), "{}", default.stdout);
    let on_17 = lint(dir.path(), &["--format", "json", "--pg-version", "17"]);
    assert!(on_17.stdout.contains("not-valid-on-partitioned"), "{}", on_17.stdout);
    let on_18 = lint(dir.path(), &["--format", "json", "--pg-version", "18"]);
    on_18.assert_code(0);
    assert!(!on_18.stdout.contains("not-valid-on-partitioned"), "{}", on_18.stdout);
    // Outside the supported majors: a usage error naming the flag.
    let run = lint(dir.path(), &["--pg-version", "12"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--pg-version"), "{}", run.stderr);
}

/// Down files are linted for what makes the down itself fail, block or not run again; not
/// for undoing what the up added.
#[test]
fn down_files_are_linted_for_failing_and_blocking_not_for_undoing() {
    let dir = sql_dir(&[
        ("0001_users.sql", "CREATE TABLE users (id int, email text);\n"),
        (
            "0002_email.sql",
            "-- migrun:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);\n",
        ),
        // Forgets the directive: fails in a transaction.
        ("0002_email.down.sql", "DROP INDEX CONCURRENTLY users_email;\n"),
        ("0003_nick.sql", "ALTER TABLE users ADD COLUMN nick text;\n"),
        // Drops what its up added: a down's job, no finding.
        ("0003_nick.down.sql", "ALTER TABLE users DROP COLUMN nick;\n"),
    ]);
    let run = lint(dir.path(), &["--strict", "--format", "json"]);
    run.assert_code(10);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let found: Vec<(String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                crate::harness::file_name(f["file"].as_str().unwrap_or_default()),
                f["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [("0002_email.down.sql".to_string(), "concurrently-in-transaction".to_string())],
        "{}",
        run.stdout
    );
    assert_eq!(report["files"], 5);
}

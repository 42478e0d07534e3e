//! The lint rules against ground truth measured on Postgres, not against labels written with
//! the rules in mind.
//!
//! Every case of `tests/fixtures/lint/cases.sql` runs on a copy of a live database
//! (`live.sql`: tables holding thousands of rows), file by file, and what happened is
//! recorded as the hazards of `rules::Hazard`:
//! - `blocks`: a statement read, wrote or rewrote at least half the rows of a table that
//!   existed before while its transaction held a lock that blocks writes (`check::measure`,
//!   the code `verify` measures with; statements that cannot run in a transaction are
//!   watched from a second session);
//! - `fails`: the file fails when run as `up` runs it (`verify`'s runner);
//! - `breaks-old-app`: a query of the previous release (`old_app.sql`) fails, or returns
//!   other rows, after the file;
//! - `rerun`: a file that is not one transaction (no-transaction, or one that commits
//!   itself), cut after each of its statements and run again, fails or leaves another
//!   database (schema and rows) than the uninterrupted run.
//!
//! The measurements are kept in `measured.txt` (`MIGRUN_BLESS=1` rewrites it); the test
//! fails when they change, or when lint's verdict on a case (the hazards of the rules that
//! fire, `live.sql` being the folder's first file) differs from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::measure::{self, Finish};
use super::rules::{Hazard, RULES};
use super::scratch::Server;
use super::{lint, verify};
use crate::catalog::schema;
use crate::migrate::files::{self, Accept, Migration};
use crate::migrate::split;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lint");

/// One case: a folder of files run after `live.sql`.
struct Case {
    class: String,
    what: String,
    files: Vec<String>,
    /// `-- known: <why>`: lint is known to be wrong on it, and why (it cannot know).
    known: Option<String>,
}

fn cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- case: ") {
            let (class, what) = header.split_once('|').expect("-- case: <class> | <what>");
            cases.push(Case {
                class: class.trim().into(),
                what: what.trim().into(),
                files: vec![String::new()],
                known: None,
            });
        } else if let Some(why) = line.strip_prefix("-- known: ") {
            if let Some(case) = cases.last_mut() {
                case.known = Some(why.trim().into());
            }
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

/// The hazards measured for one case, each with what showed it.
#[derive(Debug, Default)]
struct Truth {
    hazards: BTreeMap<Hazard, String>,
}

impl Truth {
    fn add(&mut self, hazard: Hazard, evidence: String) {
        self.hazards.entry(hazard).or_insert(evidence);
    }

    fn names(&self) -> String {
        names(self.hazards.keys())
    }
}

fn names<'h>(hazards: impl Iterator<Item = &'h Hazard>) -> String {
    let names: Vec<&str> = hazards.map(|h| h.name()).collect();
    if names.is_empty() {
        "safe".into()
    } else {
        names.join(" ")
    }
}

/// The case as a folder: `live.sql` first, then its files; what migrun's loader says when it
/// refuses the folder (as `up` and `lint` then do, before anything runs).
fn folder(case: &Case) -> Result<Vec<Migration>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let live = std::fs::read_to_string(Path::new(FIXTURES).join("live.sql")).expect("live.sql");
    std::fs::write(dir.path().join("0001_live.sql"), live).expect("write");
    for (i, body) in case.files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{:04}_case.sql", i + 2)), body).expect("write");
    }
    files::load(dir.path(), Accept::to_apply(false)).map_err(|e| e.to_string())
}

/// Lint's verdict: the hazards of the rules that fire on the case's files.
fn linted(migrations: &[Migration], major: u32) -> BTreeSet<Hazard> {
    let live = migrations[0].display_path();
    let report = lint::lint_for(migrations, major);
    report
        .findings
        .iter()
        .filter(|f| f.file != live)
        .filter_map(|f| RULES.iter().find(|r| r.id == f.rule).and_then(|r| r.hazard))
        .collect()
}

/// What the previous release's queries return: the rows, or the error.
type OldApp = Vec<Result<usize, String>>;

/// Each query runs in a transaction rolled back after it (in a savepoint when `nested`).
async fn old_app(client: &Client, queries: &[String], nested: bool) -> OldApp {
    let (begin, end) =
        if nested { ("SAVEPOINT old_app", "ROLLBACK TO SAVEPOINT old_app") } else { ("BEGIN", "ROLLBACK") };
    let mut results = Vec::new();
    for query in queries {
        let _ = client.batch_execute(begin).await;
        let result = client
            .simple_query(query)
            .await
            .map(|messages| messages.iter().filter(|m| matches!(m, SimpleQueryMessage::Row(_))).count())
            .map_err(|e| crate::db::failure::PgFailure::from_pg(&e).message);
        let _ = client.batch_execute(end).await;
        results.push(result);
    }
    results
}

/// The database's schema, and a digest of every table's rows.
async fn state(client: &Client) -> BTreeSet<String> {
    let mut lines: BTreeSet<String> = schema::read_database(client).await.expect("schema").lines().collect();
    let tables = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables");
    for row in tables {
        let table: String = row.try_get(0).expect("a table name");
        let digest = client
            .query_one(&format!("SELECT count(*)::text || ' ' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM {table} t"), &[])
            .await
            .and_then(|r| r.try_get::<_, String>(0))
            .unwrap_or_else(|e| e.to_string());
        lines.insert(format!("rows {table} {digest}"));
    }
    lines
}

/// Whether a file can leave part of itself applied: it is not one transaction.
fn not_atomic(migration: &Migration) -> bool {
    migration.directives.no_transaction
        || split::split(&migration.sql).iter().any(|s| {
            let first = s.text.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default();
            ["begin", "start", "commit", "end", "rollback", "abort"].contains(&first.to_ascii_lowercase().as_str())
        })
}

/// The statements that worked through an existing table's rows under a blocking lock.
fn record_blocks(measured: Vec<measure::Measured>, truth: &mut Truth) {
    for statement in measured {
        if statement.blocks_while_working() {
            let held: Vec<String> = statement.held.iter().map(|l| format!("{} on {}", l.mode, l.table)).collect();
            let work: Vec<String> = statement
                .rewritten
                .iter()
                .map(|t| format!("rewrote {t}"))
                .chain(statement.worked.iter().map(|t| format!("worked through {t}")))
                .collect();
            truth.add(
                Hazard::Blocks,
                format!("line {}: held {} and {}", statement.line, held.join(", "), work.join(", ")),
            );
        }
    }
}

struct Bench<'a> {
    server: &'a Server,
    /// A session on a copy of the live database, for cases of one transactional file: they
    /// run there in a transaction that is rolled back, with no copy of their own.
    work: Client,
    next: usize,
    queries: Vec<String>,
    baseline: OldApp,
}

impl Bench<'_> {
    async fn copy(&mut self, of: &str) -> String {
        self.next += 1;
        let name = format!("case_{}", self.next);
        self.server.create(&name, Some(of)).await.expect("copy a database");
        name
    }

    async fn connect(&self, name: &str) -> Client {
        self.server.connect(name).await.expect("connect")
    }

    /// Measures one case, file by file, on a copy of the live database.
    async fn measure(&mut self, migrations: &[Migration]) -> Truth {
        if let [migration] = migrations {
            if !not_atomic(migration) {
                return self.measure_alone(migration).await;
            }
        }
        let mut truth = Truth::default();
        let db = self.copy("live").await;
        for migration in migrations {
            let partial = not_atomic(migration);
            self.measure_locks(&db, migration, partial, &mut truth).await;
            let before = if partial { Some(self.copy(&db).await) } else { None };
            let client = self.connect(&db).await;
            if let Err(e) = verify::run_as_up(&client, migration).await {
                truth.add(Hazard::Fails, e);
                break;
            }
            self.check_old_app(&db, &mut truth).await;
            if let Some(before) = before {
                let after = state(&client).await;
                self.measure_reruns(&before, migration, &after, &mut truth).await;
                self.server.drop_database(&before).await;
            }
        }
        self.server.drop_database(&db).await;
        truth
    }

    /// One transactional file, in a transaction on `work` that is rolled back: measured, then
    /// run as `up` runs it (deferred constraints checked as COMMIT would), then the previous
    /// release's queries after the session is reset as `up` resets it.
    async fn measure_alone(&mut self, migration: &Migration) -> Truth {
        let mut truth = Truth::default();
        let measured = measure::measure_file(&self.work, migration, Finish::Rollback, None).await;
        record_blocks(measured.unwrap_or_default(), &mut truth);
        let body = format!("BEGIN;\n{}\n;", migration.sql);
        let ran = match self.work.batch_execute(&body).await {
            Ok(()) => self.work.batch_execute("SET CONSTRAINTS ALL IMMEDIATE").await,
            Err(e) => Err(e),
        };
        match ran {
            Err(e) => truth.add(Hazard::Fails, crate::db::failure::PgFailure::from_pg(&e).to_string()),
            Ok(()) => {
                let _ = self.work.batch_execute("RESET ALL; SET SESSION AUTHORIZATION DEFAULT").await;
                let now = old_app(&self.work, &self.queries, true).await;
                self.compare_old_app(&now, &mut truth);
            }
        }
        let _ = self.work.batch_execute("ROLLBACK").await;
        truth
    }

    /// The previous release's queries, from a session of their own as the old app's: a
    /// query that fails now, or returns fewer rows, is broken.
    async fn check_old_app(&self, db: &str, truth: &mut Truth) {
        let client = self.connect(db).await;
        let now = old_app(&client, &self.queries, false).await;
        self.compare_old_app(&now, truth);
    }

    /// A query that fails now, or returns fewer rows than on the live database, is broken.
    fn compare_old_app(&self, now: &OldApp, truth: &mut Truth) {
        for ((query, was), is) in self.queries.iter().zip(&self.baseline).zip(now) {
            let broken = match (was, is) {
                (Ok(before), Ok(after)) => after < before,
                (Ok(_), Err(_)) => true,
                (Err(_), _) => false,
            };
            if broken {
                truth.add(Hazard::BreaksOldApp, format!("`{query}`: {was:?} before, {is:?} after"));
            }
        }
    }

    async fn measure_locks(&mut self, db: &str, migration: &Migration, partial: bool, truth: &mut Truth) {
        let measured = if partial {
            // It commits as it goes: measure on a copy.
            let copy = self.copy(db).await;
            let (client, observer) = (self.connect(&copy).await, self.connect(&copy).await);
            let measured = measure::measure_file(&client, migration, Finish::Commit, Some(&observer)).await;
            drop((client, observer));
            self.server.drop_database(&copy).await;
            measured
        } else {
            let client = self.connect(db).await;
            measure::measure_file(&client, migration, Finish::Rollback, None).await
        };
        // A failing file is the runner's to report.
        record_blocks(measured.unwrap_or_default(), truth);
    }

    /// Each cut of a file that commits as it goes, run again as `up` would.
    async fn measure_reruns(
        &mut self,
        before: &str,
        migration: &Migration,
        after: &BTreeSet<String>,
        truth: &mut Truth,
    ) {
        let statements = split::split(&migration.sql);
        for cut in 1..=statements.len() {
            let copy = self.copy(before).await;
            let client = self.connect(&copy).await;
            let transactional = !migration.directives.no_transaction;
            if transactional {
                let _ = client.batch_execute("BEGIN").await;
            }
            for statement in &statements[..cut] {
                if client.batch_execute(statement.text).await.is_err() {
                    break;
                }
            }
            // The connection is lost here: what was not committed is rolled back.
            drop(client);
            let client = self.connect(&copy).await;
            let problem = match verify::run_as_up(&client, migration).await {
                Err(e) => Some(format!("the run after the cut failed: {e}")),
                Ok(()) => {
                    let now = state(&client).await;
                    let differences: Vec<String> = after.symmetric_difference(&now).map(|l| format!("~ {l}")).collect();
                    (!differences.is_empty()).then(|| format!("another database: {}", differences.join("; ")))
                }
            };
            drop(client);
            self.server.drop_database(&copy).await;
            if let Some(problem) = problem {
                truth.add(Hazard::Rerun, format!("cut after {cut} of {} statements: {problem}", statements.len()));
                return;
            }
        }
    }
}

#[test]
fn lint_agrees_with_what_postgres_measures() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let server = Server::start().await.expect("a scratch Postgres (the server binaries on PATH)");
        let live = std::fs::read_to_string(Path::new(FIXTURES).join("live.sql")).expect("live.sql");
        server.create("live", None).await.expect("create the live database");
        let client = server.connect("live").await.expect("connect");
        client.batch_execute(&live).await.expect("live.sql runs");
        client.batch_execute("ANALYZE").await.expect("analyze");
        let old = std::fs::read_to_string(Path::new(FIXTURES).join("old_app.sql")).expect("old_app.sql");
        let queries: Vec<String> = split::split(&old).iter().map(|s| s.text.trim().to_string()).collect();
        let baseline = old_app(&client, &queries, false).await;
        let failing: Vec<&String> = queries.iter().zip(&baseline).filter(|(_, r)| r.is_err()).map(|(q, _)| q).collect();
        assert!(failing.is_empty(), "old_app.sql fails on the live database: {failing:?}");
        drop(client);
        server.create("work", Some("live")).await.expect("copy the live database");
        let work = server.connect("work").await.expect("connect");
        let mut bench = Bench { server: &server, work, next: 0, queries, baseline };

        // MIGRUN_LINT_CASES names a set kept outside the repository (an independent one): it
        // is measured and scored the same way, and only reported.
        let outside = std::env::var_os("MIGRUN_LINT_CASES").map(std::path::PathBuf::from);
        let cases = cases(outside.as_deref().unwrap_or(&Path::new(FIXTURES).join("cases.sql")));
        let mut measured = String::from("# What each case of cases.sql does on Postgres, measured by check::lint_truth\n# (MIGRUN_BLESS=1 cargo test --lib lint_truth rewrites it): case, class, hazards, what, evidence.\n");
        let mut disagree = Vec::new();
        let mut score: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
        for (n, case) in cases.iter().enumerate() {
            let (truth, found) = match folder(case) {
                Ok(migrations) => (bench.measure(&migrations[1..]).await, linted(&migrations, server.major())),
                Err(refused) => {
                    let mut truth = Truth::default();
                    truth.add(Hazard::Fails, format!("migrun refuses the folder: {refused}"));
                    (truth, BTreeSet::from([Hazard::Fails]))
                }
            };
            let evidence: Vec<String> = truth.hazards.iter().map(|(h, e)| format!("{}: {e}", h.name())).collect();
            let _ = writeln!(
                measured,
                "{n}\t{}\t{}\t{}\t{}",
                case.class,
                truth.names(),
                case.what,
                evidence.join(" | ").replace(['\n', '\t'], " ")
            );
            let expected: BTreeSet<Hazard> = truth.hazards.keys().copied().collect();
            let entry = score.entry(case.class.as_str()).or_default();
            entry[0] += expected.intersection(&found).count();
            entry[1] += found.difference(&expected).count();
            entry[2] += expected.difference(&found).count();
            if case.known.is_some() && expected == found {
                disagree.push(format!("case {n} ({}): lint agrees now; remove its `-- known:` line", case.what));
            }
            if expected != found && case.known.is_none() {
                disagree.push(format!(
                    "case {n} ({}: {}): measured {}, lint says {}{}",
                    case.class,
                    case.what,
                    truth.names(),
                    names(found.iter()),
                    if evidence.is_empty() { String::new() } else { format!(" [{}]", evidence.join(" | ")) }
                ));
            }
        }
        let (tp, fp, fn_) = score.values().fold((0, 0, 0), |(a, b, c), s| (a + s[0], b + s[1], c + s[2]));
        eprintln!(
            "{} cases: precision {:.3} ({tp}/{}), recall {:.3} ({tp}/{})",
            cases.len(),
            tp as f64 / (tp + fp).max(1) as f64,
            tp + fp,
            tp as f64 / (tp + fn_).max(1) as f64,
            tp + fn_
        );
        if let Some(outside) = outside {
            eprintln!("{} (not in the repository): {} disagreement(s)\n{}", outside.display(), disagree.len(), disagree.join("\n"));
            eprintln!("{measured}");
            return;
        }
        let path = Path::new(FIXTURES).join("measured.txt");
        if std::env::var_os("MIGRUN_BLESS").is_some() {
            std::fs::write(&path, &measured).expect("write measured.txt");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let columns = |text: &str| -> Vec<String> {
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.splitn(5, '\t').take(4).collect::<Vec<_>>().join("\t")).collect()
        };
        assert!(cases.len() >= 300, "{} cases; the set needs at least 300", cases.len());
        assert_eq!(columns(&committed), columns(&measured), "measured.txt is not what Postgres measures now (MIGRUN_BLESS=1 to rewrite it)");
        assert!(disagree.is_empty(), "{} of {} cases disagree:\n{}", disagree.len(), cases.len(), disagree.join("\n"));
    });
}

//! `migrun verify`: the folder run against a scratch Postgres, measured.
//!
//! 1. Every file from empty, statement by statement: the locks each statement takes on tables
//!    that existed before its file (read from `pg_locks` inside its transaction), whether it
//!    rewrote one (its relfilenode changed), and how long it took.
//! 2. Interruption: each no-transaction file is started from the state before it, cut after
//!    each prefix of its statements (and with an INVALID index where a `CREATE INDEX
//!    CONCURRENTLY` was cut), then run again as `up` would; it must succeed and leave the same
//!    schema as the uninterrupted run. Repeatable files must run twice.
//! 3. The way back: each version's down file, run right after its up (with every earlier
//!    version applied), must give the schema from before the up; and up, down, up must give
//!    the schema of up.
//! 4. With a previous release's folder: that folder first, then this one, as `up` would; the
//!    schema must equal the one from empty. Then this release's new versions undone with their
//!    down files, newest first (and the previous release's repeatable files run again, as its
//!    `up` would): the schema must equal the previous release's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::Client;

use super::measure::{self, drop_invalid_index, measure_file, Failed, Measured};
use super::scratch::{ScratchError, Server};
use crate::catalog::schema::{self, Schema};
use crate::db::failure::PgFailure;
use crate::migrate::files::{Migration, MigrationKind};
use crate::migrate::split;
use crate::signals::Shutdown;

/// One interruption (or second run) tried.
#[derive(Debug, Clone, Serialize)]
pub struct Rerun {
    pub file: String,
    /// What was tried: `after 2 of 3 statements`, `index users_email left INVALID`, `run twice`.
    pub case: String,
    /// None when the file succeeded and left the uninterrupted schema.
    pub problem: Option<String>,
}

/// The upgrade path compared with installing from empty.
#[derive(Debug, Clone, Serialize)]
pub struct Upgrade {
    pub from: String,
    /// Schema lines only in the from-empty schema (`-`) or only in the upgraded one (`+`).
    pub differences: Vec<String>,
    /// Rolling the upgraded database back to the previous release with this release's down
    /// files: schema lines only in the previous release's schema (`-`) or only in the rolled
    /// back one (`+`), or why it could not be tried. `None` when the upgrade already differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Vec<String>>,
    /// Why the rollback was not tried: a new version without a down file (a release that is
    /// rolled back by the app only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_not_tried: Option<String>,
}

/// One version's down file, proved on the scratch server.
#[derive(Debug, Clone, Serialize)]
pub struct DownCheck {
    pub version: u64,
    pub file: String,
    /// What is wrong: the down (or the up after it) failed, or left another schema. None
    /// when the down restored the schema from before its up and the up after it the schema
    /// from after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The schema lines: `-` only in the schema expected, `+` only in the one the down left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// Everything verify measured.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub statements: Vec<Measured>,
    pub reruns: Vec<Rerun>,
    /// Every down file, proved.
    pub downs: Vec<DownCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// Whether an interrupted index build was faked (needs a superuser).
    pub invalid_index_cases: bool,
    pub duration_ms: u64,
}

impl VerifyReport {
    /// The statements that block the live app.
    pub fn blocking(&self) -> impl Iterator<Item = &Measured> {
        self.statements.iter().filter(|s| s.blocking())
    }
}

/// The scratch databases of one run, dropped at its end, and what existed cluster-wide
/// before it (roles, tablespaces): what a pass adds there is dropped after it, or the next
/// pass (and the next run) would find it.
struct Databases<'a> {
    server: &'a Server,
    prefix: String,
    next: usize,
    created: Vec<String>,
    before: ClusterObjects,
    /// The folders' text: on a server someone named, only a role or tablespace the files name
    /// is dropped (another client may create one meanwhile).
    mentioned: String,
}

/// Cluster-wide objects, by name.
#[derive(Debug, Default)]
struct ClusterObjects {
    roles: BTreeSet<String>,
    tablespaces: BTreeSet<String>,
}

impl ClusterObjects {
    async fn read(client: &Client) -> Result<ClusterObjects, tokio_postgres::Error> {
        let names = |rows: Vec<tokio_postgres::Row>| rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        Ok(ClusterObjects {
            roles: names(client.query("SELECT rolname::text FROM pg_roles", &[]).await?),
            tablespaces: names(client.query("SELECT spcname::text FROM pg_tablespace", &[]).await?),
        })
    }
}

impl<'a> Databases<'a> {
    async fn create(&mut self, template: Option<&str>) -> Result<String, ScratchError> {
        self.next += 1;
        let name = format!("{}_{}", self.prefix, self.next);
        self.server.create(&name, template).await?;
        self.created.push(name.clone());
        Ok(name)
    }

    async fn drop_one(&mut self, name: &str) {
        self.server.drop_database(name).await;
        self.created.retain(|n| n != name);
    }

    async fn drop_all(&mut self) {
        for name in self.created.drain(..).rev() {
            self.server.drop_database(&name).await;
        }
    }

    /// Drops every scratch database, then the roles and tablespaces the passes created.
    async fn reset_cluster(&mut self) {
        self.drop_all().await;
        let Ok(admin) = self.server.connect(self.server.maintenance()).await else { return };
        let Ok(now) = ClusterObjects::read(&admin).await else { return };
        let text = self.mentioned.to_lowercase();
        let ours = |name: &String| self.server.is_scratch() || text.contains(&name.to_lowercase());
        let drops = now
            .tablespaces
            .difference(&self.before.tablespaces)
            .filter(|n| ours(n))
            .map(|n| format!("DROP TABLESPACE \"{}\"", n.replace('"', "\"\"")))
            .chain(now.roles.difference(&self.before.roles).filter(|n| ours(n)).map(|n| {
                let quoted = n.replace('"', "\"\"");
                format!("DROP OWNED BY \"{quoted}\"; DROP ROLE \"{quoted}\"")
            }));
        for sql in drops {
            match admin.batch_execute(&sql).await {
                Ok(()) => tracing::info!(statement = %sql, "dropped what a verify pass created cluster-wide"),
                Err(e) => {
                    tracing::warn!(statement = %sql, error = %failure(&e), "cannot drop what a verify pass created cluster-wide")
                }
            }
        }
    }
}

/// Verifies `migrations` (in `up` order) on `server`; `from` is the previous release's folder.
/// A stop request cancels it at once: the pass in flight is abandoned, its scratch databases
/// dropped (which ends their sessions and the statement running there), and what the passes
/// created cluster-wide dropped.
pub async fn verify(
    server: &Server,
    migrations: &[Migration],
    from: Option<(&str, &[Migration])>,
    shutdown: &Shutdown,
) -> Result<VerifyReport, ScratchError> {
    let started = Instant::now();
    if !server.is_scratch() {
        server.sweep_databases().await;
    }
    let admin = server.connect(server.maintenance()).await?;
    let before = ClusterObjects::read(&admin).await.map_err(server_error)?;
    drop(admin);
    let mentioned: String =
        migrations.iter().chain(from.map(|(_, m)| m).unwrap_or_default()).map(|m| m.sql.as_str()).collect();
    let prefix = format!("{}{}", server.database_prefix(), started.elapsed().subsec_nanos() % 100_000);
    let mut databases = Databases { server, prefix, next: 0, created: Vec::new(), before, mentioned };
    let result = tokio::select! {
        result = run(&mut databases, migrations, from) => result,
        stop = shutdown.wait() => {
            tracing::warn!(signal = %crate::signals::name(&stop.signal), "stop requested: abandoning the verify pass and dropping its scratch databases");
            Err(ScratchError::Interrupted(stop))
        }
    };
    databases.reset_cluster().await;
    let mut report = result?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// On a server someone named, a statement that changes the whole server is refused before
/// anything runs (before connecting): verify would change that server for real.
pub fn refuse_cluster_wide<'m>(migrations: impl Iterator<Item = &'m Migration>) -> Result<(), ScratchError> {
    for migration in migrations {
        if let Some(statement) = split::split(&migration.sql).iter().find_map(|s| split::cluster_wide(s.text)) {
            return Err(ScratchError::ClusterWide { file: migration.display_path(), statement });
        }
    }
    Ok(())
}

/// A no-transaction file to interrupt: a copy of the database before it, and the schema after.
struct Interruptible<'m> {
    migration: &'m Migration,
    before: String,
    after: Schema,
}

async fn run(
    databases: &mut Databases<'_>,
    migrations: &[Migration],
    from: Option<(&str, &[Migration])>,
) -> Result<VerifyReport, ScratchError> {
    let server = databases.server;
    let mut report =
        VerifyReport { files: migrations.len(), invalid_index_cases: server.superuser, ..Default::default() };
    let work = databases.create(None).await?;
    let mut client = server.connect(&work).await?;
    let mut interruptible = Vec::new();
    for migration in migrations {
        let statements = split::split(&migration.sql);
        let cut = migration.directives.no_transaction
            && (statements.len() > 1 || statements.iter().any(|s| split::concurrent_index_name(s.text).is_some()));
        let before = if cut {
            // A template must have no sessions: close ours while the copy is made.
            drop(client);
            let copy = databases.create(Some(&work)).await?;
            client = server.connect(&work).await?;
            Some(copy)
        } else {
            None
        };
        match measure_file(&client, migration, measure::Finish::Commit, None).await {
            Ok(measured) => report.statements.extend(measured),
            Err(failed) => {
                report.failed = Some(failed);
                return Ok(report);
            }
        }
        if let Some(before) = before {
            let after = schema::read_database(&client).await.map_err(server_error)?;
            interruptible.push(Interruptible { migration, before, after });
        }
    }
    let from_empty = schema::read_database(&client).await.map_err(server_error)?;
    for migration in migrations.iter().filter(|m| m.kind == MigrationKind::Repeatable) {
        let problem = match run_as_up(&client, migration).await {
            Err(e) => Some(format!("the second run failed: {e}")),
            Ok(()) => differences_text(&from_empty, &schema::read_database(&client).await.map_err(server_error)?),
        };
        report.reruns.push(Rerun { file: migration.display_path(), case: "run twice".into(), problem });
    }
    drop(client);
    for file in &interruptible {
        report.reruns.extend(interrupt(databases, file).await?);
    }
    if migrations.iter().any(|m| m.down.is_some()) {
        report.downs = prove_downs(databases, migrations).await?;
    }
    if let Some((from_dir, previous)) = from {
        // A clean cluster for the upgrade: the roles the first pass created would make the
        // previous folder's CREATE ROLE fail, an upgrade difference that is not one.
        databases.reset_cluster().await;
        let upgraded = databases.create(None).await?;
        let client = server.connect(&upgraded).await?;
        let mut differences = Vec::new();
        let order = upgrade_order(previous, migrations);
        let mut previous_schema = None;
        for (n, migration) in order.iter().enumerate() {
            if n == previous.len() {
                previous_schema = Some(schema::read_database(&client).await.map_err(server_error)?);
            }
            if let Err(e) = run_as_up(&client, migration).await {
                differences.push(format!("! {}: {e}", migration.display_path()));
                break;
            }
        }
        let mut rollback = None;
        let without_down = order[previous.len()..].iter().find(|m| m.version().is_some() && m.down.is_none());
        let rollback_not_tried = without_down.map(|m| format!("{} has no down file", m.display_path()));
        if differences.is_empty() {
            differences =
                Schema::differences(&from_empty, &schema::read_database(&client).await.map_err(server_error)?);
            let previous_schema = match previous_schema {
                Some(schema) => schema,
                None => schema::read_database(&client).await.map_err(server_error)?,
            };
            if differences.is_empty() && without_down.is_none() {
                rollback = Some(roll_back(&client, previous, &order[previous.len()..], &previous_schema).await?);
            }
        }
        report.upgrade = Some(Upgrade { from: from_dir.to_string(), differences, rollback, rollback_not_tried });
    }
    Ok(report)
}

/// Each version with a down file, on one database taken forward version by version: before,
/// up, down (must give before), up (must give after up). A down that fails or differs is
/// reported, and the pass goes on from the state after its up, as the next version expects:
/// when that state cannot be had again on this database, on a new one brought to it.
async fn prove_downs(databases: &mut Databases<'_>, migrations: &[Migration]) -> Result<Vec<DownCheck>, ScratchError> {
    let versioned: Vec<&Migration> = migrations.iter().filter(|m| m.kind != MigrationKind::Repeatable).collect();
    let (mut name, mut client) = fresh(databases, &[]).await?;
    let mut checks = Vec::new();
    for (at, migration) in versioned.iter().enumerate() {
        let Some(down) = migration.down.as_deref() else {
            run_as_up(&client, migration).await.map_err(ScratchError::Server)?;
            continue;
        };
        let (check, after) = prove_down(&client, migration, down).await?;
        let failed = check.problem.is_some();
        checks.push(check);
        if failed && !restore(&client, migration, &after).await? {
            drop(client);
            databases.drop_one(&name).await;
            (name, client) = fresh(databases, &versioned[..=at]).await?;
        }
    }
    drop(client);
    databases.drop_one(&name).await;
    Ok(checks)
}

/// A new scratch database with `applied` run on it: its name and a session on it.
async fn fresh(databases: &mut Databases<'_>, applied: &[&Migration]) -> Result<(String, Client), ScratchError> {
    let name = databases.create(None).await?;
    let client = databases.server.connect(&name).await?;
    for migration in applied {
        run_as_up(&client, migration).await.map_err(ScratchError::Server)?;
    }
    Ok((name, client))
}

/// Up, down, up of one version on `client`; with the check, the schema after the up.
async fn prove_down(
    client: &Client,
    migration: &Migration,
    down: &Migration,
) -> Result<(DownCheck, Schema), ScratchError> {
    let check = |problem: Option<String>, differences: Vec<String>| DownCheck {
        version: migration.version().unwrap_or_default(),
        file: down.display_path(),
        problem,
        differences,
    };
    let before = schema::read_database(client).await.map_err(server_error)?;
    run_as_up(client, migration).await.map_err(ScratchError::Server)?;
    let after = schema::read_database(client).await.map_err(server_error)?;
    if let Err(e) = run_as_up(client, down).await {
        return Ok((check(Some(format!("the down file failed right after its up: {e}")), Vec::new()), after));
    }
    let differences = Schema::differences(&before, &schema::read_database(client).await.map_err(server_error)?);
    if !differences.is_empty() {
        let problem = format!("does not restore the schema from before its up ({} difference(s))", differences.len());
        return Ok((check(Some(problem), differences), after));
    }
    if let Err(e) = run_as_up(client, migration).await {
        return Ok((check(Some(format!("the up file fails after its down: {e}")), Vec::new()), after));
    }
    let differences = Schema::differences(&after, &schema::read_database(client).await.map_err(server_error)?);
    match differences.is_empty() {
        true => Ok((check(None, Vec::new()), after)),
        false => Ok((check(Some("up, down, up gives another schema than up".into()), differences), after)),
    }
}

/// After a down that left another schema: back to the schema after the up (as it is, or by
/// running the up again); false when the pass cannot go on.
async fn restore(client: &Client, migration: &Migration, after: &Schema) -> Result<bool, ScratchError> {
    // A down that undid nothing (or only part) may have left the schema of after the up.
    if schema::read_database(client).await.map_err(server_error)? == *after {
        return Ok(true);
    }
    if run_as_up(client, migration).await.is_err() {
        return Ok(false);
    }
    Ok(schema::read_database(client).await.map_err(server_error)? == *after)
}

/// This release's new versions undone newest first with their down files, and the previous
/// release's repeatable files that this one changed run again: the differences from the
/// previous release's schema, or what kept the rollback from running.
async fn roll_back(
    client: &Client,
    previous: &[Migration],
    added: &[&Migration],
    previous_schema: &Schema,
) -> Result<Vec<String>, ScratchError> {
    let mut versions: Vec<&Migration> = added.iter().copied().filter(|m| m.version().is_some()).collect();
    versions.sort_by_key(|m| std::cmp::Reverse(m.version()));
    for migration in versions {
        let Some(down) = migration.down.as_deref() else { continue };
        if let Err(e) = run_as_up(client, down).await {
            return Ok(vec![format!("! {}: {e}", down.display_path())]);
        }
    }
    let changed: HashSet<&str> =
        added.iter().filter(|m| m.kind == MigrationKind::Repeatable).map(|m| m.description.as_str()).collect();
    for migration in
        previous.iter().filter(|m| m.kind == MigrationKind::Repeatable && changed.contains(m.description.as_str()))
    {
        if let Err(e) = run_as_up(client, migration).await {
            return Ok(vec![format!("! {}: {e}", migration.display_path())]);
        }
    }
    Ok(Schema::differences(previous_schema, &schema::read_database(client).await.map_err(server_error)?))
}

/// The previous folder as `up` ran it, then this folder as `up` would run it next: versions
/// it does not have yet, and repeatable files whose text changed.
fn upgrade_order<'m>(previous: &'m [Migration], current: &'m [Migration]) -> Vec<&'m Migration> {
    let versions: HashSet<u64> = previous.iter().filter_map(Migration::version).collect();
    let repeatables: HashMap<&str, &str> = previous
        .iter()
        .filter(|m| m.kind == MigrationKind::Repeatable)
        .map(|m| (m.description.as_str(), m.checksum.as_str()))
        .collect();
    let pending = current.iter().filter(|m| match m.version() {
        Some(v) => !versions.contains(&v),
        None => repeatables.get(m.description.as_str()) != Some(&m.checksum.as_str()),
    });
    previous.iter().chain(pending).collect()
}

/// Every cut of one no-transaction file, each on a fresh copy of the database before it.
async fn interrupt(databases: &mut Databases<'_>, file: &Interruptible<'_>) -> Result<Vec<Rerun>, ScratchError> {
    let server = databases.server;
    let statements = split::split(&file.migration.sql);
    let mut cases: Vec<(String, usize, Option<String>)> =
        (1..statements.len()).map(|i| (format!("after {i} of {} statements", statements.len()), i, None)).collect();
    if server.superuser {
        for (i, statement) in statements.iter().enumerate() {
            if let Some(index) = split::concurrent_index_name(statement.text) {
                cases.push((format!("index {index} left INVALID by an interrupted build"), i, Some(index)));
            }
        }
    }
    let mut reruns = Vec::new();
    for (case, prefix, invalid_index) in cases {
        let name = databases.create(Some(&file.before)).await?;
        let client = server.connect(&name).await?;
        let problem = match cut_and_rerun(&client, file.migration, prefix, invalid_index.as_deref()).await {
            Err(e) => Some(e),
            Ok(()) => differences_text(&file.after, &schema::read_database(&client).await.map_err(server_error)?),
        };
        drop(client);
        server.drop_database(&name).await;
        databases.created.retain(|n| *n != name);
        reruns.push(Rerun { file: file.migration.display_path(), case, problem });
    }
    server.drop_database(&file.before).await;
    databases.created.retain(|n| *n != file.before);
    Ok(reruns)
}

async fn cut_and_rerun(
    client: &Client,
    migration: &Migration,
    prefix: usize,
    invalid_index: Option<&str>,
) -> Result<(), String> {
    let statements = split::split(&migration.sql);
    for statement in &statements[..prefix] {
        client
            .batch_execute(statement.text)
            .await
            .map_err(|e| format!("setting up the cut failed: {}", failure(&e)))?;
    }
    if let Some(index) = invalid_index {
        client
            .batch_execute(statements[prefix].text)
            .await
            .map_err(|e| format!("building the index to cut failed: {}", failure(&e)))?;
        client
            .execute(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = (SELECT c.oid FROM pg_class c WHERE c.relname = $1 AND c.relkind = 'i' AND c.relnamespace = ANY (SELECT oid FROM pg_namespace WHERE nspname = ANY (current_schemas(false))) LIMIT 1)",
                &[&index],
            )
            .await
            .map_err(|e| format!("marking the index INVALID failed: {}", failure(&e)))?;
    }
    run_as_up(client, migration).await.map_err(|e| format!("the run after the interruption failed: {e}"))
}

/// Runs `migration` as `up` does: a transactional file in one transaction; a no-transaction
/// file statement by statement, dropping an INVALID index of the same name before each
/// `CREATE INDEX CONCURRENTLY`.
/// Like `up`, it refuses a file that ended its transaction itself (a transactional file) or
/// left one open (a no-transaction file); what the file committed before that stays.
pub(super) async fn run_as_up(client: &Client, migration: &Migration) -> Result<(), String> {
    if !migration.directives.no_transaction {
        let sql = format!("BEGIN;\n{}\n;", migration.sql);
        let result = match client.batch_execute(&sql).await {
            Ok(()) if !in_transaction(client).await.map_err(|e| failure(&e))? => Err(ENDED.to_string()),
            Ok(()) => client.batch_execute("COMMIT").await.map_err(|e| failure(&e)),
            Err(e) => Err(failure(&e)),
        };
        if result.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        return result;
    }
    for statement in split::split(&migration.sql) {
        if let Some(index) = split::concurrent_index_name(statement.text) {
            drop_invalid_index(client, &index).await.map_err(|e| failure(&e))?;
        }
        if let Err(e) = client.batch_execute(statement.text).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(failure(&e));
        }
    }
    if in_transaction(client).await.map_err(|e| failure(&e))? {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(LEFT_OPEN.to_string());
    }
    Ok(())
}

const ENDED: &str =
    "the file ended the transaction itself (COMMIT or ROLLBACK in it), so `up` refuses it after what it committed";
const LEFT_OPEN: &str = "the file left a transaction open (BEGIN without COMMIT), so `up` rolls it back and refuses it";

/// Whether the session is inside a transaction block: there, a new statement starts later
/// than its transaction (the test `up` makes after a file).
async fn in_transaction(client: &Client) -> Result<bool, tokio_postgres::Error> {
    // The simple protocol, as `up` asks: an extended query's own steps start it later than
    // its implicit transaction even outside a block.
    let messages = client.simple_query("SELECT statement_timestamp() <> transaction_timestamp()").await?;
    Ok(messages.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(row) if row.try_get(0).ok().flatten() == Some("t")),
    ))
}

fn differences_text(expected: &Schema, actual: &Schema) -> Option<String> {
    let differences = Schema::differences(expected, actual);
    (!differences.is_empty())
        .then(|| format!("the schema differs from the uninterrupted run: {}", differences.join("; ")))
}

fn failure(e: &tokio_postgres::Error) -> String {
    PgFailure::from_pg(e).to_string()
}

fn server_error(e: tokio_postgres::Error) -> ScratchError {
    ScratchError::Server(failure(&e))
}

//! What statements do to the tables that existed before their file, measured on a real
//! server: the locks each takes (read from `pg_locks` inside its transaction), whether it
//! rewrote a table (its relfilenode changed), and how long it took. `verify` measures a folder
//! with it; the lint test measures its cases with it, as ground truth for the rules.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::Client;

use crate::db::failure::PgFailure;
use crate::migrate::files::Migration;
use crate::migrate::split;

/// Lock modes that block the live app's writes (or everything).
const BLOCKING: [&str; 4] = ["ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"];

/// A lock one statement took on a table that existed before its file.
#[derive(Debug, Clone, Serialize)]
pub struct Lock {
    pub table: String,
    pub mode: String,
}

/// What one statement did.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub file: String,
    pub line: usize,
    /// The statement's first line.
    pub statement: String,
    pub duration_ms: f64,
    /// The strongest lock per existing table, in the order taken.
    pub locks: Vec<Lock>,
    /// Existing tables it rewrote.
    pub rewritten: Vec<String>,
    /// Existing tables holding rows of which it read or wrote at least half: work that grows
    /// with the table.
    pub worked: Vec<String>,
    /// The blocking locks its transaction held when it ended, its own and earlier statements'.
    pub held: Vec<Lock>,
    /// False when it cannot run in a transaction (CONCURRENTLY, VACUUM) and no second session
    /// watched it: its locks were not read.
    pub locks_measured: bool,
}

impl Measured {
    /// Whether it blocks the live app: a blocking lock on, or a rewrite of, an existing table.
    pub fn blocking(&self) -> bool {
        !self.rewritten.is_empty() || self.locks.iter().any(|l| BLOCKING.contains(&l.mode.as_str()))
    }

    /// Whether the live app waits for work that grows with a table: it read or wrote (or
    /// rewrote) the rows of an existing table while its transaction held a lock that blocks
    /// the app (writes to a table; reads of a materialized view, which the app only reads).
    #[cfg(test)]
    pub fn blocks_while_working(&self) -> bool {
        !self.worked.is_empty() && !self.held.is_empty()
    }
}

/// A file that failed from empty.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// How a measured transactional file ends: committed (verify goes on from it), or rolled
/// back (the lint test then runs it as `up` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Commit,
    #[cfg(test)]
    Rollback,
}

/// An existing table: its name, relfilenode, estimated rows, and whether it is a
/// materialized view.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    node: u32,
    rows: f64,
    matview: bool,
}

impl Table {
    /// Whether `mode` on it blocks the live app.
    fn blocks(&self, mode: &str) -> bool {
        if self.matview {
            mode == "AccessExclusiveLock"
        } else {
            BLOCKING.contains(&mode)
        }
    }
}

/// Tables before a file, by oid.
type Tables = HashMap<u32, Table>;

const TABLES_SQL: &str = "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relfilenode::oid, c.reltuples::float8,
           c.relkind = 'm'
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

async fn tables(client: &Client) -> Result<Tables, tokio_postgres::Error> {
    let rows = client.query(TABLES_SQL, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                Table { name: r.try_get(1)?, node: r.try_get(2)?, rows: r.try_get(3)?, matview: r.try_get(4)? },
            ))
        })
        .collect()
}

/// Rows read, fetched, inserted, updated and deleted per table: by this transaction (`xact`)
/// or in all (as flushed to the statistics).
fn touched_sql(xact: bool) -> String {
    let f = if xact { "pg_stat_get_xact_" } else { "pg_stat_get_" };
    format!(
        "SELECT oid, ({f}tuples_returned(oid) + {f}tuples_fetched(oid) + {f}tuples_inserted(oid)
                 + {f}tuples_updated(oid) + {f}tuples_deleted(oid))::float8
         FROM unnest($1::oid[]) AS oid"
    )
}

async fn touched(client: &Client, oids: &[u32], xact: bool) -> Result<HashMap<u32, f64>, tokio_postgres::Error> {
    if !xact {
        client.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    }
    let rows = client.query(&touched_sql(xact), &[&oids]).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Applies one file statement by statement, each inside a transaction (the file's own, or
/// one per statement for a no-transaction file) so that its locks can be read before they are
/// released. A statement that cannot run in a transaction runs as `up` runs it; with an
/// `observer` (a second session) its locks are then read while it runs.
pub async fn measure_file(
    client: &Client,
    migration: &Migration,
    finish: Finish,
    observer: Option<&Client>,
) -> Result<Vec<Measured>, Failed> {
    let file = migration.display_path();
    let fail = |line: Option<usize>, message: String| Failed { file: file.clone(), line, message };
    let before = tables(client).await.map_err(|e| fail(None, failure(&e)))?;
    let oids: Vec<u32> = before.keys().copied().collect();
    let pid: i32 = match observer {
        Some(_) => client.query_one("SELECT pg_backend_pid()", &[]).await.and_then(|r| r.try_get(0)),
        None => Ok(0),
    }
    .map_err(|e| fail(None, failure(&e)))?;
    // Relfilenodes as the previous statement left them: a change is this statement's rewrite.
    let mut current = before.clone();
    let transactional = !migration.directives.no_transaction;
    let mut measured = Vec::new();
    let mut held: HashMap<u32, usize> = HashMap::new();
    let mut counted: HashMap<u32, f64> = HashMap::new();
    // Counts not yet flushed to the statistics include earlier transactions of the session:
    // each transaction's work is what it adds to what they were at its start.
    if transactional {
        client.batch_execute("BEGIN").await.map_err(|e| fail(None, failure(&e)))?;
        counted = touched(client, &oids, true).await.map_err(|e| fail(None, failure(&e)))?;
    }
    for statement in split::split(&migration.sql) {
        let line = migration.sql[..statement.offset.min(migration.sql.len())].matches('\n').count() + 1;
        let first_line = statement.text.trim().lines().next().unwrap_or_default().chars().take(120).collect();
        let mut entry = Measured {
            file: file.clone(),
            line,
            statement: first_line,
            duration_ms: 0.0,
            locks: Vec::new(),
            rewritten: Vec::new(),
            worked: Vec::new(),
            held: Vec::new(),
            locks_measured: true,
        };
        if !transactional {
            client.batch_execute("BEGIN").await.map_err(|e| fail(Some(line), failure(&e)))?;
            held.clear();
            counted = touched(client, &oids, true).await.map_err(|e| fail(Some(line), failure(&e)))?;
        }
        let started = Instant::now();
        let mut result = client.batch_execute(statement.text).await;
        let mut outside = false;
        if !transactional {
            if let Err(e) = &result {
                if e.code() == Some(&tokio_postgres::error::SqlState::ACTIVE_SQL_TRANSACTION) {
                    // Cannot run in a transaction (CONCURRENTLY, VACUUM): run it as `up` does.
                    let _ = client.batch_execute("ROLLBACK").await;
                    outside = true;
                    if let Some(index) = split::concurrent_index_name(statement.text) {
                        let _ = drop_invalid_index(client, &index).await;
                    }
                    result = match observer {
                        Some(observer) => watched(client, observer, pid, statement.text, &oids, &before, &mut entry)
                            .await
                            .map_err(|e| fail(Some(line), e))?,
                        None => {
                            entry.locks_measured = false;
                            client.batch_execute(statement.text).await
                        }
                    };
                }
            }
        }
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(fail(Some(line), failure(&e)));
        }
        if !outside {
            read_locks(client, &oids, &before, &mut held, &mut entry)
                .await
                .map_err(|e| fail(Some(line), failure(&e)))?;
            let now = touched(client, &oids, true).await.map_err(|e| fail(Some(line), failure(&e)))?;
            entry.worked = worked(&before, &counted, &now);
            counted = now;
        }
        rewrites(client, &mut current, &mut entry).await.map_err(|e| fail(Some(line), failure(&e)))?;
        if !transactional && !outside {
            client.batch_execute("COMMIT").await.map_err(|e| fail(Some(line), failure(&e)))?;
        }
        measured.push(entry);
    }
    if transactional {
        let end = if finish == Finish::Commit { "COMMIT" } else { "ROLLBACK" };
        client.batch_execute(end).await.map_err(|e| fail(None, failure(&e)))?;
    }
    Ok(measured)
}

/// The existing tables with rows of which at least half were touched between `was` and `now`.
fn worked(before: &Tables, was: &HashMap<u32, f64>, now: &HashMap<u32, f64>) -> Vec<String> {
    let mut names: Vec<String> = now
        .iter()
        .filter_map(|(oid, n)| {
            let table = before.get(oid)?;
            let delta = n - was.get(oid).copied().unwrap_or(0.0);
            (table.rows > 0.0 && delta >= table.rows / 2.0).then(|| table.name.clone())
        })
        .collect();
    names.sort();
    names
}

/// Runs a statement that cannot run in a transaction while `observer` reads the locks its
/// session holds, and the rows it touched from the statistics (flushed on purpose before and
/// after it: Postgres 15 and later).
async fn watched(
    client: &Client,
    observer: &Client,
    pid: i32,
    sql: &str,
    oids: &[u32],
    before: &Tables,
    entry: &mut Measured,
) -> Result<Result<(), tokio_postgres::Error>, String> {
    const FLUSH: &str = "SELECT pg_stat_force_next_flush()";
    let flushes = client.batch_execute(FLUSH).await.is_ok();
    let was = touched(observer, oids, false).await.map_err(|e| failure(&e))?;
    let done = std::cell::Cell::new(false);
    let run = async {
        let result = client.batch_execute(sql).await;
        done.set(true);
        result
    };
    let poll = async {
        let mut strongest: HashMap<u32, usize> = HashMap::new();
        while !done.get() {
            let rows = observer
                .query(
                    "SELECT relation, mode FROM pg_locks WHERE pid = $1 AND locktype = 'relation' AND granted AND relation = ANY ($2)",
                    &[&pid, &oids],
                )
                .await?;
            for row in rows {
                let (oid, mode): (u32, String) = (row.try_get(0)?, row.try_get(1)?);
                let rank = rank(&mode);
                if strongest.get(&oid).is_none_or(|r| rank > *r) {
                    strongest.insert(oid, rank);
                }
            }
        }
        Ok::<_, tokio_postgres::Error>(strongest)
    };
    let (result, strongest) = tokio::join!(run, poll);
    let strongest = strongest.map_err(|e| failure(&e))?;
    let mut locks: Vec<(&Table, Lock)> = strongest
        .iter()
        .filter_map(|(oid, rank)| before.get(oid).map(|t| (t, MODES[*rank])))
        .map(|(table, mode)| (table, Lock { table: table.name.clone(), mode: mode.to_string() }))
        .collect();
    locks.sort_by(|a, b| a.1.table.cmp(&b.1.table));
    entry.held = locks.iter().filter(|(t, l)| t.blocks(&l.mode)).map(|(_, l)| l.clone()).collect();
    let locks: Vec<Lock> = locks.into_iter().map(|(_, l)| l).collect();
    entry.locks = locks;
    if flushes && result.is_ok() {
        client.batch_execute(FLUSH).await.map_err(|e| failure(&e))?;
        let now = touched(observer, oids, false).await.map_err(|e| failure(&e))?;
        entry.worked = worked(before, &was, &now);
    }
    Ok(result)
}

/// Locks newly taken (or strengthened) on the file's existing tables, and their rewrites.
async fn read_locks(
    client: &Client,
    oids: &[u32],
    before: &Tables,
    held: &mut HashMap<u32, usize>,
    entry: &mut Measured,
) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT l.relation, l.mode FROM pg_locks l
             WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation = ANY ($1)",
            &[&oids],
        )
        .await?;
    let mut strongest: HashMap<u32, (usize, String)> = HashMap::new();
    for row in rows {
        let (oid, mode): (u32, String) = (row.try_get(0)?, row.try_get(1)?);
        let rank = rank(&mode);
        if strongest.get(&oid).is_none_or(|(r, _)| rank > *r) {
            strongest.insert(oid, (rank, mode));
        }
    }
    let mut taken: Vec<(String, String)> = Vec::new();
    for (oid, (rank, mode)) in strongest {
        if held.get(&oid).is_none_or(|r| rank > *r) {
            held.insert(oid, rank);
            taken.push((before.get(&oid).map(|t| t.name.clone()).unwrap_or_default(), mode));
        }
    }
    taken.sort();
    entry.locks = taken.into_iter().map(|(table, mode)| Lock { table, mode }).collect();
    let mut blocking: Vec<Lock> = held
        .iter()
        .filter_map(|(oid, rank)| before.get(oid).map(|t| (t, MODES[*rank])))
        .filter(|(table, mode)| table.blocks(mode))
        .map(|(table, mode)| Lock { table: table.name.clone(), mode: mode.to_string() })
        .collect();
    blocking.sort_by(|a, b| a.table.cmp(&b.table));
    entry.held = blocking;
    Ok(())
}

/// The existing tables whose relfilenode changed since `current`, which is then brought up
/// to date.
async fn rewrites(client: &Client, current: &mut Tables, entry: &mut Measured) -> Result<(), tokio_postgres::Error> {
    let now = tables(client).await?;
    let mut rewritten: Vec<String> = current
        .iter()
        .filter(|(oid, t)| now.get(oid).is_some_and(|n| n.node != t.node && t.node != 0))
        .map(|(_, t)| t.name.clone())
        .collect();
    rewritten.sort();
    entry.rewritten = rewritten;
    for (oid, table) in current.iter_mut() {
        if let Some(n) = now.get(oid) {
            table.node = n.node;
        }
    }
    Ok(())
}

/// Lock modes from weakest to strongest.
fn rank(mode: &str) -> usize {
    MODES.iter().position(|m| *m == mode).unwrap_or(0)
}

/// Lock modes from weakest to strongest.
const MODES: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

/// Drops the INVALID indexes named `name` that an interrupted `CREATE INDEX CONCURRENTLY` left.
pub async fn drop_invalid_index(client: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT i.indisvalid AND c.relname = $1 AND n.nspname = ANY (current_schemas(false))",
            &[&name],
        )
        .await?;
    for row in rows {
        client.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {}", row.try_get::<_, String>(0)?)).await?;
    }
    Ok(())
}

fn failure(e: &tokio_postgres::Error) -> String {
    PgFailure::from_pg(e).to_string()
}

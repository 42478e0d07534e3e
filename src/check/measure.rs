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
    /// False when it cannot run in a transaction (CONCURRENTLY, VACUUM): its locks were not read.
    pub locks_measured: bool,
}

impl Measured {
    /// Whether it blocks the live app: a blocking lock on, or a rewrite of, an existing table.
    pub fn blocking(&self) -> bool {
        !self.rewritten.is_empty() || self.locks.iter().any(|l| BLOCKING.contains(&l.mode.as_str()))
    }
}

/// A file that failed from empty.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Tables before a file: oid → (name, relfilenode).
type Tables = HashMap<u32, (String, u32)>;

const TABLES_SQL: &str = "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relfilenode::oid
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

async fn tables(client: &Client) -> Result<Tables, tokio_postgres::Error> {
    let rows = client.query(TABLES_SQL, &[]).await?;
    rows.iter().map(|r| Ok((r.try_get::<_, u32>(0)?, (r.try_get::<_, String>(1)?, r.try_get::<_, u32>(2)?)))).collect()
}

/// Applies one file statement by statement, each inside a transaction (the file's own, or
/// one per statement for a no-transaction file) so that its locks can be read before they are
/// released.
pub async fn measure_file(client: &Client, migration: &Migration) -> Result<Vec<Measured>, Failed> {
    let file = migration.display_path();
    let fail = |line: Option<usize>, message: String| Failed { file: file.clone(), line, message };
    let before = tables(client).await.map_err(|e| fail(None, failure(&e)))?;
    let oids: Vec<u32> = before.keys().copied().collect();
    // Relfilenodes as the previous statement left them: a change is this statement's rewrite.
    let mut current = before.clone();
    let transactional = !migration.directives.no_transaction;
    let mut measured = Vec::new();
    let mut held: HashMap<u32, usize> = HashMap::new();
    if transactional {
        client.batch_execute("BEGIN").await.map_err(|e| fail(None, failure(&e)))?;
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
            locks_measured: true,
        };
        if !transactional {
            client.batch_execute("BEGIN").await.map_err(|e| fail(Some(line), failure(&e)))?;
            held.clear();
        }
        let started = Instant::now();
        let mut result = client.batch_execute(statement.text).await;
        if !transactional {
            if let Err(e) = &result {
                if e.code() == Some(&tokio_postgres::error::SqlState::ACTIVE_SQL_TRANSACTION) {
                    // Cannot run in a transaction (CONCURRENTLY, VACUUM): run it as `up` does.
                    let _ = client.batch_execute("ROLLBACK").await;
                    entry.locks_measured = false;
                    if let Some(index) = split::concurrent_index_name(statement.text) {
                        let _ = drop_invalid_index(client, &index).await;
                    }
                    result = client.batch_execute(statement.text).await;
                }
            }
        }
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(fail(Some(line), failure(&e)));
        }
        if entry.locks_measured {
            read_locks(client, &oids, &before, &mut held, &mut entry)
                .await
                .map_err(|e| fail(Some(line), failure(&e)))?;
        }
        rewrites(client, &mut current, &mut entry).await.map_err(|e| fail(Some(line), failure(&e)))?;
        if !transactional && entry.locks_measured {
            client.batch_execute("COMMIT").await.map_err(|e| fail(Some(line), failure(&e)))?;
        }
        measured.push(entry);
    }
    if transactional {
        client.batch_execute("COMMIT").await.map_err(|e| fail(None, failure(&e)))?;
    }
    Ok(measured)
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
            taken.push((before.get(&oid).map(|(name, _)| name.clone()).unwrap_or_default(), mode));
        }
    }
    taken.sort();
    entry.locks = taken.into_iter().map(|(table, mode)| Lock { table, mode }).collect();
    Ok(())
}

/// The existing tables whose relfilenode changed since `current`, which is then brought up
/// to date.
async fn rewrites(client: &Client, current: &mut Tables, entry: &mut Measured) -> Result<(), tokio_postgres::Error> {
    let now = tables(client).await?;
    let mut rewritten: Vec<String> = current
        .iter()
        .filter(|(oid, (_, node))| now.get(oid).is_some_and(|(_, n)| n != node && *node != 0))
        .map(|(_, (name, _))| name.clone())
        .collect();
    rewritten.sort();
    entry.rewritten = rewritten;
    for (oid, (_, node)) in current.iter_mut() {
        if let Some((_, n)) = now.get(oid) {
            *node = *n;
        }
    }
    Ok(())
}

/// Lock modes from weakest to strongest.
fn rank(mode: &str) -> usize {
    const ORDER: [&str; 8] = [
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    ORDER.iter().position(|m| *m == mode).unwrap_or(0)
}

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

//! Work distribution through Postgres: a run table in a coordination database, and claims made
//! with session-level advisory locks there. A worker's claims die with its session, so a killed
//! worker's targets go back to the others; nothing depends on an engine's index being unique.
//!
//! Keys: claims `(hashtext(run), hashtext(target))`; connection slots
//! `(hashtext('slots ' || server), n)` for n < K (on the coordination server, the first W of
//! them kept for the workers' coordination sessions when the worker count W is known). Two-int advisory locks, apart from the
//! one-bigint lock each target's own migration takes in its own database.

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::ledger::{CoordError, Recorded, TargetDone};
use super::worker::Coordination;
use crate::db::failure::PgFailure;
use crate::exit::ExitCode;

/// The run table.
const TABLE: &str = "migrun_fanout";

/// The coordination database on one session.
pub struct Coordinator {
    client: Client,
    run: String,
    worker: String,
    /// When this worker started, by the coordination server's clock.
    since: std::time::SystemTime,
    /// Slots this session holds, by server: advisory locks are re-entrant within a session, so
    /// the session itself must not take one of its own slots again.
    held: std::cell::RefCell<HashMap<String, Vec<i32>>>,
}

fn failed(action: &'static str) -> impl Fn(tokio_postgres::Error) -> CoordError {
    move |e| CoordError { action, failure: PgFailure::from_pg(&e) }
}

/// A row of the run table (target, exit_code, worker, fresh). The `outcome` column is for
/// people reading the table; the exit code says the same.
fn recorded_of(row: &tokio_postgres::Row) -> Result<Recorded, tokio_postgres::Error> {
    Ok(Recorded {
        target: row.try_get(0)?,
        exit: ExitCode::from_code(row.try_get(1)?),
        worker: row.try_get(2)?,
        fresh: row.try_get(3)?,
    })
}

impl Coordinator {
    /// The coordination session, before it has joined the run (no statement sent yet).
    pub fn new(client: Client, run: &str, worker: &str) -> Coordinator {
        Coordinator {
            client,
            run: run.to_string(),
            worker: worker.to_string(),
            since: std::time::SystemTime::UNIX_EPOCH,
            held: Default::default(),
        }
    }

    /// Joins the run: creates the run table if needed (once, under a transaction-level lock:
    /// concurrent `CREATE TABLE IF NOT EXISTS` can fail) and takes the wave's start.
    pub async fn join(&mut self) -> Result<(), CoordError> {
        let (client, run, worker) = (&self.client, &self.run, &self.worker);
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('migrun fanout table'));
                 CREATE TABLE IF NOT EXISTS {TABLE} (
                     run_id text NOT NULL, target text NOT NULL, outcome text NOT NULL, exit_code int NOT NULL,
                     versions text, duration_ms bigint, sqlstate text, message text, worker text NOT NULL,
                     attempts int NOT NULL DEFAULT 1, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                     PRIMARY KEY (run_id, target));
                 COMMIT"
            ))
            .await
            .map_err(failed("create the run table"))?;
        // A wave: the workers running this run at the same time. A worker joining running
        // peers takes the wave's start as its own, so what they did counts as done; a worker
        // that finds none starts a new wave (a re-run), which visits current targets again.
        // Members hold a shared advisory lock; joining is serialized by a transaction lock.
        client.batch_execute("BEGIN").await.map_err(failed("join the run"))?;
        let joined = async {
            client
                .query_typed("SELECT pg_advisory_xact_lock(hashtext($1), hashtext(' join'))", &[(run, Type::TEXT)])
                .await?;
            client
                .query_typed("SELECT pg_advisory_lock_shared(hashtext($1), hashtext(' members'))", &[(run, Type::TEXT)])
                .await?;
            let peers: i64 = client
                .query_typed_one(
                    "SELECT count(*) FROM pg_locks
                     WHERE locktype = 'advisory' AND objsubid = 2 AND granted
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND classid::bigint = (hashtext($1)::bigint & 4294967295)
                       AND objid::bigint = (hashtext(' members')::bigint & 4294967295)",
                    &[(run, Type::TEXT)],
                )
                .await?
                .try_get(0)?;
            let wave = if peers <= 1 {
                client
                    .query_typed_one(
                        &format!(
                            "INSERT INTO {TABLE} (run_id, target, outcome, exit_code, worker) VALUES ($1, '#wave', 'wave', 0, $2)
                             ON CONFLICT (run_id, target) DO UPDATE SET updated_at = clock_timestamp(), worker = EXCLUDED.worker
                             RETURNING updated_at"
                        ),
                        &[(run, Type::TEXT), (worker, Type::TEXT)],
                    )
                    .await?
            } else {
                client
                    .query_typed_one(
                        &format!(
                            "SELECT coalesce((SELECT updated_at FROM {TABLE} WHERE run_id = $1 AND target = '#wave'), clock_timestamp())"
                        ),
                        &[(run, Type::TEXT)],
                    )
                    .await?
            };
            client.batch_execute("COMMIT").await?;
            wave.try_get::<_, std::time::SystemTime>(0)
        }
        .await;
        if joined.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        self.since = joined.map_err(failed("join the run"))?;
        Ok(())
    }

    /// Free connections on the coordination server for this run (see [`free_connections`]).
    pub async fn free_connections(&self) -> Result<i64, CoordError> {
        free_connections(&self.client).await
    }
}

impl Coordination for Coordinator {
    /// Claims `target` for this worker: true when no other session holds it.
    async fn try_claim(&self, target: &str) -> Result<bool, CoordError> {
        let row = self
            .client
            .query_typed_one(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
                &[(&self.run, Type::TEXT), (&target, Type::TEXT)],
            )
            .await
            .map_err(failed("claim a target"))?;
        row.try_get(0).map_err(failed("claim a target"))
    }

    /// Gives a claim back.
    async fn release(&self, target: &str) -> Result<(), CoordError> {
        self.client
            .query_typed(
                "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))",
                &[(&self.run, Type::TEXT), (&target, Type::TEXT)],
            )
            .await
            .map_err(failed("release a target"))?;
        Ok(())
    }

    /// Takes one of `server`'s connection slots numbered in `slots`; `None` when all are taken.
    async fn try_slot(&self, server: &str, slots: std::ops::Range<u32>) -> Result<Option<i32>, CoordError> {
        let mine: Vec<i32> = self.held.borrow().get(server).cloned().unwrap_or_default();
        let row = self
            .client
            .query_typed_one(
                "SELECT (SELECT n FROM generate_series($2, $3 - 1) AS n
                         WHERE n <> ALL ($4) AND pg_try_advisory_lock(hashtext('slots ' || $1), n) LIMIT 1)",
                &[
                    (&server, Type::TEXT),
                    (&(slots.start as i32), Type::INT4),
                    (&(slots.end as i32), Type::INT4),
                    (&mine, Type::INT4_ARRAY),
                ],
            )
            .await
            .map_err(failed("take a connection slot"))?;
        let slot: Option<i32> = row.try_get(0).map_err(failed("take a connection slot"))?;
        if let Some(slot) = slot {
            self.held.borrow_mut().entry(server.to_string()).or_default().push(slot);
        }
        Ok(slot)
    }

    /// Gives a connection slot back.
    async fn release_slot(&self, server: &str, slot: i32) -> Result<(), CoordError> {
        if let Some(slots) = self.held.borrow_mut().get_mut(server) {
            slots.retain(|s| *s != slot);
        }
        self.client
            .query_typed(
                "SELECT pg_advisory_unlock(hashtext('slots ' || $1), $2)",
                &[(&server, Type::TEXT), (&slot, Type::INT4)],
            )
            .await
            .map_err(failed("release a connection slot"))?;
        Ok(())
    }

    /// Every outcome recorded in this run so far, by target.
    async fn recorded(&self) -> Result<HashMap<String, Recorded>, CoordError> {
        let rows = self
            .client
            .query_typed(
                &format!("SELECT target, exit_code, worker, updated_at >= $2 FROM {TABLE} WHERE run_id = $1 AND target <> '#wave'"),
                &[(&self.run, Type::TEXT), (&self.since, Type::TIMESTAMPTZ)],
            )
            .await
            .map_err(failed("read the run table"))?;
        rows.iter()
            .map(|r| recorded_of(r).map(|recorded| (recorded.target.clone(), recorded)))
            .collect::<Result<_, _>>()
            .map_err(failed("read the run table"))
    }

    /// `target`'s recorded outcome in this run, if any (one row: read after each claim).
    async fn recorded_one(&self, target: &str) -> Result<Option<Recorded>, CoordError> {
        let rows = self
            .client
            .query_typed(
                &format!(
                    "SELECT target, exit_code, worker, updated_at >= $3 FROM {TABLE} WHERE run_id = $1 AND target = $2"
                ),
                &[(&self.run, Type::TEXT), (&target, Type::TEXT), (&self.since, Type::TIMESTAMPTZ)],
            )
            .await
            .map_err(failed("read the run table"))?;
        rows.first().map(recorded_of).transpose().map_err(failed("read the run table"))
    }

    /// Records `target`'s outcome (a later attempt overwrites an earlier one).
    async fn record(&self, target: &str, done: &TargetDone) -> Result<(), CoordError> {
        let (outcome, exit_code, versions) = (done.exit.outcome(), done.exit.code(), done.versions_text());
        let (duration_ms, sqlstate, message) = (done.ms, done.sqlstate.as_deref(), done.message.as_deref());
        self.client
            .query_typed(
                &format!(
                    "INSERT INTO {TABLE} (run_id, target, outcome, exit_code, versions, duration_ms, sqlstate, message, worker)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (run_id, target) DO UPDATE SET outcome = EXCLUDED.outcome, exit_code = EXCLUDED.exit_code,
                         versions = EXCLUDED.versions, duration_ms = EXCLUDED.duration_ms, sqlstate = EXCLUDED.sqlstate,
                         message = EXCLUDED.message, worker = EXCLUDED.worker, attempts = {TABLE}.attempts + 1, updated_at = clock_timestamp()"
                ),
                &[
                    (&self.run, Type::TEXT),
                    (&target, Type::TEXT),
                    (&outcome, Type::TEXT),
                    (&exit_code, Type::INT4),
                    (&versions, Type::TEXT),
                    (&duration_ms, Type::INT8),
                    (&sqlstate, Type::TEXT),
                    (&message, Type::TEXT),
                    (&self.worker, Type::TEXT),
                ],
            )
            .await
            .map_err(failed("record an outcome"))?;
        Ok(())
    }

    /// Waits (up to a second) until server process `pid` on the coordination server has ended:
    /// a closed session's backend lingers for a moment, and its connection slot must not be
    /// handed on before it is gone.
    async fn wait_gone(&self, pid: i32) -> Result<(), CoordError> {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(1) {
            let row = self
                .client
                .query_typed_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", &[(&pid, Type::INT4)])
                .await
                .map_err(failed("watch a session end"))?;
            if !row.try_get::<_, bool>(0).map_err(failed("watch a session end"))? {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

/// Free connections on `client`'s server for a fan-out: max_connections minus those in use by
/// others (superuser-reserved ones left out). migrun's own sessions are counted as free, so a
/// worker joining a busy run judges the plan as the first one did. A role without
/// pg_read_all_stats may see other roles' sessions with empty columns: those count as in use.
pub async fn free_connections(client: &Client) -> Result<i64, CoordError> {
    let row = client
        .query_typed_one(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                    - (SELECT count(*) FROM pg_stat_activity
                       WHERE coalesce(backend_type, 'client backend') = 'client backend'
                         AND coalesce(application_name, '') NOT LIKE 'migrun%')::int",
            &[],
        )
        .await
        .map_err(failed("read max_connections"))?;
    Ok(i64::from(row.try_get::<_, i32>(0).map_err(failed("read max_connections"))?))
}

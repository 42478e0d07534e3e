//! How a pooler between migrun and Postgres pools, learned before any lock or named statement.
//!
//! One session alone cannot tell: a quiet pool in transaction mode may hand it the same
//! server connection every time. What a session-mode pool guarantees is that no other client
//! ever gets this session's server connection while the session lives. So a second session
//! asks for its backend's pid, several times (a pool reusing its oldest idle connection first,
//! `server_round_robin`, cycles through them all): seeing this session's backend means the pool
//! hands it out between transactions. Statement mode then shows itself by refusing a
//! transaction block.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::failure::PgFailure;

/// How long the second session may take to connect: a session-mode pool with no free server
/// connection makes it wait, which itself says this session's connection is its own.
pub const SIBLING_LIMIT: Duration = Duration::from_secs(3);
/// How many times the second session asks: more than a pool's idle connections, by default.
const PROBES: usize = 24;

/// A pooler's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

impl PoolMode {
    /// As PgBouncer spells it.
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How the pooler behind a session pools: `own` is the session, whose backend is `ours`;
/// `sibling` a second session through the same pooler (`None`: it could not be opened within
/// `SIBLING_LIMIT`, which only a pool with no server connection left for it does).
pub async fn classify(ours: i32, own: &Client, sibling: Option<&Client>) -> Result<PoolMode, PgFailure> {
    let Some(sibling) = sibling else { return Ok(PoolMode::Session) };
    let mut shared = false;
    for _ in 0..PROBES {
        if backend_pid(sibling).await? == ours {
            shared = true;
            break;
        }
    }
    // The session's own next transaction may also have moved.
    if !shared && backend_pid(own).await? != ours {
        shared = true;
    }
    if !shared {
        return Ok(PoolMode::Session);
    }
    match sibling.batch_execute("BEGIN").await {
        Err(e) if PgFailure::from_pg(&e).message.contains("statement pool") => Ok(PoolMode::Statement),
        Err(e) => Err(PgFailure::from_pg(&e)),
        Ok(()) => {
            let _ = sibling.batch_execute("ROLLBACK").await;
            Ok(PoolMode::Transaction)
        }
    }
}

/// The backend pid, asked in a simple query (no prepared statement, which a pool in
/// transaction mode may lose between messages).
async fn backend_pid(client: &Client) -> Result<i32, PgFailure> {
    let messages =
        client.simple_query("SELECT pg_catalog.pg_backend_pid()").await.map_err(|e| PgFailure::from_pg(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.try_get(0).ok().flatten().and_then(|pid| pid.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| PgFailure::other("the pooler returned no backend pid"))
}

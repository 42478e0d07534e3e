//! migrun: apply PostgreSQL migrations safely before a rollout.
//!
//! Layers, each importing only from those below it:
//! - `run`: the command layer (configuration, one dispatch, the result event, exit codes);
//! - `check`: proving migrations before they ship (`lint`, `verify`);
//! - `fleet`: many targets (their sources, the worker loop, connection capacity, and the
//!   coordination database workers share);
//! - `migrate`: the migration domain (files, history, comparison, lock, apply, wait);
//! - `catalog`: a database's schema as canonical text, read from the catalogs;
//! - `db`: database access (connection sources, TLS, secrets, sessions, Postgres failures);
//! - leaves: `exit`, `signals`, `supervise`, `identity`, `duration`, `clock`, `backoff`,
//!   `counters`.

// Errors carry what the log needs (file, SQLSTATE, message, position); they travel on the
// cold path once per run, so their size does not matter.
#![allow(clippy::result_large_err)]

mod backoff;
mod catalog;
mod check;
mod clock;
mod counters;
mod db;
mod duration;
mod exit;
mod fleet;
mod identity;
mod migrate;
mod run;
mod signals;
mod supervise;

pub use exit::ExitCode;
pub use run::run;
pub use signals::SignalHub;

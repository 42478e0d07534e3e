//! migrun: apply PostgreSQL migrations safely before a rollout.

// Errors carry what the log needs (file, SQLSTATE, message, position); they travel on the
// cold path once per run, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod connect;
pub mod conninfo;
pub mod duration;
pub mod ecs;
pub mod error;
pub mod exit;
pub mod history;
pub mod libpq;
pub mod lock;
pub mod log;
pub mod plan;
pub mod report;
pub mod secrets;
pub mod signals;
pub mod source;
pub mod split;
pub mod supervise;
pub mod tls;
pub mod wait;

pub use cli::Cli;
pub use commands::run;
pub use exit::ExitCode;

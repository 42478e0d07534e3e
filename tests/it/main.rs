//! Integration tests: the real binary against a real, throwaway Postgres.

// A test may panic on a value it did not expect: that is the failure it reports.
#![allow(clippy::disallowed_methods)]

mod harness;
mod services;
#[path = "../tools.rs"]
mod tools;

mod adopt;
mod adopt_trust;
mod apply;
mod bad_input;
mod commands;
mod connections;
mod drift;
mod entrypoint_secrets;
mod exec;
mod exit_codes;
mod fanout;
mod fanout_trust;
mod history;
mod iam;
mod input;
mod integrity;
mod interrupt;
mod lint;
mod locking;
mod metrics;
mod outcome;
mod platform;
mod pooler;
mod process_tree;
mod readiness;
mod rollback;
mod session_state;
mod signals;
mod verify;
mod verify_trust;
mod wait_restart;

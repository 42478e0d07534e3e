//! Integration tests: the real binary against a real, throwaway Postgres.

mod harness;

mod apply;
mod commands;
mod history;
mod input;
mod locking;

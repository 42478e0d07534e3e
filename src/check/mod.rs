//! Proving migrations before they ship: `lint` reads the files with Postgres's own parser and
//! checks them against rules for rollouts where the old app keeps running; `verify` runs them
//! against a scratch Postgres and measures what they do. Above the migration domain (it reads
//! files and applies them), below the commands.

pub mod build;
pub mod compat;
#[cfg(feature = "lint")]
pub mod lint;
#[cfg(all(test, feature = "lint"))]
mod lint_truth;
pub mod measure;
#[cfg(feature = "lint")]
pub mod parse;
#[cfg(feature = "lint")]
pub mod plpgsql;
#[cfg(feature = "lint")]
pub mod rules;
pub mod scratch;
pub mod verify;

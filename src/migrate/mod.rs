//! The migration domain: the files (names, directives, checksums, splitting), the history
//! table, comparing the two, the advisory lock, applying, and waiting until ready. Works on a
//! database session; knows nothing about where the connection came from or about commands.

pub mod adopt;
pub mod apply;
pub mod apply_error;
pub mod baseline;
pub mod compare;
pub mod convert;
pub mod copy;
pub mod files;
pub mod history;
pub mod lock;
pub mod new_file;
pub mod repair;
pub mod revert;
pub mod rollback;
pub mod row;
pub mod snapshot;
pub mod split;
pub mod table;
pub mod tool;
pub mod wait;

//! Database access: where the connection comes from (connection strings, Secrets Manager,
//! libpq variables, TLS), opening a session, and what Postgres said when something failed.
//! Knows nothing about migrations.

pub mod cancel;
pub mod connect;
pub mod endpoint;
pub mod failure;
#[cfg(feature = "aws")]
pub mod iam;
pub mod libpq;
pub mod options;
pub mod pooler;
pub mod secrets;
pub mod session;
pub mod tls;
pub mod url;

//! The schema a folder produces from empty, built on a scratch server: what `schema --write`
//! commits, what `schema --check` holds a file to, and what `diff --scratch` compares the
//! live database with.

use super::scratch::{ScratchError, Server};
use super::verify;
use crate::catalog::schema::{self, ReadOptions, Schema};
use crate::migrate::files::Migration;

/// Why no schema came out.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No scratch server, or it failed.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// A file fails on an empty database.
    #[error("{file} fails on an empty database: {message}")]
    Fails { file: String, message: String },
}

/// Runs `migrations` in order (as `up` runs each: a transaction, or statement by statement) on
/// a new database of `server`, reads its schema, and drops the database.
pub async fn schema_from_empty(server: &Server, migrations: &[&Migration], owners: bool) -> Result<Schema, BuildError> {
    let name = format!("{}schema", server.database_prefix());
    server.create(&name, None).await?;
    let built = build(server, &name, migrations, owners).await;
    server.drop_database(&name).await;
    built
}

async fn build(server: &Server, name: &str, migrations: &[&Migration], owners: bool) -> Result<Schema, BuildError> {
    let client = server.connect(name).await?;
    for migration in migrations {
        if let Err(message) = verify::run_as_up(&client, migration).await {
            return Err(BuildError::Fails { file: migration.display_path(), message });
        }
    }
    let options = ReadOptions { owners, exclude: Vec::new(), schema: None };
    let read = schema::read(&client, server.major(), &options).await;
    read.map_err(|e| ScratchError::Server(crate::db::failure::error_chain(&e)).into())
}

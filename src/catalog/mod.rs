//! A database's schema read from the catalogs (no pg_dump): one canonical text that two
//! databases share exactly when their schemas are the same. `verify` compares the databases it
//! builds with it; `migrate` records it after every change; `diff` compares the live database
//! with what was recorded. Below the migration domain; needs only a client.

mod query;
pub mod schema;

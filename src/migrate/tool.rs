//! The other migration tools migrun adopts from and converts.

use std::fmt;

/// Another migration tool: `baseline --from` reads its history table, `convert --from` its
/// folder (those that [`Tool::converts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Sqlx,
    Flyway,
    GolangMigrate,
    Dbmate,
    Diesel,
    Prisma,
    Rails,
    Alembic,
    /// `convert` only: goose keeps no history migrun reads.
    Goose,
}

/// Every tool `baseline --from` reads, for help texts and errors.
pub const TOOL_NAMES: &str = "sqlx, flyway, golang-migrate, dbmate, diesel, prisma, rails, alembic";

/// Every tool `convert` reads, for help texts and errors.
pub const CONVERT_NAMES: &str = "sqlx, flyway, golang-migrate, dbmate, diesel, prisma, goose";

impl Tool {
    /// Whether `convert` reads this tool's folder (Rails and Alembic migrations are code).
    pub fn converts(self) -> bool {
        !matches!(self, Tool::Rails | Tool::Alembic)
    }

    /// Whether `baseline --from` reads this tool's history table.
    pub fn adopts(self) -> bool {
        self != Tool::Goose
    }

    /// `golang-migrate` → `Tool::GolangMigrate`.
    pub fn parse(name: &str) -> Option<Tool> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sqlx" => Tool::Sqlx,
            "flyway" => Tool::Flyway,
            "golang-migrate" | "migrate" => Tool::GolangMigrate,
            "dbmate" => Tool::Dbmate,
            "diesel" => Tool::Diesel,
            "prisma" => Tool::Prisma,
            "rails" | "activerecord" => Tool::Rails,
            "alembic" => Tool::Alembic,
            "goose" => Tool::Goose,
            _ => return None,
        })
    }

    /// The name recorded in migrun's history (`adopted_from`).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Sqlx => "sqlx",
            Tool::Flyway => "flyway",
            Tool::GolangMigrate => "golang-migrate",
            Tool::Dbmate => "dbmate",
            Tool::Diesel => "diesel",
            Tool::Prisma => "prisma",
            Tool::Rails => "rails",
            Tool::Alembic => "alembic",
            Tool::Goose => "goose",
        }
    }

    /// The tool's history table under its default name.
    pub fn default_table(self) -> &'static str {
        match self {
            Tool::Sqlx => "_sqlx_migrations",
            Tool::Flyway => "flyway_schema_history",
            Tool::GolangMigrate | Tool::Dbmate | Tool::Rails => "schema_migrations",
            Tool::Diesel => "__diesel_schema_migrations",
            Tool::Prisma => "_prisma_migrations",
            Tool::Alembic => "alembic_version",
            Tool::Goose => "goose_db_version",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

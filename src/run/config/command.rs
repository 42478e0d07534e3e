//! What a run does: each command once, as the request its code receives, and its kind (the
//! name the result event gives it and what it says when it succeeds).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::connection::Shared;
use crate::db::secrets::SecretRef;
use crate::fleet::worker::Settings;
use crate::migrate::adopt::Tool;
use crate::migrate::repair::RepairAction;
use crate::migrate::revert::Target;

/// What the run does, with its own settings.
#[derive(Debug, Clone)]
pub enum Command {
    /// Apply pending migrations, up to a version if given.
    Up { up_to: Option<UpTo> },
    /// Print what `up` would run (also `up --dry-run`).
    Plan { up_to: Option<UpTo>, format: Format },
    /// Undo applied versions with their down files.
    Down(DownRequest),
    /// Print every file's state.
    Status { format: Format },
    /// Wait until the schema is ready, giving up after `timeout`.
    Wait { timeout: Duration },
    /// Prepare the database, then supervise a command.
    Exec(ExecRequest),
    /// Fix one history row by hand.
    Repair(RepairRequest),
    /// Record files as applied without running them.
    Baseline(BaselineRequest),
    /// Write another tool's folder as migrun files.
    Convert(ConvertRequest),
    /// Check the files offline.
    Lint(LintRequest),
    /// Run the files against a scratch Postgres and measure them.
    Verify(VerifyRequest),
    /// Migrate (or show) many targets.
    Fanout(Box<FanoutRequest>),
    /// Create a new migration file.
    New(NewRequest),
    /// Compare the live schema with the last snapshot, a file, or the folder.
    Diff(DiffRequest),
    /// Write or check a committed schema file.
    Schema(SchemaRequest),
}

/// What `diff` compares the live database with.
#[derive(Debug, Clone)]
pub enum DiffAgainst {
    /// The newest snapshot in the database.
    Snapshot,
    /// A schema file.
    File(PathBuf),
    /// The folder's applied versions run on a scratch server (`--scratch-url`, or started).
    Scratch { server_url: Option<String> },
}

/// `diff`.
#[derive(Debug, Clone)]
pub struct DiffRequest {
    pub against: DiffAgainst,
    /// Owners are compared too.
    pub owners: bool,
    /// Record the live schema as the new snapshot instead of comparing.
    pub accept: bool,
    pub format: Format,
}

/// `schema --write` / `--check`.
#[derive(Debug, Clone)]
pub struct SchemaRequest {
    /// The file.
    pub file: PathBuf,
    /// `--check` (else `--write`).
    pub check: bool,
    pub owners: bool,
    /// A server to build on instead of starting one (`--database-url` only, as for `verify`).
    pub server_url: Option<String>,
}

/// `--target`: the highest version `up` (or `plan`) goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpTo(pub u64);

/// How a command that prints a report prints it (`--format`, `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    /// SARIF 2.1.0 (`lint` only).
    Sarif,
}

impl Format {
    pub fn json(self) -> bool {
        self == Format::Json
    }
}

/// `exec`.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// What to do with the database first.
    pub mode: ExecMode,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// Secrets whose keys become the command's environment.
    pub env_from: Vec<SecretRef>,
    /// Variables from `--env-file` that the environment does not set (lowest precedence).
    pub inherited: Vec<(String, String)>,
}

/// What `exec` does with the database before it starts the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// Apply pending migrations under the lock.
    Migrate,
    /// Hold the advisory lock while the command runs, applying our own files first if asked.
    Lock { apply_sql: bool },
    /// Wait until someone else applied them, giving up after `timeout`.
    Wait { timeout: Duration },
    /// Leave the database alone.
    NoDb,
}

/// `down`.
#[derive(Debug, Clone)]
pub struct DownRequest {
    /// How far back.
    pub target: Target,
    /// Print only.
    pub dry_run: bool,
    pub format: Format,
}

/// `repair`.
#[derive(Debug, Clone)]
pub struct RepairRequest {
    /// The one row to fix.
    pub action: RepairAction,
    /// Print only.
    pub dry_run: bool,
    pub format: Format,
}

/// `baseline`.
#[derive(Debug, Clone)]
pub struct BaselineRequest {
    /// Up to a version, or from another tool's history.
    pub source: BaselineSource,
    /// Record what both sides have even when they differ.
    pub ignore_differences: bool,
    /// Print only.
    pub dry_run: bool,
    pub format: Format,
}

/// What `baseline` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineSource {
    /// Every versioned file up to this version.
    UpTo(u64),
    /// What another tool's history table says (Alembic: up to `up_to`).
    Tool { tool: Tool, table: String, up_to: Option<u64> },
}

/// `convert`.
#[derive(Debug, Clone)]
pub struct ConvertRequest {
    /// The tool whose folder it is (one that [`Tool::converts`]).
    pub tool: Tool,
    pub source: PathBuf,
    pub out: PathBuf,
}

/// `lint`.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "lint"), allow(dead_code))]
pub struct LintRequest {
    pub format: Format,
    /// Warnings fail too.
    pub strict: bool,
    /// The PostgreSQL major the folder targets (`--pg-version`).
    pub pg_version: Option<u32>,
}

/// `verify`.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The previous release's folder, for the upgrade path.
    pub from: Option<PathBuf>,
    pub format: Format,
    /// Locks and rewrites on existing tables fail the run.
    pub strict: bool,
    /// A server to create scratch databases on, instead of starting one (`--database-url`
    /// only: never the ambient DATABASE_URL).
    pub server_url: Option<String>,
}

/// `new`.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub description: String,
    /// Number it after the folder's highest integer version, with its padding.
    pub sequential: bool,
}

/// `fanout up` / `fanout status`.
#[derive(Debug, Clone)]
pub struct FanoutRequest {
    pub status_only: bool,
    pub format: Format,
    /// `--targets`, as typed.
    pub source: String,
    pub targets_query: Option<String>,
    pub coord_url: Option<String>,
    /// `--only`: one target's id.
    pub only: Option<String>,
    pub run_id: Option<String>,
    /// How this worker works through the targets.
    pub settings: Settings,
    /// The base database of `schema:` targets (DATABASE_URL / --database-url), as typed.
    pub base_url: Option<String>,
    /// TLS settings and libpq's variables, for every target's connection.
    pub shared: Shared,
}

/// A command, by name: what logs and the result event call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Up,
    Down,
    Plan,
    Status,
    Wait,
    Repair,
    Baseline,
    Convert,
    Lint,
    Verify,
    FanoutUp,
    FanoutStatus,
    Exec,
    New,
    Diff,
    Schema,
}

impl CommandKind {
    pub const ALL: [CommandKind; 16] = [
        CommandKind::Up,
        CommandKind::Down,
        CommandKind::Plan,
        CommandKind::Status,
        CommandKind::Wait,
        CommandKind::Repair,
        CommandKind::Baseline,
        CommandKind::Convert,
        CommandKind::Lint,
        CommandKind::Verify,
        CommandKind::FanoutUp,
        CommandKind::FanoutStatus,
        CommandKind::Exec,
        CommandKind::New,
        CommandKind::Diff,
        CommandKind::Schema,
    ];

    /// The command's name in logs and the result event.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Up => "up",
            CommandKind::Down => "down",
            CommandKind::Plan => "plan",
            CommandKind::Status => "status",
            CommandKind::Wait => "wait",
            CommandKind::Repair => "repair",
            CommandKind::Baseline => "baseline",
            CommandKind::Convert => "convert",
            CommandKind::Lint => "lint",
            CommandKind::Verify => "verify",
            CommandKind::FanoutUp => "fanout up",
            CommandKind::FanoutStatus => "fanout status",
            CommandKind::Exec => "exec",
            CommandKind::New => "new",
            CommandKind::Diff => "diff",
            CommandKind::Schema => "schema",
        }
    }

    /// The kind whose name is `name`'s first word(s) as typed (`fanout` takes the next word).
    pub fn of_words(first: &str, second: Option<&str>) -> Option<CommandKind> {
        let name = match (first, second) {
            ("fanout", Some(action)) => format!("fanout {action}"),
            _ => first.to_string(),
        };
        CommandKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The result event's message when the command succeeded.
    pub fn success(self, pending_before: Option<usize>, applied: usize) -> String {
        match self {
            CommandKind::Status | CommandKind::Plan => format!("{} migration(s) pending", pending_before.unwrap_or(0)),
            CommandKind::Wait => "schema ready".into(),
            CommandKind::New => "migration file created".into(),
            CommandKind::Exec => "the command exited 0".into(),
            CommandKind::Lint => "no lint errors".into(),
            CommandKind::FanoutUp | CommandKind::FanoutStatus => "every target is current".into(),
            CommandKind::Verify => "verified".into(),
            CommandKind::Baseline => "baseline done".into(),
            CommandKind::Convert => "folder converted".into(),
            CommandKind::Repair => "repair done".into(),
            CommandKind::Diff => "no drift: the schema is what it was compared with".into(),
            CommandKind::Schema => "schema file is what the folder produces".into(),
            CommandKind::Up if applied == 0 => "schema is up to date; nothing to apply".into(),
            CommandKind::Up => format!("applied {applied} migration(s)"),
            CommandKind::Down if applied > 0 => format!("reverted {applied} migration(s)"),
            // A successful down runs every step it planned: none run with some planned is a dry run.
            CommandKind::Down => match pending_before.unwrap_or(0) {
                0 => "nothing to revert".into(),
                n => format!("would revert {n} migration(s) (dry run)"),
            },
        }
    }
}

impl Command {
    /// Whether the command needs the run's own connection (fan-out connects to its targets;
    /// `verify` to a scratch server).
    pub fn connects(&self) -> bool {
        !matches!(
            self,
            Command::New(_)
                | Command::Convert(_)
                | Command::Lint(_)
                | Command::Verify(_)
                | Command::Schema(_)
                | Command::Fanout(_)
                | Command::Exec(ExecRequest { mode: ExecMode::NoDb, .. })
        )
    }
}

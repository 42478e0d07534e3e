//! Resolved settings: the command line and the environment, each read once here, parsed and
//! validated into an immutable `Config`.
//!
//! Precedence: a flag wins over its environment variable, which wins over the default. An
//! empty variable counts as unset. Nothing below this module reads the environment; `run` hands
//! it a lookup so tests drive the real path. Each job has its module: the command model
//! (`command`), how a run reports (`reporting`), the precedence rule (`inputs`), where
//! connections come from (`connection`) and fan-out's settings (`fanout`).

mod command;
mod connection;
mod fanout;
mod inputs;
mod reporting;

use std::path::PathBuf;
use std::time::Duration;

pub use self::command::{
    BaselineRequest, BaselineSource, Command, CommandKind, ConvertRequest, DiffAgainst, DiffRequest, DownRequest,
    ExecMode, ExecRequest, FanoutRequest, Format, LintRequest, NewRequest, RepairRequest, SchemaRequest, UpTo,
    VerifyRequest,
};
pub use self::connection::{Shared, TargetSettingsError};
use self::inputs::Inputs;
pub use self::reporting::Reporting;
use super::cli::{Cli, CommandArgs, FormatArg, LintFormatArg, OutputArgs};
use super::settings::*;
use crate::db::endpoint::ConnectionSpec;
use crate::db::secrets::{SecretError, SecretRef};
use crate::db::session::SessionSettings;
use crate::db::url::UrlError;
use crate::duration;
use crate::identity::MIGRUN_VERSION;
use crate::migrate::apply::RetryPolicy;
use crate::migrate::compare::Policy;
use crate::migrate::history::HistoryTable;
use crate::migrate::repair::RepairAction;
use crate::migrate::revert::Target;
use crate::migrate::rollback::NewerSchema;
use crate::migrate::tool::{Tool, CONVERT_NAMES, TOOL_NAMES};

/// The environment as a run sees it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Every setting of a run, parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub command: Command,
    /// Where and how the database work runs.
    pub db: DbSettings,
    /// How long a clean stop may take after a signal.
    pub shutdown_grace: Duration,
    /// `ECS_CONTAINER_METADATA_URI_V4`, when running on ECS.
    pub ecs_metadata_uri: Option<String>,
}

/// The settings of the database work: files, connection, history, lock, timeouts, policy.
/// A fan-out target gets its own with [`DbSettings::for_target`].
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// The migrations directory.
    pub dir: PathBuf,
    /// How to connect; `None` for commands that do not touch the run's own database.
    pub connection: Option<ConnectionSpec>,
    /// The history table.
    pub history_table: HistoryTable,
    /// `--lock-key`; derived from the history table as the server resolves it when unset.
    pub lock_key: Option<i64>,
    /// How long to wait for another run's lock.
    pub lock_wait: Duration,
    /// How long to retry the first connection.
    pub connect_timeout: Duration,
    /// Timeouts and name of migrun's session.
    pub session: SessionSettings,
    /// lock_timeout retries.
    pub retry: RetryPolicy,
    /// Which history mismatches only warn.
    pub policy: Policy,
    /// `up` / `exec --migrate` compare the live schema with the last snapshot before applying.
    pub check_drift: bool,
    /// A fan-out schema target's schema: its snapshots read that schema only.
    pub schema_scope: Option<String>,
}

/// A setting that cannot be used. Each names the flag and variable it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a duration.
    #[error("{flag} / {env}: `{value}` is not a usable duration; expected {}", duration::expected(.value))]
    Duration { flag: &'static str, env: &'static str, value: String },
    /// A flag without an environment variable has a value that is not valid.
    #[error("{flag}: `{value}` is not valid; expected {expected}")]
    Flag { flag: &'static str, value: String, expected: String },
    /// Not a valid value.
    #[error("{flag} / {env}: `{value}` is not valid; expected {expected}")]
    Invalid { flag: &'static str, env: &'static str, value: String, expected: &'static str },
    /// The connection string does not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A secret's key would replace the connection `exec --lock` hands its command.
    #[error("--env-from-secret: key `{key}` would replace the connection migrun hands the command under exec --lock (DATABASE_URL and PG* come from migrun's own connection); remove the key from the secret, or drop --lock")]
    ReservedSecretKey { key: String },
    /// `down --to` / `--steps` is not a number.
    #[error("down {flag}: `{value}` is not valid; expected --to VERSION (the version to go back to, 0 for none) or --steps N (1 or more)")]
    DownTarget { flag: &'static str, value: String },
    /// `repair`'s version is not a number.
    #[error("repair: `{value}` is not a version; expected the digits of a history row's version")]
    RepairVersion { value: String },
    /// `repair` needs exactly one thing to repair.
    #[error("repair: give exactly one of --accept-checksum VERSION, --forget-started VERSION, --mark-applied VERSION")]
    RepairAction,
    /// `baseline`'s version is not a number.
    #[error("baseline: `{value}` is not a version; expected the digits of a migration file's version")]
    BaselineVersion { value: String },
    /// `baseline` needs a version, a tool, or (Alembic) both.
    #[error("baseline: {0}")]
    BaselineSource(&'static str),
    /// `--from` names no tool migrun knows.
    #[error("{command} --from: `{value}` is not a tool migrun knows; expected one of {expected}")]
    UnknownTool { command: &'static str, value: String, expected: &'static str },
    /// `--target` is not a version.
    #[error(
        "--target: `{value}` is not a migration version; expected the digits of a file's version (e.g. 20261125120000)"
    )]
    Target { value: String },
    /// The result file cannot be written (checked before anything is done).
    #[error("--result-file / MIGRUN_RESULT_FILE: cannot write {path}: {reason}; nothing was done")]
    ResultFile { path: String, reason: String },
    /// A secret reference does not parse.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// `schema` needs a file.
    #[error("schema: give --write FILE or --check FILE")]
    SchemaFile,
    /// No connection source is set.
    #[error("no database given: set one of DATABASE_URL / --database-url (postgres://user:password@host:5432/dbname, a key=value string, or a Secrets Manager ARN), MIGRUN_SECRET_ID / --secret-id (a secret name or ARN), or libpq's PGHOST / PGPORT / PGUSER / PGDATABASE (with PGPASSWORD or ~/.pgpass)")]
    NoDatabase,
}

/// Resolves the command line and the environment. The reporting settings always come out,
/// even when the rest is invalid. `inherited`: the variables of `--env-file` that the
/// environment does not set (exec's command gets them).
pub fn resolve(cli: Cli, env: Env, inherited: Vec<(String, String)>) -> (Reporting, Result<Config, ConfigError>) {
    let inputs = Inputs { options: &cli.options, env };
    let (reporting, invalid) = Reporting::resolve(&inputs, kind_of(&cli.command));
    let config = match invalid {
        Some(error) => Err(error),
        None => config(&inputs, cli.command, &reporting.host, inherited),
    };
    (reporting, config)
}

/// The kind of what was typed: `up --dry-run` is a `plan`.
fn kind_of(command: &CommandArgs) -> CommandKind {
    use super::cli::FanoutAction;
    match command {
        CommandArgs::Up { dry_run: false, .. } => CommandKind::Up,
        CommandArgs::Up { dry_run: true, .. } | CommandArgs::Plan { .. } => CommandKind::Plan,
        CommandArgs::Down { .. } => CommandKind::Down,
        CommandArgs::Status { .. } => CommandKind::Status,
        CommandArgs::Wait { .. } => CommandKind::Wait,
        CommandArgs::Repair { .. } => CommandKind::Repair,
        CommandArgs::Baseline { .. } => CommandKind::Baseline,
        CommandArgs::Convert { .. } => CommandKind::Convert,
        CommandArgs::Lint { .. } => CommandKind::Lint,
        CommandArgs::Verify { .. } => CommandKind::Verify,
        CommandArgs::Fanout { action: FanoutAction::Status { .. } } => CommandKind::FanoutStatus,
        CommandArgs::Fanout { .. } => CommandKind::FanoutUp,
        CommandArgs::Exec { .. } => CommandKind::Exec,
        CommandArgs::New { .. } => CommandKind::New,
        CommandArgs::Diff { .. } => CommandKind::Diff,
        CommandArgs::Schema { .. } => CommandKind::Schema,
    }
}

fn config(
    inputs: &Inputs,
    command: CommandArgs,
    host: &str,
    inherited: Vec<(String, String)>,
) -> Result<Config, ConfigError> {
    let drift_flag = matches!(
        command,
        CommandArgs::Up { check_drift: true, .. } | CommandArgs::Exec { check_drift: true, migrate: true, .. }
    );
    let check_drift = drift_flag || inputs.switch(&CHECK_DRIFT)?;
    let command = command_of(inputs, command, inherited)?;
    let table_text = inputs.or_default(&TABLE, None);
    let history_table = HistoryTable::parse(&table_text).filter(|t| !t.is_temporary()).ok_or_else(|| {
        inputs.invalid(
            &TABLE,
            table_text.clone(),
            "a table name, optionally schema-qualified, not in pg_temp (letters, digits, _; e.g. ops.migrun_history)",
        )
    })?;
    let lock_key = match inputs.text(&LOCK_KEY) {
        None => None,
        Some(text) => {
            Some(text.trim().parse().map_err(|_| inputs.invalid(&LOCK_KEY, text.clone(), "a signed 64-bit integer"))?)
        }
    };
    let session = SessionSettings {
        lock_timeout: inputs.millis(&LOCK_TIMEOUT)?,
        statement_timeout: inputs.millis(&STATEMENT_TIMEOUT)?,
        idle_in_transaction_timeout: inputs.millis(&IDLE_IN_TRANSACTION_TIMEOUT)?,
        // Postgres truncates application_name at 63 bytes.
        application_name: truncate(&format!("migrun/{MIGRUN_VERSION} {host}"), 63),
    };
    let connection = match command.connects() {
        true => Some(connection::connection(inputs, &Shared::read(inputs)?)?),
        false => None,
    };
    let retry = RetryPolicy {
        lock_retries: inputs.count(&LOCK_RETRIES, "a whole number (0 = do not retry)")?,
        first_delay: inputs.duration(&RETRY_BACKOFF)?,
    };
    let policy = Policy {
        allow_drift: inputs.switch(&ALLOW_DRIFT)?,
        allow_missing: inputs.switch(&ALLOW_MISSING)?,
        allow_out_of_order: inputs.switch(&ALLOW_OUT_OF_ORDER)?,
        allow_empty: inputs.switch(&ALLOW_EMPTY)?,
        on_newer_schema: {
            let text = inputs.or_default(&ON_NEWER_SCHEMA, None);
            NewerSchema::parse(&text)
                .ok_or_else(|| inputs.invalid(&ON_NEWER_SCHEMA, text.clone(), "start, warn or refuse"))?
        },
    };
    let db = DbSettings {
        // The table gives DIR a default: a path always comes out.
        dir: inputs.path(&DIR).unwrap_or_default(),
        connection,
        history_table,
        lock_key,
        lock_wait: inputs.duration(&LOCK_WAIT)?,
        connect_timeout: inputs.duration(&CONNECT_TIMEOUT)?,
        session,
        retry,
        policy,
        check_drift,
        schema_scope: None,
    };
    Ok(Config {
        db,
        shutdown_grace: inputs.duration(&SHUTDOWN_GRACE)?,
        ecs_metadata_uri: inputs.var("ECS_CONTAINER_METADATA_URI_V4"),
        command,
    })
}

/// `--format` / `--json` of a report.
fn format(output: OutputArgs) -> Format {
    match (output.json, output.format) {
        (true, _) | (false, Some(FormatArg::Json)) => Format::Json,
        (false, Some(FormatArg::Human) | None) => Format::Human,
    }
}

fn command_of(inputs: &Inputs, command: CommandArgs, inherited: Vec<(String, String)>) -> Result<Command, ConfigError> {
    Ok(match command {
        CommandArgs::Up { target, dry_run: false, .. } => Command::Up { up_to: version(target)? },
        CommandArgs::Up { target, dry_run: true, .. } => {
            Command::Plan { up_to: version(target)?, format: Format::Human }
        }
        CommandArgs::Plan { target, output } => Command::Plan { up_to: version(target)?, format: format(output) },
        CommandArgs::Down { to, steps, dry_run, output } => {
            let target = match (to, steps) {
                (Some(to), _) => Target::To(
                    to.trim()
                        .parse()
                        .map_err(|_| ConfigError::DownTarget { flag: "--to", value: truncate(&to, 40) })?,
                ),
                (None, Some(n)) => Target::Steps(
                    n.trim()
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ConfigError::DownTarget { flag: "--steps", value: truncate(&n, 40) })?,
                ),
                (None, None) => return Err(ConfigError::DownTarget { flag: "--to", value: String::new() }),
            };
            Command::Down(DownRequest { target, dry_run, format: format(output) })
        }
        CommandArgs::Status { output } => Command::Status { format: format(output) },
        CommandArgs::Wait { wait_timeout } => {
            Command::Wait { timeout: inputs.duration_of(&WAIT_TIMEOUT, wait_timeout)? }
        }
        CommandArgs::Repair { accept_checksum, forget_started, mark_applied, dry_run, output } => {
            let action = match (accept_checksum, forget_started, mark_applied) {
                (Some(v), None, None) => RepairAction::AcceptChecksum(repair_version(&v)?),
                (None, Some(v), None) => RepairAction::ForgetStarted(repair_version(&v)?),
                (None, None, Some(v)) => RepairAction::MarkApplied(repair_version(&v)?),
                _ => return Err(ConfigError::RepairAction),
            };
            Command::Repair(RepairRequest { action, dry_run, format: format(output) })
        }
        CommandArgs::Exec { migrate, wait: _, no_db, lock, no_sql, wait_timeout, env_from_secret, command, .. } => {
            let env_from = match env_from_secret.is_empty() {
                true => inputs
                    .text(&ENV_FROM_SECRET)
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                false => env_from_secret,
            };
            let env_from = env_from
                .iter()
                .filter(|r| !r.trim().is_empty())
                .map(|r| SecretRef::parse(r, None))
                .collect::<Result<Vec<_>, _>>()?;
            let mode = match (migrate, no_db) {
                _ if lock => ExecMode::Lock { apply_sql: !no_sql },
                (true, _) => ExecMode::Migrate,
                (false, true) => ExecMode::NoDb,
                (false, false) => ExecMode::Wait { timeout: inputs.duration_of(&WAIT_TIMEOUT, wait_timeout)? },
            };
            Command::Exec(ExecRequest { mode, command, env_from, inherited })
        }
        CommandArgs::Baseline { version, from, from_table, ignore_differences, dry_run, output } => {
            let source = baseline_source(version, from, from_table)?;
            Command::Baseline(BaselineRequest { source, ignore_differences, dry_run, format: format(output) })
        }
        CommandArgs::Convert { from, source, out } => {
            let tool = Tool::parse(from.trim()).filter(|t| t.converts()).ok_or_else(|| ConfigError::UnknownTool {
                command: "convert",
                value: truncate(&from, 40),
                expected: CONVERT_NAMES,
            })?;
            Command::Convert(ConvertRequest { tool, source, out })
        }
        CommandArgs::Lint { format, json, strict, pg_version } => {
            let format = match (json, format) {
                (true, _) | (false, Some(LintFormatArg::Json)) => Format::Json,
                (false, Some(LintFormatArg::Sarif)) => Format::Sarif,
                (false, Some(LintFormatArg::Human) | None) => Format::Human,
            };
            Command::Lint(LintRequest { format, strict, pg_version })
        }
        CommandArgs::Verify { from, output, strict } => Command::Verify(VerifyRequest {
            from,
            format: format(output),
            strict,
            server_url: inputs.options.text(&DATABASE_URL),
        }),
        CommandArgs::Fanout { action } => {
            let output = match &action {
                super::cli::FanoutAction::Status { output, .. } => format(*output),
                super::cli::FanoutAction::Up(_) => Format::Human,
            };
            Command::Fanout(Box::new(fanout::request(inputs, action, output)?))
        }
        CommandArgs::New { description, sequential } => Command::New(NewRequest { description, sequential }),
        CommandArgs::Diff { against, scratch, scratch_url, owners, accept, output } => {
            let against = match (against, scratch) {
                (Some(file), _) => DiffAgainst::File(file),
                (None, true) => DiffAgainst::Scratch { server_url: scratch_url },
                (None, false) => DiffAgainst::Snapshot,
            };
            Command::Diff(DiffRequest { against, owners, accept, format: format(output) })
        }
        CommandArgs::Schema { write, check, owners } => {
            let (file, check) = match (write, check) {
                (Some(file), _) => (file, false),
                (None, Some(file)) => (file, true),
                (None, None) => return Err(ConfigError::SchemaFile),
            };
            Command::Schema(SchemaRequest { file, check, owners, server_url: inputs.options.text(&DATABASE_URL) })
        }
    })
}

fn baseline_source(
    version: Option<String>,
    from: Option<String>,
    from_table: Option<String>,
) -> Result<BaselineSource, ConfigError> {
    let version = version
        .map(|v| v.trim().parse().map_err(|_| ConfigError::BaselineVersion { value: truncate(&v, 40) }))
        .transpose()?;
    Ok(match (from, version) {
        (None, Some(version)) => BaselineSource::UpTo(version),
        (None, None) => {
            return Err(ConfigError::BaselineSource(
                "give the VERSION the database is at, or --from TOOL to read another tool's history",
            ))
        }
        (Some(name), up_to) => {
            let tool = Tool::parse(name.trim()).filter(|t| t.adopts()).ok_or_else(|| ConfigError::UnknownTool {
                command: "baseline",
                value: truncate(&name, 40),
                expected: TOOL_NAMES,
            })?;
            if up_to.is_some() && tool != Tool::Alembic {
                return Err(ConfigError::BaselineSource(
                    "give either VERSION or --from TOOL (only --from alembic takes a VERSION: the one its head corresponds to)",
                ));
            }
            let table = from_table.unwrap_or_else(|| tool.default_table().to_string());
            BaselineSource::Tool { tool, table, up_to }
        }
    })
}

fn repair_version(text: &str) -> Result<u64, ConfigError> {
    text.trim().parse().map_err(|_| ConfigError::RepairVersion { value: truncate(text, 40) })
}

fn version(value: Option<String>) -> Result<Option<UpTo>, ConfigError> {
    value
        .map(|text| text.trim().parse().map(UpTo).map_err(|_| ConfigError::Target { value: truncate(&text, 40) }))
        .transpose()
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests;

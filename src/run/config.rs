//! Resolved settings: the command line and the environment, each read once here, parsed and
//! validated into an immutable `Config`.
//!
//! Precedence: a flag wins over its environment variable, which wins over the default. An
//! empty variable counts as unset. Nothing below this module reads the environment; `run` hands
//! it a lookup so tests drive the real path.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::cli::{Cli, CommandArgs, FanoutAction, LintFormatArg, LogFormatArg, LogLevelArg, Options, TargetArgs};
use crate::db::endpoint::{ConnectionSpec, Source, TlsOverrides};
use crate::db::libpq::LibpqVars;
use crate::db::secrets::{SecretError, SecretRef};
use crate::db::session::SessionSettings;
use crate::db::tls::{SslMode, MODES};
use crate::db::url::{DatabaseUrl, UrlError};
use crate::duration::{self, Millis};
use crate::identity::{self, MIGRUN_VERSION};
use super::log::LogFormat;
use crate::migrate::adopt::{Tool, TOOL_NAMES};
use crate::migrate::apply::RetryPolicy;
use crate::migrate::compare::Policy;
use crate::migrate::convert::{ConvertFrom, CONVERT_NAMES};
use crate::migrate::history::HistoryTable;
use crate::migrate::repair::RepairAction;

/// The environment as a run sees it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What the run does, with its own settings.
#[derive(Debug, Clone)]
pub enum Command {
    /// Apply pending migrations, up to a version if given.
    Up {
        /// `--target`: the highest version to apply.
        up_to: Option<u64>,
    },
    /// Print what `up` would run (also `up --dry-run`).
    Plan {
        /// `--target`: the highest version to plan.
        up_to: Option<u64>,
        /// Print JSON.
        json: bool,
    },
    /// Print every file's state.
    Status {
        /// Print JSON.
        json: bool,
    },
    /// Wait until the schema is ready.
    Wait {
        /// Give up after this long.
        timeout: Duration,
    },
    /// Prepare the database, then supervise a command.
    Exec {
        /// What to do with the database first.
        mode: ExecMode,
        /// The command and its arguments.
        command: Vec<std::ffi::OsString>,
        /// Secrets whose keys become the command's environment.
        env_from: Vec<SecretRef>,
    },
    /// Fix one history row by hand.
    Repair {
        /// What to fix.
        action: RepairAction,
        /// Only print what would change.
        dry_run: bool,
        /// Print JSON.
        json: bool,
    },
    /// Record files as applied without running them.
    Baseline {
        /// Up to a version, or from another tool's history.
        source: BaselineSource,
        /// Record what both sides have even when they differ.
        ignore_differences: bool,
        /// Only print what would be recorded.
        dry_run: bool,
        /// Print JSON.
        json: bool,
    },
    /// Write another tool's folder as migrun files.
    Convert {
        /// The tool whose folder it is.
        tool: ConvertFrom,
        /// Its folder.
        source: PathBuf,
        /// Where the migrun files go.
        out: PathBuf,
    },
    /// Check the files offline.
    Lint {
        /// How to print the findings.
        format: LintFormat,
        /// Warnings fail too.
        strict: bool,
    },
    /// Run the files against a scratch Postgres and measure them.
    Verify {
        /// The previous release's folder, for the upgrade path.
        from: Option<PathBuf>,
        /// Print the JSON report.
        json: bool,
        /// Locks and rewrites on existing tables fail the run.
        strict: bool,
        /// A server to create scratch databases on, instead of starting one
        /// (`--database-url` only: never the ambient DATABASE_URL).
        server_url: Option<String>,
    },
    /// Migrate (or show) many targets.
    Fanout(Box<FanoutRequest>),
    /// Create a new migration file.
    New {
        /// The new file's description.
        description: String,
        /// Number it after the folder's highest integer version, with its padding.
        sequential: bool,
    },
}

/// `fanout up` / `fanout status`, as typed (the targets are read when the run starts).
#[derive(Debug, Clone)]
pub struct FanoutRequest {
    pub status_only: bool,
    pub json: bool,
    pub source: String,
    pub targets_query: Option<String>,
    pub coord_url: Option<String>,
    pub concurrency: u32,
    pub max_conns_per_server: Option<u32>,
    /// The number of workers the engine starts, when known: their coordination sessions get
    /// slots of their own.
    pub workers: Option<u32>,
    pub canary: Option<String>,
    pub max_failure_rate: Option<f64>,
    pub run_id: Option<String>,
    pub deadline: Option<Duration>,
    pub only: Option<String>,
    pub retry_failed: bool,
    /// The base database of `schema:` targets (DATABASE_URL / --database-url), as typed.
    pub base_url: Option<String>,
    /// TLS settings and libpq's variables, for every target's connection.
    pub tls: TlsOverrides,
    pub libpq: LibpqVars,
}

/// `lint --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintFormat {
    Human,
    Json,
    Sarif,
}

/// What `baseline` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineSource {
    /// Every versioned file up to this version.
    UpTo(u64),
    /// What another tool's history table says (Alembic: up to `up_to`).
    Tool { tool: Tool, table: String, up_to: Option<u64> },
}

/// What `exec` does with the database before it starts the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// Apply pending migrations under the lock.
    Migrate,
    /// Hold the advisory lock while the command runs, applying our own files first if asked.
    Lock {
        /// Apply the migrations directory first.
        apply_sql: bool,
    },
    /// Wait until someone else applied them.
    Wait {
        /// Give up after this long.
        timeout: Duration,
    },
    /// Leave the database alone.
    NoDb,
}

impl Command {
    /// The command's name in logs and the result event.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Plan { .. } => "plan",
            Command::Status { .. } => "status",
            Command::Wait { .. } => "wait",
            Command::Repair { .. } => "repair",
            Command::Baseline { .. } => "baseline",
            Command::Convert { .. } => "convert",
            Command::Lint { .. } => "lint",
            Command::Verify { .. } => "verify",
            Command::Fanout(request) if request.status_only => "fanout status",
            Command::Fanout(_) => "fanout up",
            Command::Exec { .. } => "exec",
            Command::New { .. } => "new",
        }
    }
}

/// How a run reports itself: settled first, and whatever else fails, so that every exit can
/// write its result event the way the user asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    /// The command's name, for the result event.
    pub command: &'static str,
    /// Log and result event format.
    pub format: LogFormat,
    /// Least severe level logged.
    pub level: tracing::Level,
    /// `--result-file`: where the result event also goes.
    pub result_file: Option<PathBuf>,
    /// This machine's host name (who applies, off ECS).
    pub host: String,
    /// `MIGRUN_RELEASE` or `GIT_SHA`.
    pub release: Option<String>,
}

impl Reporting {
    /// The reporting settings of a command line that does not parse, read from the raw
    /// arguments as far as they go.
    pub fn from_args(args: &[OsString], env: Env) -> Reporting {
        let args: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let flag = |name: &str| -> Option<String> {
            let prefix = format!("{name}=");
            args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix(&prefix) {
                Some(value) => Some(value.to_string()),
                None if arg == name => args.get(i + 1).cloned(),
                None => None,
            })
        };
        let inputs = Inputs { options: &Options::default(), env };
        let format = flag("--log-format")
            .or_else(|| inputs.var("MIGRUN_LOG_FORMAT"))
            .and_then(|text| log_format(&text))
            .or_else(|| log_format("auto"))
            .unwrap_or(LogFormat::Json);
        let command = match args.iter().find(|a| !a.starts_with('-')).map(String::as_str) {
            Some("up") if args.iter().any(|a| a == "--dry-run") => "plan",
            Some("up") => "up",
            Some("plan") => "plan",
            Some("status") => "status",
            Some("wait") => "wait",
            Some("exec") => "exec",
            Some("new") => "new",
            _ => "migrun",
        };
        Reporting {
            command,
            format,
            level: tracing::Level::INFO,
            result_file: flag("--result-file").or_else(|| inputs.var("MIGRUN_RESULT_FILE")).map(PathBuf::from),
            host: identity::host_name(inputs.var("HOSTNAME")),
            release: inputs.release(),
        }
    }
}

/// Every setting of a run, parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub command: Command,
    /// The migrations directory.
    pub dir: PathBuf,
    /// How to connect; `None` for commands that do not touch the database.
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
    /// How long a clean stop may take after a signal.
    pub shutdown_grace: Duration,
    /// `ECS_CONTAINER_METADATA_URI_V4`, when running on ECS.
    pub ecs_metadata_uri: Option<String>,
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
    /// No connection source is set.
    #[error("no database given: set one of DATABASE_URL / --database-url (postgres://user:password@host:5432/dbname, a key=value string, or a Secrets Manager ARN), MIGRUN_SECRET_ID / --secret-id (a secret name or ARN), or libpq's PGHOST / PGPORT / PGUSER / PGDATABASE (with PGPASSWORD or ~/.pgpass)")]
    NoDatabase,
}

/// Resolves the command line and the environment. The reporting settings always come out,
/// even when the rest is invalid.
pub fn resolve(cli: Cli, env: Env) -> (Reporting, Result<Config, ConfigError>) {
    let inputs = Inputs { options: &cli.options, env };
    let (format, format_error) = inputs.log_format();
    let (level, level_error) = inputs.log_level();
    let reporting = Reporting {
        command: command_name(&cli.command),
        format,
        level,
        result_file: cli.options.result_file.clone().or_else(|| inputs.var("MIGRUN_RESULT_FILE").map(PathBuf::from)),
        host: identity::host_name(inputs.var("HOSTNAME")),
        release: inputs.release(),
    };
    let config = match format_error.or(level_error) {
        Some(error) => Err(error),
        None => config(&inputs, cli.command, &reporting.host),
    };
    (reporting, config)
}

/// The result event's command name for what was typed: `up --dry-run` is a `plan`.
pub fn command_name(command: &CommandArgs) -> &'static str {
    match command {
        CommandArgs::Up { dry_run: false, .. } => "up",
        CommandArgs::Up { dry_run: true, .. } | CommandArgs::Plan { .. } => "plan",
        CommandArgs::Status { .. } => "status",
        CommandArgs::Wait { .. } => "wait",
        CommandArgs::Repair { .. } => "repair",
        CommandArgs::Baseline { .. } => "baseline",
        CommandArgs::Convert { .. } => "convert",
        CommandArgs::Lint { .. } => "lint",
        CommandArgs::Verify { .. } => "verify",
        CommandArgs::Fanout { action: FanoutAction::Status { .. } } => "fanout status",
        CommandArgs::Fanout { .. } => "fanout up",
        CommandArgs::Exec { .. } => "exec",
        CommandArgs::New { .. } => "new",
    }
}

/// The log format from a `--log-format` value (typed, or from the environment): `auto` is
/// human on a terminal, else JSON. `None` when the text is not a format.
pub fn log_format(text: &str) -> Option<LogFormat> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "json" => LogFormat::Json,
        "human" => LogFormat::Human,
        "auto" if std::io::stderr().is_terminal() => LogFormat::Human,
        "auto" => LogFormat::Json,
        _ => return None,
    })
}

/// The flags and the environment, with the precedence rule in one place.
struct Inputs<'a> {
    options: &'a Options,
    env: Env<'a>,
}

impl Inputs<'_> {
    /// `MIGRUN_RELEASE`, else `GIT_SHA`.
    fn release(&self) -> Option<String> {
        self.var("MIGRUN_RELEASE").or_else(|| self.var("GIT_SHA"))
    }

    /// An environment variable; empty counts as unset.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// The flag's value, else the variable's.
    fn text(&self, flag: &Option<String>, var: &str) -> Option<String> {
        flag.clone().filter(|v| !v.trim().is_empty()).or_else(|| self.var(var))
    }

    /// A duration setting, defaulted.
    fn millis(
        &self,
        flag_value: &Option<String>,
        flag: &'static str,
        var: &'static str,
        default: &str,
    ) -> Result<Millis, ConfigError> {
        let value = self.text(flag_value, var).unwrap_or_else(|| default.to_string());
        Millis::parse(&value).ok_or(ConfigError::Duration { flag, env: var, value })
    }

    /// A switch: on when the flag is given, or the variable says so (1/0, true/false, yes/no, on/off).
    fn switch(&self, flag_value: bool, flag: &'static str, var: &'static str) -> Result<bool, ConfigError> {
        if flag_value {
            return Ok(true);
        }
        let Some(value) = self.var(var) else { return Ok(false) };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::Invalid { flag, env: var, value, expected: "true or false (1/0, yes/no, on/off)" }),
        }
    }

    fn log_format(&self) -> (LogFormat, Option<ConfigError>) {
        let from_flag = self.options.log_format.map(|arg| match arg {
            LogFormatArg::Auto => "auto",
            LogFormatArg::Json => "json",
            LogFormatArg::Human => "human",
        });
        let text = from_flag.map(str::to_string).or_else(|| self.var("MIGRUN_LOG_FORMAT"));
        let auto = log_format("auto").unwrap_or(LogFormat::Json);
        match text {
            None => (auto, None),
            Some(text) => match log_format(&text) {
                Some(format) => (format, None),
                None => (
                    auto,
                    Some(ConfigError::Invalid {
                        flag: "--log-format",
                        env: "MIGRUN_LOG_FORMAT",
                        value: text,
                        expected: "auto, json or human",
                    }),
                ),
            },
        }
    }

    fn log_level(&self) -> (tracing::Level, Option<ConfigError>) {
        let from_flag = self.options.log_level.map(|arg| match arg {
            LogLevelArg::Error => tracing::Level::ERROR,
            LogLevelArg::Warn => tracing::Level::WARN,
            LogLevelArg::Info => tracing::Level::INFO,
            LogLevelArg::Debug => tracing::Level::DEBUG,
        });
        if let Some(level) = from_flag {
            return (level, None);
        }
        let Some(text) = self.var("MIGRUN_LOG_LEVEL") else { return (tracing::Level::INFO, None) };
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => (tracing::Level::ERROR, None),
            "warn" => (tracing::Level::WARN, None),
            "info" => (tracing::Level::INFO, None),
            "debug" => (tracing::Level::DEBUG, None),
            _ => (
                tracing::Level::INFO,
                Some(ConfigError::Invalid {
                    flag: "--log-level",
                    env: "MIGRUN_LOG_LEVEL",
                    value: text,
                    expected: "error, warn, info or debug",
                }),
            ),
        }
    }
}

fn config(inputs: &Inputs, command: CommandArgs, host: &str) -> Result<Config, ConfigError> {
    let options = inputs.options;
    let command = command_of(inputs, command)?;
    let table_text = inputs.text(&options.table, "MIGRUN_TABLE").unwrap_or_else(|| "migrun_history".to_string());
    let history_table = HistoryTable::parse(&table_text).filter(|t| !t.is_temporary()).ok_or(ConfigError::Invalid {
        flag: "--table",
        env: "MIGRUN_TABLE",
        value: table_text.clone(),
        expected:
            "a table name, optionally schema-qualified, not in pg_temp (letters, digits, _; e.g. ops.migrun_history)",
    })?;
    let lock_key = match inputs.text(&options.lock_key, "MIGRUN_LOCK_KEY") {
        None => None,
        Some(text) => text.trim().parse().map(Some).map_err(|_| ConfigError::Invalid {
            flag: "--lock-key",
            env: "MIGRUN_LOCK_KEY",
            value: text.clone(),
            expected: "a signed 64-bit integer",
        })?,
    };
    let session = SessionSettings {
        lock_timeout: inputs.millis(&options.lock_timeout, "--lock-timeout", "MIGRUN_LOCK_TIMEOUT", "5s")?,
        statement_timeout: inputs.millis(
            &options.statement_timeout,
            "--statement-timeout",
            "MIGRUN_STATEMENT_TIMEOUT",
            "0",
        )?,
        idle_in_transaction_timeout: inputs.millis(
            &options.idle_in_transaction_timeout,
            "--idle-in-transaction-timeout",
            "MIGRUN_IDLE_IN_TRANSACTION_TIMEOUT",
            "1min",
        )?,
        // Postgres truncates application_name at 63 bytes.
        application_name: truncate(&format!("migrun/{MIGRUN_VERSION} {host}"), 63),
    };
    let connection = match &command {
        Command::New { .. }
        | Command::Convert { .. }
        | Command::Lint { .. }
        | Command::Verify { .. }
        | Command::Fanout(_)
        | Command::Exec { mode: ExecMode::NoDb, .. } => None,
        _ => Some(connection(inputs)?),
    };
    let retries_text = inputs.text(&options.lock_retries, "MIGRUN_LOCK_RETRIES").unwrap_or_else(|| "10".to_string());
    let retry = RetryPolicy {
        lock_retries: retries_text.trim().parse().map_err(|_| ConfigError::Invalid {
            flag: "--lock-retries",
            env: "MIGRUN_LOCK_RETRIES",
            value: retries_text.clone(),
            expected: "a whole number (0 = do not retry)",
        })?,
        first_delay: inputs
            .millis(&options.retry_backoff, "--retry-backoff", "MIGRUN_RETRY_BACKOFF", "500ms")?
            .as_duration(),
    };
    Ok(Config {
        dir: options
            .dir
            .clone()
            .or_else(|| inputs.var("MIGRUN_DIR").map(PathBuf::from))
            .unwrap_or_else(|| "sql".into()),
        connection,
        history_table,
        lock_key,
        lock_wait: inputs.millis(&options.lock_wait, "--lock-wait", "MIGRUN_LOCK_WAIT", "10min")?.as_duration(),
        connect_timeout: inputs
            .millis(&options.connect_timeout, "--connect-timeout", "MIGRUN_CONNECT_TIMEOUT", "60s")?
            .as_duration(),
        session,
        retry,
        policy: Policy {
            allow_drift: inputs.switch(options.allow_drift, "--allow-drift", "MIGRUN_ALLOW_DRIFT")?,
            allow_missing: inputs.switch(options.allow_missing, "--allow-missing", "MIGRUN_ALLOW_MISSING")?,
            allow_out_of_order: inputs.switch(
                options.allow_out_of_order,
                "--allow-out-of-order",
                "MIGRUN_ALLOW_OUT_OF_ORDER",
            )?,
            allow_empty: inputs.switch(options.allow_empty, "--allow-empty", "MIGRUN_ALLOW_EMPTY")?,
        },
        shutdown_grace: inputs
            .millis(&options.shutdown_grace, "--shutdown-grace", "MIGRUN_SHUTDOWN_GRACE", "20s")?
            .as_duration(),
        ecs_metadata_uri: inputs.var("ECS_CONTAINER_METADATA_URI_V4"),
        command,
    })
}

fn command_of(inputs: &Inputs, command: CommandArgs) -> Result<Command, ConfigError> {
    let wait_timeout = |flag: &Option<String>| -> Result<Duration, ConfigError> {
        Ok(inputs.millis(flag, "--wait-timeout", "MIGRUN_WAIT_TIMEOUT", "10min")?.as_duration())
    };
    Ok(match command {
        CommandArgs::Up { target, dry_run: false } => Command::Up { up_to: version(target)? },
        CommandArgs::Up { target, dry_run: true } => Command::Plan { up_to: version(target)?, json: false },
        CommandArgs::Plan { target, json } => Command::Plan { up_to: version(target)?, json },
        CommandArgs::Status { json } => Command::Status { json },
        CommandArgs::Wait { wait_timeout: flag } => Command::Wait { timeout: wait_timeout(&flag)? },
        CommandArgs::Repair { accept_checksum, forget_started, mark_applied, dry_run, json } => {
            let action = match (accept_checksum, forget_started, mark_applied) {
                (Some(v), None, None) => RepairAction::AcceptChecksum(repair_version(&v)?),
                (None, Some(v), None) => RepairAction::ForgetStarted(repair_version(&v)?),
                (None, None, Some(v)) => RepairAction::MarkApplied(repair_version(&v)?),
                _ => return Err(ConfigError::RepairAction),
            };
            Command::Repair { action, dry_run, json }
        }
        CommandArgs::Exec { migrate, wait: _, no_db, lock, no_sql, wait_timeout: flag, env_from_secret, command } => {
            let env_from = if env_from_secret.is_empty() {
                inputs
                    .var("MIGRUN_ENV_FROM_SECRET")
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default()
            } else {
                env_from_secret
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
                (false, false) => ExecMode::Wait { timeout: wait_timeout(&flag)? },
            };
            Command::Exec { mode, command, env_from }
        }
        CommandArgs::Baseline { version, from, from_table, ignore_differences, dry_run, json } => {
            let version = version
                .map(|v| v.trim().parse().map_err(|_| ConfigError::BaselineVersion { value: truncate(&v, 40) }))
                .transpose()?;
            let source = match (from, version) {
                (None, Some(version)) => BaselineSource::UpTo(version),
                (None, None) => {
                    return Err(ConfigError::BaselineSource(
                        "give the VERSION the database is at, or --from TOOL to read another tool's history",
                    ))
                }
                (Some(name), up_to) => {
                    let tool = Tool::parse(name.trim()).ok_or_else(|| ConfigError::UnknownTool {
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
            };
            Command::Baseline { source, ignore_differences, dry_run, json }
        }
        CommandArgs::Convert { from, source, out } => {
            let tool = ConvertFrom::parse(from.trim()).ok_or_else(|| ConfigError::UnknownTool {
                command: "convert",
                value: truncate(&from, 40),
                expected: CONVERT_NAMES,
            })?;
            Command::Convert { tool, source, out }
        }
        CommandArgs::Lint { format, strict } => {
            let format = match format {
                LintFormatArg::Human => LintFormat::Human,
                LintFormatArg::Json => LintFormat::Json,
                LintFormatArg::Sarif => LintFormat::Sarif,
            };
            Command::Lint { format, strict }
        }
        CommandArgs::Verify { from, json, strict } => {
            Command::Verify { from, json, strict, server_url: inputs.options.database_url.clone() }
        }
        CommandArgs::Fanout { action } => Command::Fanout(Box::new(fanout_request(inputs, action)?)),
        CommandArgs::New { description, sequential } => Command::New { description, sequential },
    })
}

fn fanout_request(inputs: &Inputs, action: FanoutAction) -> Result<FanoutRequest, ConfigError> {
    let base_url = inputs.text(&inputs.options.database_url, "DATABASE_URL");
    let tls = tls_overrides(inputs)?;
    let libpq = LibpqVars::read(inputs.env);
    let request = |targets: TargetArgs, status_only: bool, json: bool| FanoutRequest {
        status_only,
        json,
        source: targets.targets,
        targets_query: targets.targets_query,
        coord_url: targets.coord_url,
        concurrency: 4,
        max_conns_per_server: None,
        workers: None,
        canary: None,
        max_failure_rate: None,
        run_id: None,
        deadline: None,
        only: None,
        retry_failed: false,
        base_url: base_url.clone(),
        tls: tls.clone(),
        libpq: libpq.clone(),
    };
    Ok(match action {
        FanoutAction::Status { targets, json } => request(targets, true, json),
        FanoutAction::Up {
            targets,
            concurrency,
            max_conns_per_server,
            workers,
            canary,
            max_failure_rate,
            run_id,
            deadline,
            only,
            retry_failed,
        } => {
            let invalid = |flag: &'static str, value: String, expected: &str| ConfigError::Flag {
                flag,
                value: truncate(&value, 40),
                expected: expected.to_string(),
            };
            if concurrency == 0 {
                return Err(invalid("--concurrency", "0".into(), "at least 1"));
            }
            if max_conns_per_server == Some(0) {
                return Err(invalid("--max-conns-per-server", "0".into(), "at least 1"));
            }
            const FROM_BATCH: &str = "AWS_BATCH_JOB_ARRAY_SIZE (--workers)";
            let (workers, named) = match (workers, inputs.var("AWS_BATCH_JOB_ARRAY_SIZE")) {
                (Some(0), _) => return Err(invalid("--workers", "0".into(), "at least 1")),
                (Some(w), _) => (Some(w), "--workers"),
                (None, Some(size)) => {
                    let w = size.trim().parse::<u32>().ok().filter(|w| *w > 0);
                    (Some(w.ok_or_else(|| invalid(FROM_BATCH, size.clone(), "a count of at least 1"))?), FROM_BATCH)
                }
                (None, None) => (None, "--workers"),
            };
            if let (Some(w), Some(k)) = (workers, max_conns_per_server) {
                if w >= k {
                    return Err(invalid(
                        named,
                        w.to_string(),
                        "fewer than --max-conns-per-server: each worker's coordination session takes one of the K slots",
                    ));
                }
            }
            if let Some(rate) = max_failure_rate.filter(|r| !(0.0..=1.0).contains(r)) {
                return Err(invalid("--max-failure-rate", rate.to_string(), "a share between 0 and 1"));
            }
            let deadline = match deadline {
                Some(text) => Some(
                    Millis::parse(&text)
                        .ok_or_else(|| invalid("--deadline", text.clone(), duration::expected(&text)))?
                        .as_duration(),
                ),
                None => None,
            };
            FanoutRequest {
                concurrency,
                max_conns_per_server,
                workers,
                canary,
                max_failure_rate,
                run_id,
                deadline,
                only,
                retry_failed,
                ..request(targets, false, false)
            }
        }
    })
}

/// The first source that is set wins: DATABASE_URL (a connection string, or a Secrets Manager
/// ARN), then --secret-id, then libpq's PG* variables.
fn connection(inputs: &Inputs) -> Result<ConnectionSpec, ConfigError> {
    let options = inputs.options;
    let libpq = LibpqVars::read(inputs.env);
    let secret_key = inputs.text(&options.secret_key, "MIGRUN_SECRET_KEY");
    let source = if let Some(url) = inputs.text(&options.database_url, "DATABASE_URL") {
        if SecretRef::is_arn(url.trim()) {
            Source::Secret(SecretRef::parse(&url, secret_key)?)
        } else {
            let (url, config, tls) = DatabaseUrl::parse(url)?;
            Source::Url { url, config: Box::new(config), tls }
        }
    } else if let Some(id) = inputs.text(&options.secret_id, "MIGRUN_SECRET_ID") {
        Source::Secret(SecretRef::parse(&id, secret_key)?)
    } else if libpq.names_a_server() {
        Source::Libpq
    } else {
        return Err(ConfigError::NoDatabase);
    };
    Ok(ConnectionSpec { source, tls: tls_overrides(inputs)?, libpq })
}

/// `--sslmode` and `--sslrootcert` (or their variables): they win over every source.
fn tls_overrides(inputs: &Inputs) -> Result<TlsOverrides, ConfigError> {
    let options = inputs.options;
    let sslmode = match inputs.text(&options.sslmode, "MIGRUN_SSLMODE") {
        Some(text) => Some(SslMode::parse(&text).ok_or(ConfigError::Invalid {
            flag: "--sslmode",
            env: "MIGRUN_SSLMODE",
            value: text.clone(),
            expected: MODES,
        })?),
        None => None,
    };
    let sslrootcert = options.sslrootcert.clone().or_else(|| inputs.var("MIGRUN_SSLROOTCERT").map(PathBuf::from));
    Ok(TlsOverrides { sslmode, sslrootcert })
}

fn repair_version(text: &str) -> Result<u64, ConfigError> {
    text.trim().parse().map_err(|_| ConfigError::RepairVersion { value: truncate(text, 40) })
}

fn version(value: Option<String>) -> Result<Option<u64>, ConfigError> {
    value.map(|text| text.trim().parse().map_err(|_| ConfigError::Target { value: truncate(&text, 40) })).transpose()
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    fn resolve_with(args: &[&str], vars: &[(&str, &str)]) -> (Reporting, Result<Config, ConfigError>) {
        let cli = Cli::try_parse_from(std::iter::once("migrun").chain(args.iter().copied())).expect("parses");
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(cli, &|name: &str| vars.get(name).cloned())
    }

    fn config(args: &[&str], vars: &[(&str, &str)]) -> Config {
        resolve_with(args, vars).1.expect("valid configuration")
    }

    fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
        resolve_with(args, vars).1.expect_err("invalid configuration").to_string()
    }

    const URL: (&str, &str) = ("DATABASE_URL", "postgres://app@db/app");

    #[test]
    fn flags_win_over_variables_which_win_over_defaults() {
        let defaults = config(&["up"], &[URL]);
        assert_eq!(defaults.lock_wait, Duration::from_secs(600));
        assert_eq!(defaults.dir, PathBuf::from("sql"));
        assert_eq!(defaults.history_table.to_string(), "migrun_history");
        assert_eq!(defaults.retry.lock_retries, 10);
        let from_env = config(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "30s"), ("MIGRUN_DIR", "db/migrations")]);
        assert_eq!(from_env.lock_wait, Duration::from_secs(30));
        assert_eq!(from_env.dir, PathBuf::from("db/migrations"));
        let from_flag = config(&["up", "--lock-wait", "5s", "--dir", "other"], &[URL, ("MIGRUN_LOCK_WAIT", "30s")]);
        assert_eq!(from_flag.lock_wait, Duration::from_secs(5));
        assert_eq!(from_flag.dir, PathBuf::from("other"));
        // An empty variable (a blank field in a task definition) counts as unset.
        assert_eq!(config(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "")]).lock_wait, Duration::from_secs(600));
    }

    #[test]
    fn subcommand_settings_read_their_variables_too() {
        let wait = config(&["wait"], &[URL, ("MIGRUN_WAIT_TIMEOUT", "2s")]);
        assert!(matches!(wait.command, Command::Wait { timeout } if timeout == Duration::from_secs(2)));
        let exec = config(&["exec", "--", "true"], &[URL, ("MIGRUN_ENV_FROM_SECRET", "a,b")]);
        let Command::Exec { env_from, mode, .. } = exec.command else { panic!("exec") };
        assert_eq!(env_from.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(matches!(mode, ExecMode::Wait { .. }));
        let dry = config(&["up", "--dry-run", "--target", "3"], &[URL]);
        assert!(matches!(dry.command, Command::Plan { up_to: Some(3), json: false }));
    }

    #[test]
    fn switches_read_common_spellings() {
        for on in ["1", "true", "YES", "on"] {
            assert!(config(&["up"], &[URL, ("MIGRUN_ALLOW_DRIFT", on)]).policy.allow_drift, "{on}");
        }
        for off in ["0", "false", "no", "OFF"] {
            assert!(!config(&["up"], &[URL, ("MIGRUN_ALLOW_DRIFT", off)]).policy.allow_drift, "{off}");
        }
        assert!(config(&["up", "--allow-missing"], &[URL, ("MIGRUN_ALLOW_MISSING", "false")]).policy.allow_missing);
        let bad = error(&["up"], &[URL, ("MIGRUN_ALLOW_OUT_OF_ORDER", "maybe")]);
        assert!(bad.starts_with("--allow-out-of-order / MIGRUN_ALLOW_OUT_OF_ORDER: `maybe`"), "{bad}");
    }

    #[test]
    fn the_first_connection_source_set_wins() {
        let libpq = ("PGHOST", "pg.internal");
        let secret = ("MIGRUN_SECRET_ID", "prod/db");
        let source = |vars: &[(&str, &str)]| config(&["status"], vars).connection.expect("a connection").source;
        assert!(matches!(source(&[URL, secret, libpq]), Source::Url { .. }));
        assert!(matches!(source(&[secret, libpq]), Source::Secret(s) if s.id == "prod/db"));
        assert!(matches!(source(&[libpq]), Source::Libpq));
        let arn = ("DATABASE_URL", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db:url::");
        assert!(matches!(source(&[arn]), Source::Secret(s) if s.json_key.as_deref() == Some("url")));
        assert!(error(&["up"], &[]).starts_with("no database given"));
        // Commands that never connect need no connection.
        assert!(config(&["new", "x"], &[]).connection.is_none());
        assert!(config(&["exec", "--no-db", "--", "true"], &[]).connection.is_none());
    }

    #[test]
    fn invalid_settings_name_flag_and_variable() {
        let duration = error(&["up"], &[URL, ("MIGRUN_LOCK_WAIT", "forever")]);
        assert!(
            duration.starts_with("--lock-wait / MIGRUN_LOCK_WAIT: `forever` is not a usable duration"),
            "{duration}"
        );
        let table = error(&["up", "--table", "a.b.c"], &[URL]);
        assert!(table.starts_with("--table / MIGRUN_TABLE: `a.b.c` is not valid"), "{table}");
        let sslmode = error(&["up"], &[URL, ("MIGRUN_SSLMODE", "verify_full")]);
        assert!(sslmode.contains("verify_full") && sslmode.contains("verify-full"), "{sslmode}");
        let url = error(&["up"], &[("DATABASE_URL", "postgres://app:hunter2@db:port/app")]);
        assert!(url.contains("invalid value for option `port`") && !url.contains("hunter2"), "{url}");
    }

    #[test]
    fn fanout_workers_come_from_the_flag_or_a_batch_array_and_leave_slots_for_targets() {
        let workers = |args: &[&str], vars: &[(&str, &str)]| match config(args, vars).command {
            Command::Fanout(request) => request.workers,
            other => panic!("not fanout: {other:?}"),
        };
        let up = ["fanout", "up", "--targets", "file:t", "--max-conns-per-server", "8"];
        assert_eq!(workers(&up, &[]), None);
        assert_eq!(workers(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "6")]), Some(6));
        assert_eq!(workers(&[&up[..], &["--workers", "3"]].concat(), &[("AWS_BATCH_JOB_ARRAY_SIZE", "6")]), Some(3));
        let full = error(&[&up[..], &["--workers", "8"]].concat(), &[]);
        assert!(full.starts_with("--workers: `8`") && full.contains("fewer than --max-conns-per-server"), "{full}");
        let batch = error(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "10")]);
        assert!(batch.starts_with("AWS_BATCH_JOB_ARRAY_SIZE (--workers): `10`"), "{batch}");
        let bad = error(&up, &[("AWS_BATCH_JOB_ARRAY_SIZE", "many")]);
        assert!(bad.contains("AWS_BATCH_JOB_ARRAY_SIZE") && bad.contains("`many`"), "{bad}");
    }

    #[test]
    fn reporting_settles_even_when_the_rest_is_invalid() {
        let (reporting, config) = resolve_with(
            &["up", "--result-file", "/tmp/r.json"],
            &[("MIGRUN_LOG_FORMAT", "human"), ("MIGRUN_LOG_LEVEL", "warn"), ("MIGRUN_RELEASE", "v7")],
        );
        assert!(config.is_err(), "no database");
        assert_eq!(reporting.format, LogFormat::Human);
        assert_eq!(reporting.level, tracing::Level::WARN);
        assert_eq!(reporting.result_file, Some(PathBuf::from("/tmp/r.json")));
        assert_eq!(reporting.release.as_deref(), Some("v7"));
        assert_eq!(reporting.command, "up");
        let (reporting, config) = resolve_with(&["status", "--log-format", "json"], &[("MIGRUN_LOG_FORMAT", "human")]);
        assert_eq!(reporting.format, LogFormat::Json, "the flag wins");
        assert!(config.is_err());
        let (reporting, config) = resolve_with(&["up"], &[URL, ("MIGRUN_LOG_FORMAT", "xml")]);
        assert!(config.err().is_some_and(|e| e.to_string().contains("MIGRUN_LOG_FORMAT: `xml`")));
        assert_eq!(reporting.format, log_format("auto").unwrap_or(LogFormat::Json));
    }

    #[test]
    fn reporting_of_a_command_line_that_does_not_parse() {
        let args: Vec<OsString> =
            ["migrun", "--log-format=human", "up", "--dry-run", "--bogus", "--result-file", "/tmp/x.json"]
                .iter()
                .map(OsString::from)
                .collect();
        let reporting = Reporting::from_args(&args, &|_| None);
        assert_eq!(reporting.format, LogFormat::Human);
        assert_eq!(reporting.command, "plan");
        assert_eq!(reporting.result_file, Some(PathBuf::from("/tmp/x.json")));
        let env = |name: &str| (name == "MIGRUN_RESULT_FILE").then(|| "/tmp/env.json".to_string());
        let bare = Reporting::from_args(&[OsString::from("migrun")], &env);
        assert_eq!(bare.command, "migrun");
        assert_eq!(bare.result_file, Some(PathBuf::from("/tmp/env.json")));
    }
}

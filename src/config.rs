//! Resolved settings: every flag parsed and validated, with the environment read once here.
//!
//! Nothing below this module looks at `std::env`; `run` hands it an environment lookup so
//! tests drive the real path.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, CommandArgs, LogFormatArg, LogLevelArg, Options};
use crate::connect::ConnectError;
use crate::conninfo::{DatabaseUrl, Source, TlsOverrides};
use crate::duration::{self, Millis};
use crate::history::HistoryTable;
use crate::libpq::LibpqVars;
use crate::secrets::{SecretError, SecretRef};
use crate::tls::{SslMode, MODES};

pub const MIGRUN_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug)]
pub enum Command {
    Up { target: Option<u64> },
    Plan { target: Option<u64>, json: bool },
    Status { json: bool },
    Wait { timeout: Duration },
    Exec { mode: ExecMode, command: Vec<std::ffi::OsString>, env_from: Vec<SecretRef> },
    New { description: String },
}

/// What `exec` does with the database before it starts the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    Migrate,
    /// Hold the advisory lock while the command runs, applying our own files first if asked.
    Lock {
        apply_sql: bool,
    },
    Wait {
        timeout: Duration,
    },
    NoDb,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Plan { .. } => "plan",
            Command::Status { .. } => "status",
            Command::Wait { .. } => "wait",
            Command::Exec { .. } => "exec",
            Command::New { .. } => "new",
        }
    }
}

/// Timeouts for migrun's session, sent in the start-up packet.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub lock_timeout: Millis,
    pub statement_timeout: Millis,
    pub idle_in_transaction_timeout: Millis,
    pub application_name: String,
}

/// What the history rows and the result event say about who applied a migration.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub applied_by: String,
    pub host: String,
    pub migrun_version: String,
    pub release: Option<String>,
    pub ecs_task_arn: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
}

impl Identity {
    /// On ECS the task ARN is who applied a migration; the host name is a throwaway id there.
    pub fn add_task(&mut self, task: crate::ecs::TaskIdentity) {
        if let Some(arn) = &task.task_arn {
            self.applied_by = arn.clone();
        }
        self.ecs_task_arn = task.task_arn;
        self.image = task.image;
        self.image_digest = task.image_digest;
    }
}

/// Which mismatches between files and history only warn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub allow_drift: bool,
    pub allow_missing: bool,
    pub allow_out_of_order: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Human,
}

#[derive(Debug)]
pub struct Config {
    pub command: Command,
    pub dir: PathBuf,
    /// None only for commands that do not touch the database.
    pub database: Option<Source>,
    pub tls_overrides: TlsOverrides,
    pub libpq: LibpqVars,
    /// `ECS_CONTAINER_METADATA_URI_V4`, when running on ECS.
    pub ecs_metadata_uri: Option<String>,
    pub history_table: HistoryTable,
    pub lock_key: i64,
    pub lock_wait: Duration,
    pub connect_timeout: Duration,
    pub session: SessionSettings,
    pub lock_retries: u32,
    pub retry_backoff: Duration,
    pub policy: Policy,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub result_file: Option<PathBuf>,
    pub identity: Identity,
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} / {env}: `{value}` is not a duration; expected {}", duration::SYNTAX)]
    Duration { flag: &'static str, env: &'static str, value: String },
    #[error("{flag} / {env}: `{value}` is not valid; expected {expected}")]
    Invalid { flag: &'static str, env: &'static str, value: String, expected: &'static str },
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The environment as `run` sees it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn resolve(cli: Cli, env: Env) -> Result<Config, ConfigError> {
    let options = cli.options;
    let command = match cli.command {
        CommandArgs::Up { target, dry_run: false } => Command::Up { target: version("--target", target)? },
        CommandArgs::Up { target, dry_run: true } => {
            Command::Plan { target: version("--target", target)?, json: false }
        }
        CommandArgs::Plan { target, json } => Command::Plan { target: version("--target", target)?, json },
        CommandArgs::Status { json } => Command::Status { json },
        CommandArgs::Wait { wait_timeout } => Command::Wait { timeout: wait_timeout_of(&wait_timeout)? },
        CommandArgs::Exec { migrate, wait: _, no_db, lock, no_sql, wait_timeout, env_from_secret, command } => {
            let env_from = env_from_secret
                .iter()
                .filter(|r| !r.trim().is_empty())
                .map(|r| SecretRef::parse(r, None))
                .collect::<Result<Vec<_>, _>>()?;
            let mode = match (migrate, no_db) {
                _ if lock => ExecMode::Lock { apply_sql: !no_sql },
                (true, _) => ExecMode::Migrate,
                (false, true) => ExecMode::NoDb,
                (false, false) => ExecMode::Wait { timeout: wait_timeout_of(&wait_timeout)? },
            };
            Command::Exec { mode, command, env_from }
        }
        CommandArgs::New { description } => Command::New { description },
    };
    let history_table = HistoryTable::parse(&options.table).ok_or(ConfigError::Invalid {
        flag: "--table",
        env: "MIGRUN_TABLE",
        value: options.table.clone(),
        expected: "a table name, optionally schema-qualified (letters, digits, _; e.g. ops.migrun_history)",
    })?;
    let lock_key = match &options.lock_key {
        None => history_table.lock_key(),
        Some(text) => text.trim().parse().map_err(|_| ConfigError::Invalid {
            flag: "--lock-key",
            env: "MIGRUN_LOCK_KEY",
            value: text.clone(),
            expected: "a signed 64-bit integer",
        })?,
    };
    let host = host_name(env);
    let session = session_settings(&options, &host)?;
    let libpq = LibpqVars::read(env);
    let database = match &command {
        Command::New { .. } | Command::Exec { mode: ExecMode::NoDb, .. } => None,
        _ => Some(connection_source(&options, &libpq)?),
    };
    let tls_overrides = TlsOverrides {
        sslmode: match &options.sslmode {
            Some(text) => Some(SslMode::parse(text).ok_or_else(|| ConfigError::Invalid {
                flag: "--sslmode",
                env: "MIGRUN_SSLMODE",
                value: text.clone(),
                expected: MODES,
            })?),
            None => None,
        },
        sslrootcert: options.sslrootcert.clone(),
    };
    Ok(Config {
        command,
        dir: options.dir.clone(),
        database,
        tls_overrides,
        libpq,
        ecs_metadata_uri: env("ECS_CONTAINER_METADATA_URI_V4").filter(|u| !u.is_empty()),
        lock_key,
        lock_wait: millis(&options.lock_wait, "--lock-wait", "MIGRUN_LOCK_WAIT")?.as_duration(),
        connect_timeout: millis(&options.connect_timeout, "--connect-timeout", "MIGRUN_CONNECT_TIMEOUT")?.as_duration(),
        lock_retries: options.lock_retries.trim().parse().map_err(|_| ConfigError::Invalid {
            flag: "--lock-retries",
            env: "MIGRUN_LOCK_RETRIES",
            value: options.lock_retries.clone(),
            expected: "a whole number (0 = do not retry)",
        })?,
        retry_backoff: millis(&options.retry_backoff, "--retry-backoff", "MIGRUN_RETRY_BACKOFF")?.as_duration(),
        policy: Policy {
            allow_drift: options.allow_drift,
            allow_missing: options.allow_missing,
            allow_out_of_order: options.allow_out_of_order,
        },
        log_format: log_format(options.log_format),
        log_level: log_level(options.log_level),
        result_file: options.result_file.clone(),
        identity: identity(env, host),
        shutdown_grace: millis(&options.shutdown_grace, "--shutdown-grace", "MIGRUN_SHUTDOWN_GRACE")?.as_duration(),
        history_table,
        session,
    })
}

/// The first source that is set wins: DATABASE_URL (a connection string, or a Secrets Manager
/// ARN), then --secret-id, then libpq's PG* variables.
fn connection_source(options: &Options, libpq: &LibpqVars) -> Result<Source, ConfigError> {
    let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    if let Some(url) = set(&options.database_url) {
        if SecretRef::is_arn(url.trim()) {
            return Ok(Source::Secret(SecretRef::parse(&url, set(&options.secret_key))?));
        }
        let (url, config, tls) = DatabaseUrl::parse(url)?;
        return Ok(Source::Url { url, config: Box::new(config), tls });
    }
    if let Some(id) = set(&options.secret_id) {
        return Ok(Source::Secret(SecretRef::parse(&id, set(&options.secret_key))?));
    }
    if libpq.names_a_server() {
        return Ok(Source::Libpq);
    }
    Err(ConnectError::Missing.into())
}

fn session_settings(options: &Options, host: &str) -> Result<SessionSettings, ConfigError> {
    Ok(SessionSettings {
        lock_timeout: millis(&options.lock_timeout, "--lock-timeout", "MIGRUN_LOCK_TIMEOUT")?,
        statement_timeout: millis(&options.statement_timeout, "--statement-timeout", "MIGRUN_STATEMENT_TIMEOUT")?,
        idle_in_transaction_timeout: millis(
            &options.idle_in_transaction_timeout,
            "--idle-in-transaction-timeout",
            "MIGRUN_IDLE_IN_TRANSACTION_TIMEOUT",
        )?,
        // Postgres truncates application_name at 63 bytes.
        application_name: truncate(&format!("migrun/{MIGRUN_VERSION} {host}"), 63),
    })
}

fn wait_timeout_of(value: &str) -> Result<Duration, ConfigError> {
    Ok(millis(value, "--wait-timeout", "MIGRUN_WAIT_TIMEOUT")?.as_duration())
}

fn millis(value: &str, flag: &'static str, env: &'static str) -> Result<Millis, ConfigError> {
    Millis::parse(value).ok_or_else(|| ConfigError::Duration { flag, env, value: value.to_string() })
}

fn version(flag: &'static str, value: Option<String>) -> Result<Option<u64>, ConfigError> {
    value
        .map(|text| {
            text.trim().parse().map_err(|_| ConfigError::Invalid {
                flag,
                env: "-",
                value: text.clone(),
                expected: "a migration version (digits)",
            })
        })
        .transpose()
}

pub fn log_format(arg: LogFormatArg) -> LogFormat {
    match arg {
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Human => LogFormat::Human,
        LogFormatArg::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
        LogFormatArg::Auto => LogFormat::Json,
    }
}

pub fn log_level(arg: LogLevelArg) -> tracing::Level {
    match arg {
        LogLevelArg::Error => tracing::Level::ERROR,
        LogLevelArg::Warn => tracing::Level::WARN,
        LogLevelArg::Info => tracing::Level::INFO,
        LogLevelArg::Debug => tracing::Level::DEBUG,
    }
}

fn identity(env: Env, host: String) -> Identity {
    let release = env("MIGRUN_RELEASE").or_else(|| env("GIT_SHA")).filter(|r| !r.is_empty());
    Identity {
        applied_by: host.clone(),
        host,
        migrun_version: MIGRUN_VERSION.to_string(),
        release,
        ..Identity::default()
    }
}

fn host_name(env: Env) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let from_kernel = ok
        .then(|| {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        })
        .filter(|h| !h.is_empty());
    from_kernel.or_else(|| env("HOSTNAME")).unwrap_or_else(|| "unknown-host".to_string())
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

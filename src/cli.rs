//! The command line as typed: flags and their environment variables, unvalidated.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "migrun", version, about = "Apply PostgreSQL migrations safely before a rollout")]
pub struct Cli {
    #[command(subcommand)]
    pub command: CommandArgs,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Apply all pending migrations under the advisory lock.
    Up {
        /// Apply versioned migrations up to and including this version only.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Show what would run (same as `plan`) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show applied and pending migrations and whether their checksums match. Read only.
    Status {
        /// Print JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what `up` would run, in order, with each file's transaction mode and timeouts. Read only.
    Plan {
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Print JSON on stdout instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Wait until every versioned migration in the directory is applied; exit 0 when the schema
    /// is ready. For init containers, health checks and CI. Read only.
    Wait {
        /// Give up after this long (exit 9).
        #[arg(long, env = "MIGRUN_WAIT_TIMEOUT", default_value = "10min")]
        wait_timeout: String,
    },
    /// Container entrypoint: wait for (or apply) the migrations, then run CMD as a supervised
    /// child: signals forwarded, zombies reaped, its exit code passed on.
    Exec {
        /// Apply pending migrations (under the advisory lock) before starting CMD.
        #[arg(long, conflicts_with_all = ["wait", "no_db"])]
        migrate: bool,
        /// Wait until the migrations are applied by someone else (the default).
        #[arg(long, conflicts_with = "no_db")]
        wait: bool,
        /// Do not touch the database; only supervise CMD.
        #[arg(long)]
        no_db: bool,
        /// Hold migrun's advisory lock while CMD runs (for a team's own migration tool: alembic,
        /// Rails, Flyway...). CMD gets DATABASE_URL, the PG* variables and PGOPTIONS with
        /// migrun's timeouts. Applies migrun's own sql/ first unless --no-sql.
        #[arg(long, conflicts_with_all = ["wait", "no_db", "migrate"])]
        lock: bool,
        /// With --lock: do not apply migrun's own sql/ directory.
        #[arg(long, requires = "lock")]
        no_sql: bool,
        /// With --wait: give up after this long (exit 9).
        #[arg(long, env = "MIGRUN_WAIT_TIMEOUT", default_value = "10min")]
        wait_timeout: String,
        /// Export every top-level key of this JSON secret (name or ARN) as an environment
        /// variable of CMD. Repeatable; the variable takes a comma-separated list.
        #[arg(long, env = "MIGRUN_ENV_FROM_SECRET", value_delimiter = ',')]
        env_from_secret: Vec<String>,
        /// The command to run, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Create `<UTC timestamp>_<description>.sql` in the migrations directory.
    New {
        /// Letters, digits and _ (e.g. add_users_email).
        description: String,
    },
}

#[derive(Debug, Args)]
pub struct Options {
    /// Connection: postgres://user:password@host:port/db?sslmode=... or a key=value string.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connection from Secrets Manager: a secret name or ARN (ECS valueFrom syntax:
    /// arn:...:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]). Used when DATABASE_URL is unset.
    #[arg(long, env = "MIGRUN_SECRET_ID", global = true)]
    pub secret_id: Option<String>,
    /// The JSON key in the secret that holds the connection string (not needed for RDS-managed secrets).
    #[arg(long, env = "MIGRUN_SECRET_KEY", global = true)]
    pub secret_key: Option<String>,
    /// TLS: disable, prefer, require, verify-ca, verify-full (wins over the connection string and PGSSLMODE).
    #[arg(long, env = "MIGRUN_SSLMODE", global = true)]
    pub sslmode: Option<String>,
    /// PEM file with the CA certificates to trust (e.g. the RDS global bundle); wins over
    /// the connection string's sslrootcert and PGSSLROOTCERT.
    #[arg(long, env = "MIGRUN_SSLROOTCERT", global = true)]
    pub sslrootcert: Option<PathBuf>,
    /// Directory holding the migration files.
    #[arg(long, env = "MIGRUN_DIR", default_value = "sql", global = true)]
    pub dir: PathBuf,
    /// History table, optionally schema-qualified (schema.table).
    #[arg(long, env = "MIGRUN_TABLE", default_value = "migrun_history", global = true)]
    pub table: String,
    /// Advisory lock key (a signed 64-bit integer); derived from the table name when unset.
    #[arg(long, env = "MIGRUN_LOCK_KEY", global = true, allow_hyphen_values = true)]
    pub lock_key: Option<String>,
    /// How long to wait for the advisory lock held by another run.
    #[arg(long, env = "MIGRUN_LOCK_WAIT", default_value = "10min", global = true)]
    pub lock_wait: String,
    /// How long to keep retrying the first connection (server starting, DNS, refused).
    #[arg(long, env = "MIGRUN_CONNECT_TIMEOUT", default_value = "60s", global = true)]
    pub connect_timeout: String,
    /// lock_timeout for migration statements; a statement that hits it is retried.
    #[arg(long, env = "MIGRUN_LOCK_TIMEOUT", default_value = "5s", global = true)]
    pub lock_timeout: String,
    /// statement_timeout for migration statements (0 = none).
    #[arg(long, env = "MIGRUN_STATEMENT_TIMEOUT", default_value = "0", global = true)]
    pub statement_timeout: String,
    /// idle_in_transaction_session_timeout for migrun's session.
    #[arg(long, env = "MIGRUN_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "1min", global = true)]
    pub idle_in_transaction_timeout: String,
    /// How many times a statement that hit lock_timeout is retried.
    #[arg(long, env = "MIGRUN_LOCK_RETRIES", default_value = "10", global = true)]
    pub lock_retries: String,
    /// First delay before a lock_timeout retry; doubles each time (with jitter), up to 30s.
    #[arg(long, env = "MIGRUN_RETRY_BACKOFF", default_value = "500ms", global = true)]
    pub retry_backoff: String,
    /// After SIGTERM/SIGINT, how long a clean stop (cancel, roll back, unlock) may take before
    /// migrun exits at once; keep it under ECS's stopTimeout (30s by default).
    #[arg(long, env = "MIGRUN_SHUTDOWN_GRACE", default_value = "20s", global = true)]
    pub shutdown_grace: String,
    /// Warn instead of failing when an applied file was edited.
    #[arg(long, env = "MIGRUN_ALLOW_DRIFT", global = true)]
    pub allow_drift: bool,
    /// Warn instead of failing when the database has versions the directory lacks.
    #[arg(long, env = "MIGRUN_ALLOW_MISSING", global = true)]
    pub allow_missing: bool,
    /// Apply pending versions lower than the highest applied one instead of failing.
    #[arg(long, env = "MIGRUN_ALLOW_OUT_OF_ORDER", global = true)]
    pub allow_out_of_order: bool,
    /// Log format on stderr; auto = json unless stderr is a terminal.
    #[arg(long, env = "MIGRUN_LOG_FORMAT", value_enum, default_value = "auto", global = true)]
    pub log_format: LogFormatArg,
    /// Least severe log level shown.
    #[arg(long, env = "MIGRUN_LOG_LEVEL", value_enum, default_value = "info", global = true)]
    pub log_level: LogLevelArg,
    /// Also write the final result event as JSON to this file.
    #[arg(long, env = "MIGRUN_RESULT_FILE", global = true)]
    pub result_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Json,
    Human,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    Error,
    Warn,
    Info,
    Debug,
}

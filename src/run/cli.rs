//! The command line as typed: flags, unvalidated. Environment variables and defaults are not
//! clap's business: `run::config` applies them from the one environment lookup a run gets, so
//! tests and the binary resolve settings the same way.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// migrun's command line.
#[derive(Debug, Parser)]
#[command(name = "migrun", version, about = "Apply PostgreSQL migrations safely before a rollout")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CommandArgs,
    /// Options every command takes.
    #[command(flatten)]
    pub options: Options,
}

impl Cli {
    /// The help of a command that never connects (`new`, `convert`) when `args` ask for it:
    /// only the options it reads, not the connection and run options every other command
    /// takes. `None` for anything else (clap prints the full help).
    pub fn short_help(args: &[std::ffi::OsString]) -> Option<String> {
        let words: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
        if !words.iter().any(|w| *w == "--help" || *w == "-h") || words.contains(&"--") {
            return None;
        }
        let keep: &[&str] = match words.iter().find(|w| !w.starts_with('-')) {
            Some(&"new") => &["dir", "log_format", "log_level", "result_file"],
            Some(&"convert") => &["log_format", "log_level", "result_file"],
            _ => return None,
        };
        let name = if keep.contains(&"dir") { "new" } else { "convert" };
        let kept: Vec<clap::Arg> = Options::augment_args(clap::Command::new("options"))
            .get_arguments()
            .filter(|a| keep.contains(&a.get_id().as_str()))
            .map(|a| a.clone().global(false))
            .collect();
        let mut sub = Cli::command().find_subcommand(name)?.clone().args(kept).bin_name(format!("migrun {name}"));
        let help = if words.contains(&"--help") { sub.render_long_help() } else { sub.render_help() };
        Some(help.to_string())
    }
}

/// The subcommands and their own flags.
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
        /// Plan versioned migrations up to and including this version only.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Print JSON on stdout instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Wait until every versioned migration in the directory is applied; exit 0 when the schema
    /// is ready. For init containers, health checks and CI. Read only.
    Wait {
        /// Give up after this long (exit 9). [env: MIGRUN_WAIT_TIMEOUT] [default: 10min]
        #[arg(long, value_name = "DURATION")]
        wait_timeout: Option<String>,
    },
    /// Fix the history by hand, under the lock, one named file at a time, with an audit row:
    /// accept an intentional edit of an applied file, or settle a no-transaction file's
    /// `started` row. Give exactly one of the three flags.
    Repair {
        /// Record the current checksum of the applied file with this version (an edit on purpose).
        #[arg(long, value_name = "VERSION")]
        accept_checksum: Option<String>,
        /// Remove the `started` row with this version: the no-transaction file runs again.
        #[arg(long, value_name = "VERSION")]
        forget_started: Option<String>,
        /// Mark the `started` row with this version applied: someone finished the file by hand.
        #[arg(long, value_name = "VERSION")]
        mark_applied: Option<String>,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Adopt a database whose schema already exists: record versioned files as applied without
    /// running them, up to VERSION or as another tool's history table says (--from). Only on
    /// a database whose migrun history is empty; under the lock.
    Baseline {
        /// Record every versioned file up to and including this version.
        #[arg(value_name = "VERSION")]
        version: Option<String>,
        /// Read what is applied from this tool's history table: sqlx, flyway, golang-migrate,
        /// dbmate, diesel, prisma, rails, alembic (with VERSION: the migrun version of its head).
        #[arg(long, value_name = "TOOL")]
        from: Option<String>,
        /// The other tool's history table, when it is not the tool's default name.
        #[arg(long, value_name = "TABLE", requires = "from")]
        from_table: Option<String>,
        /// Record the versions both sides have even when the other tool's history and the
        /// files differ (the differences are listed).
        #[arg(long, requires = "from")]
        ignore_differences: bool,
        /// Print what would be recorded; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write another tool's migration folder as migrun files (up migrations only; bodies byte
    /// for byte; each tool's no-transaction marker becomes `-- migrun:no-transaction`). No
    /// database.
    Convert {
        /// The tool whose folder it is: sqlx, flyway, golang-migrate, dbmate, diesel, prisma.
        #[arg(long, value_name = "TOOL")]
        from: String,
        /// The other tool's migrations folder.
        #[arg(value_name = "DIR")]
        source: PathBuf,
        /// Where to write the migrun files (created; must be empty).
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
    /// Check every migration file before it ships, without a database: Postgres's own parser,
    /// and rules for rollouts where the old app version keeps running against the new schema.
    /// Exit 10 on errors (and on warnings with --strict).
    Lint {
        /// How to print the findings.
        #[arg(long, value_enum, default_value_t = LintFormatArg::Human)]
        format: LintFormatArg,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Run the folder against a scratch Postgres and report what it really does: the locks each
    /// statement takes on existing tables, table rewrites, whether no-transaction files survive
    /// an interruption, and (--from) whether upgrading gives the same schema as installing.
    Verify {
        /// The previous release's migrations folder: apply it first, then this one, and compare
        /// with installing from empty.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Print the JSON report on stdout instead of the summary.
        #[arg(long)]
        json: bool,
        /// Fail (exit 10) when a statement takes an ACCESS EXCLUSIVE or SHARE-class lock on an
        /// existing table, or rewrites one.
        #[arg(long)]
        strict: bool,
    },
    /// Migrate many databases or schemas from identical workers: each target under its own lock
    /// and history; work shared through advisory locks in a coordination database.
    Fanout {
        #[command(subcommand)]
        action: FanoutAction,
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
        /// With --wait: give up after this long (exit 9). [env: MIGRUN_WAIT_TIMEOUT] [default: 10min]
        #[arg(long, value_name = "DURATION")]
        wait_timeout: Option<String>,
        /// Export every top-level key of this JSON secret (name or ARN) as an environment
        /// variable of CMD. Repeatable. [env: MIGRUN_ENV_FROM_SECRET, a comma-separated list]
        #[arg(long, value_delimiter = ',', value_name = "SECRET")]
        env_from_secret: Vec<String>,
        /// The command to run, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Create `<UTC timestamp>_<description>.sql` in the migrations directory.
    New {
        /// Letters, digits and _ (e.g. add_users_email).
        description: String,
        /// Continue the folder's integer numbering (0001, 0002, ...) with its padding, instead
        /// of a UTC timestamp.
        #[arg(long)]
        sequential: bool,
    },
}

/// Options every command takes. Each has an environment variable (named in its help); the flag
/// wins.
#[derive(Debug, Default, Args)]
pub struct Options {
    /// Connection: postgres://user:password@host:port/db?sslmode=... or a key=value string.
    /// Prefer the environment variable: a flag's value is visible in the process list. [env: DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Connection from Secrets Manager: a secret name or ARN (ECS valueFrom syntax:
    /// arn:...:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]). Used when DATABASE_URL is unset. [env: MIGRUN_SECRET_ID]
    #[arg(long, global = true, value_name = "SECRET")]
    pub secret_id: Option<String>,
    /// The JSON key in the secret that holds the connection string (not needed for RDS-managed secrets). [env: MIGRUN_SECRET_KEY]
    #[arg(long, global = true, value_name = "KEY")]
    pub secret_key: Option<String>,
    /// TLS: disable, prefer, require, verify-ca, verify-full (wins over the connection string and PGSSLMODE). [env: MIGRUN_SSLMODE]
    #[arg(long, global = true, value_name = "MODE")]
    pub sslmode: Option<String>,
    /// PEM file with the CA certificates to trust (e.g. the RDS global bundle); wins over
    /// the connection string's sslrootcert and PGSSLROOTCERT. [env: MIGRUN_SSLROOTCERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub sslrootcert: Option<PathBuf>,
    /// Directory holding the migration files. [env: MIGRUN_DIR] [default: sql]
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// History table, optionally schema-qualified (schema.table). [env: MIGRUN_TABLE] [default: migrun_history]
    #[arg(long, global = true, value_name = "TABLE")]
    pub table: Option<String>,
    /// Advisory lock key (a signed 64-bit integer); derived from the table name when unset. [env: MIGRUN_LOCK_KEY]
    #[arg(long, global = true, allow_hyphen_values = true, value_name = "KEY")]
    pub lock_key: Option<String>,
    /// How long to wait for the advisory lock held by another run. [env: MIGRUN_LOCK_WAIT] [default: 10min]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// How long to keep retrying the first connection (server starting, DNS, refused). [env: MIGRUN_CONNECT_TIMEOUT] [default: 60s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// lock_timeout for migration statements; a statement that hits it is retried. [env: MIGRUN_LOCK_TIMEOUT] [default: 5s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    /// statement_timeout for migration statements (0 = none). [env: MIGRUN_STATEMENT_TIMEOUT] [default: 0]
    #[arg(long, global = true, value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    /// idle_in_transaction_session_timeout for migrun's session. [env: MIGRUN_IDLE_IN_TRANSACTION_TIMEOUT] [default: 1min]
    #[arg(long, global = true, value_name = "DURATION")]
    pub idle_in_transaction_timeout: Option<String>,
    /// How many times a statement that hit lock_timeout is retried. [env: MIGRUN_LOCK_RETRIES] [default: 10]
    #[arg(long, global = true, value_name = "N")]
    pub lock_retries: Option<String>,
    /// First delay before a lock_timeout retry; doubles each time (with jitter), up to 30s. [env: MIGRUN_RETRY_BACKOFF] [default: 500ms]
    #[arg(long, global = true, value_name = "DURATION")]
    pub retry_backoff: Option<String>,
    /// After SIGTERM/SIGINT, how long a clean stop (cancel, roll back, unlock) may take before
    /// migrun exits at once; keep it under ECS's stopTimeout (30s by default). [env: MIGRUN_SHUTDOWN_GRACE] [default: 20s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Warn instead of failing when an applied file was edited. [env: MIGRUN_ALLOW_DRIFT]
    #[arg(long, global = true)]
    pub allow_drift: bool,
    /// Warn instead of failing when the database has versions the directory lacks. [env: MIGRUN_ALLOW_MISSING]
    #[arg(long, global = true)]
    pub allow_missing: bool,
    /// Apply pending versions lower than the highest applied one instead of failing. [env: MIGRUN_ALLOW_OUT_OF_ORDER]
    #[arg(long, global = true)]
    pub allow_out_of_order: bool,
    /// Succeed when the migrations directory holds no migration file (otherwise up, wait and
    /// exec fail, exit 2: a wrong --dir is not an up-to-date schema). [env: MIGRUN_ALLOW_EMPTY]
    #[arg(long, global = true)]
    pub allow_empty: bool,
    /// Read variables from this dotenv file (KEY=VALUE lines) for a local run; variables already
    /// set win. Never read unless given.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Log format on stderr; auto = json unless stderr is a terminal. [env: MIGRUN_LOG_FORMAT] [default: auto]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Least severe log level shown. [env: MIGRUN_LOG_LEVEL] [default: info]
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevelArg>,
    /// Also write the final result event as JSON to this file. [env: MIGRUN_RESULT_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub result_file: Option<PathBuf>,
}

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// JSON unless stderr is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Plain text.
    Human,
}

/// `--log-level`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Phases of the run (the default).
    Info,
    /// Everything.
    Debug,
}

/// `lint --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormatArg {
    /// file:line:column, rule, message and fix
    Human,
    /// One JSON report
    Json,
    /// SARIF 2.1.0, for GitHub code scanning
    Sarif,
}

/// `fanout up` / `fanout status`.
#[derive(Debug, Subcommand)]
pub enum FanoutAction {
    /// Bring every target up to date.
    Up {
        #[command(flatten)]
        targets: TargetArgs,
        /// Targets this worker migrates at once.
        #[arg(long, value_name = "C", default_value_t = 4)]
        concurrency: u32,
        /// At most this many of migrun's connections to any one server, across every worker
        /// (the coordination sessions included).
        #[arg(long, value_name = "K")]
        max_conns_per_server: Option<u32>,
        /// How many workers the engine starts (default: AWS_BATCH_JOB_ARRAY_SIZE). With K, W of
        /// the coordination server's K slots are kept for the workers' coordination sessions,
        /// so a worker joining late never finds the server full.
        #[arg(long, value_name = "W")]
        workers: Option<u32>,
        /// Migrate these first (N targets, or P% of them, by a stable hash) and stop everything
        /// if one fails.
        #[arg(long, value_name = "N|P%")]
        canary: Option<String>,
        /// Stop taking targets when more than this share (0 to 1) of this worker's targets
        /// failed, over at least 20.
        #[arg(long, value_name = "R")]
        max_failure_rate: Option<f64>,
        /// The run's id: workers with the same id share the work; a re-run with it skips what
        /// it recorded. Default: from the target list and the files.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
        /// Take no new target after this long (then exit 16, incomplete).
        #[arg(long, value_name = "DURATION")]
        deadline: Option<String>,
        /// Migrate only this target (one item of a Step Functions Distributed Map).
        #[arg(long, value_name = "TARGET")]
        only: Option<String>,
        /// Migrate targets this run recorded as failed again.
        #[arg(long)]
        retry_failed: bool,
    },
    /// Every target's state, read only.
    Status {
        #[command(flatten)]
        targets: TargetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the targets come from.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// file:PATH (a URL or schema:NAME per line), secret:ARN[:KEY] (a JSON list), or sql:URL
    /// (with --targets-query).
    #[arg(long, value_name = "SRC")]
    pub targets: String,
    /// With sql:URL: a query returning one target per row.
    #[arg(long, value_name = "SQL")]
    pub targets_query: Option<String>,
    /// The coordination database (default: DATABASE_URL, else the first database target).
    #[arg(long, value_name = "URL")]
    pub coord_url: Option<String>,
}

//! The command line as typed: flags, unvalidated. Environment variables and defaults are not
//! clap's business: `run::config` applies them from the one environment lookup a run gets, so
//! tests and the binary resolve settings the same way. The options with a variable come from
//! the table in `run::settings`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use super::settings::{self, Options, CHECK_DRIFT, ENV_FROM_SECRET, WAIT_TIMEOUT};

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
    /// The command line, parsed. `migrun up` with nothing else (the deploy task's command, run
    /// on every rollout) is built directly: clap builds every subcommand with every global
    /// argument before it matches one, which was about a fifth of a no-op run's instructions.
    /// Anything else goes through clap.
    pub fn parse_args(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
        if args.len() == 2 && args[1] == "up" {
            let command = CommandArgs::Up { target: None, dry_run: false, check_drift: false };
            return Ok(Cli { command, options: Options::default() });
        }
        Cli::try_parse_from(args)
    }

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
        let kept = settings::args_of(keep);
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
        #[arg(long, help = CHECK_DRIFT.help_text())]
        check_drift: bool,
    },
    /// Undo applied versions, newest first, with their down files (<version>_<description>.down.sql),
    /// under the advisory lock; each down runs as an up file does (transaction, timeouts,
    /// retries). Refuses, running nothing, when a version in the range has no down file, its
    /// down file changed since the up was applied, or a repeatable file uses what it created.
    Down {
        /// Undo every applied version above this one (0: all of them).
        #[arg(long, value_name = "VERSION", conflicts_with = "steps", required_unless_present = "steps")]
        to: Option<String>,
        /// Undo the newest N applied versions.
        #[arg(long, value_name = "N")]
        steps: Option<String>,
        /// Print what would be undone, in order; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show applied and pending migrations and whether their checksums match. Read only.
    Status {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show what `up` would run, in order, with each file's transaction mode and timeouts. Read only.
    Plan {
        /// Plan versioned migrations up to and including this version only.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Wait until every versioned migration in the directory is applied; exit 0 when the schema
    /// is ready. For init containers, health checks and CI. Read only.
    Wait {
        #[arg(long, value_name = "DURATION", help = WAIT_TIMEOUT.help_text())]
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
        #[command(flatten)]
        output: OutputArgs,
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
        #[command(flatten)]
        output: OutputArgs,
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
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<LintFormatArg>,
        /// Same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
        /// The PostgreSQL major the folder runs on, for the verdicts that depend on it
        /// (13 to 18; default 13, the oldest supported).
        #[arg(long, value_name = "MAJOR", value_parser = clap::value_parser!(u32).range(13..=18))]
        pg_version: Option<u32>,
    },
    /// Run the folder against a scratch Postgres and report what it really does: the locks each
    /// statement takes on existing tables, table rewrites, whether no-transaction files survive
    /// an interruption, and (--from) whether upgrading gives the same schema as installing.
    Verify {
        /// The previous release's migrations folder: apply it first, then this one, and compare
        /// with installing from empty.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
        /// Fail (exit 10) when a statement takes an ACCESS EXCLUSIVE or SHARE-class lock on an
        /// existing table, or rewrites one.
        #[arg(long)]
        strict: bool,
    },
    /// Compare the live database's schema with the snapshot the last run that changed it
    /// recorded (or a committed schema file, or what the folder's applied versions produce from
    /// empty), grouped by object. Read only, no lock. Exit 19 when they differ.
    Diff {
        /// Compare with this schema file (`migrun schema --write`) instead of the snapshot.
        #[arg(long, value_name = "FILE", conflicts_with = "scratch")]
        against: Option<PathBuf>,
        /// Compare with the folder's applied versions run from empty on a scratch Postgres
        /// (started from initdb/postgres on PATH, or --scratch-url).
        #[arg(long)]
        scratch: bool,
        /// With --scratch: a server to create the scratch database on instead of starting one.
        #[arg(long, value_name = "URL", requires = "scratch")]
        scratch_url: Option<String>,
        /// Compare who owns each object too.
        #[arg(long)]
        owners: bool,
        /// Record the live schema as the new snapshot, under the lock (after a difference was
        /// looked into and kept on purpose).
        #[arg(long, conflicts_with_all = ["against", "scratch"])]
        accept: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write or check a committed schema file: the canonical schema the folder produces from
    /// empty on a scratch Postgres (initdb/postgres on PATH, or --database-url naming a server).
    /// `--check` exits 19 when the file is not what the folder produces.
    Schema {
        /// Write the schema to FILE.
        #[arg(long, value_name = "FILE", conflicts_with = "check", required_unless_present = "check")]
        write: Option<PathBuf>,
        /// Compare FILE with the schema the folder produces.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
        /// Write and compare who owns each object too.
        #[arg(long)]
        owners: bool,
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
        #[arg(long, conflicts_with_all = ["wait", "no_db"], help = format!("With --migrate: {}", CHECK_DRIFT.help_text()))]
        check_drift: bool,
        #[arg(long, value_name = "DURATION", help = format!("With --wait: {}", WAIT_TIMEOUT.help_text()))]
        wait_timeout: Option<String>,
        #[arg(long, value_delimiter = ',', value_name = "SECRET", help = ENV_FROM_SECRET.help_text())]
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

/// `--format` and `--json` of a command that prints a report.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// How to print the report on stdout.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatArg>,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// `--format` of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// For people
    Human,
    /// One JSON document
    Json,
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
    Up(FanoutUpArgs),
    /// Every target's state, read only.
    Status {
        #[command(flatten)]
        targets: TargetArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `fanout up`'s own flags.
#[derive(Debug, Args)]
pub struct FanoutUpArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Targets this worker migrates at once.
    #[arg(long, value_name = "C", default_value_t = 4)]
    pub concurrency: u32,
    /// At most this many of migrun's connections to any one server, across every worker
    /// (the coordination sessions included).
    #[arg(long, value_name = "K")]
    pub max_conns_per_server: Option<u32>,
    /// How many workers the engine starts (default: AWS_BATCH_JOB_ARRAY_SIZE). With K, W of
    /// the coordination server's K slots are kept for the workers' coordination sessions,
    /// so a worker joining late never finds the server full.
    #[arg(long, value_name = "W")]
    pub workers: Option<u32>,
    /// Migrate these first (N targets, or P% of them, by a stable hash) and stop everything
    /// if one fails.
    #[arg(long, value_name = "N|P%")]
    pub canary: Option<String>,
    /// Stop taking targets when more than this share (0 to 1) of this worker's targets
    /// failed, over at least 20.
    #[arg(long, value_name = "R")]
    pub max_failure_rate: Option<f64>,
    /// The run's id: workers with the same id share the work; a re-run with it skips what
    /// it recorded. Default: from the target list and the files.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Take no new target after this long (then exit 16, incomplete).
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
    /// Migrate only this target (one item of a Step Functions Distributed Map).
    #[arg(long, value_name = "TARGET")]
    pub only: Option<String>,
    /// Migrate targets this run recorded as failed again.
    #[arg(long)]
    pub retry_failed: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct path gives what clap gives for the same words.
    #[test]
    fn plain_up_is_what_clap_parses() {
        let args: Vec<std::ffi::OsString> = ["migrun", "up"].iter().map(Into::into).collect();
        let direct = Cli::parse_args(&args).expect("direct");
        let clap = Cli::try_parse_from(&args).expect("clap");
        assert_eq!(format!("{direct:?}"), format!("{clap:?}"));
        // Anything more goes through clap.
        let more: Vec<std::ffi::OsString> = ["migrun", "up", "--check-drift"].iter().map(Into::into).collect();
        assert!(matches!(Cli::parse_args(&more).expect("clap").command, CommandArgs::Up { check_drift: true, .. }));
    }
}

//! Every setting with an environment variable, described once: its flag, variable, default,
//! help and kind. The command line's options are built from this table (clap's help says
//! `[env: ...] [default: ...]` from it), the configuration reads each setting through it, and
//! a test holds it against the configuration table of docs/reference.md.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, ArgMatches};

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// clap's id, and the flag without its dashes' `-`: `lock_wait` is `--lock-wait`.
    pub id: &'static str,
    pub flag: &'static str,
    /// Its environment variable, when it has one.
    pub var: Option<&'static str>,
    /// The value used when neither is set, as it would be typed.
    pub default: Option<&'static str>,
    pub value_name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

/// How a setting's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Path,
    /// `500ms`, `30s`, `10min`, `1h`, or milliseconds.
    Duration,
    /// A whole number.
    Count,
    /// On when given; the variable takes 1/0, true/false, yes/no, on/off.
    Switch,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A comma-separated list in the variable; the flag repeats.
    List,
}

const fn setting(id: &'static str, flag: &'static str, var: &'static str, kind: Kind) -> Setting {
    Setting { id, flag, var: Some(var), default: None, value_name: "", help: "", kind }
}

impl Setting {
    const fn default(mut self, value: &'static str) -> Setting {
        self.default = Some(value);
        self
    }

    const fn value(mut self, name: &'static str) -> Setting {
        self.value_name = name;
        self
    }

    const fn help(mut self, text: &'static str) -> Setting {
        self.help = text;
        self
    }

    const fn no_var(mut self) -> Setting {
        self.var = None;
        self
    }

    /// The help clap prints: the text, then the variable and the default.
    pub fn help_text(&self) -> String {
        let mut text = self.help.to_string();
        match (self.var, self.kind) {
            (Some(var), Kind::List) => text.push_str(&format!(" [env: {var}, a comma-separated list]")),
            (Some(var), _) => text.push_str(&format!(" [env: {var}]")),
            (None, _) => {}
        }
        if let Some(default) = self.default {
            text.push_str(&format!(" [default: {default}]"));
        }
        text
    }

    /// The clap argument of a global setting.
    fn arg(&self) -> Arg {
        let arg = Arg::new(self.id).long(self.flag.trim_start_matches("--")).global(true);
        let arg = match HELP_TEXTS.load(std::sync::atomic::Ordering::Relaxed) {
            true => arg.help(self.help_text()),
            false => arg,
        };
        match self.kind {
            Kind::Switch => arg.action(ArgAction::SetTrue),
            Kind::Path => arg.value_name(self.value_name).value_parser(clap::value_parser!(PathBuf)),
            Kind::Choice(words) => arg.value_name(self.value_name).value_parser(PossibleValuesParser::new(words)),
            // A lock key may be negative.
            _ => arg.value_name(self.value_name).allow_hyphen_values(self.id == "lock_key"),
        }
    }
}

pub const DATABASE_URL: Setting = setting("database_url", "--database-url", "DATABASE_URL", Kind::Text)
    .value("URL")
    .help("Connection: postgres://user:password@host:port/db?sslmode=... or a key=value string. Prefer the environment variable: a flag's value is visible in the process list.");
pub const SECRET_ID: Setting = setting("secret_id", "--secret-id", "MIGRUN_SECRET_ID", Kind::Text)
    .value("SECRET")
    .help("Connection from Secrets Manager: a secret name or ARN (ECS valueFrom syntax: arn:...:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]). Used when DATABASE_URL is unset.");
pub const SECRET_KEY: Setting = setting("secret_key", "--secret-key", "MIGRUN_SECRET_KEY", Kind::Text)
    .value("KEY")
    .help("The JSON key in the secret that holds the connection string (not needed for RDS-managed secrets).");
pub const SSLMODE: Setting = setting("sslmode", "--sslmode", "MIGRUN_SSLMODE", Kind::Text)
    .value("MODE")
    .help("TLS: disable, prefer, require, verify-ca, verify-full (wins over the connection string and PGSSLMODE).");
pub const IAM_AUTH: Setting = setting("iam_auth", "--iam-auth", "MIGRUN_IAM_AUTH", Kind::Switch)
    .help("RDS IAM database authentication: the password is an auth token migrun signs for every connection attempt from the default AWS credential chain (the ECS task role...); needs TLS (sslmode prefer becomes require).");
pub const SSLROOTCERT: Setting = setting("sslrootcert", "--sslrootcert", "MIGRUN_SSLROOTCERT", Kind::Path)
    .value("FILE")
    .help("PEM file with the CA certificates to trust (e.g. the RDS global bundle); wins over the connection string's sslrootcert and PGSSLROOTCERT.");
pub const DIR: Setting = setting("dir", "--dir", "MIGRUN_DIR", Kind::Path)
    .default("sql")
    .value("DIR")
    .help("Directory holding the migration files.");
pub const TABLE: Setting = setting("table", "--table", "MIGRUN_TABLE", Kind::Text)
    .default("migrun_history")
    .value("TABLE")
    .help("History table, optionally schema-qualified (schema.table).");
pub const LOCK_KEY: Setting = setting("lock_key", "--lock-key", "MIGRUN_LOCK_KEY", Kind::Text)
    .value("KEY")
    .help("Advisory lock key (a signed 64-bit integer); derived from the table name when unset.");
pub const LOCK_WAIT: Setting = setting("lock_wait", "--lock-wait", "MIGRUN_LOCK_WAIT", Kind::Duration)
    .default("10min")
    .value("DURATION")
    .help("How long to wait for the advisory lock held by another run.");
pub const CONNECT_TIMEOUT: Setting =
    setting("connect_timeout", "--connect-timeout", "MIGRUN_CONNECT_TIMEOUT", Kind::Duration)
        .default("60s")
        .value("DURATION")
        .help("How long to keep retrying the first connection (server starting, DNS, refused).");
pub const LOCK_TIMEOUT: Setting = setting("lock_timeout", "--lock-timeout", "MIGRUN_LOCK_TIMEOUT", Kind::Duration)
    .default("5s")
    .value("DURATION")
    .help("lock_timeout for migration statements; a statement that hits it is retried.");
pub const STATEMENT_TIMEOUT: Setting =
    setting("statement_timeout", "--statement-timeout", "MIGRUN_STATEMENT_TIMEOUT", Kind::Duration)
        .default("0")
        .value("DURATION")
        .help("statement_timeout for migration statements (0 = none).");
pub const IDLE_IN_TRANSACTION_TIMEOUT: Setting = setting(
    "idle_in_transaction_timeout",
    "--idle-in-transaction-timeout",
    "MIGRUN_IDLE_IN_TRANSACTION_TIMEOUT",
    Kind::Duration,
)
.default("1min")
.value("DURATION")
.help("idle_in_transaction_session_timeout for migrun's session.");
pub const LOCK_RETRIES: Setting = setting("lock_retries", "--lock-retries", "MIGRUN_LOCK_RETRIES", Kind::Count)
    .default("10")
    .value("N")
    .help("How many times a statement that hit lock_timeout is retried.");
pub const RETRY_BACKOFF: Setting = setting("retry_backoff", "--retry-backoff", "MIGRUN_RETRY_BACKOFF", Kind::Duration)
    .default("500ms")
    .value("DURATION")
    .help("First delay before a lock_timeout retry; doubles each time (with jitter), up to 30s.");
pub const SHUTDOWN_GRACE: Setting =
    setting("shutdown_grace", "--shutdown-grace", "MIGRUN_SHUTDOWN_GRACE", Kind::Duration)
        .default("20s")
        .value("DURATION")
        .help("After SIGTERM/SIGINT, how long a clean stop (cancel, roll back, unlock) may take before migrun exits at once; keep it under ECS's stopTimeout (30s by default).");
pub const ALLOW_DRIFT: Setting = setting("allow_drift", "--allow-drift", "MIGRUN_ALLOW_DRIFT", Kind::Switch)
    .help("Warn instead of failing when an applied file was edited.");
pub const ALLOW_MISSING: Setting = setting("allow_missing", "--allow-missing", "MIGRUN_ALLOW_MISSING", Kind::Switch)
    .help("Warn instead of failing when the database has versions the directory lacks.");
pub const ON_NEWER_SCHEMA: Setting = setting(
    "on_newer_schema",
    "--on-newer-schema",
    "MIGRUN_ON_NEWER_SCHEMA",
    Kind::Choice(&["start", "warn", "refuse"]),
)
.default("warn")
.value("POLICY")
.help("When the database has versions these files lack (an older image on a newer schema) and one is a contract change or of unknown compatibility: start, warn (start, and log each such version and what it changed), or refuse (exit 7). Versions recorded as expand-only always start.");
pub const ALLOW_OUT_OF_ORDER: Setting =
    setting("allow_out_of_order", "--allow-out-of-order", "MIGRUN_ALLOW_OUT_OF_ORDER", Kind::Switch)
        .help("Apply pending versions lower than the highest applied one instead of failing.");
pub const ALLOW_EMPTY: Setting = setting("allow_empty", "--allow-empty", "MIGRUN_ALLOW_EMPTY", Kind::Switch)
    .help("Succeed when the migrations directory holds no migration file (otherwise up, wait and exec fail, exit 2: a wrong --dir is not an up-to-date schema).");
pub const ENV_FILE: Setting = setting("env_file", "--env-file", "", Kind::Path)
    .no_var()
    .value("FILE")
    .help("Read variables from this dotenv file (KEY=VALUE lines) for a local run; variables already set win. Never read unless given.");
pub const LOG_FORMAT: Setting =
    setting("log_format", "--log-format", "MIGRUN_LOG_FORMAT", Kind::Choice(&["auto", "json", "human"]))
        .default("auto")
        .value("LOG_FORMAT")
        .help("Log format on stderr; auto = json unless stderr is a terminal.");
pub const LOG_LEVEL: Setting =
    setting("log_level", "--log-level", "MIGRUN_LOG_LEVEL", Kind::Choice(&["error", "warn", "info", "debug"]))
        .default("info")
        .value("LOG_LEVEL")
        .help("Least severe log level shown.");
pub const METRICS: Setting = setting("metrics", "--metrics", "MIGRUN_METRICS", Kind::Choice(&["none", "emf"]))
    .default("none")
    .value("FORMAT")
    .help("emf: the JSON result event also carries CloudWatch Embedded Metric Format (duration, files applied and failed, lock wait, lock_timeout retries, connection attempts, exit code; by command and outcome, and by ECS cluster and task family), so the awslogs line becomes metrics with no agent.");
pub const RESULT_FILE: Setting = setting("result_file", "--result-file", "MIGRUN_RESULT_FILE", Kind::Path)
    .value("FILE")
    .help("Also write the final result event as JSON to this file.");
/// `wait` and `exec --wait`.
pub const WAIT_TIMEOUT: Setting = setting("wait_timeout", "--wait-timeout", "MIGRUN_WAIT_TIMEOUT", Kind::Duration)
    .default("10min")
    .value("DURATION")
    .help("Give up waiting for the schema after this long (exit 9).");
/// `up` and `exec --migrate`.
pub const CHECK_DRIFT: Setting = setting("check_drift", "--check-drift", "MIGRUN_CHECK_DRIFT", Kind::Switch)
    .help("Before applying, under the lock, compare the live schema with the snapshot the last run recorded; refuse (exit 19, nothing applied) when they differ.");
/// `exec`.
pub const ENV_FROM_SECRET: Setting =
    setting("env_from_secret", "--env-from-secret", "MIGRUN_ENV_FROM_SECRET", Kind::List).value("SECRET").help(
        "Export every top-level key of this JSON secret (name or ARN) as an environment variable of CMD. Repeatable.",
    );

/// The options every command takes, in the order `--help` lists them.
pub const GLOBAL: [&Setting; 27] = [
    &DATABASE_URL,
    &SECRET_ID,
    &SECRET_KEY,
    &SSLMODE,
    &SSLROOTCERT,
    &IAM_AUTH,
    &DIR,
    &TABLE,
    &LOCK_KEY,
    &LOCK_WAIT,
    &CONNECT_TIMEOUT,
    &LOCK_TIMEOUT,
    &STATEMENT_TIMEOUT,
    &IDLE_IN_TRANSACTION_TIMEOUT,
    &LOCK_RETRIES,
    &RETRY_BACKOFF,
    &SHUTDOWN_GRACE,
    &ALLOW_DRIFT,
    &ALLOW_MISSING,
    &ON_NEWER_SCHEMA,
    &ALLOW_OUT_OF_ORDER,
    &ALLOW_EMPTY,
    &ENV_FILE,
    &LOG_FORMAT,
    &LOG_LEVEL,
    &RESULT_FILE,
    &METRICS,
];

/// Settings that only some subcommands take (their flags are declared there, their help
/// comes from here; the tests hold them against the docs).
#[cfg(test)]
pub const LOCAL: [&Setting; 3] = [&WAIT_TIMEOUT, &ENV_FROM_SECRET, &CHECK_DRIFT];

/// A value as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    Text(String),
    Path(PathBuf),
    On,
}

/// Whether the global settings' clap arguments carry their help texts. Each text is built at
/// run time and clap copies every global argument into every subcommand: on a run that does
/// not ask for help, that was most of what parsing the command line cost (measured with
/// callgrind in BENCHMARKS.md), on every deploy.
static HELP_TEXTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Builds the global arguments with their help texts only when `args` (program name first)
/// ask for help: `-h`, `--help`, or the `help` subcommand, before any `--`.
pub fn help_texts_for(args: &[OsString]) {
    let wanted = args
        .iter()
        .skip(1)
        .map(|a| a.to_str().unwrap_or_default())
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help" || a == "help");
    HELP_TEXTS.store(wanted, std::sync::atomic::Ordering::Relaxed);
}

/// The global options as typed: values by setting id, unvalidated.
#[derive(Debug, Default, Clone)]
pub struct Options {
    given: HashMap<&'static str, Given>,
}

impl Options {
    /// What the command line says for `setting`, if anything.
    pub fn get(&self, setting: &Setting) -> Option<&Given> {
        self.given.get(setting.id)
    }

    /// The flag's text (a path as text), when given.
    pub fn text(&self, setting: &Setting) -> Option<String> {
        match self.get(setting)? {
            Given::Text(text) => Some(text.clone()),
            Given::Path(path) => Some(path.to_string_lossy().into_owned()),
            Given::On => None,
        }
    }

    /// The flag's path, when given.
    pub fn path(&self, setting: &Setting) -> Option<PathBuf> {
        match self.get(setting)? {
            Given::Path(path) => Some(path.clone()),
            Given::Text(text) => Some(PathBuf::from(text)),
            _ => None,
        }
    }

    /// What `matches` holds of the settings in `table`.
    pub fn read(matches: &ArgMatches, table: &[&'static Setting]) -> Options {
        let mut given = HashMap::new();
        for setting in table {
            let value = match setting.kind {
                Kind::Switch => matches.get_flag(setting.id).then_some(Given::On),
                Kind::Path => matches.get_one::<PathBuf>(setting.id).cloned().map(Given::Path),
                _ => matches.get_one::<String>(setting.id).cloned().map(Given::Text),
            };
            if let Some(value) = value {
                given.insert(setting.id, value);
            }
        }
        Options { given }
    }
}

impl clap::FromArgMatches for Options {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Options::read(matches, &GLOBAL))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Options::read(matches, &GLOBAL);
        Ok(())
    }
}

impl clap::Args for Options {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(GLOBAL.iter().map(|s| s.arg()))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// The arguments of the global settings with these ids, for a subcommand's own short help.
pub fn args_of(ids: &[&str]) -> Vec<Arg> {
    GLOBAL.iter().filter(|s| ids.contains(&s.id)).map(|s| s.arg().global(false)).collect()
}

/// The raw command line's value of `flag` (`--flag value` or `--flag=value`), for reporting a
/// command line that does not parse.
pub fn raw_flag(args: &[OsString], flag: &str) -> Option<String> {
    let args: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix(&prefix) {
        Some(value) => Some(value.to_string()),
        None if arg == flag => args.get(i + 1).cloned(),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The rows of docs/reference.md's configuration table: flag, variable, default.
    fn documented() -> Vec<(String, String, String)> {
        let docs = include_str!("../../docs/reference.md");
        let section = &docs[docs.find("\n## Configuration").expect("a configuration section")..];
        section
            .lines()
            .skip_while(|l| !l.starts_with("| flag"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_string(), cells[2].trim_matches('`').to_string(), cells[3].to_string())
            })
            .collect()
    }

    #[test]
    fn the_documented_table_is_the_settings_table() {
        let rows = documented();
        let all: Vec<&Setting> = GLOBAL.iter().chain(LOCAL.iter()).copied().collect();
        for setting in &all {
            let row = rows.iter().find(|(flag, _, _)| flag == setting.flag);
            let Some((_, var, default)) = row else { panic!("{} is not in docs/reference.md", setting.flag) };
            assert_eq!(var, setting.var.unwrap_or("none"), "{}'s variable", setting.flag);
            match (setting.default, setting.kind) {
                (Some(value), _) => {
                    assert!(default.starts_with(&format!("`{value}`")), "{}'s default: {default}", setting.flag)
                }
                (None, Kind::Switch) => assert_eq!(default, "off", "{}", setting.flag),
                (None, _) => {
                    assert!(!default.starts_with('`'), "{} has no default, the docs say {default}", setting.flag)
                }
            }
        }
        let listed: Vec<&str> = rows.iter().map(|(flag, _, _)| flag.as_str()).collect();
        let known: Vec<&str> = all.iter().map(|s| s.flag).collect();
        assert_eq!(listed.len(), known.len(), "documented {listed:?}, settings {known:?}");
    }

    #[test]
    fn the_help_states_each_variable_and_default_from_the_table() {
        let cli = crate::run::cli::Cli::command();
        let globals: Vec<&clap::Arg> =
            cli.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")).collect();
        assert_eq!(globals.len(), GLOBAL.len(), "every global option comes from the table");
        let wait = cli.find_subcommand("wait").expect("wait");
        let local = wait.get_arguments().find(|a| a.get_id() == "wait_timeout").expect("--wait-timeout");
        for arg in globals.into_iter().chain([local]) {
            let setting = GLOBAL.iter().chain(LOCAL.iter()).find(|s| s.id == arg.get_id()).expect("a setting");
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert_eq!(arg.get_long(), Some(setting.flag.trim_start_matches("--")));
            if let Some(var) = setting.var {
                assert!(help.contains(&format!("[env: {var}]")), "{}: {help}", setting.flag);
            }
            if let Some(default) = setting.default {
                assert!(help.contains(&format!("[default: {default}]")), "{}: {help}", setting.flag);
            }
        }
    }
}

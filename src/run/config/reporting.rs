//! How a run reports itself: settled first, whatever else fails, so that every exit can write
//! its result event the way the user asked.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;

use super::command::CommandKind;
use super::inputs::Inputs;
use super::{ConfigError, Env};
use crate::identity;
use crate::run::log::LogFormat;
use crate::run::settings::{self, Options, LOG_FORMAT, LOG_LEVEL, METRICS, RESULT_FILE};

/// The reporting settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    /// The command, for the result event (`None`: the command line named none).
    pub command: Option<CommandKind>,
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
    /// `--metrics emf`: the JSON result event carries CloudWatch metrics.
    pub emf: bool,
}

impl Reporting {
    /// The command's name in the result event: `migrun` when the command line named none.
    pub fn command_name(&self) -> &'static str {
        self.command.map_or("migrun", CommandKind::name)
    }

    /// The reporting settings of a parsed command line, and the error of a format or level
    /// that cannot be used (the run then ends with it, reported in the default format).
    pub fn resolve(inputs: &Inputs, command: CommandKind) -> (Reporting, Option<ConfigError>) {
        let (format, format_error) = log_format_of(inputs);
        let (level, level_error) = log_level_of(inputs);
        let (emf, metrics_error) = metrics_of(inputs);
        let reporting = Reporting {
            command: Some(command),
            format,
            level,
            result_file: inputs.path(&RESULT_FILE),
            host: identity::host_name(inputs.var("HOSTNAME")),
            release: inputs.release(),
            emf,
        };
        (reporting, format_error.or(level_error).or(metrics_error))
    }

    /// The reporting settings of a command line that does not parse, read from the raw
    /// arguments as far as they go.
    pub fn from_args(args: &[OsString], env: Env) -> Reporting {
        let inputs = Inputs { options: &Options::default(), env };
        let format = settings::raw_flag(args, LOG_FORMAT.flag)
            .or_else(|| inputs.text(&LOG_FORMAT))
            .and_then(|text| log_format(&text))
            .unwrap_or_else(auto);
        let words: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let mut plain = words.iter().filter(|a| !a.starts_with('-')).map(String::as_str);
        let command = match (plain.next(), plain.next()) {
            (Some("up"), _) if words.iter().any(|a| a == "--dry-run") => Some(CommandKind::Plan),
            (Some(first), second) => CommandKind::of_words(first, second),
            (None, _) => None,
        };
        Reporting {
            command,
            format,
            level: tracing::Level::INFO,
            result_file: settings::raw_flag(args, RESULT_FILE.flag)
                .or_else(|| inputs.text(&RESULT_FILE))
                .map(PathBuf::from),
            host: identity::host_name(inputs.var("HOSTNAME")),
            release: inputs.release(),
            emf: settings::raw_flag(args, METRICS.flag)
                .or_else(|| inputs.text(&METRICS))
                .is_some_and(|t| t.trim() == "emf"),
        }
    }
}

fn metrics_of(inputs: &Inputs) -> (bool, Option<ConfigError>) {
    let Some(text) = inputs.text(&METRICS) else { return (false, None) };
    match text.trim() {
        "emf" => (true, None),
        "none" | "" => (false, None),
        _ => (false, Some(inputs.invalid(&METRICS, text, "none or emf"))),
    }
}

/// The log format from a `--log-format` value (typed, or from the environment): `auto` is
/// human on a terminal, else JSON. `None` when the text is not a format.
pub fn log_format(text: &str) -> Option<LogFormat> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "json" => LogFormat::Json,
        "human" => LogFormat::Human,
        "auto" => auto(),
        _ => return None,
    })
}

fn auto() -> LogFormat {
    match std::io::stderr().is_terminal() {
        true => LogFormat::Human,
        false => LogFormat::Json,
    }
}

fn log_format_of(inputs: &Inputs) -> (LogFormat, Option<ConfigError>) {
    let Some(text) = inputs.text(&LOG_FORMAT) else { return (auto(), None) };
    match log_format(&text) {
        Some(format) => (format, None),
        None => (auto(), Some(inputs.invalid(&LOG_FORMAT, text, "auto, json or human"))),
    }
}

fn log_level_of(inputs: &Inputs) -> (tracing::Level, Option<ConfigError>) {
    let Some(text) = inputs.text(&LOG_LEVEL) else { return (tracing::Level::INFO, None) };
    let level = match text.trim().to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        _ => return (tracing::Level::INFO, Some(inputs.invalid(&LOG_LEVEL, text, "error, warn, info or debug"))),
    };
    (level, None)
}

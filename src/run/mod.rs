//! The command layer: parse the command line, resolve the configuration once, do the command
//! (one dispatch), and end with one result event whose exit code is the process's.

mod cli;
mod config;
mod database;
mod dotenv;
mod drift;
mod error;
mod exec;
mod failure;
mod fanout;
mod listing;
mod log;
mod metrics;
mod outcome;
mod prove;
mod settings;

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use self::cli::Cli;
use self::config::{Command, ConfigError, ConvertRequest, Env, NewRequest, Reporting};
use self::error::Error;
use self::outcome::{Progress, Reporter};
use crate::clock::Utc;
use crate::exit::ExitCode;
use crate::identity::{self, Identity};
use crate::migrate::new_file;
use crate::signals::SignalHub;

/// Runs one command line (`args`, program name first) with the given environment and returns
/// the exit code. `hub` delivers signals: a stop request while migrating, every signal while
/// supervising `exec`'s command.
pub fn run(args: Vec<OsString>, env: Env, hub: &SignalHub) -> ExitCode {
    let started = Instant::now();
    settings::help_texts_for(&args);
    if let Some(help) = Cli::short_help(&args) {
        let _ = listing::print(&help);
        return ExitCode::Success;
    }
    let cli = match Cli::parse_args(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, &args, env, started),
    };
    // --env-file: the file's variables under the real environment's, for the settings and for
    // exec's command alike.
    let env_file = match cli.options.path(&settings::ENV_FILE).as_deref().map(self::dotenv::read).transpose() {
        Ok(vars) => vars.unwrap_or_default(),
        Err(e) => return usage_error_text(&e.to_string(), &args, env, started),
    };
    // exec's command sees the file's variables that the environment does not set.
    let inherited: Vec<(String, String)> = env_file.iter().filter(|(k, _)| env(k).is_none()).cloned().collect();
    let from_file = |name: &str| env(name).or_else(|| env_file.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let env: Env = if env_file.is_empty() { env } else { &from_file };
    let (reporting, config) = config::resolve(cli, env, inherited);
    self::log::init(reporting.format, reporting.level);
    let reporter =
        Reporter::new(reporting.clone(), Identity::new(&reporting.host, reporting.release.clone(), None), started);
    set_abort_line(hub, &reporter);
    let config = match config {
        Ok(config) => config,
        Err(e) => return reporter.finish(&Progress::default(), Err(e.into())),
    };
    if let Some(path) = &reporting.result_file {
        if let Err(reason) = outcome::check_result_file(path) {
            let e = ConfigError::ResultFile { path: path.display().to_string(), reason };
            return reporter.finish(&Progress::default(), Err(e.into()));
        }
    }
    hub.set_grace(config.shutdown_grace);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return reporter
                .finish(&Progress::default(), Err(Error::Internal(format!("cannot start the async runtime: {e}"))))
        }
    };
    let task = config.ecs_metadata_uri.as_deref().and_then(|uri| runtime.block_on(identity::fetch_task(uri)));
    let reporter = reporter.identified(Identity::new(&reporting.host, reporting.release.clone(), task));
    set_abort_line(hub, &reporter);
    let shutdown = hub.shutdown();
    let mut progress = Progress::default();
    let db = &config.db;
    let outcome = match &config.command {
        Command::Up { up_to } => {
            runtime.block_on(database::up(db, reporter.identity(), *up_to, &mut progress, &shutdown))
        }
        Command::Down(request) => {
            runtime.block_on(database::down(db, reporter.identity(), request, &mut progress, &shutdown))
        }
        Command::Plan { up_to, format } => {
            runtime.block_on(database::plan(db, *up_to, *format, &mut progress, &shutdown))
        }
        Command::Status { format } => runtime.block_on(database::status(db, *format, &mut progress, &shutdown)),
        Command::Wait { timeout } => runtime.block_on(database::wait(db, *timeout, &shutdown)),
        Command::Repair(request) => runtime.block_on(database::repair(db, reporter.identity(), request, &shutdown)),
        Command::Baseline(request) => runtime.block_on(database::baseline(db, reporter.identity(), request, &shutdown)),
        Command::Convert(request) => convert(request),
        Command::Fanout(request) if request.status_only => runtime.block_on(fanout::status(db, request, &shutdown)),
        Command::Fanout(request) => {
            runtime.block_on(fanout::up(db, request, reporter.identity(), &mut progress, &shutdown))
        }
        Command::Lint(request) => prove::lint(db, request),
        Command::Verify(request) => runtime.block_on(prove::verify(db, request, &shutdown)),
        Command::New(request) => new_file(&db.dir, request),
        Command::Diff(request) => runtime.block_on(drift::diff(db, request, &shutdown)),
        Command::Schema(request) => runtime.block_on(drift::schema_file(db, request, &shutdown)),
        Command::Exec(request) => return exec::exec(&config, request, runtime, hub, &reporter),
    };
    // The process exits next: no need to wait for the idle file-reading thread to wind down.
    runtime.shutdown_background();
    reporter.finish(&progress, outcome)
}

/// From now on a stop that cannot wait (second signal, grace passed) ends with this run's
/// result event.
fn set_abort_line(hub: &SignalHub, reporter: &Reporter) {
    let reporter = reporter.clone();
    hub.set_abort_line(Box::new(move |signal, why| reporter.abort_line(signal, why)));
}

/// A command line clap cannot parse still ends with a result event (and the result file),
/// in the format the command line or environment asked for; `--help` and `--version` just print.
/// A command line that cannot be used for a reason of migrun's own: the same result event as
/// clap's errors.
fn usage_error_text(text: &str, args: &[OsString], env: Env, started: Instant) -> ExitCode {
    let reporting = Reporting::from_args(args, env);
    let identity = Identity::new(&reporting.host, reporting.release.clone(), None);
    let reporter = Reporter::new(reporting, identity, started);
    reporter.finish(&Progress::default(), Err(Error::Usage(text.to_string())))
}

fn usage_error(error: &clap::Error, args: &[OsString], env: Env, started: Instant) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = error.print();
        return ExitCode::Success;
    }
    let reporting = Reporting::from_args(args, env);
    if reporting.format == self::log::LogFormat::Human {
        let _ = error.print();
    }
    let identity = Identity::new(&reporting.host, reporting.release.clone(), None);
    let text = error.render().to_string();
    let mut lines = text.lines();
    let mut first_line = lines.next().unwrap_or("invalid command line").trim_start_matches("error: ").to_string();
    // "the following required arguments were not provided:" lists them on the lines after.
    if first_line.ends_with(':') {
        let listed: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).map(str::trim).collect();
        first_line.push(' ');
        first_line.push_str(&listed.join(", "));
    }
    // clap's "tip: a similar subcommand exists: 'status'" becomes part of the one line.
    if let Some(tip) = text.lines().find_map(|l| l.trim().strip_prefix("tip: ")) {
        first_line.push_str(&format!("; {tip}"));
    }
    let reporter = Reporter::new(reporting, identity, started);
    reporter.finish(&Progress::default(), Err(Error::Usage(format!("{first_line} (see migrun --help)"))))
}

/// `new`: creates the file and prints its path.
fn new_file(dir: &Path, request: &NewRequest) -> Result<(), Error> {
    let numbering = match request.sequential {
        true => new_file::Numbering::Sequential,
        false => new_file::Numbering::Timestamp(Utc::now().compact()),
    };
    let path = new_file::create_new(dir, &request.description, numbering)?;
    listing::print(&format!("{}\n", path.display()))?;
    tracing::info!(file = %path.display(), "created");
    Ok(())
}

/// `convert`: writes the other tool's folder as migrun files and lists them.
fn convert(request: &ConvertRequest) -> Result<(), Error> {
    let ConvertRequest { tool, source, out } = request;
    let conversion = crate::migrate::convert::convert(*tool, source, out)?;
    tracing::info!(
        files = conversion.files.len(),
        downs = conversion.downs,
        down_skipped = conversion.down_skipped,
        out = %out.display(),
        "converted"
    );
    listing::print(&listing::convert(&conversion, &out.display().to_string()))
}

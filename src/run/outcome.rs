//! How a run ends: the one result event (JSON or human, as configured), the result file, and
//! the exit code, which always agree. Every exit path goes through `Reporter`: success,
//! failure, usage errors, a signal's abort and the end of `exec`'s command.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

#[cfg(test)]
use super::config::CommandKind;
use super::config::Reporting;
use super::error::Error;
use super::log::LogFormat;
use crate::clock::Utc;
use crate::exit::ExitCode;
use crate::identity::{Identity, MIGRUN_VERSION};
use crate::migrate::apply::{AppliedFile, FileFailure};

/// What a run did, whatever its outcome.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files applied by this run, in order.
    pub applied: Vec<AppliedFile>,
    /// How many files were pending when the run started, once known.
    pub pending_before: Option<usize>,
    /// `fanout`: the run's counts, on the result line.
    pub fanout: Option<serde_json::Value>,
    /// `fanout`: every target's outcome, in the result file only (the line stays small).
    pub targets: Option<serde_json::Value>,
    /// The server process of the session that held the lock (`fanout` waits for it to end
    /// before giving its connection slot to another worker).
    pub backend_pid: Option<i32>,
}

/// The most applied files the result line lists: the first and last this many. The result
/// file lists them all.
const LISTED_AT_EACH_END: usize = 5;
/// The most characters of one text field (the error, Postgres's message and detail) on the
/// result line; the full text is in the error's own log line and the result file.
const LINE_TEXT_CHARS: usize = 1200;

/// The files a run applied, as the result event lists them.
#[derive(Debug, Clone, Copy)]
struct AppliedList<'a> {
    files: &'a [AppliedFile],
    /// Only the first and last this many; all when `None`.
    ends: Option<usize>,
}

impl AppliedList<'_> {
    fn omitted(&self) -> usize {
        match self.ends {
            Some(ends) => self.files.len().saturating_sub(2 * ends),
            None => 0,
        }
    }

    fn shown(&self) -> impl Iterator<Item = &AppliedFile> {
        let omitted = self.omitted();
        let head = if omitted > 0 { self.ends.unwrap_or(0) } else { self.files.len() };
        self.files[..head].iter().chain(self.files[head + omitted..].iter())
    }
}

impl Serialize for AppliedList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.shown())
    }
}

/// The last line of every run: what happened, in one JSON object.
#[derive(Debug, Serialize)]
struct ResultEvent<'a> {
    timestamp: String,
    level: &'static str,
    message: String,
    event: &'static str,
    command: &'a str,
    outcome: &'static str,
    exit_code: i32,
    retryable: bool,
    /// `None` only when the process ends at once from another thread, which cannot see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<AppliedList<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_count: Option<usize>,
    /// How many applied files the list leaves out (between its first and last ones).
    #[serde(skip_serializing_if = "is_zero")]
    applied_omitted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_before: Option<usize>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    failure: Option<FileFailure>,
    migrun_version: &'static str,
    applied_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ecs_task_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fanout: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<&'a serde_json::Value>,
    /// `--metrics emf`: `_aws` and the values it names.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<serde_json::Map<String, serde_json::Value>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// At most `max` characters of `text`, saying how much was cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => {
            format!("{}… ({} more characters in the result file)", &text[..at], text[at..].chars().count())
        }
    }
}

/// How a run ended, before it is written.
struct Ending<'a> {
    exit: ExitCode,
    error: Option<String>,
    failure: Option<&'a FileFailure>,
}

/// Builds and writes a run's result event.
#[derive(Debug, Clone)]
pub struct Reporter {
    reporting: Reporting,
    identity: Identity,
    started: Instant,
}

impl Reporter {
    /// A reporter for a run that started at `started`.
    pub fn new(reporting: Reporting, identity: Identity, started: Instant) -> Reporter {
        Reporter { reporting, identity, started }
    }

    /// Who is applying, as the event says.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The same run, now that it knows who is applying.
    pub fn identified(self, identity: Identity) -> Reporter {
        Reporter { identity, ..self }
    }

    /// Ends a run: writes the result event (last line on stderr, and the result file) and
    /// returns the exit code the event states. An error is said once, in that event (level
    /// ERROR, with the message): a second line saying the same would page twice.
    pub fn finish(&self, progress: &Progress, outcome: Result<(), Error>) -> ExitCode {
        match outcome {
            Ok(()) => self.write(progress, Ending { exit: ExitCode::Success, error: None, failure: None }),
            Err(e) => {
                let exit = e.exit_code();
                self.write(progress, Ending { exit, error: Some(e.to_string()), failure: e.file_failure() })
            }
        }
    }

    /// Ends `exec` once its command exited with `exit`.
    pub fn finish_command(&self, progress: &Progress, exit: ExitCode) -> ExitCode {
        let error = (exit != ExitCode::Success).then(|| format!("the command exited with {}", exit.code()));
        self.write(progress, Ending { exit, error, failure: None })
    }

    /// The line to print when the process must end at once on `signal`; also writes the result
    /// file. Runs on the signal thread.
    pub fn abort_line(&self, signal: i32, why: &str) -> String {
        let exit = ExitCode::Signal(signal);
        let event = self.event(None, None, &Ending { exit, error: Some(why.to_string()), failure: None });
        if let Some(path) = &self.reporting.result_file {
            let _ = write_file(&event, path);
        }
        self.render(&event)
    }

    fn write(&self, progress: &Progress, ending: Ending) -> ExitCode {
        let applied = Some(progress.applied.as_slice());
        let mut event = self.event(applied, progress.pending_before, &ending);
        event.fanout = progress.fanout.as_ref();
        event.targets = progress.targets.as_ref();
        event.metrics = self.metrics(progress, &ending);
        let mut exit = ending.exit;
        if let Some(path) = &self.reporting.result_file {
            // The file gets every applied file and every text in full.
            if let Err(e) = write_file(&event, path) {
                let error = format!("cannot write the result file {}: {e}", path.display());
                tracing::error!(path = %path.display(), error = %e, "cannot write the result file");
                // A run that did its work still fails when its result cannot be recorded, and
                // the event on stderr says so: the event and the exit code always agree.
                if exit == ExitCode::Success {
                    exit = ExitCode::Internal;
                    let failed = Ending { exit, error: Some(error), failure: None };
                    event = self.event(applied, progress.pending_before, &failed);
                    event.metrics = self.metrics(progress, &failed);
                    event.fanout = progress.fanout.as_ref();
                }
            }
        }
        event.targets = None;
        let line = self.render(&event);
        // One write, so the line cannot interleave with anything else; a closed stderr is not
        // worth a panic.
        let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
        exit
    }

    fn event<'a>(
        &'a self,
        applied: Option<&'a [AppliedFile]>,
        pending_before: Option<usize>,
        ending: &Ending<'a>,
    ) -> ResultEvent<'a> {
        let command = self.reporting.command_name();
        let count = applied.map_or(0, <[AppliedFile]>::len);
        let message = match (&ending.error, self.reporting.command) {
            (Some(e), _) => e.clone(),
            (None, Some(kind)) => kind.success(pending_before, count),
            (None, None) => "done".to_string(),
        };
        let identity = &self.identity;
        ResultEvent {
            applied_count: applied.map(<[AppliedFile]>::len),
            applied_omitted: 0,
            level: if ending.exit == ExitCode::Success { "INFO" } else { "ERROR" },
            message,
            event: "result",
            command,
            outcome: ending.exit.outcome(),
            exit_code: ending.exit.code(),
            retryable: ending.exit.retryable(),
            timestamp: Utc::now().rfc3339(),
            applied: applied.map(|files| AppliedList { files, ends: None }),
            pending_before,
            duration_ms: self.started.elapsed().as_millis() as u64,
            error: ending.error.clone(),
            failure: ending.failure.cloned(),
            migrun_version: MIGRUN_VERSION,
            applied_by: &identity.applied_by,
            release: identity.release.as_deref(),
            ecs_task_arn: identity.ecs_task_arn.as_deref(),
            image: identity.image.as_deref(),
            image_digest: identity.image_digest.as_deref(),
            fanout: None,
            targets: None,
            metrics: None,
        }
    }

    /// The EMF members of this run's event, when asked for and the log is JSON.
    fn metrics(&self, progress: &Progress, ending: &Ending) -> Option<serde_json::Map<String, serde_json::Value>> {
        if !self.reporting.emf || self.reporting.format != LogFormat::Json {
            return None;
        }
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Some(super::metrics::emf(&super::metrics::RunFacts {
            files_applied: progress.applied.len(),
            files_failed: usize::from(ending.failure.is_some()),
            identity: &self.identity,
            fanout: progress.fanout.as_ref(),
            targets: progress.targets.as_ref(),
            now_ms,
        }))
    }

    /// The result line: bounded whatever the run did (log pipelines split or drop long lines:
    /// awslogs in non-blocking mode splits lines above 16 KB).
    fn render(&self, event: &ResultEvent) -> String {
        let event = event.bounded();
        let event = &event;
        match self.reporting.format {
            LogFormat::Json => serde_json::to_string(event)
                .unwrap_or_else(|e| format!("{{\"event\":\"result\",\"error\":\"cannot serialize: {e}\"}}")),
            LogFormat::Human => human(event),
        }
    }
}

impl ResultEvent<'_> {
    /// The event as the result line carries it: the first and last applied files and the count,
    /// each text clipped.
    fn bounded(&self) -> ResultEvent<'_> {
        let applied = self.applied.map(|list| AppliedList { ends: Some(LISTED_AT_EACH_END), ..list });
        let failure = self.failure.as_ref().map(|f| {
            let mut f = f.clone();
            f.pg.message = clip(&f.pg.message, LINE_TEXT_CHARS);
            f.pg.detail = f.pg.detail.as_deref().map(|d| clip(d, LINE_TEXT_CHARS));
            f.pg.hint = f.pg.hint.as_deref().map(|h| clip(h, LINE_TEXT_CHARS));
            f
        });
        ResultEvent {
            timestamp: self.timestamp.clone(),
            message: clip(&self.message, LINE_TEXT_CHARS),
            applied,
            applied_omitted: applied.map_or(0, |a| a.omitted()),
            error: self.error.as_deref().map(|e| clip(e, LINE_TEXT_CHARS)),
            failure,
            metrics: self.metrics.clone(),
            ..*self
        }
    }
}

fn human(event: &ResultEvent) -> String {
    let mut line =
        format!("result: {} (exit {}) in {} ms: {}", event.outcome, event.exit_code, event.duration_ms, event.message);
    let applied: Vec<&str> = event.applied.iter().flat_map(|list| list.shown()).map(|a| a.file.as_str()).collect();
    if !applied.is_empty() && event.error.is_some() {
        let omitted = match event.applied_omitted {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        line.push_str(&format!("; applied before the failure: {}{omitted}", applied.join(", ")));
    }
    line
}

/// Whether the result file can be written, found out before the run does anything: a run
/// whose result cannot be recorded fails (exit 1), and that should not come after migrating.
/// Leaves nothing behind: a file created for the check is removed.
pub fn check_result_file(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("it is a directory".into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!("the directory {} does not exist", parent.display()));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new().append(true).create(true).open(path).map_err(|e| e.to_string())?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn write_file(event: &ResultEvent, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(event).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::failure::PgFailure;
    use crate::migrate::apply::ApplyError;

    fn reporter(format: LogFormat) -> Reporter {
        let reporting = Reporting {
            command: Some(CommandKind::Up),
            format,
            level: tracing::Level::INFO,
            result_file: None,
            host: "host-1".into(),
            release: Some("v7".into()),
            emf: false,
        };
        Reporter::new(reporting, Identity::new("host-1", Some("v7".into()), None), Instant::now())
    }

    fn json(reporter: &Reporter, progress: &Progress, ending: &Ending) -> serde_json::Value {
        let event = reporter.event(Some(&progress.applied), progress.pending_before, ending);
        serde_json::from_str(&reporter.render(&event)).expect("one JSON line")
    }

    fn applied(file: &str) -> AppliedFile {
        AppliedFile { file: file.into(), version: Some(1), duration_ms: 3 }
    }

    #[test]
    fn the_result_line_stays_small_whatever_the_run_did() {
        let reporter = reporter(LogFormat::Json);
        let files: Vec<AppliedFile> = (1..=10_000)
            .map(|v| AppliedFile {
                file: format!("sql/{v:014}_add_a_column_with_a_rather_long_description_{v}.sql"),
                version: Some(v),
                duration_ms: 12,
            })
            .collect();
        let progress = Progress { applied: files, pending_before: Some(10_001), ..Progress::default() };
        let huge = "x".repeat(100_000);
        let pg = PgFailure { detail: Some(huge.clone()), hint: Some(huge.clone()), ..PgFailure::other(&huge) };
        let failure = FileFailure::new_for_test("sql/99999999999999_last.sql", pg);
        let ending = Ending { exit: ExitCode::MigrationFailed, error: Some(huge.clone()), failure: Some(&failure) };
        let event = reporter.event(Some(&progress.applied), progress.pending_before, &ending);
        let line = reporter.render(&event);
        assert!(line.len() < 8 * 1024, "{} bytes", line.len());
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        assert_eq!(parsed["applied_count"], 10_000);
        assert_eq!(parsed["applied_omitted"], 9_990);
        let listed: Vec<u64> =
            parsed["applied"].as_array().unwrap().iter().map(|a| a["version"].as_u64().unwrap()).collect();
        assert_eq!(listed, vec![1, 2, 3, 4, 5, 9_996, 9_997, 9_998, 9_999, 10_000]);
        assert!(parsed["error"].as_str().unwrap().ends_with("(98800 more characters in the result file)"));
        assert_eq!(parsed["file"], "sql/99999999999999_last.sql");
        // The result file has everything.
        let full = serde_json::to_value(&event).expect("json");
        assert_eq!(full["applied"].as_array().map(Vec::len), Some(10_000));
        assert_eq!(full["error"].as_str().map(str::len), Some(100_000));
        // A short run lists every file and omits nothing.
        let few = Progress { applied: vec![applied("sql/0001_a.sql")], pending_before: Some(1), ..Progress::default() };
        let parsed = json(&reporter, &few, &Ending { exit: ExitCode::Success, error: None, failure: None });
        assert_eq!(parsed["applied"].as_array().map(Vec::len), Some(1));
        assert!(parsed.get("applied_omitted").is_none());
    }

    #[test]
    fn success_says_what_was_applied() {
        let reporter = reporter(LogFormat::Json);
        let progress =
            Progress { applied: vec![applied("sql/0001_a.sql")], pending_before: Some(1), ..Progress::default() };
        let event = json(&reporter, &progress, &Ending { exit: ExitCode::Success, error: None, failure: None });
        assert_eq!(event["event"], "result");
        assert_eq!(event["outcome"], "success");
        assert_eq!(event["exit_code"], 0);
        assert_eq!(event["retryable"], false);
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["message"], "applied 1 migration(s)");
        assert_eq!(event["applied"][0]["file"], "sql/0001_a.sql");
        assert_eq!(event["pending_before"], 1);
        assert_eq!(event["applied_by"], "host-1");
        assert_eq!(event["release"], "v7");
        assert!(event.get("error").is_none() && event.get("sqlstate").is_none(), "{event}");
    }

    #[test]
    fn a_failure_carries_its_file_and_an_exit_code_that_agrees() {
        let reporter = reporter(LogFormat::Json);
        let pg = PgFailure { sqlstate: Some("42703".into()), ..PgFailure::other("column does not exist") };
        let failure =
            FileFailure { file: "sql/0002_b.sql".into(), version: Some(2), pg, line: Some(4), column: Some(12) };
        let error: Error = ApplyError::Failed { failure, in_transaction: true }.into();
        let progress =
            Progress { applied: vec![applied("sql/0001_a.sql")], pending_before: Some(2), ..Progress::default() };
        let ending = Ending { exit: error.exit_code(), error: Some(error.to_string()), failure: error.file_failure() };
        let event = json(&reporter, &progress, &ending);
        assert_eq!(event["outcome"], "migration_failed");
        assert_eq!(event["exit_code"], 6);
        assert_eq!(event["retryable"], false);
        assert_eq!(event["level"], "ERROR");
        assert_eq!(event["file"], "sql/0002_b.sql");
        assert_eq!(event["sqlstate"], "42703");
        assert_eq!(event["db_message"], "column does not exist");
        assert_eq!((event["line"].as_u64(), event["column"].as_u64()), (Some(4), Some(12)));
        assert_eq!(event["message"], event["error"]);
    }

    #[test]
    fn retryable_comes_from_the_exit_code() {
        let reporter = reporter(LogFormat::Json);
        for exit in [ExitCode::LockWait, ExitCode::Connect, ExitCode::Signal(15), ExitCode::Usage, ExitCode::Child(3)] {
            let ending = Ending { exit, error: Some("x".into()), failure: None };
            let event = json(&reporter, &Progress::default(), &ending);
            assert_eq!(event["retryable"], exit.retryable(), "{exit:?}");
            assert_eq!(event["exit_code"], exit.code(), "{exit:?}");
        }
    }

    #[test]
    fn an_abort_is_a_result_event_in_the_configured_format() {
        let json_line = reporter(LogFormat::Json).abort_line(15, "shutdown grace period passed");
        let event: serde_json::Value = serde_json::from_str(&json_line).expect("JSON");
        assert_eq!(event["event"], "result");
        assert_eq!(event["command"], "up");
        assert_eq!((event["exit_code"].as_i64(), event["retryable"].as_bool()), (Some(143), Some(true)));
        assert_eq!(event["outcome"], "interrupted");
        assert!(event.get("applied").is_none(), "the signal thread cannot know: {event}");
        let human = reporter(LogFormat::Human).abort_line(2, "second signal");
        assert!(human.starts_with("result: interrupted (exit 130) in "), "{human}");
        assert!(human.ends_with("second signal"), "{human}");
    }

    #[test]
    fn the_human_line_lists_what_was_applied_before_a_failure() {
        let reporter = reporter(LogFormat::Human);
        let progress =
            Progress { applied: vec![applied("sql/0001_a.sql")], pending_before: Some(2), ..Progress::default() };
        let ending =
            Ending { exit: ExitCode::MigrationFailed, error: Some("sql/0002_b.sql: boom".into()), failure: None };
        let line = reporter.render(&reporter.event(Some(&progress.applied), None, &ending));
        assert!(line.starts_with("result: migration_failed (exit 6) in "), "{line}");
        assert!(line.ends_with("sql/0002_b.sql: boom; applied before the failure: sql/0001_a.sql"), "{line}");
    }
}

//! Logging: tracing on stderr (JSON for CloudWatch, human for terminals) and the final
//! one-line result event.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::apply::Applied;
use crate::clock::Utc;
use crate::config::{Identity, LogFormat};
use crate::error::FileFailure;
use crate::exit::ExitCode;

/// Installs the global subscriber; call once, before anything logs.
pub fn init(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
    // A second init (only possible in tests that call `run` twice) keeps the first subscriber.
    drop(installed);
}

/// The last line of every run: what happened, in one JSON object.
#[derive(Debug, Serialize)]
pub struct ResultEvent<'a> {
    pub timestamp: String,
    pub level: &'static str,
    pub message: String,
    pub event: &'static str,
    pub command: &'a str,
    pub outcome: &'static str,
    pub exit_code: i32,
    pub retryable: bool,
    pub applied: &'a [Applied],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_before: Option<usize>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'a FileFailure>,
    pub migrun_version: &'a str,
    pub applied_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_task_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<&'a str>,
}

impl<'a> ResultEvent<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: &'a str,
        exit: ExitCode,
        applied: &'a [Applied],
        pending_before: Option<usize>,
        duration_ms: u64,
        error: Option<String>,
        failure: Option<&'a FileFailure>,
        identity: &'a Identity,
    ) -> ResultEvent<'a> {
        let message = match (&error, command) {
            (Some(e), _) => e.clone(),
            (None, "status" | "plan") => format!("{} migration(s) pending", pending_before.unwrap_or(0)),
            (None, "wait") => "schema ready".to_string(),
            (None, "new") => "migration file created".to_string(),
            (None, "exec") => "the command exited 0".to_string(),
            (None, _) if applied.is_empty() => "schema is up to date; nothing to apply".to_string(),
            (None, _) => format!("applied {} migration(s)", applied.len()),
        };
        ResultEvent {
            timestamp: Utc::now().rfc3339(),
            level: if exit == ExitCode::Success { "INFO" } else { "ERROR" },
            message,
            event: "result",
            command,
            outcome: exit.outcome(),
            exit_code: exit.code(),
            retryable: exit.retryable(),
            applied,
            pending_before,
            duration_ms,
            error,
            failure,
            migrun_version: crate::config::MIGRUN_VERSION,
            applied_by: &identity.applied_by,
            release: identity.release.as_deref(),
            ecs_task_arn: identity.ecs_task_arn.as_deref(),
            image: identity.image.as_deref(),
            image_digest: identity.image_digest.as_deref(),
        }
    }

    /// Writes the event as the last line on stderr; a closed stderr is not worth a panic.
    pub fn emit(&self, format: LogFormat) {
        let line = match format {
            LogFormat::Json => serde_json::to_string(self)
                .unwrap_or_else(|e| format!("{{\"event\":\"result\",\"error\":\"cannot serialize: {e}\"}}")),
            LogFormat::Human => self.human(),
        };
        // One write, so the line cannot interleave with anything else.
        let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
    }

    fn human(&self) -> String {
        let applied: Vec<&str> = self.applied.iter().map(|a| a.file.as_str()).collect();
        let mut line =
            format!("result: {} (exit {}) in {} ms: {}", self.outcome, self.exit_code, self.duration_ms, self.message);
        if !applied.is_empty() && self.error.is_some() {
            line.push_str(&format!("; applied before the failure: {}", applied.join(", ")));
        }
        line
    }

    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }
}

/// Ends the process at once when a stop cannot wait for the run to finish (second signal,
/// grace passed), with a minimal result event as the last line. stderr stays locked through
/// the exit, so no other thread's log line can come after it.
pub fn abort(signal: i32, message: &str) -> ! {
    let event = serde_json::json!({
        "timestamp": Utc::now().rfc3339(),
        "level": "ERROR",
        "event": "result",
        "outcome": ExitCode::Signal(signal).outcome(),
        "exit_code": ExitCode::Signal(signal).code(),
        "retryable": true,
        "message": message,
    });
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(format!("{event}\n").as_bytes());
    std::process::exit(ExitCode::Signal(signal).code())
}

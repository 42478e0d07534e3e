//! Logging set-up: tracing on stderr, JSON for CloudWatch, human for terminals.

/// How log lines (and the result event) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for CloudWatch and log pipelines.
    Json,
    /// Plain text, for terminals.
    Human,
}

/// Installs the global subscriber; call once, before anything logs.
pub fn init(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false);
    let installed = match format {
        // A line written inside a span (a fan-out run, one of its targets) carries the span's
        // fields under `span`; lines outside any span have no such key.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
    // A second init keeps the first subscriber: nothing to report.
    drop(installed);
}

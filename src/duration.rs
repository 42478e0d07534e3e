//! Durations written as Postgres writes them (`0`, `500ms`, `5s`, `10min`, `1h`, `1d`).
//!
//! One syntax for every duration migrun takes, flags and file directives alike, so that what
//! works in `-- migrun:lock-timeout=5s` also works in `--lock-wait 5s`.

use std::fmt;
use std::time::Duration;

/// A non-negative duration with millisecond resolution; zero means "no limit" where
/// Postgres says so (`statement_timeout = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

/// The accepted syntax, for messages.
pub const SYNTAX: &str = "a whole number with an optional unit: ms, s, min, h, d (e.g. 0, 500ms, 5s, 10min)";

/// What a duration that did not parse needs, for messages: the limit when the text is a
/// duration Postgres cannot take, the syntax otherwise.
pub fn expected(text: &str) -> &'static str {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let well_formed = !number.is_empty() && matches!(unit.trim_start(), "" | "ms" | "s" | "min" | "h" | "d");
    match well_formed {
        true => "at most 2147483647ms (24d 20h 31min 23s): Postgres takes no longer timeout; use 0 for none",
        false => SYNTAX,
    }
}

impl Millis {
    /// `None` for anything Postgres would not take as a timeout.
    pub fn parse(text: &str) -> Option<Millis> {
        let text = text.trim();
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        if number.is_empty() {
            return None;
        }
        let value: u64 = number.parse().ok()?;
        let per_unit: u64 = match unit.trim_start() {
            "" | "ms" => 1,
            "s" => 1_000,
            "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        // Postgres caps timeouts at INT_MAX milliseconds; stay inside what it accepts.
        let ms = value.checked_mul(per_unit)?;
        (ms <= i32::MAX as u64).then_some(Millis(ms))
    }

    /// As a `Duration`.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// The value as a Postgres setting takes it (milliseconds are the default unit of the
    /// timeouts migrun sets).
    pub fn to_setting(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        match ms {
            0 => write!(f, "0"),
            _ if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            _ if ms % 60_000 == 0 => write!(f, "{}min", ms / 60_000),
            _ if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_the_limit_for_a_duration_too_long_and_the_syntax_otherwise() {
        assert!(expected("25d").starts_with("at most 2147483647ms"));
        assert!(expected("99999999999h").starts_with("at most"));
        assert_eq!(expected("soon"), SYNTAX);
        assert_eq!(expected("5 minutes"), SYNTAX);
    }

    #[test]
    fn parses_postgres_units() {
        assert_eq!(Millis::parse("0"), Some(Millis(0)));
        assert_eq!(Millis::parse("250"), Some(Millis(250)));
        assert_eq!(Millis::parse("500ms"), Some(Millis(500)));
        assert_eq!(Millis::parse("5s"), Some(Millis(5_000)));
        assert_eq!(Millis::parse("5 s"), Some(Millis(5_000)));
        assert_eq!(Millis::parse("10min"), Some(Millis(600_000)));
        assert_eq!(Millis::parse("2h"), Some(Millis(7_200_000)));
        assert_eq!(Millis::parse("1d"), Some(Millis(86_400_000)));
    }

    #[test]
    fn rejects_what_postgres_would_reject() {
        for bad in ["", "s", "5m", "-1s", "1.5s", "5 sec", "99999999d", "5s;"] {
            assert_eq!(Millis::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        for text in ["0", "500ms", "5s", "10min", "2h"] {
            assert_eq!(Millis::parse(text).map(|m| m.to_string()).as_deref(), Some(text));
        }
    }
}

//! One row of the history table as migrun reads it, whichever way it was read (`COPY` or
//! `SELECT`): what `history` returns and `copy` decodes.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use crate::clock::Utc;

/// Whether a history row's file ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Applied completely.
    Applied,
    /// A `no-transaction` file that began and did not finish.
    Started,
}

/// One row of the history table: an applied file, or a started one.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// The version of a versioned file; `None` for a repeatable one.
    pub version: Option<u64>,
    /// The file's description.
    pub description: String,
    /// The checksum recorded.
    pub checksum: String,
    /// Applied, or started and not finished.
    pub state: RowState,
    /// When it was applied (or started).
    pub applied_at: Timestamp,
    /// `None` when migrun ran the file; otherwise where the row came from without running it:
    /// `baseline` (`migrun baseline <version>`) or the tool it was adopted from (`flyway`).
    pub adopted_from: Option<String>,
}

/// A `timestamptz` in Postgres's binary form: microseconds since 2000-01-01 00:00 UTC. Read
/// as is and formatted only when shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

/// 2000-01-01 in Unix seconds.
const POSTGRES_EPOCH: i64 = 946_684_800;

impl Timestamp {
    /// The same instant as a `SystemTime`.
    pub fn of(at: std::time::SystemTime) -> Timestamp {
        let unix_micros = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Timestamp(unix_micros.saturating_sub(POSTGRES_EPOCH * 1_000_000))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(1_000_000).saturating_add(POSTGRES_EPOCH);
        let at = match u64::try_from(seconds) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH,
        };
        let utc = Utc::at(at);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_timestamps_read_as_utc() {
        assert_eq!(Timestamp(0).to_string(), "2000-01-01T00:00:00Z");
        // 2026-11-25T07:36:45.250Z
        let micros = (1_795_592_205 - POSTGRES_EPOCH) * 1_000_000 + 250_000;
        assert_eq!(Timestamp(micros).to_string(), "2026-11-25T07:36:45Z");
        assert_eq!(Timestamp(-1).to_string(), "1999-12-31T23:59:59Z");
    }

    #[test]
    fn system_times_read_as_postgres_timestamps() {
        assert_eq!(Timestamp::of(UNIX_EPOCH + Duration::from_secs(POSTGRES_EPOCH as u64)), Timestamp(0));
        assert_eq!(
            Timestamp::of(UNIX_EPOCH + Duration::from_micros(1_795_592_205_250_000)).to_string(),
            "2026-11-25T07:36:45Z"
        );
        assert_eq!(Timestamp::of(UNIX_EPOCH - Duration::from_secs(1)).0, (-1 - POSTGRES_EPOCH) * 1_000_000);
    }
}

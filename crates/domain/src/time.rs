//! Instants as integer Unix milliseconds: portable across SQLite and PostgreSQL, cheap to
//! compare, and rendered as RFC 3339 only at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const MILLIS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }
    pub fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn unix_millis(self) -> i64 {
        self.0
    }
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
    /// Parses an RFC 3339 instant such as `2026-11-23T10:00:00Z`.
    pub fn parse_rfc3339(raw: &str) -> Result<Self, time::error::Parse> {
        let at = OffsetDateTime::parse(raw, &Rfc3339)?;
        Ok(Self((at.unix_timestamp_nanos() / 1_000_000) as i64))
    }
    /// `YYYY-MM` in UTC: the period of keys that rotate monthly.
    pub fn month_label(self) -> String {
        self.to_rfc3339().get(..7).unwrap_or_default().to_owned()
    }

    /// Midnight UTC of this instant's day: where daily spend caps restart.
    pub fn day_start(self) -> Self {
        Self(self.0 - self.0.rem_euclid(MILLIS_PER_DAY))
    }

    /// Midnight UTC of the first of this instant's month: where monthly caps restart.
    pub fn month_start(self) -> Self {
        let day = self.day_start();
        let Ok(at) = OffsetDateTime::from_unix_timestamp(day.0 / 1000) else { return day };
        day.plus_millis(-(i64::from(at.day()) - 1) * MILLIS_PER_DAY)
    }

    /// Midnight UTC of the first of the next month.
    pub fn next_month_start(self) -> Self {
        // 32 days past the first of any month lands in the next one.
        self.month_start().plus_millis(32 * MILLIS_PER_DAY).month_start()
    }

    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00.250Z").unwrap();
        assert_eq!(t.unix_millis() % 1000, 250);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert_eq!(t.month_label(), "2026-11");
    }

    #[test]
    fn periods_start_at_utc_midnight() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00.250Z").unwrap();
        assert_eq!(t.day_start(), Timestamp::parse_rfc3339("2026-11-23T00:00:00Z").unwrap());
        assert_eq!(t.month_start(), Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap());
        assert_eq!(t.next_month_start(), Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap());
        let december = Timestamp::parse_rfc3339("2026-12-31T23:59:59.999Z").unwrap();
        assert_eq!(december.next_month_start(), Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap());
        let first = Timestamp::parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert_eq!(first.month_start(), first);
    }
}

//! The `x-ratelimit-*` and `retry-after` headers, formatted the way OpenAI sends them so
//! that clients' existing back-off logic works unchanged.

use std::time::Duration;

/// Rate-limit state for a response, for the tightest scope (fewest remaining) among the
/// call's demands: one scope for requests and, independently, one for tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit_requests: Option<u32>,
    pub remaining_requests: Option<u32>,
    /// Until the requests bucket is full again.
    pub reset_requests: Option<Duration>,
    pub limit_tokens: Option<u32>,
    pub remaining_tokens: Option<u32>,
    /// Until the tokens bucket is full again.
    pub reset_tokens: Option<Duration>,
}

impl RateHeaders {
    /// The OpenAI header names and values, only for the fields that are set.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let count = |v: Option<u32>| v.map(|v| v.to_string());
        let reset = |d: Option<Duration>| d.map(format_reset);
        [
            ("x-ratelimit-limit-requests", count(self.limit_requests)),
            ("x-ratelimit-remaining-requests", count(self.remaining_requests)),
            ("x-ratelimit-reset-requests", reset(self.reset_requests)),
            ("x-ratelimit-limit-tokens", count(self.limit_tokens)),
            ("x-ratelimit-remaining-tokens", count(self.remaining_tokens)),
            ("x-ratelimit-reset-tokens", reset(self.reset_tokens)),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }
}

/// The `retry-after` value: whole seconds, rounded up so a client that waits that long is
/// admitted, and at least 1 because `0` invites a busy loop.
pub fn retry_after_header(d: Duration) -> String {
    ceil_secs(d).max(1).to_string()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// OpenAI's (Go-style) duration: `20ms`, `1s`, `1m30s`, `6m0s`, `1h0m0s`, always rounded up
/// to the unit shown so that waiting the shown time is enough.
fn format_reset(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_nanos().div_ceil(1_000_000);
        if ms < 1000 {
            return format!("{ms}ms");
        }
    }
    let secs = ceil_secs(d);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_format_like_openai_and_round_up() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::from_millis(20), "20ms"),
            (Duration::from_micros(19_001), "20ms"),
            (Duration::from_micros(999_999), "1s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_001), "2s"),
            (Duration::from_millis(59_001), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_secs(3_661), "1h1m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_reset(d), want, "{d:?}");
        }
        // No overflow at the extreme.
        assert!(format_reset(Duration::MAX).ends_with('s'));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_after_header(Duration::ZERO), "1");
        assert_eq!(retry_after_header(Duration::from_millis(1)), "1");
        assert_eq!(retry_after_header(Duration::from_secs(20)), "20");
        assert_eq!(retry_after_header(Duration::from_millis(20_001)), "21");
        assert_eq!(retry_after_header(Duration::MAX), u64::MAX.to_string());
    }

    #[test]
    fn pairs_name_only_the_fields_that_are_set() {
        assert!(RateHeaders::default().pairs().is_empty());
        let headers = RateHeaders {
            limit_requests: Some(60),
            remaining_requests: Some(59),
            reset_requests: Some(Duration::from_secs(1)),
            limit_tokens: None,
            remaining_tokens: Some(0),
            reset_tokens: Some(Duration::from_secs(90)),
        };
        let pairs = headers.pairs();
        let want: Vec<(&str, String)> = vec![
            ("x-ratelimit-limit-requests", "60".into()),
            ("x-ratelimit-remaining-requests", "59".into()),
            ("x-ratelimit-reset-requests", "1s".into()),
            ("x-ratelimit-remaining-tokens", "0".into()),
            ("x-ratelimit-reset-tokens", "1m30s".into()),
        ];
        assert_eq!(pairs, want);
    }
}

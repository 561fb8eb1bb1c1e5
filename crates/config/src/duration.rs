//! Human durations in the config: `500ms`, `30s`, `5m`, `1h`, `7d`.

use std::time::Duration;

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let amount: u64 =
        digits.parse().map_err(|_| format!("'{raw}' is not a duration such as \"30s\", \"5m\" or \"1h\""))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(amount)),
        "s" | "" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("'{raw}' has an unknown unit (use ms, s, m, h or d)")),
    };
    amount.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("'{raw}' is too long"))
}

//! Usage reports and bills as the store answers them (see the `// Reports` methods of
//! [`crate::Store`]): read-only views over call records, the per-day aggregates the
//! retention purge leaves, and the ledger. Nothing here writes; both backends decode their
//! rows with the helpers below, so they return the same values for the same data.

use crate::StoreError;
use crate::codec::{self, Columns};
use time::OffsetDateTime;
use veil_domain::{ModelName, Money, Timestamp};

const MILLIS_PER_DAY: i64 = 86_400_000;

/// One (UTC day, model) of a user's usage, from call records and purged aggregates alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// `None`: calls that named no valid model.
    pub model: Option<ModelName>,
    pub calls: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// What the calls cost, multiplier included.
    pub cost: Money,
}

/// One UTC calendar month of a user's ledger. Every money-moving row (holds move none)
/// lands in exactly one of the three sums, whatever its kind, so the month changed the
/// balance by exactly `credited - debited - charged`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthlyBill {
    /// `YYYY-MM`, UTC.
    pub month: String,
    /// What calls cost: the `charge` rows, as a positive amount.
    pub charged: Money,
    /// Money added: every positive row of another kind (top-ups, refunds, redeemed codes,
    /// positive adjustments).
    pub credited: Money,
    /// Money removed other than by calls: every negative row of another kind (negative
    /// adjustments), as a positive amount.
    pub debited: Money,
    /// Calls made that month, whether or not they cost anything.
    pub calls: u64,
}

/// The `YYYY-MM-DD` label of the first UTC midnight at or after `at`: a folded day counts
/// in `[from, to)` exactly when `day_bound(from) <= day < day_bound(to)` (labels of years
/// 0000–9999 sort as text). Instants outside what a date can name clamp to labels below
/// or above every real day.
pub(crate) fn day_bound(at: Timestamp) -> String {
    let ms = at.unix_millis();
    let into_day = ms.rem_euclid(MILLIS_PER_DAY);
    let midnight = if into_day == 0 { Some(ms) } else { ms.checked_add(MILLIS_PER_DAY - into_day) };
    let date = midnight.and_then(|ms| OffsetDateTime::from_unix_timestamp(ms.div_euclid(1_000)).ok());
    match date {
        Some(date) if (0..=9999).contains(&date.year()) => {
            format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
        }
        _ if ms < 0 => "0000-00-00".to_owned(),
        _ => "9999-99-99".to_owned(),
    }
}

fn count(row: &impl Columns, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(row.int(column)?).map_err(|_| codec::corrupt(column))
}

pub(crate) fn usage_day(row: &impl Columns) -> Result<UsageDay, StoreError> {
    let model =
        row.opt_text("model")?.map(|raw| ModelName::parse(&raw).map_err(|_| codec::corrupt("model"))).transpose()?;
    Ok(UsageDay {
        day: row.text("day")?,
        model,
        calls: count(row, "calls")?,
        input_tokens: count(row, "input_tokens")?,
        cached_tokens: count(row, "cached_tokens")?,
        output_tokens: count(row, "output_tokens")?,
        cost: Money::from_nanos(row.int("cost")?),
    })
}

pub(crate) fn monthly_bill(row: &impl Columns) -> Result<MonthlyBill, StoreError> {
    Ok(MonthlyBill {
        month: row.text("month")?,
        charged: Money::from_nanos(row.int("charged")?),
        credited: Money::from_nanos(row.int("credited")?),
        debited: Money::from_nanos(row.int("debited")?),
        calls: count(row, "calls")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_bounds_round_up_to_midnight() {
        let day = |ms| day_bound(Timestamp::from_unix_millis(ms));
        // 2023-11-14T00:00:00Z
        let d0 = 19_675 * MILLIS_PER_DAY;
        assert_eq!(day(d0), "2023-11-14");
        assert_eq!(day(d0 + 1), "2023-11-15");
        assert_eq!(day(d0 - 1), "2023-11-14");
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(-1), "1970-01-01");
        assert_eq!(day(-MILLIS_PER_DAY), "1969-12-31");
        assert_eq!(day(i64::MIN), "0000-00-00");
        assert_eq!(day(i64::MAX), "9999-99-99");
    }
}

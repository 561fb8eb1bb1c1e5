//! Money as integer nano-units of the configured currency, and price multipliers as
//! integer millionths. No floating point ever touches an amount: decimals are parsed
//! digit by digit at the edge and rendered back exactly.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Nano-units per currency unit (1 USD = 10^9 nano-USD).
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;
const FRACTION_DIGITS: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount '{0}' is not a decimal number such as 1.5")]
    NotDecimal(String),
    #[error("amount '{0}' has more than {FRACTION_DIGITS} digits after the point")]
    TooPrecise(String),
    #[error("amount '{0}' is too large")]
    Overflow(String),
}

/// An exact amount of money in nano-units. May be negative (refunds, debits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }
    pub const fn nanos(self) -> i64 {
        self.0
    }
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Parses a decimal amount such as `1.5`, `-0.25` or `100`.
    pub fn parse_decimal(raw: &str) -> Result<Self, MoneyError> {
        let not_decimal = || MoneyError::NotDecimal(raw.to_owned());
        let trimmed = raw.trim();
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(not_decimal());
        }
        if !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) {
            return Err(not_decimal());
        }
        if fraction.len() > FRACTION_DIGITS {
            return Err(MoneyError::TooPrecise(raw.to_owned()));
        }
        let overflow = || MoneyError::Overflow(raw.to_owned());
        let whole_value: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| overflow())? };
        let mut fraction_value: i64 = 0;
        for position in 0..FRACTION_DIGITS {
            let digit = fraction.as_bytes().get(position).map_or(0, |b| i64::from(b - b'0'));
            fraction_value = fraction_value * 10 + digit;
        }
        let magnitude =
            whole_value.checked_mul(NANOS_PER_UNIT).and_then(|w| w.checked_add(fraction_value)).ok_or_else(overflow)?;
        Ok(Self(if negative { -magnitude } else { magnitude }))
    }

    /// The exact decimal form, trailing zeros trimmed but at least one fraction digit
    /// kept for readability: `1.5`, `0.000000001`, `-2.0`.
    pub fn to_decimal_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let unit = NANOS_PER_UNIT.unsigned_abs();
        let whole = magnitude / unit;
        let fraction = format!("{:09}", magnitude % unit);
        let fraction = fraction.trim_end_matches('0');
        let fraction = if fraction.is_empty() { "0" } else { fraction };
        format!("{sign}{whole}.{fraction}")
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

/// A group's price multiplier in integer millionths (`1.0` is 1_000_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Multiplier(i64);

impl Multiplier {
    pub const ONE: Multiplier = Multiplier(1_000_000);

    pub const fn from_millionths(millionths: i64) -> Self {
        Self(millionths)
    }
    pub const fn millionths(self) -> i64 {
        self.0
    }
    /// Parses a decimal multiplier like `1.25` exactly (up to six fraction digits).
    pub fn parse_decimal(raw: &str) -> Result<Self, MoneyError> {
        let as_money = Money::parse_decimal(raw)?;
        if as_money.nanos() % 1_000 != 0 {
            return Err(MoneyError::TooPrecise(raw.to_owned()));
        }
        if as_money.is_negative() {
            return Err(MoneyError::NotDecimal(raw.to_owned()));
        }
        Ok(Self(as_money.nanos() / 1_000))
    }
    pub fn to_decimal_string(self) -> String {
        Money::from_nanos(self.0.saturating_mul(1_000)).to_decimal_string()
    }
}

impl Default for Multiplier {
    fn default() -> Self {
        Self::ONE
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(Money::parse_decimal("1.5").unwrap().nanos(), 1_500_000_000);
        assert_eq!(Money::parse_decimal("0.000000001").unwrap().nanos(), 1);
        assert_eq!(Money::parse_decimal("-2").unwrap().nanos(), -2_000_000_000);
        assert_eq!(Money::parse_decimal(".5").unwrap().nanos(), 500_000_000);
        assert_eq!(Money::parse_decimal("100.").unwrap().nanos(), 100_000_000_000);
        assert!(matches!(Money::parse_decimal("0.0000000001"), Err(MoneyError::TooPrecise(_))));
        assert!(matches!(Money::parse_decimal("1e3"), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(Money::parse_decimal(""), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(Money::parse_decimal("."), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(Money::parse_decimal("99999999999999"), Err(MoneyError::Overflow(_))));
    }

    #[test]
    fn decimals_render_exactly() {
        for raw in ["1.5", "0.000000001", "-2.0", "0.0", "12345.678901234"] {
            assert_eq!(Money::parse_decimal(raw).unwrap().to_decimal_string(), raw);
        }
    }

    #[test]
    fn multipliers_are_millionths() {
        assert_eq!(Multiplier::parse_decimal("1.25").unwrap().millionths(), 1_250_000);
        assert_eq!(Multiplier::parse_decimal("0").unwrap().millionths(), 0);
        assert!(Multiplier::parse_decimal("1.0000001").is_err());
        assert!(Multiplier::parse_decimal("-1").is_err());
        assert_eq!(Multiplier::ONE.to_decimal_string(), "1.0");
    }
}

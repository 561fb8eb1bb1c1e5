//! The worst case a call can cost, which is what it holds before the upstream is asked.

use veil_domain::{Money, Multiplier, Price, TokenUsage};

/// Output tokens assumed when neither the request nor the model bounds them. Calls that
/// generate more are still billed what they used; the hold is only the reservation.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4_096;

/// The charge if every prompt token is billed uncached and the model writes
/// `max_output_tokens`: no cache discount is assumed, so the hold never undershoots on
/// price, only (rarely) on the local token count.
pub fn worst_case(price: &Price, multiplier: Multiplier, prompt_tokens: u64, max_output_tokens: u64) -> Money {
    let usage = TokenUsage { input_tokens: prompt_tokens, output_tokens: max_output_tokens, ..TokenUsage::default() };
    price.charge(&usage, multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_bills_every_token_at_full_price() {
        let price = Price {
            input: Money::parse_decimal("2").unwrap(),
            cached_input: Money::parse_decimal("0.5").unwrap(),
            output: Money::parse_decimal("8").unwrap(),
            ..Price::default()
        };
        // 1000 × 2 + 500 × 8 per million = 0.006
        assert_eq!(worst_case(&price, Multiplier::ONE, 1_000, 500), Money::parse_decimal("0.006").unwrap());
        assert_eq!(worst_case(&price, Multiplier::from_millionths(0), 1_000, 500), Money::ZERO);
    }
}

//! Property tests for the price arithmetic: exact at realistic scales (checked against an
//! independent rational computation), monotonic, and additive up to one rounding step.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use veil_domain::{Money, Multiplier, Price, TokenUsage};

/// Realistic upper ends: a billion tokens in one call, 1,000 currency units per million
/// tokens, 100 per image or second, a multiplier of 100.
fn price() -> impl Strategy<Value = Price> {
    let per_million = 0..=1_000 * 1_000_000_000_i64;
    let per_unit = 0..=100 * 1_000_000_000_i64;
    (per_million.clone(), per_million.clone(), per_million.clone(), per_million, per_unit.clone(), per_unit).prop_map(
        |(input, cached, write, output, image, second)| Price {
            input: Money::from_nanos(input),
            cached_input: Money::from_nanos(cached),
            cache_write: Money::from_nanos(write),
            output: Money::from_nanos(output),
            per_image: Money::from_nanos(image),
            per_second: Money::from_nanos(second),
        },
    )
}

fn usage() -> impl Strategy<Value = TokenUsage> {
    (
        0..=1_000_000_000_u64,
        0..=1_000_000_000_u64,
        0..=1_000_000_000_u64,
        0..=1_000_000_000_u64,
        0..=100_u64,
        0..=3_600_000_u64,
    )
        .prop_map(|(input, cached, write, output, images, media_ms)| {
            let cached = cached.min(input);
            let write = write.min(input - cached);
            TokenUsage {
                input_tokens: input,
                cached_tokens: cached,
                cache_write_tokens: write,
                output_tokens: output,
                reasoning_tokens: output / 2,
                images,
                media_ms,
            }
        })
}

fn multiplier() -> impl Strategy<Value = Multiplier> {
    (0..=100_000_000_i64).prop_map(Multiplier::from_millionths)
}

/// The charge as an exact fraction of nano-units, computed independently in u128 with
/// every price brought to nano-units per token × 10^-12 before multiplying.
fn exact_numerator(price: &Price, usage: &TokenUsage, multiplier: Multiplier) -> u128 {
    let n = |m: Money| u128::try_from(m.nanos()).unwrap();
    let uncached = u128::from(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens);
    let per_token = uncached * n(price.input)
        + u128::from(usage.cached_tokens) * n(price.cached_input)
        + u128::from(usage.cache_write_tokens) * n(price.cache_write)
        + u128::from(usage.output_tokens) * n(price.output);
    let media = u128::from(usage.images) * n(price.per_image) * 1_000_000
        + u128::from(usage.media_ms) * n(price.per_second) * 1_000;
    (per_token + media) * u128::try_from(multiplier.millionths()).unwrap()
}

proptest! {
    #[test]
    fn charge_is_exact_rounding_half_up(price in price(), usage in usage(), multiplier in multiplier()) {
        let numerator = exact_numerator(&price, &usage, multiplier);
        let denominator: u128 = 1_000_000_000_000;
        let expected = (numerator + denominator / 2) / denominator;
        let charged = price.charge(&usage, multiplier);
        prop_assert!(!charged.is_negative());
        prop_assert_eq!(u128::try_from(charged.nanos()).unwrap(), expected);
    }

    #[test]
    fn more_usage_never_costs_less(price in price(), usage in usage(), extra in 0..1_000_000_u64, multiplier in multiplier()) {
        let mut more = usage;
        more.output_tokens += extra;
        prop_assert!(price.charge(&more, multiplier) >= price.charge(&usage, multiplier));
    }

    #[test]
    fn splitting_a_call_changes_the_total_by_at_most_one_rounding(
        price in price(),
        a in usage(),
        b in usage(),
        multiplier in multiplier(),
    ) {
        let whole = TokenUsage {
            input_tokens: a.input_tokens + b.input_tokens,
            cached_tokens: a.cached_tokens + b.cached_tokens,
            cache_write_tokens: a.cache_write_tokens + b.cache_write_tokens,
            output_tokens: a.output_tokens + b.output_tokens,
            reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
            images: a.images + b.images,
            media_ms: a.media_ms + b.media_ms,
        };
        let parts = price.charge(&a, multiplier).nanos() + price.charge(&b, multiplier).nanos();
        prop_assert!((parts - price.charge(&whole, multiplier).nanos()).abs() <= 1);
    }
}

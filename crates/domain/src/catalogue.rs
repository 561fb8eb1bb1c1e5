//! Channels (upstream endpoints with a credential reference and a data policy) and
//! public models with their prices.

use crate::money::{Money, Multiplier};
use crate::names::{ChannelName, GroupName, ModelName};
use crate::policy::DataPolicy;
use crate::record::TokenUsage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
    /// Veil's built-in test provider: answers locally, never leaves the process.
    Echo,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
            Self::Echo => "echo",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "openai" => Some(Self::Openai),
            "azure" => Some(Self::Azure),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            "bedrock" => Some(Self::Bedrock),
            "echo" => Some(Self::Echo),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-channel upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    /// Longest silence between two stream events.
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: ChannelName,
    pub kind: ChannelKind,
    /// What the vendor's own SDK uses as its base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the credential (never the credential).
    pub api_key_env: Option<String>,
    pub models: Vec<ModelName>,
    /// Public name → upstream name.
    pub model_mapping: BTreeMap<ModelName, ModelName>,
    /// Larger is tried first.
    pub priority: i32,
    /// Share inside one priority tier.
    pub weight: u32,
    /// `None`: every group.
    pub groups: Option<Vec<GroupName>>,
    pub policy: DataPolicy,
    pub timeouts: Timeouts,
    /// Caps on what Veil sends this upstream (its own rate limits, or the operator's).
    pub limits: ChannelLimits,
    /// Whether the upstream's TLS certificate is verified. Only an explicit opt-out for the
    /// operator's own endpoints on private networks turns it off (config validation refuses
    /// it for third-party operators).
    pub tls_verify: bool,
    /// How often a scheduled health probe calls the upstream; `None`: only live traffic
    /// (and the half-open trial after a cool-down) tells how it is doing.
    pub probe_interval: Option<Duration>,
    pub enabled: bool,
    pub managed: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLimits {
    pub rpm: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl Channel {
    pub fn serves(&self, model: &ModelName) -> bool {
        self.models.iter().any(|m| m == model)
    }
    pub fn upstream_model<'a>(&'a self, model: &'a ModelName) -> &'a ModelName {
        self.model_mapping.get(model).unwrap_or(model)
    }
    pub fn admits_group(&self, group: &GroupName) -> bool {
        self.groups.as_ref().is_none_or(|groups| groups.contains(group))
    }
}

/// What one model costs. Token prices are nano-units per one million tokens; media
/// prices are nano-units per image and per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input: Money,
    pub cached_input: Money,
    pub cache_write: Money,
    pub output: Money,
    pub per_image: Money,
    pub per_second: Money,
}

impl Price {
    /// The exact charge for `usage` at this price times `multiplier`, rounded half up to
    /// a nano-unit once, at the end. Cached and cache-write tokens are parts of
    /// `input_tokens` and billed at their own price only, never twice; reasoning tokens
    /// are part of `output_tokens`. Saturates at `i64::MAX` nano-units (9.2 billion
    /// currency units), far beyond any real call.
    pub fn charge(&self, usage: &TokenUsage, multiplier: Multiplier) -> Money {
        const PER_MILLION: i128 = 1_000_000;
        let input = i128::from(usage.input_tokens);
        let cached = i128::from(usage.cached_tokens).min(input);
        let cache_write = i128::from(usage.cache_write_tokens).min(input - cached);
        let uncached = input - cached - cache_write;
        let nanos = |money: Money| i128::from(money.nanos());
        // Everything in nano-units × 10^-6 (per-million token prices) so that one division
        // at the end does all the rounding.
        let parts = [
            uncached.saturating_mul(nanos(self.input)),
            cached.saturating_mul(nanos(self.cached_input)),
            cache_write.saturating_mul(nanos(self.cache_write)),
            i128::from(usage.output_tokens).saturating_mul(nanos(self.output)),
            i128::from(usage.images).saturating_mul(nanos(self.per_image)).saturating_mul(PER_MILLION),
            // Milliseconds of media at a per-second price: × 1000 brings it to 10^-6 units.
            i128::from(usage.media_ms).saturating_mul(nanos(self.per_second)).saturating_mul(1_000),
        ];
        let sum = parts.iter().fold(0_i128, |total, part| total.saturating_add(*part));
        let scaled = sum.saturating_mul(i128::from(multiplier.millionths()));
        let denominator = PER_MILLION * PER_MILLION;
        let rounded = scaled.saturating_add(denominator / 2) / denominator;
        Money::from_nanos(i64::try_from(rounded).unwrap_or(i64::MAX))
    }

    pub fn has_negative(&self) -> bool {
        [self.input, self.cached_input, self.cache_write, self.output, self.per_image, self.per_second]
            .iter()
            .any(|m| m.is_negative())
    }
}

/// Whether and how a model is billed. A model nobody priced is refused, never served for
/// free by accident: the operator either prices it or marks it free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "billing", content = "price")]
pub enum Pricing {
    Priced(Price),
    Free,
    Unpriced,
}

impl Pricing {
    /// The price to bill with, `None` when the model may not be called.
    pub fn billable(&self) -> Option<Price> {
        match self {
            Self::Priced(price) => Some(*price),
            Self::Free => Some(Price::default()),
            Self::Unpriced => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub name: ModelName,
    pub pricing: Pricing,
    /// The most output tokens one call can produce; bounds the hold when a request sets no
    /// `max_tokens`.
    pub max_output_tokens: Option<u32>,
    pub managed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(raw: &str) -> Money {
        Money::parse_decimal(raw).unwrap()
    }

    fn gpt4o_mini() -> Price {
        Price { input: money("0.15"), cached_input: money("0.075"), output: money("0.60"), ..Price::default() }
    }

    #[test]
    fn charge_bills_cached_tokens_once() {
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            cached_tokens: 400_000,
            output_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        // 600k × 0.15 + 400k × 0.075 + 1M × 0.60 = 0.09 + 0.03 + 0.60
        assert_eq!(gpt4o_mini().charge(&usage, Multiplier::ONE), money("0.72"));
        let half = Multiplier::parse_decimal("0.5").unwrap();
        assert_eq!(gpt4o_mini().charge(&usage, half), money("0.36"));
        assert_eq!(gpt4o_mini().charge(&TokenUsage::default(), Multiplier::ONE), Money::ZERO);
    }

    #[test]
    fn cache_writes_and_media_have_their_own_prices() {
        let price = Price {
            input: money("3"),
            cached_input: money("0.3"),
            cache_write: money("3.75"),
            output: money("15"),
            per_image: money("0.04"),
            per_second: money("0.1"),
        };
        let usage = TokenUsage {
            input_tokens: 1_000,
            cached_tokens: 200,
            cache_write_tokens: 300,
            output_tokens: 100,
            reasoning_tokens: 40,
            images: 2,
            media_ms: 1_500,
        };
        // 500 × 3 + 200 × 0.3 + 300 × 3.75 + 100 × 15 per million = 0.004185,
        // plus 2 × 0.04 and 1.5 s × 0.1.
        assert_eq!(price.charge(&usage, Multiplier::ONE), money("0.234185"));
    }

    #[test]
    fn rounding_is_half_up_once() {
        let price = Price { input: money("0.000001"), ..Price::default() };
        let one_token = TokenUsage { input_tokens: 1, ..TokenUsage::default() };
        // 10^-6 currency per million tokens: one token is 10^-12, rounds to zero nanos.
        assert_eq!(price.charge(&one_token, Multiplier::ONE), Money::ZERO);
        // 0.0005 per million tokens is half a nano-unit per token: half rounds up.
        let price = Price { input: money("0.0005"), ..Price::default() };
        assert_eq!(price.charge(&one_token, Multiplier::ONE), Money::from_nanos(1));
        let price = Price { input: money("0.000499999"), ..Price::default() };
        assert_eq!(price.charge(&one_token, Multiplier::ONE), Money::ZERO);
        // Rounded once for the whole call, not per token.
        let thousand = TokenUsage { input_tokens: 1_000, ..TokenUsage::default() };
        assert_eq!(price.charge(&thousand, Multiplier::ONE), Money::from_nanos(500));
    }

    #[test]
    fn absurd_usage_saturates_instead_of_overflowing() {
        let price =
            Price { input: Money::from_nanos(i64::MAX), output: Money::from_nanos(i64::MAX), ..Price::default() };
        let usage = TokenUsage { input_tokens: u64::MAX, output_tokens: u64::MAX, ..TokenUsage::default() };
        assert_eq!(price.charge(&usage, Multiplier::from_millionths(i64::MAX)), Money::from_nanos(i64::MAX));
    }

    #[test]
    fn unpriced_models_are_not_billable() {
        assert_eq!(Pricing::Unpriced.billable(), None);
        assert_eq!(Pricing::Free.billable(), Some(Price::default()));
        assert_eq!(Pricing::Priced(gpt4o_mini()).billable(), Some(gpt4o_mini()));
    }
}

/// A channel's routing health: what the health board decides and what servers report to the
/// store (and `veil admin` shows). The wire names are the management API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    CoolingDown,
    HalfOpen,
    /// Its credential was rejected, or an admin disabled it.
    Disabled,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::CoolingDown => "cooling_down",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "healthy" => Some(Self::Healthy),
            "cooling_down" => Some(Self::CoolingDown),
            "half_open" => Some(Self::HalfOpen),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

//! The call record: one row of metadata per relayed call (DESIGN §3.5).
//!
//! Every field is a number, a flag, a validated name or a short bounded label. There is
//! deliberately no free-text field: nothing a client sends as content can be stored here.

use crate::error_code::ErrorCode;
use crate::money::{Money, Multiplier};
use crate::names::{ChannelName, GroupName, KeyId, ModelName, RequestId, UserId};
use crate::policy::PolicyClass;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What a call used, as the upstream reported it (or as Veil estimated it), in one
/// canonical shape whatever the vendor: `input_tokens` is the whole prompt, of which
/// `cached_tokens` were read from the upstream's prompt cache and `cache_write_tokens`
/// written to it; `output_tokens` is everything generated, of which `reasoning_tokens`
/// were hidden reasoning. Media is counted in images and milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(default)]
    pub images: u64,
    #[serde(default)]
    pub media_ms: u64,
}

impl TokenUsage {
    /// Tokens that count against a tokens-per-minute limit.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub request_id: RequestId,
    pub time: Timestamp,
    pub user_id: Option<UserId>,
    pub key_id: Option<KeyId>,
    pub group: Option<GroupName>,
    /// The model the client asked for, when it named a valid one.
    pub model: Option<ModelName>,
    pub upstream_model: Option<ModelName>,
    pub channel: Option<ChannelName>,
    /// The route template (`/v1/chat/completions`), never a raw URL with a query string.
    pub path: &'static str,
    pub stream: bool,
    pub usage: TokenUsage,
    pub cost: Money,
    pub multiplier: Multiplier,
    pub status: u16,
    pub error_code: Option<ErrorCode>,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    /// Already reduced according to `privacy.ip_logging`.
    pub client_ip: String,
    /// Truncated to a bounded length before it gets here.
    pub user_agent: String,
    pub redactions: u32,
    pub rule_id: Option<String>,
    pub policy_class: Option<PolicyClass>,
    /// Usage was estimated locally (the upstream reported none).
    pub estimated: bool,
    pub channels_tried: Vec<ChannelName>,
}

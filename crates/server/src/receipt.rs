//! The data receipt: the `veil-data-policy` header on every relayed response, stating
//! which channel served the call, what its operator does with data, and what Veil's
//! firewall did to the request before it left.

use axum::http::{HeaderName, HeaderValue};
use veil_domain::{Channel, FirewallMode};

pub const DATA_POLICY: HeaderName = HeaderName::from_static("veil-data-policy");

pub fn header(channel: &Channel, firewall: FirewallMode, redactions: u32) -> Option<HeaderValue> {
    let policy = &channel.policy;
    let text = format!(
        "class={}; channel={}; retention={}; training={}; region={}; firewall={}; redactions={}",
        policy.class(),
        channel.name,
        policy.retention,
        if policy.training { "yes" } else { "no" },
        policy.region.as_deref().map_or("unspecified", header_safe),
        firewall.as_str(),
        redactions
    );
    HeaderValue::from_str(&text).ok()
}

/// Regions are operator text; keep the header parseable whatever they wrote.
fn header_safe(region: &str) -> &str {
    if region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') { region } else { "unspecified" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use veil_domain::{ChannelKind, ChannelName, DataPolicy, ModelName, Retention, Timeouts};

    #[test]
    fn the_receipt_has_the_documented_shape() {
        let channel = Channel {
            name: ChannelName::parse("openai-main").unwrap(),
            kind: ChannelKind::Openai,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: None,
            models: vec![ModelName::parse("m").unwrap()],
            model_mapping: BTreeMap::new(),
            priority: 0,
            weight: 1,
            groups: None,
            policy: DataPolicy {
                retention: Retention::Days(30),
                training: false,
                region: Some("US".into()),
                human_review: false,
                operator: "openai".into(),
            },
            timeouts: Timeouts::default(),
            limits: Default::default(),
            tls_verify: true,
            probe_interval: None,
            enabled: true,
            managed: true,
        };
        let value = header(&channel, FirewallMode::Pii, 2).unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            "class=external; channel=openai-main; retention=30d; training=no; region=US; firewall=pii; redactions=2"
        );
    }
}

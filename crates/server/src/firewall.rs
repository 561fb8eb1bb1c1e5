//! The outbound firewall phase: what of the caller's request may leave Veil.
//!
//! `identity` (and `pii`, which includes it) removes every end-user identifier the
//! OpenAI-format request can carry and forces `store` off, so the upstream learns
//! nothing about who is calling. Veil never forwards client headers at all (the provider
//! builds its own), so client IP, forwarding headers and User-Agent cannot leak; this
//! phase covers the body.

use serde_json::{Map, Value};
use veil_domain::FirewallMode;
use veil_providers::Endpoint;

/// Body fields that identify an end user or link their calls together.
const IDENTIFYING_FIELDS: &[&str] = &["user", "safety_identifier", "metadata", "prompt_cache_key"];

pub fn apply_identity(mode: FirewallMode, endpoint: Endpoint, body: &mut Map<String, Value>) {
    if mode == FirewallMode::Off {
        return;
    }
    for field in IDENTIFYING_FIELDS {
        body.remove(*field);
    }
    // Chat Completions can store conversations upstream; never let it.
    if endpoint == Endpoint::ChatCompletions {
        body.insert("store".into(), Value::Bool(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_mode_strips_identifiers_and_forces_store_off() {
        let Value::Object(mut body) = json!({"model": "m", "messages": [], "user": "u-1", "safety_identifier": "s",
            "metadata": {"customer": "c"}, "prompt_cache_key": "k", "store": true, "temperature": 1})
        else {
            unreachable!()
        };
        apply_identity(FirewallMode::Identity, Endpoint::ChatCompletions, &mut body);
        assert_eq!(Value::Object(body), json!({"model": "m", "messages": [], "store": false, "temperature": 1}));
    }

    #[test]
    fn off_leaves_the_body_alone() {
        let Value::Object(mut body) = json!({"model": "m", "user": "u-1"}) else { unreachable!() };
        apply_identity(FirewallMode::Off, Endpoint::Embeddings, &mut body);
        assert_eq!(body["user"], "u-1");
        apply_identity(FirewallMode::Identity, Endpoint::Embeddings, &mut body);
        assert!(!body.contains_key("user") && !body.contains_key("store"));
    }
}

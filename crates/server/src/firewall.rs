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

/// `abuse_id` gives the pseudonymous id sent in place of the client's own end-user id:
/// a keyed hash of the Veil account that changes every month, so the provider can still
/// tell abusive traffic apart without learning who it is or linking months together.
pub fn apply_identity(
    mode: FirewallMode,
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    abuse_id: impl FnOnce() -> String,
) {
    if mode == FirewallMode::Off {
        return;
    }
    let client_sent_an_id = body.contains_key("user") || body.contains_key("safety_identifier");
    for field in IDENTIFYING_FIELDS {
        body.remove(*field);
    }
    if client_sent_an_id {
        body.insert("safety_identifier".into(), Value::String(abuse_id()));
    }
    // Chat Completions can store conversations upstream; never let it.
    if endpoint == Endpoint::ChatCompletions {
        body.insert("store".into(), Value::Bool(false));
    }
}

/// The PII firewall's per-request state: how many values were replaced and how to put
/// them back. The mapping lives in memory for this request only and is zeroed when the
/// last restorer is dropped.
pub struct Redaction {
    pub restorer: veil_privacy::Restorer,
    pub total: u32,
}

/// Replaces personal data in every text field of `body` with numbered placeholders.
/// Any failure fails the call: unredacted text is never forwarded.
pub fn apply_pii(
    detector: Option<&std::sync::Arc<veil_privacy::Detector>>,
    body: &mut Map<String, Value>,
) -> Result<Redaction, crate::error::ApiError> {
    use crate::error::ApiError;
    use axum::http::StatusCode;
    use veil_domain::ErrorCode;

    let detector = detector.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalError,
            "The personal-data firewall is unavailable, so this call was not sent.",
        )
    })?;
    let mut redactor = veil_privacy::Redactor::new(std::sync::Arc::clone(detector));
    let mut document = Value::Object(std::mem::take(body));
    let outcome = redactor.redact_json_strings(&mut document, veil_privacy::NON_TEXT_KEYS);
    if let Value::Object(redacted) = document {
        *body = redacted;
    }
    match outcome {
        Ok(()) => Ok(Redaction { restorer: redactor.restorer(), total: redactor.total() }),
        Err(veil_privacy::RedactError::InputTooLarge { limit }) => Err(ApiError::too_large(limit)),
        Err(veil_privacy::RedactError::TooManyEntities { .. }) => Err(ApiError::invalid_request(
            "The request holds too many personal-data values for the firewall to replace.",
        )),
        Err(veil_privacy::RedactError::KeepsRevealing { .. }) => Err(ApiError::invalid_request(
            "The request holds personal data run together in a way the firewall cannot separate safely.",
        )),
    }
}

/// Puts the original values back into a whole response body.
pub fn restore_body(bytes: bytes::Bytes, restorer: &veil_privacy::Restorer) -> bytes::Bytes {
    if restorer.is_empty() {
        return bytes;
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            restorer.restore_json_strings(&mut value);
            serde_json::to_vec(&value).map(bytes::Bytes::from).unwrap_or(bytes)
        }
        Err(_) => bytes,
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
        apply_identity(FirewallMode::Identity, Endpoint::ChatCompletions, &mut body, || "veil_abc".into());
        assert_eq!(
            Value::Object(body),
            json!({"model": "m", "messages": [], "store": false, "temperature": 1, "safety_identifier": "veil_abc"})
        );
    }

    #[test]
    fn off_leaves_the_body_alone() {
        let Value::Object(mut body) = json!({"model": "m", "user": "u-1"}) else { unreachable!() };
        apply_identity(FirewallMode::Off, Endpoint::Embeddings, &mut body, || unreachable!());
        assert_eq!(body["user"], "u-1");
        apply_identity(FirewallMode::Identity, Endpoint::Embeddings, &mut body, || "veil_abc".into());
        assert!(!body.contains_key("user") && !body.contains_key("store"));
        // No id from the client: none is invented.
        let Value::Object(mut bare) = json!({"model": "m"}) else { unreachable!() };
        apply_identity(FirewallMode::Identity, Endpoint::Embeddings, &mut bare, || "veil_abc".into());
        assert!(!bare.contains_key("safety_identifier"));
    }
}

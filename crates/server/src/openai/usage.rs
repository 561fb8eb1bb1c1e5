//! Reading token usage from OpenAI-format responses and chunks, and estimating it
//! locally when an upstream reports none.

use serde::Deserialize;
use serde_json::Value;
use veil_domain::TokenUsage;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<WireUsage>,
}

impl From<WireUsage> for TokenUsage {
    fn from(wire: WireUsage) -> Self {
        let cached = wire.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
        TokenUsage {
            input_tokens: wire.prompt_tokens,
            // Some servers report more cached tokens than prompt tokens; never let the
            // cached share exceed the prompt.
            cached_tokens: cached.min(wire.prompt_tokens),
            output_tokens: wire.completion_tokens,
        }
    }
}

/// The `usage` of a whole response body, if it has one.
pub fn from_body(body: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<Envelope>(body).ok()?.usage.map(TokenUsage::from)
}

/// The `usage` object of a parsed chunk, if it carries one.
pub fn from_value(value: &Value) -> Option<TokenUsage> {
    let usage = value.get("usage")?;
    if !usage.is_object() {
        return None;
    }
    WireUsage::deserialize(usage).ok().map(TokenUsage::from)
}

/// Local estimate of the prompt's tokens for each endpoint's input field.
pub fn estimate_prompt(body: &serde_json::Map<String, Value>) -> u64 {
    if let Some(messages) = body.get("messages") {
        return veil_tokens::count_chat_prompt(messages);
    }
    if let Some(prompt) = body.get("prompt") {
        return veil_tokens::count_completion_prompt(prompt);
    }
    body.get("input").map_or(0, veil_tokens::count_completion_prompt)
}

/// Tokens of generated text in a response body or a chunk: message or delta content,
/// reasoning text, tool-call arguments and legacy completion text.
pub fn estimate_output(value: &Value) -> u64 {
    let Some(choices) = value.get("choices").and_then(Value::as_array) else { return 0 };
    let mut total = 0;
    for choice in choices {
        if let Some(text) = choice.get("text").and_then(Value::as_str) {
            total += veil_tokens::count(text);
        }
        for part in ["message", "delta"] {
            let Some(message) = choice.get(part) else { continue };
            for field in ["content", "reasoning_content", "refusal"] {
                if let Some(text) = message.get(field).and_then(Value::as_str) {
                    total += veil_tokens::count(text);
                }
            }
            if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                        total += veil_tokens::count(args);
                    }
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_read_with_cached_tokens_clamped() {
        let body = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                                    "prompt_tokens_details": {"cached_tokens": 40}}});
        let usage = from_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(usage, TokenUsage { input_tokens: 10, cached_tokens: 10, output_tokens: 5 });
        assert_eq!(from_value(&json!({"usage": null})), None);
        assert_eq!(from_body(b"{\"id\": 1}"), None);
    }

    #[test]
    fn output_is_estimated_from_every_generated_field() {
        let chunk = json!({"choices": [{"delta": {"content": "hello world",
            "tool_calls": [{"function": {"arguments": "{\"city\":\"Paris\"}"}}]}}]});
        assert!(estimate_output(&chunk) >= 2 + 3);
        assert_eq!(estimate_output(&json!({"choices": []})), 0);
    }
}

//! Local token estimates with OpenAI's o200k vocabulary, which is compiled into the
//! binary (nothing is downloaded, ever).
//!
//! These counts are estimates: they size holds before a call and stand in for usage
//! when a stream ends without reporting it. Billing uses the upstream's own `usage`
//! whenever there is one. Counting time grows linearly with the input, so adversarial
//! text cannot make it blow up; callers still cap body sizes first and count very large
//! bodies off the async executor.

use serde_json::Value;

/// OpenAI's documented chat framing: every message costs a few tokens on top of its
/// content (`<|start|>{role}\n … <|end|>`), a `name` costs one more, and the reply is
/// primed with `<|start|>assistant<|message|>`.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING_TOKENS: u64 = 3;

/// What one image costs at OpenAI's `low` detail, the least any image can cost. Images
/// are not decoded here, so this is a floor, not an estimate of high-detail images.
const TOKENS_PER_IMAGE: u64 = 85;

/// Tokens in `text` under the o200k vocabulary (GPT-4o and later).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    u64::try_from(bpe_openai::o200k_base().count(text)).unwrap_or(u64::MAX)
}

/// Loads the vocabulary now (about 50 ms), so the first request does not pay for it.
pub fn warm_up() {
    let _ = count("warm up");
}

/// Estimated prompt tokens of an OpenAI chat `messages` array: the text of every message
/// (string content or text parts), names, tool calls (name and arguments), a floor per
/// image, plus OpenAI's per-message framing. Anything that is not an array counts 0.
pub fn count_chat_prompt(messages: &Value) -> u64 {
    let Some(messages) = messages.as_array() else {
        return 0;
    };
    let framed: u64 = messages.iter().map(count_message).fold(0, u64::saturating_add);
    framed.saturating_add(REPLY_PRIMING_TOKENS)
}

fn count_message(message: &Value) -> u64 {
    let mut total = TOKENS_PER_MESSAGE;
    let field = |name: &str| message.get(name).and_then(Value::as_str);
    if let Some(role) = field("role") {
        total = total.saturating_add(count(role));
    }
    if let Some(name) = field("name") {
        total = total.saturating_add(count(name)).saturating_add(TOKENS_PER_NAME);
    }
    if let Some(tool_call_id) = field("tool_call_id") {
        total = total.saturating_add(count(tool_call_id));
    }
    if let Some(content) = message.get("content") {
        total = total.saturating_add(count_content(content));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let function = call.get("function");
            let text = |name: &str| function.and_then(|f| f.get(name)).and_then(Value::as_str);
            total =
                total.saturating_add(text("name").map_or(0, count)).saturating_add(text("arguments").map_or(0, count));
        }
    }
    // The legacy single `function_call` form.
    if let Some(call) = message.get("function_call") {
        let text = |name: &str| call.get(name).and_then(Value::as_str);
        total = total.saturating_add(text("name").map_or(0, count)).saturating_add(text("arguments").map_or(0, count));
    }
    total
}

/// A message's `content`: a string, or an array of parts of which text parts count in
/// full and image parts count their floor.
fn count_content(content: &Value) -> u64 {
    match content {
        Value::String(text) => count(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part.get("text").and_then(Value::as_str).map_or(0, count),
                Some("refusal") => part.get("refusal").and_then(Value::as_str).map_or(0, count),
                Some("image_url") => TOKENS_PER_IMAGE,
                _ => 0,
            })
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// Estimated prompt tokens of a legacy completions `prompt`: a string, an array of
/// strings, or pre-tokenized input (an array of token ids, or an array of such arrays),
/// which counts its length.
pub fn count_completion_prompt(prompt: &Value) -> u64 {
    match prompt {
        Value::String(text) => count(text),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => count(text),
                Value::Number(_) => 1,
                Value::Array(token_ids) => u64::try_from(token_ids.len()).unwrap_or(u64::MAX),
                _ => 0,
            })
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_known_o200k_strings() {
        warm_up();
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        assert_eq!(count("Hello, world!"), 4);
        assert_eq!(count("user"), 1);
        assert_eq!(count("assistant"), 1);
    }

    #[test]
    fn counts_chat_messages_with_openai_framing() {
        let messages = json!([
            {"role": "system", "content": "hello world"},
            {"role": "user", "content": "hello world"}
        ]);
        // Per message: 3 framing + 1 role + 2 content; plus 3 reply priming.
        assert_eq!(count_chat_prompt(&messages), 2 * (3 + 1 + 2) + 3);
    }

    #[test]
    fn counts_text_parts_names_and_tool_calls() {
        let parts = json!([{"role": "user", "name": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "hello world"}
        ]}]);
        // 3 framing + 1 role + (1 + 1) name + 2 + 85 + 2 content, plus 3.
        assert_eq!(count_chat_prompt(&parts), 3 + 1 + 2 + 2 + 85 + 2 + 3);

        let tool_call = json!([{"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "user", "arguments": "hello world"}}
        ]}]);
        assert_eq!(count_chat_prompt(&tool_call), 3 + 1 + 1 + 2 + 3);
    }

    #[test]
    fn non_arrays_and_odd_shapes_count_nothing_extra() {
        assert_eq!(count_chat_prompt(&json!("hello")), 0);
        assert_eq!(count_chat_prompt(&json!([])), 3);
        assert_eq!(count_chat_prompt(&json!([{"role": 7, "content": {"x": 1}}])), 3 + 3);
    }

    #[test]
    fn counts_completion_prompts_of_every_shape() {
        assert_eq!(count_completion_prompt(&json!("hello world")), 2);
        assert_eq!(count_completion_prompt(&json!(["hello world", "hello world"])), 4);
        assert_eq!(count_completion_prompt(&json!([15339, 1917, 0])), 3);
        assert_eq!(count_completion_prompt(&json!([[1, 2], [3]])), 3);
        assert_eq!(count_completion_prompt(&json!(null)), 0);
    }

    #[test]
    fn counting_is_linear_on_adversarial_input() {
        let repeated = "a".repeat(200_000);
        let count = count(&repeated);
        assert!(count > 0 && count <= 200_000);
    }
}

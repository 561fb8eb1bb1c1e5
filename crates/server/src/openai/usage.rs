//! Reading token usage from OpenAI-format responses and chunks, and estimating it
//! locally when an upstream reports none.

use serde::Deserialize;
use serde_json::Value;
use veil_domain::TokenUsage;
use veil_tokens::Counter;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
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
        // OpenAI counts reasoning inside `completion_tokens`, so it is billed as output once.
        let reasoning = wire.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0);
        TokenUsage {
            input_tokens: wire.prompt_tokens,
            // Some servers report more cached tokens than prompt tokens; never let the
            // cached share exceed the prompt.
            cached_tokens: cached.min(wire.prompt_tokens),
            output_tokens: wire.completion_tokens,
            reasoning_tokens: reasoning.min(wire.completion_tokens),
            ..TokenUsage::default()
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

/// Local count of the prompt's tokens for each endpoint's input field. The relay sizes
/// holds with [`Counter::Estimate`]; the count-tokens endpoints answer with the vocabulary.
pub fn count_prompt(body: &serde_json::Map<String, Value>, counter: Counter) -> u64 {
    if let Some(messages) = body.get("messages") {
        return veil_tokens::count_chat_prompt(messages, counter);
    }
    if let Some(prompt) = body.get("prompt") {
        return veil_tokens::count_completion_prompt(prompt, counter);
    }
    body.get("input").map_or(0, |input| veil_tokens::count_completion_prompt(input, counter))
}

/// The prompt's tokens under the vocabulary, counted off the async executor: the first
/// count loads the vocabulary (about 50 ms), and a long prompt takes a while.
pub async fn vocabulary_count(body: serde_json::Map<String, Value>) -> u64 {
    match tokio::task::spawn_blocking(move || count_prompt(&body, Counter::Vocabulary)).await {
        Ok(tokens) => tokens,
        Err(_) => {
            tracing::warn!("counting a prompt's tokens did not finish");
            0
        }
    }
}

/// The relay's estimate of the prompt's tokens (see [`count_prompt`]).
pub fn estimate_prompt(body: &serde_json::Map<String, Value>) -> u64 {
    count_prompt(body, Counter::Estimate)
}

/// Tokens of generated text in a response body or a chunk: message or delta content,
/// reasoning text, tool-call arguments and legacy completion text.
pub fn estimate_output(value: &Value) -> u64 {
    let Some(choices) = value.get("choices").and_then(Value::as_array) else { return 0 };
    let mut total = 0;
    for choice in choices {
        if let Some(text) = choice.get("text").and_then(Value::as_str) {
            total += veil_tokens::estimate(text);
        }
        for part in ["message", "delta"] {
            let Some(message) = choice.get(part) else { continue };
            for field in ["content", "reasoning_content", "refusal"] {
                if let Some(text) = message.get(field).and_then(Value::as_str) {
                    total += veil_tokens::estimate(text);
                }
            }
            if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                        total += veil_tokens::estimate(args);
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
        assert_eq!(
            usage,
            TokenUsage { input_tokens: 10, cached_tokens: 10, output_tokens: 5, ..TokenUsage::default() }
        );
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

/// What the relay needs from one stream chunk, read without building a JSON tree:
/// strings are borrowed where they have no escapes, unknown fields are skipped.
#[derive(Deserialize)]
struct ChunkProbe<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceProbe<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<DeltaProbe<'a>>,
}

#[derive(Deserialize)]
struct DeltaProbe<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<ToolCallProbe<'a>>,
}

#[derive(Deserialize)]
struct ToolCallProbe<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionProbe<'a>>,
}

#[derive(Deserialize)]
struct FunctionProbe<'a> {
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

pub struct ChunkFacts {
    pub usage: Option<TokenUsage>,
    pub has_choices: bool,
}

/// Reads usage and whether the chunk carries choices, handing every generated text to
/// `generated`. `None` when the data is not a JSON chunk.
pub fn probe_chunk(data: &str, mut generated: impl FnMut(&str)) -> Option<ChunkFacts> {
    let probe: ChunkProbe<'_> = serde_json::from_str(data).ok()?;
    for choice in &probe.choices {
        if let Some(text) = &choice.text {
            generated(text);
        }
        if let Some(delta) = &choice.delta {
            for text in [&delta.content, &delta.reasoning_content, &delta.refusal].into_iter().flatten() {
                generated(text);
            }
            for call in &delta.tool_calls {
                if let Some(arguments) = call.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                    generated(arguments);
                }
            }
        }
    }
    Some(ChunkFacts { has_choices: !probe.choices.is_empty(), usage: probe.usage.map(TokenUsage::from) })
}

/// Generated text counted as it streams by, for a stream that ends without usage: each
/// piece is estimated when it arrives (a pass over its bytes), so nothing is kept and
/// the cost per chunk does not grow with the stream.
#[derive(Default)]
pub struct GeneratedText {
    tokens: u64,
}

impl GeneratedText {
    pub fn note(&mut self, text: &str) {
        self.tokens = self.tokens.saturating_add(veil_tokens::estimate(text));
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// Removes the `"usage":null` member OpenAI adds to every chunk once usage is requested,
/// as text, without re-serializing the chunk. `None` when it is not there in that exact
/// compact form.
pub fn strip_null_usage(data: &str) -> Option<String> {
    for member in [",\"usage\":null", "\"usage\":null,"] {
        if let Some(at) = data.find(member) {
            let mut stripped = String::with_capacity(data.len() - member.len());
            stripped.push_str(&data[..at]);
            stripped.push_str(&data[at + member.len()..]);
            return Some(stripped);
        }
    }
    None
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn chunks_are_probed_without_a_tree() {
        let mut texts = Vec::new();
        let facts = probe_chunk(
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"he said \"hi\"","tool_calls":[{"function":{"arguments":"{}"}}]}}],"usage":null}"#,
            |t| texts.push(t.to_owned()),
        )
        .unwrap();
        assert!(facts.has_choices && facts.usage.is_none());
        assert_eq!(texts, ["he said \"hi\"", "{}"]);
        let usage = probe_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#, |_| {}).unwrap();
        assert!(!usage.has_choices);
        assert_eq!(usage.usage.unwrap().output_tokens, 4);
        assert!(probe_chunk("not json", |_| {}).is_none());
    }

    #[test]
    fn null_usage_is_stripped_as_text() {
        assert_eq!(strip_null_usage(r#"{"a":1,"usage":null}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(strip_null_usage(r#"{"usage":null,"a":1}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(strip_null_usage(r#"{"a":1}"#), None);
        assert_eq!(strip_null_usage(r#"{"usage": null}"#), None);
    }

    #[test]
    fn generated_text_is_estimated_piece_by_piece() {
        let mut generated = GeneratedText::default();
        for _ in 0..2000 {
            generated.note("hello world ");
        }
        assert_eq!(generated.tokens(), veil_tokens::estimate(&"hello world ".repeat(2000)));
        assert_eq!(generated.tokens(), 4000);
    }
}

//! Local token counts, two ways: OpenAI's o200k vocabulary (compiled into the binary,
//! nothing is downloaded, ever) and a vocabulary-free estimate from character classes.
//!
//! These counts are estimates either way: they size holds and token reservations before a
//! call and stand in for usage when a stream ends without reporting it. Billing uses the
//! upstream's own `usage` whenever there is one. The relay's hot path uses
//! [`Counter::Estimate`]: it costs a pass over the bytes and no memory, where the
//! vocabulary costs about 20 µs per KiB of text and, once loaded, ~55 MB of resident memory
//! (its tables); so the vocabulary is loaded only when something asks for
//! [`Counter::Vocabulary`] (the count-tokens endpoints). Both are linear in the input, so
//! adversarial text cannot make them blow up.

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

/// How a text becomes a number of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// The o200k vocabulary (GPT-4o and later): exact for those models, close for others.
    Vocabulary,
    /// Character classes, calibrated against o200k to lean high on prose, code, JSON and
    /// CJK text (×1.0–1.4) and to stay within ~20 % below it on digits and code.
    Estimate,
}

impl Counter {
    pub fn count(self, text: &str) -> u64 {
        match self {
            Self::Vocabulary => count(text),
            Self::Estimate => estimate(text),
        }
    }
}

/// Tokens in `text` under the o200k vocabulary (GPT-4o and later).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    u64::try_from(bpe_openai::o200k_base().count(text)).unwrap_or(u64::MAX)
}

/// Loads the vocabulary now (about 50 ms), so its first user does not wait for it.
pub fn warm_up() {
    let _ = count("warm up");
}

/// What a run of same-class characters is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Space,
    /// ASCII letters: about one token per word of up to six letters, more per long word.
    Letters,
    /// Letters of two-byte scripts (Latin extended, Greek, Cyrillic, Hebrew, Arabic).
    WideLetters,
    Digits,
    /// Letters and digits mixed (identifiers, hex, base64): vocabularies split these finely.
    Mixed,
    Punctuation,
}

impl Run {
    fn of(c: char) -> Option<Self> {
        Some(match c {
            c if c.is_ascii_alphabetic() => Self::Letters,
            c if c.is_ascii_digit() => Self::Digits,
            c if c.is_whitespace() => Self::Space,
            c if c.is_ascii() => Self::Punctuation,
            c if c.is_alphabetic() && u32::from(c) < 0x800 => Self::WideLetters,
            // CJK, emoji and the rest: counted one by one.
            _ => return None,
        })
    }

    fn joined(self, next: Self) -> Option<Self> {
        match (self, next) {
            (a, b) if a == b => Some(a),
            (Self::Letters | Self::Digits | Self::Mixed, Self::Letters | Self::Digits) => Some(Self::Mixed),
            _ => None,
        }
    }

    fn tokens(self, len: u64) -> u64 {
        match self {
            Self::Space => 0,
            Self::Letters if len > 16 => len.div_ceil(2),
            Self::Letters => len.div_ceil(6),
            Self::WideLetters => len.div_ceil(3),
            Self::Digits => (len * 2).div_ceil(5),
            Self::Mixed => (len * 2).div_ceil(3),
            Self::Punctuation => len.div_ceil(2),
        }
    }
}

/// Tokens in `text` estimated from its character classes, without a vocabulary.
pub fn estimate(text: &str) -> u64 {
    let mut tokens = 0u64;
    let mut run = Run::Space;
    let mut len = 0u64;
    for c in text.chars() {
        let Some(class) = Run::of(c) else {
            tokens = tokens.saturating_add(run.tokens(len)).saturating_add(if u32::from(c) > 0xFFFF { 2 } else { 1 });
            (run, len) = (Run::Space, 0);
            continue;
        };
        match run.joined(class) {
            Some(joined) => (run, len) = (joined, len + 1),
            None => {
                tokens = tokens.saturating_add(run.tokens(len));
                (run, len) = (class, 1);
            }
        }
    }
    tokens.saturating_add(run.tokens(len))
}

/// Estimated prompt tokens of an OpenAI chat `messages` array: the text of every message
/// (string content or text parts), names, tool calls (name and arguments), a floor per
/// image, plus OpenAI's per-message framing. Anything that is not an array counts 0.
pub fn count_chat_prompt(messages: &Value, counter: Counter) -> u64 {
    let Some(messages) = messages.as_array() else {
        return 0;
    };
    let framed: u64 = messages.iter().map(|message| count_message(message, counter)).fold(0, u64::saturating_add);
    framed.saturating_add(REPLY_PRIMING_TOKENS)
}

fn count_message(message: &Value, counter: Counter) -> u64 {
    let count = |text: &str| counter.count(text);
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
        total = total.saturating_add(count_content(content, counter));
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
fn count_content(content: &Value, counter: Counter) -> u64 {
    let count = |text: &str| counter.count(text);
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
pub fn count_completion_prompt(prompt: &Value, counter: Counter) -> u64 {
    let count = |text: &str| counter.count(text);
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
        assert_eq!(count_chat_prompt(&messages, Counter::Vocabulary), 2 * (3 + 1 + 2) + 3);
    }

    #[test]
    fn counts_text_parts_names_and_tool_calls() {
        let parts = json!([{"role": "user", "name": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "hello world"}
        ]}]);
        // 3 framing + 1 role + (1 + 1) name + 2 + 85 + 2 content, plus 3.
        assert_eq!(count_chat_prompt(&parts, Counter::Vocabulary), 3 + 1 + 2 + 2 + 85 + 2 + 3);

        let tool_call = json!([{"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "user", "arguments": "hello world"}}
        ]}]);
        assert_eq!(count_chat_prompt(&tool_call, Counter::Vocabulary), 3 + 1 + 1 + 2 + 3);
    }

    #[test]
    fn non_arrays_and_odd_shapes_count_nothing_extra() {
        assert_eq!(count_chat_prompt(&json!("hello"), Counter::Vocabulary), 0);
        assert_eq!(count_chat_prompt(&json!([]), Counter::Vocabulary), 3);
        assert_eq!(count_chat_prompt(&json!([{"role": 7, "content": {"x": 1}}]), Counter::Vocabulary), 3 + 3);
    }

    #[test]
    fn counts_completion_prompts_of_every_shape() {
        assert_eq!(count_completion_prompt(&json!("hello world"), Counter::Vocabulary), 2);
        assert_eq!(count_completion_prompt(&json!(["hello world", "hello world"]), Counter::Vocabulary), 4);
        assert_eq!(count_completion_prompt(&json!([15339, 1917, 0]), Counter::Vocabulary), 3);
        assert_eq!(count_completion_prompt(&json!([[1, 2], [3]]), Counter::Vocabulary), 3);
        assert_eq!(count_completion_prompt(&json!(null), Counter::Vocabulary), 0);
    }

    /// The estimate against the vocabulary on the kinds of text prompts are made of: it may
    /// lean high (holds a little more than needed) but never far below.
    #[test]
    fn the_estimate_stays_near_the_vocabulary_on_every_kind_of_text() {
        let samples = [
            "The quick brown fox jumps over the lazy dog. Please summarize the following report about \
             quarterly revenue, customer churn and the outlook for next year.",
            "fn main() {\n    let mut total: u64 = 0;\n    for (i, item) in items.iter().enumerate() {\n        \
             total += item.price * i as u64;\n    }\n}\n",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#,
            "我们不会在磁盘上存储您提交的数据；它只在推理期间存在于内存中。外部提供商可能会保留输出长达31天。",
            "日本語のテキストはトークン数が多くなる傾向があります。個人情報を削除します。",
            "Быстрая коричневая лиса прыгает через ленивую собаку. Пожалуйста, кратко изложите отчёт.",
            "3.14159 2718281828 12345678901234567890 1000000 42 7 2026-12-05 10:31:00 +1 555 0100",
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw==",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "great job 🎉🎉 thanks 🙏 see you 👋 ok 👍",
        ];
        for text in samples {
            let text = text.repeat(4);
            let (exact, estimate) = (count(&text) as f64, estimate(&text) as f64);
            let ratio = estimate / exact;
            assert!((0.8..=1.5).contains(&ratio), "{ratio:.2} for {text:?}");
        }
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("   \n\t"), 0);
        assert_eq!(Counter::Estimate.count("hello world"), 2);
    }

    #[test]
    fn counting_is_linear_on_adversarial_input() {
        let repeated = "a".repeat(200_000);
        let count = count(&repeated);
        assert!(count > 0 && count <= 200_000);
        assert_eq!(estimate(&repeated), 100_000);
    }
}

//! [`EchoProvider`]: Veil's built-in TEST provider. It answers locally, never leaves the
//! process, and speaks OpenAI's wire format exactly, so every path of the relay (chat,
//! tool calls, completions, embeddings, streaming with and without usage) can be tried
//! without an upstream account.
//!
//! Its output is deterministic apart from ids and timestamps: chat and completions
//! answer `Echo: ` followed by the (last user) prompt; a chat request offering tools
//! whose last message is a user message mentioning "weather" gets one `get_weather`
//! call for Paris; embeddings are unit vectors derived from a hash of each input. Usage
//! is real: counted with the o200k vocabulary.

use crate::sse::SseEvent;
use crate::{Endpoint, Provider, UpstreamError, UpstreamReply, UpstreamRequest};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const SYSTEM_FINGERPRINT: &str = "veil-echo";
const DEFAULT_EMBEDDING_DIMENSIONS: usize = 16;
/// Larger than any real embedding model, small enough that a request cannot make the
/// echo provider allocate much.
const MAX_EMBEDDING_DIMENSIONS: usize = 8192;
const WEATHER_TOOL: &str = "get_weather";
const WEATHER_ARGUMENTS: &str = r#"{"city":"Paris"}"#;

/// Ids only need to be unique within a process; a shared counter keeps them so across
/// every echo channel.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
pub struct EchoProvider;

impl EchoProvider {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Provider for EchoProvider {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let call = Call::new(&request);
        match request.endpoint {
            Endpoint::ChatCompletions => chat(&call, &request.body, request.stream),
            Endpoint::Completions => completion(&call, &request.body, request.stream),
            Endpoint::Embeddings => embeddings(&call, &request.body),
            other => Err(UpstreamError::EndpointUnsupported(other.route())),
        }
    }
}

/// What every answer of one call shares.
struct Call {
    serial: u64,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Call {
    fn new(request: &UpstreamRequest) -> Self {
        Self {
            serial: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
            model: request.model.to_string(),
            include_usage: request
                .body
                .get("stream_options")
                .and_then(|options| options.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn complete(body: &Value) -> Result<UpstreamReply, UpstreamError> {
    serde_json::to_vec(body)
        .map(|bytes| UpstreamReply::Complete(Bytes::from(bytes)))
        .map_err(|_| UpstreamError::Malformed("the echo answer could not be encoded"))
}

/// A stream of the given chunks, then `[DONE]`; all ready at once.
fn stream(chunks: Vec<Value>) -> UpstreamReply {
    let events = chunks
        .into_iter()
        .map(|chunk| Ok(SseEvent::data(chunk.to_string())))
        .chain(std::iter::once(Ok(SseEvent::done())));
    UpstreamReply::Stream(Box::pin(futures_util::stream::iter(events.collect::<Vec<_>>())))
}

/// What a real upstream answers to a request it cannot serve.
fn invalid_request(message: &str) -> UpstreamError {
    UpstreamError::Status {
        status: 400,
        retry_after: None,
        message: message.to_owned(),
        code: Some("invalid_request_error".to_owned()),
    }
}

/// Splits text into word-sized pieces, each starting with the whitespace before it, as
/// OpenAI's tokens do (`"Echo:"`, `" hello"`, `" world"`). The pieces join back to `text`.
fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                pieces.push(&text[start..at]);
                start = at;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

// ---- chat completions ----

enum ChatAnswer {
    Text(String),
    WeatherCall,
}

impl ChatAnswer {
    fn of(body: &Map<String, Value>) -> Self {
        let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let role = |message: &Value| message.get("role").and_then(Value::as_str).map(str::to_owned);
        let last_user = messages.iter().rev().find(|message| role(message).as_deref() == Some("user"));
        let prompt = last_user.map(message_text).unwrap_or_default();
        let offers_tools = body.get("tools").and_then(Value::as_array).is_some_and(|tools| !tools.is_empty());
        // Only a fresh user turn triggers the call: after the tool's result comes back,
        // the conversation ends with a text answer instead of looping.
        let user_has_the_turn = messages.last().and_then(role).as_deref() == Some("user");
        if offers_tools && user_has_the_turn && mentions_weather(&prompt) {
            Self::WeatherCall
        } else {
            Self::Text(format!("Echo: {prompt}"))
        }
    }

    fn completion_tokens(&self) -> u64 {
        match self {
            Self::Text(text) => veil_tokens::count(text),
            Self::WeatherCall => veil_tokens::count(WEATHER_TOOL) + veil_tokens::count(WEATHER_ARGUMENTS),
        }
    }
}

/// A message's text: its string content, or its text parts joined by a space.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn mentions_weather(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).any(|word| word.eq_ignore_ascii_case("weather"))
}

fn chat(call: &Call, body: &Map<String, Value>, streaming: bool) -> Result<UpstreamReply, UpstreamError> {
    let answer = ChatAnswer::of(body);
    let prompt_tokens =
        veil_tokens::count_chat_prompt(body.get("messages").unwrap_or(&Value::Null), veil_tokens::Counter::Vocabulary);
    let usage = usage(prompt_tokens, answer.completion_tokens());
    let id = format!("chatcmpl-echo-{}", call.serial);
    let tool_call_id = format!("call_echo_{}", call.serial);
    if streaming {
        return Ok(stream(chat_chunks(call, &id, &tool_call_id, &answer, usage)));
    }
    let (message, finish_reason) = match &answer {
        ChatAnswer::Text(text) => {
            (json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}), "stop")
        }
        ChatAnswer::WeatherCall => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": tool_call_id,
                    "type": "function",
                    "function": {"name": WEATHER_TOOL, "arguments": WEATHER_ARGUMENTS}
                }],
                "refusal": null,
                "annotations": []
            }),
            "tool_calls",
        ),
    };
    complete(&json!({
        "id": id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT
    }))
}

/// OpenAI's chunk sequence: a role chunk, content (or tool-call argument) deltas, a
/// chunk with an empty delta and the finish reason, and, when the request asked for
/// usage, a last chunk with no choices and the usage (every earlier chunk then carries
/// `"usage": null`).
fn chat_chunks(call: &Call, id: &str, tool_call_id: &str, answer: &ChatAnswer, usage: Value) -> Vec<Value> {
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
        });
        if call.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks = Vec::new();
    let finish_reason = match answer {
        ChatAnswer::Text(text) => {
            chunks.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
            for piece in word_pieces(text) {
                chunks.push(chunk(json!({"content": piece}), Value::Null));
            }
            "stop"
        }
        ChatAnswer::WeatherCall => {
            let opening = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": tool_call_id,
                    "type": "function",
                    "function": {"name": WEATHER_TOOL, "arguments": ""}
                }],
                "refusal": null
            });
            chunks.push(chunk(opening, Value::Null));
            let (head, tail) = WEATHER_ARGUMENTS.split_at(WEATHER_ARGUMENTS.len() / 2);
            for piece in [head, tail] {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                chunks.push(chunk(delta, Value::Null));
            }
            "tool_calls"
        }
    };
    chunks.push(chunk(json!({}), json!(finish_reason)));
    if call.include_usage {
        chunks.push(usage_chunk(call, id, "chat.completion.chunk", usage));
    }
    chunks
}

fn usage_chunk(call: &Call, id: &str, object: &str, usage: Value) -> Value {
    json!({
        "id": id,
        "object": object,
        "created": call.created,
        "model": call.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage
    })
}

// ---- legacy completions ----

fn completion(call: &Call, body: &Map<String, Value>, streaming: bool) -> Result<UpstreamReply, UpstreamError> {
    let prompt = body.get("prompt").unwrap_or(&Value::Null);
    let prompt_text = match prompt {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    let text = format!("Echo: {prompt_text}");
    let prompt_tokens = veil_tokens::count_completion_prompt(prompt, veil_tokens::Counter::Vocabulary);
    let completion_tokens = veil_tokens::count(&text);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens
    });
    let id = format!("cmpl-echo-{}", call.serial);
    if !streaming {
        return complete(&json!({
            "id": id,
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage
        }));
    }
    let chunk = |piece: &str, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": piece, "index": 0, "logprobs": null, "finish_reason": finish_reason}]
        });
        if call.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks: Vec<Value> = word_pieces(&text).into_iter().map(|piece| chunk(piece, Value::Null)).collect();
    chunks.push(chunk("", json!("stop")));
    if call.include_usage {
        chunks.push(usage_chunk(call, &id, "text_completion", usage));
    }
    Ok(stream(chunks))
}

// ---- embeddings ----

/// One embedding input: text, or pre-tokenized ids (only their count matters).
enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl EmbeddingInput<'_> {
    fn tokens(&self) -> u64 {
        match self {
            Self::Text(text) => veil_tokens::count(text),
            Self::Tokens(ids) => u64::try_from(ids.len()).unwrap_or(u64::MAX),
        }
    }

    fn seed(&self) -> u64 {
        match self {
            Self::Text(text) => fnv1a(text.as_bytes()),
            Self::Tokens(ids) => fnv1a(ids.iter().map(Value::to_string).collect::<Vec<_>>().join(",").as_bytes()),
        }
    }
}

fn embedding_inputs(input: Option<&Value>) -> Result<Vec<EmbeddingInput<'_>>, UpstreamError> {
    let invalid = || invalid_request("'input' must be a string, an array of strings, or token arrays.");
    match input {
        Some(Value::String(text)) => Ok(vec![EmbeddingInput::Text(text)]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => Ok(vec![EmbeddingInput::Tokens(items)]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(EmbeddingInput::Text(text)),
                Value::Array(ids) if ids.iter().all(Value::is_number) => Ok(EmbeddingInput::Tokens(ids)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

/// Serialized as numbers straight from `f32` (shortest form, unlike a detour through
/// `serde_json::Value`, which widens to `f64` digits), or as base64 of little-endian
/// `f32`s, which the official Python SDK asks for by default.
#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn embeddings(call: &Call, body: &Map<String, Value>) -> Result<UpstreamReply, UpstreamError> {
    let inputs = embedding_inputs(body.get("input"))?;
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(value) => value
            .as_u64()
            .and_then(|dimensions| usize::try_from(dimensions).ok())
            .filter(|dimensions| (1..=MAX_EMBEDDING_DIMENSIONS).contains(dimensions))
            .ok_or_else(|| invalid_request("'dimensions' must be an integer from 1 to 8192."))?,
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(invalid_request("'encoding_format' must be 'float' or 'base64'."));
        }
    };
    let prompt_tokens = inputs.iter().map(EmbeddingInput::tokens).fold(0, u64::saturating_add);
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = unit_vector(input.seed(), dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Float(vector)
            };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model: &call.model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    };
    serde_json::to_vec(&list)
        .map(|bytes| UpstreamReply::Complete(Bytes::from(bytes)))
        .map_err(|_| UpstreamError::Malformed("the echo answer could not be encoded"))
}

/// FNV-1a: tiny, and fixed forever (unlike `std`'s hasher), so a text maps to the same
/// vector in every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A vector of `dimensions` values drawn from splitmix64 seeded with `seed`, scaled to
/// unit length.
fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // 53 random bits as a float in [-1, 1).
    let raw: Vec<f64> = (0..dimensions).map(|_| (next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0).collect();
    let norm = raw.iter().map(|value| value * value).sum::<f64>().sqrt();
    if norm == 0.0 {
        let mut unit = vec![0.0; dimensions];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        return unit;
    }
    raw.iter().map(|value| (value / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn request(endpoint: Endpoint, body: Value, stream: bool) -> UpstreamRequest {
        let model = veil_domain::ModelName::parse(body["model"].as_str().unwrap_or("echo")).unwrap();
        let Value::Object(body) = body else { panic!("body must be an object") };
        UpstreamRequest { endpoint, body: std::sync::Arc::new(body), model, stream, files: None }
    }

    async fn complete_json(request: UpstreamRequest) -> Value {
        match EchoProvider::new().send(request).await.unwrap() {
            UpstreamReply::Complete(bytes) => serde_json::from_slice(&bytes).unwrap(),
            _ => panic!("expected a complete body"),
        }
    }

    /// The chunks of a streamed answer, checking it ends with exactly one `[DONE]`.
    async fn chunks(request: UpstreamRequest) -> Vec<Value> {
        let UpstreamReply::Stream(events) = EchoProvider::new().send(request).await.unwrap() else {
            panic!("expected a stream");
        };
        let events: Vec<SseEvent> = events.map(|event| event.unwrap()).collect().await;
        let (last, chunks) = events.split_last().unwrap();
        assert!(last.is_done());
        chunks
            .iter()
            .map(|event| {
                assert_eq!(event.event, None);
                serde_json::from_str(&event.data).unwrap()
            })
            .collect()
    }

    fn chat_body(content: Value) -> Value {
        json!({"model": "echo-1", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content}
        ]})
    }

    #[tokio::test]
    async fn chat_echoes_the_last_user_message_with_real_usage() {
        let body = complete_json(request(Endpoint::ChatCompletions, chat_body(json!("hello world")), false)).await;
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "echo-1");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-echo-"));
        assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(body["system_fingerprint"], "veil-echo");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "Echo: hello world");
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(body["choices"].as_array().unwrap().len(), 1);
        let messages = chat_body(json!("hello world"))["messages"].clone();
        let prompt = veil_tokens::count_chat_prompt(&messages, veil_tokens::Counter::Vocabulary);
        let completion = veil_tokens::count("Echo: hello world");
        assert_eq!(body["usage"]["prompt_tokens"], prompt);
        assert_eq!(body["usage"]["completion_tokens"], completion);
        assert_eq!(body["usage"]["total_tokens"], prompt + completion);
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }

    #[tokio::test]
    async fn chat_joins_text_parts() {
        let parts = json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "here"}
        ]);
        let body = complete_json(request(Endpoint::ChatCompletions, chat_body(parts), false)).await;
        assert_eq!(body["choices"][0]["message"]["content"], "Echo: look here");
    }

    #[tokio::test]
    async fn weather_with_tools_answers_with_a_tool_call() {
        let mut body = chat_body(json!("What's the Weather in Paris?"));
        body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
        let answer = complete_json(request(Endpoint::ChatCompletions, body.clone(), false)).await;
        let choice = &answer["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);

        // Without tools, or once the tool has answered, it is plain text again.
        let without_tools =
            complete_json(request(Endpoint::ChatCompletions, chat_body(json!("weather?")), false)).await;
        assert_eq!(without_tools["choices"][0]["finish_reason"], "stop");
        let mut after_tool = body;
        let messages = after_tool["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
        let answer = complete_json(request(Endpoint::ChatCompletions, after_tool, false)).await;
        assert_eq!(answer["choices"][0]["message"]["content"], "Echo: What's the Weather in Paris?");
        // "weathered" is not the word "weather".
        assert!(!mentions_weather("weathered rocks"));
        assert!(mentions_weather("weather, please"));
    }

    #[tokio::test]
    async fn chat_stream_follows_openais_chunk_sequence() {
        let body = chat_body(json!("hello  big world"));
        let chunks = chunks(request(Endpoint::ChatCompletions, body, true)).await;
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
        let pieces: Vec<&str> =
            chunks[1..chunks.len() - 1].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
        assert_eq!(pieces, ["Echo:", " hello", "  big", " world"]);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["delta"], json!({}));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let id = &chunks[0]["id"];
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(&chunk["id"], id);
            assert!(chunk.get("usage").is_none(), "usage only when asked for");
        }
    }

    #[tokio::test]
    async fn chat_stream_with_include_usage_ends_with_a_usage_chunk() {
        let mut body = chat_body(json!("hi"));
        body["stream_options"] = json!({"include_usage": true});
        let chunks = chunks(request(Endpoint::ChatCompletions, body.clone(), true)).await;
        let (usage_chunk, rest) = chunks.split_last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        let prompt = veil_tokens::count_chat_prompt(&body["messages"], veil_tokens::Counter::Vocabulary);
        assert_eq!(usage_chunk["usage"]["prompt_tokens"], prompt);
        assert_eq!(usage_chunk["usage"]["completion_tokens"], veil_tokens::count("Echo: hi"));
        for chunk in rest {
            assert_eq!(chunk["usage"], Value::Null);
            assert!(chunk.as_object().unwrap().contains_key("usage"));
        }
        assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    }

    #[tokio::test]
    async fn tool_call_streams_arguments_in_pieces() {
        let mut body = chat_body(json!("weather"));
        body["tools"] = json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let chunks = chunks(request(Endpoint::ChatCompletions, body, true)).await;
        let opening = &chunks[0]["choices"][0]["delta"];
        assert_eq!(opening["role"], "assistant");
        assert_eq!(opening["tool_calls"][0]["function"]["name"], "get_weather");
        let arguments: String = chunks[1..]
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, r#"{"city":"Paris"}"#);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn completions_answer_and_stream() {
        let body = json!({"model": "echo-1", "prompt": "hello world"});
        let answer = complete_json(request(Endpoint::Completions, body.clone(), false)).await;
        assert_eq!(answer["object"], "text_completion");
        assert!(answer["id"].as_str().unwrap().starts_with("cmpl-echo-"));
        assert_eq!(answer["choices"][0]["text"], "Echo: hello world");
        assert_eq!(answer["usage"]["prompt_tokens"], 2);
        assert_eq!(answer["usage"]["completion_tokens"], veil_tokens::count("Echo: hello world"));

        let mut streamed = body;
        streamed["stream_options"] = json!({"include_usage": true});
        let chunks = chunks(request(Endpoint::Completions, streamed, true)).await;
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
        assert_eq!(text, "Echo: hello world");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 2);
        assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_unit_vectors() {
        let body = json!({"model": "embed-1", "input": ["hello world", "other", "hello world"]});
        let answer = complete_json(request(Endpoint::Embeddings, body.clone(), false)).await;
        assert_eq!(answer["object"], "list");
        assert_eq!(answer["model"], "embed-1");
        assert_eq!(answer["usage"], json!({"prompt_tokens": 2 + 1 + 2, "total_tokens": 5}));
        let data = answer["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        let vector = |i: usize| -> Vec<f64> {
            assert_eq!(data[i]["object"], "embedding");
            assert_eq!(data[i]["index"], i);
            data[i]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
        };
        assert_eq!(vector(0).len(), 16);
        assert_eq!(vector(0), vector(2));
        assert_ne!(vector(0), vector(1));
        let norm: f64 = vector(1).iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        // The same input gives the same vector on another call.
        let again = complete_json(request(Endpoint::Embeddings, body, false)).await;
        assert_eq!(again["data"][0]["embedding"], answer["data"][0]["embedding"]);
    }

    #[tokio::test]
    async fn embeddings_honour_dimensions_base64_and_token_input() {
        let body = json!({"model": "e", "input": "hello world", "dimensions": 3, "encoding_format": "base64"});
        let answer = complete_json(request(Endpoint::Embeddings, body, false)).await;
        let encoded = answer["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(bytes.len(), 3 * 4);
        let floats: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let plain = json!({"model": "e", "input": "hello world", "dimensions": 3});
        let plain = complete_json(request(Endpoint::Embeddings, plain, false)).await;
        let plain: Vec<f32> =
            plain["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(floats, plain);

        let tokens = json!({"model": "e", "input": [[1, 2, 3], [4]]});
        let answer = complete_json(request(Endpoint::Embeddings, tokens, false)).await;
        assert_eq!(answer["usage"]["prompt_tokens"], 4);
        assert_eq!(answer["data"].as_array().unwrap().len(), 2);
        let single = json!({"model": "e", "input": [1, 2, 3]});
        let answer = complete_json(request(Endpoint::Embeddings, single, false)).await;
        assert_eq!(answer["data"].as_array().unwrap().len(), 1);
        assert_eq!(answer["usage"]["prompt_tokens"], 3);
    }

    #[tokio::test]
    async fn bad_embedding_requests_get_a_400() {
        for body in [
            json!({"model": "e"}),
            json!({"model": "e", "input": []}),
            json!({"model": "e", "input": [{"x": 1}]}),
            json!({"model": "e", "input": "x", "dimensions": 0}),
            json!({"model": "e", "input": "x", "dimensions": 100_000}),
            json!({"model": "e", "input": "x", "encoding_format": "hex"}),
        ] {
            let error = EchoProvider::new().send(request(Endpoint::Embeddings, body, false)).await.err().unwrap();
            assert_eq!(error.upstream_status(), Some(400));
        }
    }

    #[test]
    fn word_pieces_join_back() {
        for text in ["", " ", "a", "Echo: hello world", "  lead and trail  ", "tabs\tand\nnew lines", "héllo wörld"] {
            assert_eq!(word_pieces(text).concat(), text);
        }
        assert_eq!(word_pieces("a b"), ["a", " b"]);
    }
}

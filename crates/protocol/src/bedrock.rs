//! Amazon Bedrock's Converse API (`POST /model/{modelId}/converse` and
//! `/converse-stream`), as an upstream type only: no client speaks it to Veil.
//!
//! - [`encode_request`] writes the Converse body. The model id goes in the URL, so the
//!   body has none; the stream flag is the choice of route, so the body has none either.
//! - [`parse_response`] reads a whole Converse answer.
//! - [`Decoder`] reads a `ConverseStream` answer. Bedrock frames it in AWS's binary
//!   event stream; the provider turns each message into a named [`SseEvent`] whose name
//!   is the `:event-type` header (`messageStart`, `contentBlockDelta`, …) or, for
//!   exceptions, the `:exception-type` header (`throttlingException`, …), and whose
//!   data is the message's JSON payload.
//!
//! Bedrock answers carry no id, model or creation time: the id is made from the time
//! (`bedrock-<unix seconds>`), the model is the one the call was sent to (given to
//! [`Decoder::for_model`], and filled in by `translate::upstream_response`), and the
//! client-side encoders use the current time. Bedrock's `inputTokens` excludes cached tokens, so canonical
//! `input_tokens` is `inputTokens + cacheReadInputTokens + cacheWriteInputTokens`.
//!
//! What Converse cannot take is dropped when encoding, never sent half-formed:
//! - images by URL (Bedrock fetches nothing; only inline bytes in png, jpeg, gif or
//!   webp are sent; other images are skipped);
//! - reasoning without a signature (the models verify the reasoning they are shown
//!   again, and unsigned text cannot pass), and reasoning in user turns;
//! - tool calls in user turns and tool results in assistant turns;
//! - `seed`, `user`, `parallel_tool_calls`, `response_format` and `reasoning_effort`,
//!   which Converse has no model-independent field for.
//!
//! `ToolChoice::None` has no Converse counterpart, so the tools are left out instead —
//! unless the conversation already holds tool calls or results, which Bedrock refuses
//! without a `toolConfig`; then the tools are sent with no `toolChoice` (the model
//! decides).

use crate::canonical::{
    ChatRequest, ChatResponse, ImageSource, Message, Part, Role, StopReason, StreamEvent, TokenUsage, ToolChoice,
};
use crate::sse::SseEvent;
use crate::{DecodeError, StreamDecoder};
use serde_json::{Map, Value, json};

/// The Converse request body for `request`.
pub fn encode_request(request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(encode_messages(&request.messages)));

    let system: Vec<Value> =
        request.system.iter().filter(|text| !text.is_empty()).map(|text| json!({ "text": text })).collect();
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }

    let mut inference = Map::new();
    if let Some(max_tokens) = request.max_output_tokens {
        inference.insert("maxTokens".into(), max_tokens.into());
    }
    if let Some(temperature) = request.temperature {
        inference.insert("temperature".into(), temperature.into());
    }
    if let Some(top_p) = request.top_p {
        inference.insert("topP".into(), top_p.into());
    }
    if !request.stop.is_empty() {
        inference.insert("stopSequences".into(), request.stop.clone().into());
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }

    if let Some(tool_config) = encode_tool_config(request) {
        body.insert("toolConfig".into(), tool_config);
    }

    // Converse has no common field for top-k; the models that support it (Anthropic's,
    // among others) read it from the model-specific fields.
    if let Some(top_k) = request.top_k {
        body.insert("additionalModelRequestFields".into(), json!({ "top_k": top_k }));
    }
    Value::Object(body)
}

/// Turns of alternating roles: consecutive messages of one role are merged (Bedrock
/// requires alternation), messages left empty are skipped, and in user turns tool
/// results come first (Bedrock requires them right after the assistant's tool calls).
fn encode_messages(messages: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for message in messages {
        let blocks: Vec<Value> = message.content.iter().filter_map(|part| encode_part(message.role, part)).collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, content)) if *role == message.role => content.extend(blocks),
            _ => turns.push((message.role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut content)| {
            let role = match role {
                Role::User => {
                    // Stable: the results keep their order, and so does the rest.
                    content.sort_by_key(|block| block.get("toolResult").is_none());
                    "user"
                }
                Role::Assistant => "assistant",
            };
            json!({ "role": role, "content": content })
        })
        .collect()
}

/// One content block, or `None` for a part Converse cannot carry in this role.
fn encode_part(role: Role, part: &Part) -> Option<Value> {
    match (role, part) {
        // Bedrock refuses blank text blocks.
        (_, Part::Text { text }) if text.is_empty() => None,
        (_, Part::Text { text }) => Some(json!({ "text": text })),
        (_, Part::Image { source }) => encode_image(source),
        (Role::Assistant, Part::ToolCall { id, name, arguments }) => {
            Some(json!({ "toolUse": { "toolUseId": id, "name": name, "input": arguments_object(arguments) } }))
        }
        (Role::User, Part::ToolResult { call_id, content, is_error }) => {
            let content: Vec<Value> = content
                .iter()
                .filter_map(|part| match part {
                    Part::Text { text } => Some(json!({ "text": text })),
                    Part::Image { source } => encode_image(source),
                    _ => None,
                })
                .collect();
            let mut result = json!({ "toolUseId": call_id, "content": content });
            // `status` is only understood by some models (Claude, Nova) and defaults to
            // success, so it is sent only when it says something.
            if *is_error {
                result["status"] = "error".into();
            }
            Some(json!({ "toolResult": result }))
        }
        (Role::Assistant, Part::Reasoning { text, signature: Some(signature) }) => {
            Some(json!({ "reasoningContent": { "reasoningText": { "text": text, "signature": signature } } }))
        }
        _ => None,
    }
}

/// An inline image block; `None` for URLs (Bedrock fetches nothing) and for formats
/// Converse does not take.
fn encode_image(source: &ImageSource) -> Option<Value> {
    let ImageSource::Base64 { media_type, data } = source else {
        return None;
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    };
    // Blobs travel base64-encoded in Bedrock's JSON protocol, as canonical data already is.
    Some(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

/// A tool call's arguments as the object Converse wants; text that is not a JSON object
/// becomes an empty one.
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(Map::new()),
    }
}

fn encode_tool_config(request: &ChatRequest) -> Option<Value> {
    if request.tools.is_empty() {
        return None;
    }
    let history_has_tool_blocks = request
        .messages
        .iter()
        .flat_map(|message| &message.content)
        .any(|part| matches!(part, Part::ToolCall { .. } | Part::ToolResult { .. }));
    let choice = match &request.tool_choice {
        Some(ToolChoice::None) if !history_has_tool_blocks => return None,
        Some(ToolChoice::None) | None => None,
        Some(ToolChoice::Auto) => Some(json!({ "auto": {} })),
        Some(ToolChoice::Required) => Some(json!({ "any": {} })),
        Some(ToolChoice::Named(name)) => Some(json!({ "tool": { "name": name } })),
    };
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            let mut spec = Map::new();
            spec.insert("name".into(), tool.name.clone().into());
            if let Some(description) = tool.description.as_deref().filter(|d| !d.is_empty()) {
                spec.insert("description".into(), description.into());
            }
            // Bedrock requires a schema object; a tool declared without parameters takes none.
            let schema = match &tool.parameters {
                Value::Object(_) => tool.parameters.clone(),
                _ => json!({ "type": "object", "properties": {} }),
            };
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            json!({ "toolSpec": spec })
        })
        .collect();
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Some(Value::Object(config))
}

/// A whole Converse answer in canonical form.
pub fn parse_response(body: &Value) -> Result<ChatResponse, DecodeError> {
    let body = body.as_object().ok_or(DecodeError::Malformed("the Bedrock answer is not a JSON object"))?;
    let message = body
        .get("output")
        .and_then(|output| output.get("message"))
        .ok_or(DecodeError::Malformed("the Bedrock answer has no output.message"))?;
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or(DecodeError::Malformed("the Bedrock answer's output.message.content is not an array"))?;
    let mut content = Vec::with_capacity(blocks.len());
    for block in blocks {
        if let Some(part) = parse_block(block)? {
            content.push(part);
        }
    }
    let stop_reason = match body.get("stopReason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(stop_reason(reason)),
        Some(_) => return Err(DecodeError::Malformed("the Bedrock answer's stopReason is not a string")),
    };
    let usage = match body.get("usage") {
        None | Some(Value::Null) => None,
        Some(usage) => Some(parse_usage(usage)?),
    };
    Ok(ChatResponse { id: synthetic_id(), model: String::new(), created: None, content, stop_reason, usage })
}

/// One answer content block; `None` for kinds the canonical model does not keep
/// (redacted reasoning, citations, documents, guardrail traces, …).
fn parse_block(block: &Value) -> Result<Option<Part>, DecodeError> {
    let block = block.as_object().ok_or(DecodeError::Malformed("a Bedrock content block is not an object"))?;
    if let Some(text) = block.get("text") {
        let text = text.as_str().ok_or(DecodeError::Malformed("a Bedrock text block is not a string"))?;
        return Ok(Some(Part::Text { text: text.to_owned() }));
    }
    if let Some(tool_use) = block.get("toolUse") {
        let id = string_field(tool_use, "toolUseId", "a Bedrock toolUse block has no toolUseId")?;
        let name = string_field(tool_use, "name", "a Bedrock toolUse block has no name")?;
        let arguments = match tool_use.get("input") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(input) => input.to_string(),
        };
        return Ok(Some(Part::ToolCall { id, name, arguments }));
    }
    if let Some(reasoning) = block.get("reasoningContent") {
        let Some(reasoning_text) = reasoning.get("reasoningText") else {
            return Ok(None);
        };
        let text = string_field(reasoning_text, "text", "a Bedrock reasoningText has no text")?;
        let signature = match reasoning_text.get("signature") {
            None | Some(Value::Null) => None,
            Some(Value::String(signature)) => Some(signature.clone()),
            Some(_) => return Err(DecodeError::Malformed("a Bedrock reasoning signature is not a string")),
        };
        return Ok(Some(Part::Reasoning { text, signature }));
    }
    Ok(None)
}

fn string_field(object: &Value, field: &str, missing: &'static str) -> Result<String, DecodeError> {
    object.get(field).and_then(Value::as_str).map(str::to_owned).ok_or(DecodeError::Malformed(missing))
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "tool_use" => StopReason::ToolUse,
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "guardrail_intervened" | "content_filtered" => StopReason::ContentFilter,
        // `end_turn`, and reasons newer than this code (`malformed_model_output`, …):
        // the turn is over either way.
        _ => StopReason::EndTurn,
    }
}

/// Bedrock's `usage` object. `inputTokens` excludes cache reads and writes.
fn parse_usage(usage: &Value) -> Result<TokenUsage, DecodeError> {
    let usage = usage.as_object().ok_or(DecodeError::Malformed("the Bedrock usage is not an object"))?;
    let count = |field: &str| match usage.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value.as_u64().ok_or(DecodeError::Malformed("a Bedrock token count is not a whole number")),
    };
    let cache_read = count("cacheReadInputTokens")?;
    let cache_write = count("cacheWriteInputTokens")?;
    Ok(TokenUsage {
        input_tokens: count("inputTokens")?.saturating_add(cache_read).saturating_add(cache_write),
        cached_tokens: cache_read,
        cache_write_tokens: cache_write,
        output_tokens: count("outputTokens")?,
        ..TokenUsage::default()
    })
}

/// Bedrock names neither its answers nor their model: an id is made from the time, and
/// the model is the one the call was sent to (filled in by [`crate::translate`]).
fn synthetic_id() -> String {
    format!("bedrock-{}", crate::unix_now())
}

/// Decodes `ConverseStream` events (see the module docs for their shape).
#[derive(Debug, Default)]
pub struct Decoder {
    /// The model the call was sent to; Bedrock's events do not name it.
    model: String,
    started: bool,
    /// Tool calls seen so far: the next one's canonical index.
    next_tool_index: u32,
    /// The content block streaming a tool call, and that call's canonical index.
    open_tool: Option<(u64, u32)>,
    stopped: bool,
    metadata_seen: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose answer is named after `model`.
    pub fn for_model(model: &str) -> Self {
        Self { model: model.to_owned(), ..Self::default() }
    }

    /// Emits `Start` once, before anything else, even if `messageStart` went missing.
    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: synthetic_id(), model: self.model.clone(), created: None });
        }
    }

    fn content_block_start(&mut self, payload: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        // Only tool calls announce their block; text and reasoning start with a delta.
        let Some(tool_use) = payload.get("start").and_then(|start| start.get("toolUse")) else {
            return Ok(());
        };
        let id = string_field(tool_use, "toolUseId", "a Bedrock contentBlockStart toolUse has no toolUseId")?;
        let name = string_field(tool_use, "name", "a Bedrock contentBlockStart toolUse has no name")?;
        let index = self.next_tool_index;
        self.next_tool_index = self.next_tool_index.saturating_add(1);
        self.open_tool = Some((block_index(payload)?.unwrap_or_default(), index));
        out.push(StreamEvent::ToolCallStart { index, id, name });
        Ok(())
    }

    fn content_block_delta(&mut self, payload: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let delta = payload
            .get("delta")
            .and_then(Value::as_object)
            .ok_or(DecodeError::Malformed("a Bedrock contentBlockDelta has no delta object"))?;
        if let Some(text) = delta.get("text") {
            let text = text.as_str().ok_or(DecodeError::Malformed("a Bedrock text delta is not a string"))?;
            if !text.is_empty() {
                out.push(StreamEvent::TextDelta { text: text.to_owned() });
            }
        } else if let Some(tool_use) = delta.get("toolUse") {
            let input = match tool_use.get("input") {
                None | Some(Value::Null) => "",
                Some(Value::String(input)) => input,
                Some(_) => return Err(DecodeError::Malformed("a Bedrock tool input delta is not a string")),
            };
            let block = block_index(payload)?;
            let index = match self.open_tool {
                Some((open_block, index)) if block.is_none_or(|block| block == open_block) => index,
                _ => return Err(DecodeError::Malformed("a Bedrock tool input delta is outside a tool call block")),
            };
            if !input.is_empty() {
                out.push(StreamEvent::ToolCallDelta { index, arguments: input.to_owned() });
            }
        } else if let Some(reasoning) = delta.get("reasoningContent") {
            // `redactedContent` (encrypted reasoning) has no canonical form and is skipped.
            match reasoning.get("text") {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) if text.is_empty() => {}
                Some(Value::String(text)) => out.push(StreamEvent::ReasoningDelta { text: text.clone() }),
                Some(_) => return Err(DecodeError::Malformed("a Bedrock reasoning delta is not a string")),
            }
            match reasoning.get("signature") {
                None | Some(Value::Null) => {}
                Some(Value::String(signature)) => {
                    out.push(StreamEvent::ReasoningSignature { signature: signature.clone() });
                }
                Some(_) => return Err(DecodeError::Malformed("a Bedrock reasoning signature is not a string")),
            }
        }
        Ok(())
    }
}

/// `contentBlockIndex`, when present.
fn block_index(payload: &Value) -> Result<Option<u64>, DecodeError> {
    match payload.get("contentBlockIndex") {
        None | Some(Value::Null) => Ok(None),
        Some(index) => {
            index.as_u64().map(Some).ok_or(DecodeError::Malformed("a Bedrock contentBlockIndex is not a whole number"))
        }
    }
}

/// Bedrock's mid-stream exceptions (`throttlingException`,
/// `modelStreamErrorException`, `validationException`, `internalServerException`,
/// `serviceUnavailableException`, …), and the event-stream `error` message.
fn is_exception(event_name: &str) -> bool {
    event_name.ends_with("Exception") || event_name == "error"
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let Some(name) = event.event.as_deref() else {
            return Err(DecodeError::Malformed("a Bedrock stream event has no event type"));
        };
        let payload: Value = if event.data.is_empty() && is_exception(name) {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(&event.data)
                .map_err(|_| DecodeError::Malformed("a Bedrock stream event is not JSON"))?
        };
        if !payload.is_object() {
            return Err(DecodeError::Malformed("a Bedrock stream event is not a JSON object"));
        }
        if is_exception(name) {
            // AWS names the field `message`, some services `Message`.
            let message = ["message", "Message"]
                .iter()
                .find_map(|field| payload.get(*field).and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned();
            let kind = payload.get("code").and_then(Value::as_str).unwrap_or(name).to_owned();
            return Err(DecodeError::Upstream { kind: Some(kind), message });
        }
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                self.start(out);
                self.content_block_start(&payload, out)?;
            }
            "contentBlockDelta" => {
                self.start(out);
                self.content_block_delta(&payload, out)?;
            }
            "contentBlockStop" => {
                let block = block_index(&payload)?;
                if let Some((open_block, _)) = self.open_tool
                    && block.is_none_or(|block| block == open_block)
                {
                    self.open_tool = None;
                }
            }
            "messageStop" => {
                let reason = match payload.get("stopReason") {
                    None | Some(Value::Null) => StopReason::EndTurn,
                    Some(Value::String(reason)) => stop_reason(reason),
                    Some(_) => return Err(DecodeError::Malformed("a Bedrock stopReason is not a string")),
                };
                self.start(out);
                self.stopped = true;
                out.push(StreamEvent::Finish { stop_reason: reason });
            }
            "metadata" => {
                self.metadata_seen = true;
                match payload.get("usage") {
                    None | Some(Value::Null) => {}
                    Some(usage) => out.push(StreamEvent::Usage { usage: parse_usage(usage)? }),
                }
            }
            // Event types newer than this code carry nothing the canonical model keeps.
            _ => {}
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.stopped && self.metadata_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Tool;
    use crate::sse::SseParser;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bedrock");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn json_fixture(name: &str) -> Value {
        serde_json::from_str(&fixture(name)).unwrap()
    }

    const CALL_ID: &str = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q";
    const PIXEL: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Get the current weather for a location.".into()),
            parameters: json!({
                "type": "object",
                "properties": {
                    "location": { "type": "string", "description": "City and country, e.g. Paris, France" },
                    "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] }
                },
                "required": ["location"]
            }),
        }
    }

    /// The canonical form of `request.json`.
    fn fixture_request() -> ChatRequest {
        ChatRequest {
            model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
            system: vec!["You are a helpful travel assistant. Answer briefly.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Text { text: "Where was this photo taken, and what is the weather there now?".into() },
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/png".into(), data: PIXEL.into() },
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Text {
                            text: "This is the Eiffel Tower in Paris. Let me check the weather there.".into(),
                        },
                        Part::ToolCall {
                            id: CALL_ID.into(),
                            name: "get_weather".into(),
                            arguments: r#"{"location": "Paris, France", "unit": "celsius"}"#.into(),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: CALL_ID.into(),
                        content: vec![Part::Text {
                            text: r#"{"temperature": 18, "conditions": "partly cloudy"}"#.into(),
                        }],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Auto),
            max_output_tokens: Some(1024),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(250),
            stop: vec!["\n\nHuman:".into()],
            stream: true,
            ..ChatRequest::default()
        }
    }

    #[test]
    fn encodes_the_fixture_request() {
        assert_eq!(encode_request(&fixture_request()), json_fixture("request.json"));
    }

    #[test]
    fn merges_turns_puts_tool_results_first_and_drops_what_converse_cannot_carry() {
        let request = ChatRequest {
            messages: vec![
                Message::text(Role::User, "first"),
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Text { text: String::new() },
                        Part::Image { source: ImageSource::Url { url: "https://example.com/cat.png".into() } },
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/bmp".into(), data: "Qk0=".into() },
                        },
                        Part::Reasoning { text: "user reasoning".into(), signature: Some("sig".into()) },
                        Part::ToolCall { id: "x".into(), name: "y".into(), arguments: "{}".into() },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "unsigned".into(), signature: None },
                        Part::Reasoning { text: "signed".into(), signature: Some("c2ln".into()) },
                        Part::ToolCall { id: "a".into(), name: "f".into(), arguments: "not json".into() },
                        Part::ToolCall { id: "b".into(), name: "f".into(), arguments: "[1]".into() },
                        Part::ToolResult { call_id: "z".into(), content: vec![], is_error: false },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Text { text: "and also".into() },
                        Part::ToolResult {
                            call_id: "a".into(),
                            content: vec![
                                Part::Text { text: "boom".into() },
                                Part::Image {
                                    source: ImageSource::Base64 {
                                        media_type: "image/JPEG".into(),
                                        data: "/9j/".into(),
                                    },
                                },
                            ],
                            is_error: true,
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult { call_id: "b".into(), content: vec![], is_error: false }],
                },
                // Left empty by the rules above: skipped, so the user turns still merge.
                Message { role: Role::Assistant, content: vec![Part::Text { text: String::new() }] },
                Message::text(Role::User, "last"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(
            encode_request(&request),
            json!({
                "messages": [
                    { "role": "user", "content": [{ "text": "first" }] },
                    { "role": "assistant", "content": [
                        { "reasoningContent": { "reasoningText": { "text": "signed", "signature": "c2ln" } } },
                        { "toolUse": { "toolUseId": "a", "name": "f", "input": {} } },
                        { "toolUse": { "toolUseId": "b", "name": "f", "input": {} } }
                    ] },
                    { "role": "user", "content": [
                        { "toolResult": { "toolUseId": "a", "status": "error", "content": [
                            { "text": "boom" },
                            { "image": { "format": "jpeg", "source": { "bytes": "/9j/" } } }
                        ] } },
                        { "toolResult": { "toolUseId": "b", "content": [] } },
                        { "text": "and also" },
                        { "text": "last" }
                    ] }
                ]
            })
        );
    }

    #[test]
    fn tool_choices() {
        let with_choice = |choice: Option<ToolChoice>, history: Vec<Message>| {
            let request = ChatRequest {
                messages: history,
                tools: vec![Tool { name: "f".into(), description: Some(String::new()), parameters: Value::Null }],
                tool_choice: choice,
                ..ChatRequest::default()
            };
            encode_request(&request).get("toolConfig").cloned()
        };
        let spec =
            json!([{ "toolSpec": { "name": "f", "inputSchema": { "json": { "type": "object", "properties": {} } } } }]);
        let plain = vec![Message::text(Role::User, "hi")];
        assert_eq!(with_choice(None, plain.clone()), Some(json!({ "tools": spec })));
        assert_eq!(
            with_choice(Some(ToolChoice::Auto), plain.clone()),
            Some(json!({ "tools": spec, "toolChoice": { "auto": {} } }))
        );
        assert_eq!(
            with_choice(Some(ToolChoice::Required), plain.clone()),
            Some(json!({ "tools": spec, "toolChoice": { "any": {} } }))
        );
        assert_eq!(
            with_choice(Some(ToolChoice::Named("f".into())), plain.clone()),
            Some(json!({ "tools": spec, "toolChoice": { "tool": { "name": "f" } } }))
        );
        assert_eq!(with_choice(Some(ToolChoice::None), plain), None);
        // Bedrock refuses tool blocks without a toolConfig: keep the tools, drop the choice.
        let with_tool_history = vec![
            Message::text(Role::User, "hi"),
            Message {
                role: Role::Assistant,
                content: vec![Part::ToolCall { id: "t".into(), name: "f".into(), arguments: "{}".into() }],
            },
        ];
        assert_eq!(with_choice(Some(ToolChoice::None), with_tool_history), Some(json!({ "tools": spec })));
        // No tools, no toolConfig, whatever the choice.
        let request = ChatRequest { tool_choice: Some(ToolChoice::Required), ..ChatRequest::default() };
        assert_eq!(encode_request(&request), json!({ "messages": [] }));
    }

    #[test]
    fn parses_the_text_response_fixture() {
        let mut response = parse_response(&json_fixture("response_text.json")).unwrap();
        assert!(response.id.starts_with("bedrock-"), "{}", response.id);
        response.id = String::new();
        assert_eq!(
            response,
            ChatResponse {
                id: String::new(),
                model: String::new(),
                created: None,
                content: vec![Part::Text {
                    text: "Paris is partly cloudy at 18 °C right now — a light jacket will do.".into()
                }],
                stop_reason: Some(StopReason::EndTurn),
                usage: Some(TokenUsage { input_tokens: 412, output_tokens: 21, ..TokenUsage::default() }),
            }
        );
    }

    #[test]
    fn parses_the_tool_response_fixture_with_cache_usage() {
        let response = parse_response(&json_fixture("response_tool.json")).unwrap();
        assert_eq!(
            response.content,
            vec![
                Part::Text { text: "Let me check the current weather in Paris.".into() },
                Part::ToolCall {
                    id: CALL_ID.into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.into(),
                },
            ]
        );
        assert_eq!(response.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(
            response.usage,
            Some(TokenUsage {
                input_tokens: 36 + 1536 + 512,
                cached_tokens: 1536,
                cache_write_tokens: 512,
                output_tokens: 68,
                ..TokenUsage::default()
            })
        );
    }

    #[test]
    fn parses_reasoning_and_skips_unknown_blocks() {
        let body = json!({
            "output": { "message": { "role": "assistant", "content": [
                { "reasoningContent": { "reasoningText": { "text": "Think.", "signature": "EqQB" } } },
                { "reasoningContent": { "redactedContent": "ZW5jcnlwdGVk" } },
                { "citationsContent": { "content": [{ "text": "x" }] } },
                { "text": "Done." }
            ] } },
            "stopReason": "guardrail_intervened"
        });
        let response = parse_response(&body).unwrap();
        assert_eq!(
            response.content,
            vec![
                Part::Reasoning { text: "Think.".into(), signature: Some("EqQB".into()) },
                Part::Text { text: "Done.".into() }
            ]
        );
        assert_eq!(response.stop_reason, Some(StopReason::ContentFilter));
        assert_eq!(response.usage, None);
    }

    #[test]
    fn maps_every_stop_reason() {
        for (wire, expected) in [
            ("end_turn", StopReason::EndTurn),
            ("tool_use", StopReason::ToolUse),
            ("max_tokens", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("guardrail_intervened", StopReason::ContentFilter),
            ("content_filtered", StopReason::ContentFilter),
            ("model_context_window_exceeded", StopReason::MaxTokens),
            ("something_new", StopReason::EndTurn),
        ] {
            assert_eq!(stop_reason(wire), expected, "{wire}");
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        for (body, expected) in [
            (json!([]), "the Bedrock answer is not a JSON object"),
            (json!({ "stopReason": "end_turn" }), "the Bedrock answer has no output.message"),
            (
                json!({ "output": { "message": { "content": "hi" } } }),
                "the Bedrock answer's output.message.content is not an array",
            ),
            (
                json!({ "output": { "message": { "content": [{ "text": 1 }] } } }),
                "a Bedrock text block is not a string",
            ),
            (
                json!({ "output": { "message": { "content": [{ "toolUse": { "name": "f" } }] } } }),
                "a Bedrock toolUse block has no toolUseId",
            ),
            (
                json!({ "output": { "message": { "content": [] } }, "stopReason": 3 }),
                "the Bedrock answer's stopReason is not a string",
            ),
            (
                json!({ "output": { "message": { "content": [] } }, "usage": { "inputTokens": "3" } }),
                "a Bedrock token count is not a whole number",
            ),
        ] {
            assert_eq!(parse_response(&body), Err(DecodeError::Malformed(expected)), "{body}");
        }
    }

    fn decode_fixture(name: &str) -> (Vec<StreamEvent>, bool) {
        let events = SseParser::new().push(fixture(name).as_bytes()).unwrap();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for event in &events {
            assert!(!decoder.is_complete());
            decoder.decode(event, &mut out).unwrap();
        }
        (blank_ids(out), decoder.is_complete())
    }

    fn start() -> StreamEvent {
        StreamEvent::Start { id: String::new(), model: String::new(), created: None }
    }

    /// The made-up ids, checked and blanked so the rest compares exactly.
    fn blank_ids(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        events
            .into_iter()
            .map(|event| match event {
                StreamEvent::Start { id, model, created } => {
                    assert!(id.starts_with("bedrock-"), "{id}");
                    StreamEvent::Start { id: String::new(), model, created }
                }
                other => other,
            })
            .collect()
    }

    #[test]
    fn decodes_the_text_stream_fixture() {
        let (events, complete) = decode_fixture("stream_text.sse");
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::TextDelta { text: "Paris is partly cloudy".into() },
                StreamEvent::TextDelta { text: " at 18 °C right now — a light jacket will do.".into() },
                StreamEvent::Finish { stop_reason: StopReason::EndTurn },
                StreamEvent::Usage {
                    usage: TokenUsage { input_tokens: 412, output_tokens: 21, ..TokenUsage::default() }
                },
            ]
        );
        assert!(complete);
    }

    #[test]
    fn decodes_the_tool_stream_fixture() {
        let (events, complete) = decode_fixture("stream_tool.sse");
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::TextDelta { text: "Let me check the current".into() },
                StreamEvent::TextDelta { text: " weather in Paris.".into() },
                StreamEvent::ToolCallStart { index: 0, id: CALL_ID.into(), name: "get_weather".into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: r#"{"location": "Par"#.into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: r#"is, France", "unit": "celsius"}"#.into() },
                StreamEvent::Finish { stop_reason: StopReason::ToolUse },
                StreamEvent::Usage {
                    usage: TokenUsage {
                        input_tokens: 36 + 1536 + 512,
                        cached_tokens: 1536,
                        cache_write_tokens: 512,
                        output_tokens: 68,
                        ..TokenUsage::default()
                    }
                },
            ]
        );
        assert!(complete);
    }

    fn decode(events: &[(&str, &str)]) -> Result<Vec<StreamEvent>, DecodeError> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for (name, data) in events {
            decoder.decode(&SseEvent::named(*name, *data), &mut out)?;
        }
        Ok(blank_ids(out))
    }

    #[test]
    fn decodes_reasoning_and_a_second_tool_call() {
        let events = decode(&[
            ("messageStart", r#"{"role":"assistant"}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"Hmm."}}}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"EqQB"}}}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"redactedContent":"eA=="}}}"#),
            ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            ("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t1","name":"a"}}}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{}"}}}"#),
            ("contentBlockStop", r#"{"contentBlockIndex":1}"#),
            ("contentBlockStart", r#"{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"t2","name":"b"}}}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"x\":1}"}}}"#),
            ("contentBlockStop", r#"{"contentBlockIndex":2}"#),
            ("someFutureEvent", r#"{"anything":true}"#),
            ("messageStop", r#"{"stopReason":"tool_use"}"#),
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::ReasoningDelta { text: "Hmm.".into() },
                StreamEvent::ReasoningSignature { signature: "EqQB".into() },
                StreamEvent::ToolCallStart { index: 0, id: "t1".into(), name: "a".into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: "{}".into() },
                StreamEvent::ToolCallStart { index: 1, id: "t2".into(), name: "b".into() },
                StreamEvent::ToolCallDelta { index: 1, arguments: r#"{"x":1}"#.into() },
                StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            ]
        );
    }

    #[test]
    fn completes_only_after_message_stop_and_metadata() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.decode(&SseEvent::named("messageStart", r#"{"role":"assistant"}"#), &mut out).unwrap();
        decoder.decode(&SseEvent::named("messageStop", r#"{"stopReason":"max_tokens"}"#), &mut out).unwrap();
        assert!(!decoder.is_complete());
        decoder.decode(&SseEvent::named("metadata", r#"{"metrics":{"latencyMs":5}}"#), &mut out).unwrap();
        assert!(decoder.is_complete());
        assert_eq!(blank_ids(out), vec![start(), StreamEvent::Finish { stop_reason: StopReason::MaxTokens }]);
    }

    #[test]
    fn exceptions_become_upstream_errors() {
        for name in [
            "throttlingException",
            "modelStreamErrorException",
            "validationException",
            "internalServerException",
            "serviceUnavailableException",
        ] {
            assert_eq!(
                decode(&[(name, r#"{"message":"Too many requests, please wait before trying again."}"#)]),
                Err(DecodeError::Upstream {
                    kind: Some(name.into()),
                    message: "Too many requests, please wait before trying again.".into()
                })
            );
        }
        assert_eq!(
            decode(&[("messageStart", "{}"), ("internalServerException", r#"{"Message":"oops"}"#)]),
            Err(DecodeError::Upstream { kind: Some("internalServerException".into()), message: "oops".into() })
        );
        assert_eq!(
            decode(&[("error", r#"{"code":"InternalFailure","message":"failed"}"#)]),
            Err(DecodeError::Upstream { kind: Some("InternalFailure".into()), message: "failed".into() })
        );
        assert_eq!(
            decode(&[("validationException", "")]),
            Err(DecodeError::Upstream { kind: Some("validationException".into()), message: String::new() })
        );
    }

    #[test]
    fn malformed_stream_events_are_errors() {
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.decode(&SseEvent::data("{}"), &mut Vec::new()),
            Err(DecodeError::Malformed("a Bedrock stream event has no event type"))
        );
        for (events, expected) in [
            (vec![("messageStart", "not json")], "a Bedrock stream event is not JSON"),
            (vec![("messageStart", "[]")], "a Bedrock stream event is not a JSON object"),
            (
                vec![("contentBlockDelta", r#"{"contentBlockIndex":0}"#)],
                "a Bedrock contentBlockDelta has no delta object",
            ),
            (vec![("contentBlockDelta", r#"{"delta":{"text":5}}"#)], "a Bedrock text delta is not a string"),
            (
                vec![("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{"}}}"#)],
                "a Bedrock tool input delta is outside a tool call block",
            ),
            (
                vec![
                    (
                        "contentBlockStart",
                        r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"f"}}}"#,
                    ),
                    ("contentBlockDelta", r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{"}}}"#),
                ],
                "a Bedrock tool input delta is outside a tool call block",
            ),
            (
                vec![("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"name":"f"}}}"#)],
                "a Bedrock contentBlockStart toolUse has no toolUseId",
            ),
            (
                vec![("contentBlockStop", r#"{"contentBlockIndex":"0"}"#)],
                "a Bedrock contentBlockIndex is not a whole number",
            ),
            (vec![("messageStop", r#"{"stopReason":1}"#)], "a Bedrock stopReason is not a string"),
            (vec![("metadata", r#"{"usage":{"outputTokens":-1}}"#)], "a Bedrock token count is not a whole number"),
        ] {
            assert_eq!(decode(&events), Err(DecodeError::Malformed(expected)), "{events:?}");
        }
    }
}

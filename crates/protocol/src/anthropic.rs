//! Anthropic Messages (`POST /v1/messages`): the format Claude Code and the Anthropic SDKs
//! speak to Veil, and the body Veil sends to an Anthropic upstream.
//!
//! What this module promises:
//! - requests are checked as strictly as Anthropic checks them where a mistake would change
//!   the meaning (`model` and `max_tokens` are required, roles and block types are closed
//!   sets), and every refusal names the offending field;
//! - bodies sent upstream are ones the Messages API accepts: roles alternate (consecutive
//!   turns of one role are merged), `tool_result` blocks come first in their user turn,
//!   empty text blocks and empty turns are left out, tool ids are limited to the characters
//!   Anthropic allows, and extended thinking is only asked for when the request can carry it;
//! - usage is exact for billing: Anthropic's `input_tokens` excludes cache reads and cache
//!   writes, the canonical count includes both, and the conversion goes both ways;
//! - streams are translated event by event; the encoder writes the sequence the official
//!   SDKs accumulate (`message_start`, then `content_block_start`/`_delta`/`_stop` with
//!   indexes `0..` in order, then one `message_delta` and one `message_stop`).
//!
//! Lossy or unsupported, deliberately:
//! - `cache_control` markers, `service_tier`, `container`, `inference_geo`, citations and
//!   `redacted_thinking` blocks are dropped when parsing;
//! - `document` blocks, Files API image sources and server tools (`web_search_…` and the
//!   like) are refused with a clear error: no other upstream could honour them;
//! - extended thinking maps to OpenAI's reasoning effort by budget (≤ 2048 tokens `low`,
//!   ≤ 8192 `medium`, above `high`; adaptive thinking takes `output_config.effort`, default
//!   `high`), and back to budgets (`minimal`/`low` 1024, `medium` 4096, `high`/`xhigh` 16384);
//! - `output_config.format` is read as a JSON schema response format, but a response format
//!   is not sent to an Anthropic upstream (older models reject `output_config`);
//! - upstream, `max_tokens` is the client's limit, else [`DEFAULT_MAX_TOKENS`] (plus the
//!   thinking budget when reasoning was asked for); thinking is left out when it does not
//!   fit under the client's limit, when a tool is forced, or when the turn being continued
//!   is a tool call without a signed thinking block; with thinking on, `temperature` and
//!   `top_k` are not sent and `top_p` only from 0.95; without it, `top_p` is not sent
//!   next to `temperature` (current models refuse both). Unsigned reasoning is not sent;
//! - `seed` has no Anthropic counterpart and is not sent; `stop_sequence` in answers is
//!   always `null` because the canonical model does not keep which sequence matched;
//! - tool `input` objects become argument text with their keys in sorted order.

use crate::canonical::{
    ChatRequest, ChatResponse, ErrorInfo, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    TokenUsage, Tool, ToolChoice,
};
use crate::errors::anthropic_type;
use crate::sse::SseEvent;
use crate::{DecodeError, ProtocolError, StreamDecoder, StreamEncoder};
use serde_json::{Map, Value, json};

/// `max_tokens` sent upstream when the client set no limit (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The reasoning effort a thinking budget amounts to (see the module docs).
pub fn effort_for_budget(budget_tokens: u64) -> &'static str {
    match budget_tokens {
        0..=2048 => "low",
        2049..=8192 => "medium",
        _ => "high",
    }
}

/// The thinking budget for a reasoning effort; `None` for `none` and unknown efforts.
pub fn budget_for_effort(effort: &str) -> Option<u64> {
    match effort {
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" | "xhigh" => Some(16384),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A JSON object being read, with the path that names it in error messages.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// `""` for the body itself, else e.g. `messages[2].content[0]`.
    path: String,
    /// The top-level field errors are reported against; `None` for the body itself, whose
    /// fields are their own `param`.
    param: Option<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: String, param: &'static str) -> Result<Self, ProtocolError> {
        match value {
            Value::Object(map) => Ok(Self { map, path, param: Some(param) }),
            _ => Err(ProtocolError::at(param, format!("`{path}` must be an object"))),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn error(&self, key: &'static str, message: String) -> ProtocolError {
        ProtocolError::at(self.param.unwrap_or(key), message)
    }

    fn wrong(&self, key: &'static str, what: &str) -> ProtocolError {
        self.error(key, format!("`{}` must be {what}", self.name(key)))
    }

    fn missing(&self, key: &'static str) -> ProtocolError {
        self.error(key, format!("`{}` is required", self.name(key)))
    }

    /// The field's value; an explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn opt_str(&self, key: &'static str) -> Result<Option<&'a str>, ProtocolError> {
        self.get(key).map(|value| value.as_str().ok_or_else(|| self.wrong(key, "a string"))).transpose()
    }

    fn str(&self, key: &'static str) -> Result<&'a str, ProtocolError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_u64(&self, key: &'static str) -> Result<Option<u64>, ProtocolError> {
        self.get(key).map(|value| value.as_u64().ok_or_else(|| self.wrong(key, "a non-negative integer"))).transpose()
    }

    fn opt_f64(&self, key: &'static str) -> Result<Option<f64>, ProtocolError> {
        self.get(key).map(|value| value.as_f64().ok_or_else(|| self.wrong(key, "a number"))).transpose()
    }

    fn opt_bool(&self, key: &'static str) -> Result<Option<bool>, ProtocolError> {
        self.get(key).map(|value| value.as_bool().ok_or_else(|| self.wrong(key, "a boolean"))).transpose()
    }

    fn opt_array(&self, key: &'static str) -> Result<Option<&'a Vec<Value>>, ProtocolError> {
        self.get(key).map(|value| value.as_array().ok_or_else(|| self.wrong(key, "an array"))).transpose()
    }

    fn opt_object(&self, key: &'static str) -> Result<Option<Fields<'a>>, ProtocolError> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let map = value.as_object().ok_or_else(|| self.wrong(key, "an object"))?;
        Ok(Some(Fields { map, path: self.name(key), param: Some(self.param.unwrap_or(key)) }))
    }
}

/// Parses a Messages API request body.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ProtocolError> {
    let map = body.as_object().ok_or_else(|| ProtocolError::new("the request body must be a JSON object"))?;
    let body = Fields { map, path: String::new(), param: None };

    let model = body.str("model")?;
    if model.is_empty() {
        return Err(body.missing("model"));
    }
    let max_tokens = body.opt_u64("max_tokens")?.ok_or_else(|| body.missing("max_tokens"))?;

    let messages = body.opt_array("messages")?.ok_or_else(|| body.missing("messages"))?;
    if messages.is_empty() {
        return Err(ProtocolError::at("messages", "`messages` must hold at least one message"));
    }
    let messages =
        messages.iter().enumerate().map(|(at, message)| parse_message(message, at)).collect::<Result<_, _>>()?;

    let tools = match body.opt_array("tools")? {
        Some(tools) => tools.iter().enumerate().map(|(at, tool)| parse_tool(tool, at)).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    let (tool_choice, parallel_tool_calls) = match body.opt_object("tool_choice")? {
        Some(choice) => parse_tool_choice(&choice)?,
        None => (None, None),
    };

    let stop = match body.opt_array("stop_sequences")? {
        Some(sequences) => sequences
            .iter()
            .map(|sequence| {
                sequence.as_str().map(str::to_owned).ok_or_else(|| body.wrong("stop_sequences", "an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    let user = match body.opt_object("metadata")? {
        Some(metadata) => metadata.opt_str("user_id")?.map(str::to_owned),
        None => None,
    };

    let output_config = body.opt_object("output_config")?;
    let reasoning_effort = parse_thinking(&body, output_config.as_ref())?;
    let response_format = match &output_config {
        Some(config) => parse_output_format(config)?,
        None => None,
    };

    Ok(ChatRequest {
        model: model.to_owned(),
        system: parse_system(&body)?,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        max_output_tokens: Some(max_tokens),
        temperature: body.opt_f64("temperature")?,
        top_p: body.opt_f64("top_p")?,
        top_k: body.opt_u64("top_k")?,
        stop,
        seed: None,
        response_format,
        reasoning_effort,
        stream: body.opt_bool("stream")?.unwrap_or(false),
        user,
    })
}

/// `system` as a string or an array of text blocks, one canonical entry per block.
fn parse_system(body: &Fields<'_>) -> Result<Vec<String>, ProtocolError> {
    match body.get("system") {
        None => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(at, block)| {
                let block = Fields::new(block, format!("system[{at}]"), "system")?;
                match block.str("type")? {
                    "text" => Ok(block.str("text")?.to_owned()),
                    other => {
                        Err(ProtocolError::at("system", format!("`system[{at}].type` must be `text`, not `{other}`")))
                    }
                }
            })
            .collect(),
        Some(_) => Err(body.wrong("system", "a string or an array of text blocks")),
    }
}

fn parse_message(value: &Value, at: usize) -> Result<Message, ProtocolError> {
    let message = Fields::new(value, format!("messages[{at}]"), "messages")?;
    let role = match message.str("role")? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(ProtocolError::at(
                "messages",
                format!("`messages[{at}].role` must be `user` or `assistant`, not `{other}`"),
            ));
        }
    };
    let content = message.get("content").ok_or_else(|| message.missing("content"))?;
    Ok(Message { role, content: parse_content(content, &message.name("content"))? })
}

/// Message content: a string (one text block) or an array of blocks.
fn parse_content(value: &Value, path: &str) -> Result<Vec<Part>, ProtocolError> {
    match value {
        Value::String(text) => Ok(vec![Part::Text { text: text.clone() }]),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (at, block) in blocks.iter().enumerate() {
                if let Some(part) = parse_block(block, format!("{path}[{at}]"))? {
                    parts.push(part);
                }
            }
            Ok(parts)
        }
        _ => Err(ProtocolError::at("messages", format!("`{path}` must be a string or an array of content blocks"))),
    }
}

/// One content block; `None` for blocks that are dropped (`redacted_thinking`).
fn parse_block(value: &Value, path: String) -> Result<Option<Part>, ProtocolError> {
    let block = Fields::new(value, path, "messages")?;
    let part = match block.str("type")? {
        "text" => Part::Text { text: block.str("text")?.to_owned() },
        "image" => Part::Image { source: parse_image_source(&block)? },
        "tool_use" => {
            let arguments = match block.get("input") {
                None => "{}".to_owned(),
                Some(input @ Value::Object(_)) => input.to_string(),
                Some(_) => return Err(block.wrong("input", "an object")),
            };
            Part::ToolCall { id: block.str("id")?.to_owned(), name: block.str("name")?.to_owned(), arguments }
        }
        "tool_result" => {
            let content = match block.get("content") {
                None => Vec::new(),
                Some(Value::String(text)) if text.is_empty() => Vec::new(),
                Some(content) => {
                    let parts = parse_content(content, &block.name("content"))?;
                    if let Some(at) =
                        parts.iter().position(|part| !matches!(part, Part::Text { .. } | Part::Image { .. }))
                    {
                        return Err(ProtocolError::at(
                            "messages",
                            format!(
                                "`{}[{at}]`: a tool result may hold only text and image blocks",
                                block.name("content")
                            ),
                        ));
                    }
                    parts
                }
            };
            Part::ToolResult {
                call_id: block.str("tool_use_id")?.to_owned(),
                content,
                is_error: block.opt_bool("is_error")?.unwrap_or(false),
            }
        }
        "thinking" => Part::Reasoning {
            text: block.str("thinking")?.to_owned(),
            signature: block.opt_str("signature")?.filter(|signature| !signature.is_empty()).map(str::to_owned),
        },
        // Encrypted reasoning only Anthropic can read; no other upstream could use it.
        "redacted_thinking" => return Ok(None),
        "document" => {
            return Err(ProtocolError::at(
                "messages",
                format!(
                    "`{}`: document blocks (PDF and text documents) are not supported; send the text as a text block",
                    block.path
                ),
            ));
        }
        other => {
            return Err(ProtocolError::at(
                "messages",
                format!("`{}`: content blocks of type `{other}` are not supported", block.path),
            ));
        }
    };
    Ok(Some(part))
}

fn parse_image_source(block: &Fields<'_>) -> Result<ImageSource, ProtocolError> {
    let source = block.opt_object("source")?.ok_or_else(|| block.missing("source"))?;
    match source.str("type")? {
        "base64" => Ok(ImageSource::Base64 {
            media_type: source.str("media_type")?.to_owned(),
            data: source.str("data")?.to_owned(),
        }),
        "url" => Ok(ImageSource::Url { url: source.str("url")?.to_owned() }),
        other => Err(ProtocolError::at(
            "messages",
            format!(
                "`{}.type`: image sources of type `{other}` are not supported (use `base64` or `url`)",
                source.path
            ),
        )),
    }
}

fn parse_tool(value: &Value, at: usize) -> Result<Tool, ProtocolError> {
    let tool = Fields::new(value, format!("tools[{at}]"), "tools")?;
    // Client tools have no `type` or `custom`; anything else is a server tool Anthropic
    // runs itself (web search, code execution, …), which no other upstream can.
    if let Some(kind) = tool.opt_str("type")?
        && kind != "custom"
    {
        return Err(ProtocolError::at(
            "tools",
            format!("`tools[{at}]`: server tools (type `{kind}`) are not supported; only tools with an `input_schema`"),
        ));
    }
    let parameters = tool.opt_object("input_schema")?.ok_or_else(|| tool.missing("input_schema"))?;
    Ok(Tool {
        name: tool.str("name")?.to_owned(),
        description: tool.opt_str("description")?.map(str::to_owned),
        parameters: Value::Object(parameters.map.clone()),
    })
}

fn parse_tool_choice(choice: &Fields<'_>) -> Result<(Option<ToolChoice>, Option<bool>), ProtocolError> {
    let tool_choice = match choice.str("type")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Named(choice.str("name")?.to_owned()),
        other => {
            return Err(ProtocolError::at(
                "tool_choice",
                format!("`tool_choice.type` must be `auto`, `any`, `tool` or `none`, not `{other}`"),
            ));
        }
    };
    // `false` is Anthropic's default, which the canonical model spells `None`.
    let parallel = choice.opt_bool("disable_parallel_tool_use")?.filter(|disabled| *disabled).map(|_| false);
    Ok((Some(tool_choice), parallel))
}

/// The reasoning effort `thinking` (and, for adaptive thinking, `output_config.effort`) asks for.
fn parse_thinking(body: &Fields<'_>, output_config: Option<&Fields<'_>>) -> Result<Option<String>, ProtocolError> {
    let Some(thinking) = body.opt_object("thinking")? else { return Ok(None) };
    match thinking.str("type")? {
        "enabled" => {
            let budget = thinking.opt_u64("budget_tokens")?.ok_or_else(|| thinking.missing("budget_tokens"))?;
            Ok(Some(effort_for_budget(budget).to_owned()))
        }
        "disabled" => Ok(None),
        "adaptive" => {
            let effort = match output_config {
                Some(config) => config.opt_str("effort")?,
                None => None,
            };
            // Anthropic's default effort is `high`; `max` is beyond OpenAI's scale.
            let effort = match effort {
                None | Some("high") => "high",
                Some(effort @ ("low" | "medium" | "xhigh")) => effort,
                Some("max") => "xhigh",
                Some(other) => {
                    return Err(ProtocolError::at(
                        "output_config",
                        format!(
                            "`output_config.effort` must be `low`, `medium`, `high`, `xhigh` or `max`, not `{other}`"
                        ),
                    ));
                }
            };
            Ok(Some(effort.to_owned()))
        }
        other => Err(ProtocolError::at(
            "thinking",
            format!("`thinking.type` must be `enabled`, `disabled` or `adaptive`, not `{other}`"),
        )),
    }
}

/// `output_config.format` (structured outputs) as a canonical response format.
fn parse_output_format(config: &Fields<'_>) -> Result<Option<ResponseFormat>, ProtocolError> {
    let Some(format) = config.opt_object("format")? else { return Ok(None) };
    match format.str("type")? {
        "json_schema" => {
            let schema = format.opt_object("schema")?.ok_or_else(|| format.missing("schema"))?;
            // Anthropic's structured outputs are unnamed and always enforced.
            Ok(Some(ResponseFormat::JsonSchema {
                name: "output".to_owned(),
                schema: Value::Object(schema.map.clone()),
                strict: Some(true),
            }))
        }
        other => Err(ProtocolError::at(
            "output_config",
            format!("`output_config.format.type` must be `json_schema`, not `{other}`"),
        )),
    }
}

/// A canonical request as a Messages API body for an Anthropic upstream.
pub fn encode_request(request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());

    let budget =
        request.reasoning_effort.as_deref().and_then(budget_for_effort).filter(|_| thinking_is_allowed(request));
    // Without a client limit there is room for the whole budget plus an answer; with one,
    // the client's limit stands and thinking is only asked for when it fits under it.
    let max_tokens = match (request.max_output_tokens, budget) {
        (Some(limit), _) => limit,
        (None, Some(budget)) => budget + DEFAULT_MAX_TOKENS,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    let thinking_budget = budget.filter(|budget| max_tokens > *budget);
    body.insert("max_tokens".into(), max_tokens.into());

    match request.system.as_slice() {
        [] => {}
        [only] => {
            body.insert("system".into(), only.clone().into());
        }
        several => {
            let blocks = several.iter().map(|text| json!({"type": "text", "text": text})).collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }

    body.insert("messages".into(), Value::Array(encode_messages(&request.messages)));

    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(encode_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = encode_tool_choice(request.tool_choice.as_ref(), request.parallel_tool_calls) {
            body.insert("tool_choice".into(), choice);
        }
    }

    if let Some(budget) = thinking_budget {
        body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
        // Anthropic rejects sampling changes alongside thinking, except top_p in [0.95, 1].
        if let Some(top_p) = request.top_p.filter(|top_p| *top_p >= 0.95) {
            body.insert("top_p".into(), top_p.into());
        }
    } else {
        if let Some(temperature) = request.temperature {
            body.insert("temperature".into(), temperature.into());
        }
        // Current Claude models refuse temperature and top_p together; temperature wins.
        if let Some(top_p) = request.top_p.filter(|_| request.temperature.is_none()) {
            body.insert("top_p".into(), top_p.into());
        }
        if let Some(top_k) = request.top_k {
            body.insert("top_k".into(), top_k.into());
        }
    }

    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), request.stop.clone().into());
    }
    if request.stream {
        body.insert("stream".into(), true.into());
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Value::Object(body)
}

/// Whether Anthropic would accept extended thinking for this request: not with a forced
/// tool choice, and not while the turn being continued is a tool call without the signed
/// thinking block Anthropic requires at its start (history from another vendor has none).
fn thinking_is_allowed(request: &ChatRequest) -> bool {
    if matches!(request.tool_choice, Some(ToolChoice::Required | ToolChoice::Named(_))) {
        return false;
    }
    let Some(last_assistant) = request.messages.iter().rev().find(|message| message.role == Role::Assistant) else {
        return true;
    };
    let calls_tools = last_assistant.content.iter().any(|part| matches!(part, Part::ToolCall { .. }));
    let starts_signed = matches!(
        last_assistant.content.first(),
        Some(Part::Reasoning { signature: Some(signature), .. }) if !signature.is_empty()
    );
    !calls_tools || starts_signed
}

/// Messages with the same role merged (Anthropic requires alternation), tool results
/// first in each user turn, and turns left empty by dropped parts left out.
fn encode_messages(messages: &[Message]) -> Vec<Value> {
    // (role, tool_result blocks, other blocks) per turn.
    let mut turns: Vec<(Role, Vec<Value>, Vec<Value>)> = Vec::new();
    for message in messages {
        let mut results = Vec::new();
        let mut others = Vec::new();
        for part in &message.content {
            match part {
                Part::ToolResult { call_id, content, is_error } => {
                    results.push(encode_tool_result(call_id, content, *is_error));
                }
                other => others.extend(encode_block(other)),
            }
        }
        if results.is_empty() && others.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, turn_results, turn_others)) if *role == message.role => {
                turn_results.append(&mut results);
                turn_others.append(&mut others);
            }
            _ => turns.push((message.role, results, others)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut results, mut others)| {
            results.append(&mut others);
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": results})
        })
        .collect()
}

/// A content block for an upstream request; `None` for parts Anthropic would reject.
fn encode_block(part: &Part) -> Option<Value> {
    match part {
        // Anthropic rejects empty text blocks (OpenAI tool-call turns often carry `""`).
        Part::Text { text } if text.is_empty() => None,
        Part::Text { text } => Some(json!({"type": "text", "text": text})),
        Part::Image { source } => Some(json!({"type": "image", "source": encode_image_source(source)})),
        Part::ToolCall { id, name, arguments } => Some(json!({
            "type": "tool_use",
            "id": tool_id(id),
            "name": name,
            "input": arguments_object(arguments),
        })),
        // Anthropic verifies thinking it is sent back; unsigned reasoning (from another
        // vendor) would be refused, so it stays out.
        Part::Reasoning { text, signature: Some(signature) } if !signature.is_empty() => {
            Some(json!({"type": "thinking", "thinking": text, "signature": signature}))
        }
        Part::Reasoning { .. } => None,
        Part::ToolResult { call_id, content, is_error } => Some(encode_tool_result(call_id, content, *is_error)),
    }
}

fn encode_tool_result(call_id: &str, content: &[Part], is_error: bool) -> Value {
    let mut block = Map::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), tool_id(call_id).into());
    let blocks: Vec<Value> = content
        .iter()
        .filter(|part| matches!(part, Part::Text { .. } | Part::Image { .. }))
        .filter_map(encode_block)
        .collect();
    match blocks.as_slice() {
        [] => {}
        [Value::Object(only)] if only.get("type").and_then(Value::as_str) == Some("text") => {
            block.insert("content".into(), only.get("text").cloned().unwrap_or_default());
        }
        _ => {
            block.insert("content".into(), Value::Array(blocks));
        }
    }
    if is_error {
        block.insert("is_error".into(), true.into());
    }
    Value::Object(block)
}

fn encode_image_source(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => json!({"type": "base64", "media_type": media_type, "data": data}),
        ImageSource::Url { url } => json!({"type": "url", "url": url}),
    }
}

/// Anthropic requires a JSON object; argument text that is not one becomes `{}`.
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::Object(Map::new()),
    }
}

/// A tool call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`): other characters (some
/// vendors use `functions.name:0`) become `_`, the same way in calls and results.
fn tool_id(id: &str) -> String {
    let cleaned: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() { "toolu_".to_owned() } else { cleaned }
}

fn encode_tool(tool: &Tool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), tool.name.clone().into());
    if let Some(description) = &tool.description {
        out.insert("description".into(), description.clone().into());
    }
    // Anthropic requires an object schema; OpenAI lets a function omit its parameters.
    let schema = match &tool.parameters {
        Value::Object(schema) => Value::Object(schema.clone()),
        _ => json!({"type": "object", "properties": {}}),
    };
    out.insert("input_schema".into(), schema);
    Value::Object(out)
}

fn encode_tool_choice(choice: Option<&ToolChoice>, parallel_tool_calls: Option<bool>) -> Option<Value> {
    let disable_parallel = parallel_tool_calls == Some(false);
    let mut out = match choice {
        None if !disable_parallel => return None,
        None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
        // `none` takes no parallelism flag.
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
    };
    if disable_parallel && let Value::Object(map) = &mut out {
        map.insert("disable_parallel_tool_use".into(), true.into());
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------------------

/// Parses a Message object (or an error body, which becomes [`DecodeError::Upstream`]).
pub fn parse_response(body: &Value) -> Result<ChatResponse, DecodeError> {
    let body = body.as_object().ok_or(DecodeError::Malformed("the answer is not a JSON object"))?;
    if body.get("type").and_then(Value::as_str) == Some("error") {
        return Err(upstream_error(body.get("error")));
    }
    let id = optional_str(body, "id").ok_or(DecodeError::Malformed("message id is not a string"))?;
    let model = optional_str(body, "model").ok_or(DecodeError::Malformed("message model is not a string"))?;
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or(DecodeError::Malformed("message without a content array"))?;
    let mut content = Vec::with_capacity(blocks.len());
    for block in blocks {
        if let Some(part) = parse_answer_block(block)? {
            content.push(part);
        }
    }
    let stop_reason = match body.get("stop_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(stop_reason_from_wire(reason)),
        Some(_) => return Err(DecodeError::Malformed("stop_reason is not a string")),
    };
    let usage = match body.get("usage") {
        None | Some(Value::Null) => None,
        Some(Value::Object(usage)) => Some(InputCounts::read(usage, InputCounts::default()).usage(usage, 0)),
        Some(_) => return Err(DecodeError::Malformed("usage is not an object")),
    };
    Ok(ChatResponse { id: id.to_owned(), model: model.to_owned(), created: None, content, stop_reason, usage })
}

/// A string field, `""` when absent; `None` when present with another type.
fn optional_str<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    match map.get(key) {
        None | Some(Value::Null) => Some(""),
        Some(value) => value.as_str(),
    }
}

fn parse_answer_block(block: &Value) -> Result<Option<Part>, DecodeError> {
    let block = block.as_object().ok_or(DecodeError::Malformed("content block is not an object"))?;
    let text_field = |key: &str| {
        block.get(key).and_then(Value::as_str).map(str::to_owned).ok_or(DecodeError::Malformed("content block field"))
    };
    let part = match block.get("type").and_then(Value::as_str) {
        Some("text") => Part::Text { text: text_field("text")? },
        Some("tool_use") => Part::ToolCall {
            id: text_field("id")?,
            name: text_field("name")?,
            arguments: match block.get("input") {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(input) => input.to_string(),
            },
        },
        Some("thinking") => Part::Reasoning {
            text: text_field("thinking")?,
            signature: block.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        },
        // Redacted thinking, server tool calls and their results, and block types newer
        // than this code: nothing the canonical model carries.
        Some(_) => return Ok(None),
        None => return Err(DecodeError::Malformed("content block without a type")),
    };
    Ok(Some(part))
}

fn stop_reason_from_wire(reason: &str) -> StopReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        // `end_turn`, `pause_turn` (a server tool loop paused: the turn is over for us),
        // and reasons added after this code.
        _ => StopReason::EndTurn,
    }
}

fn stop_reason_to_wire(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

/// The `{"type": "error", "error": {"type", "message"}}` payload as a decode error.
fn upstream_error(error: Option<&Value>) -> DecodeError {
    let kind = error.and_then(|error| error.get("type")).and_then(Value::as_str).map(str::to_owned);
    let message = error
        .and_then(|error| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("the upstream reported an error")
        .to_owned();
    DecodeError::Upstream { kind, message }
}

/// Anthropic's prompt counts, which the canonical `input_tokens` adds up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct InputCounts {
    /// Prompt tokens neither read from nor written to the cache.
    uncached: u64,
    cache_read: u64,
    cache_write: u64,
}

impl InputCounts {
    /// The counts in an Anthropic usage object, each falling back to `earlier` when absent.
    fn read(usage: &Map<String, Value>, earlier: Self) -> Self {
        let count = |key: &str, fallback: u64| usage.get(key).and_then(Value::as_u64).unwrap_or(fallback);
        Self {
            uncached: count("input_tokens", earlier.uncached),
            cache_read: count("cache_read_input_tokens", earlier.cache_read),
            cache_write: count("cache_creation_input_tokens", earlier.cache_write),
        }
    }

    /// Canonical usage from these counts and the output counts in `usage`.
    fn usage(self, usage: &Map<String, Value>, earlier_output: u64) -> TokenUsage {
        let output_tokens = usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(earlier_output);
        let reasoning_tokens = usage
            .get("output_tokens_details")
            .and_then(|details| details.get("thinking_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        TokenUsage {
            input_tokens: self.uncached.saturating_add(self.cache_read).saturating_add(self.cache_write),
            cached_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            output_tokens,
            reasoning_tokens,
            ..TokenUsage::default()
        }
    }
}

/// Canonical usage as Anthropic's usage object (whose `input_tokens` excludes the cache).
fn usage_to_wire(usage: &TokenUsage) -> Value {
    let uncached = usage.input_tokens.saturating_sub(usage.cached_tokens).saturating_sub(usage.cache_write_tokens);
    let mut out = json!({
        "input_tokens": uncached,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    });
    if usage.reasoning_tokens > 0
        && let Value::Object(map) = &mut out
    {
        map.insert("output_tokens_details".into(), json!({"thinking_tokens": usage.reasoning_tokens}));
    }
    out
}

/// Anthropic message ids start with `msg_`; other vendors' ids get the prefix.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") }
}

/// A model that called tools but reported `end_turn` (some OpenAI-compatible servers
/// say `stop`) is waiting for tool results: clients loop on `tool_use`.
fn effective_stop_reason(reason: Option<StopReason>, called_tools: bool) -> StopReason {
    match reason {
        Some(StopReason::EndTurn) | None if called_tools => StopReason::ToolUse,
        Some(reason) => reason,
        None => StopReason::EndTurn,
    }
}

/// A canonical answer as a Message object.
pub fn encode_response(response: &ChatResponse) -> Value {
    let content: Vec<Value> = response
        .content
        .iter()
        .filter_map(|part| match part {
            Part::Text { text } if text.is_empty() => None,
            Part::Text { text } => Some(json!({"type": "text", "text": text})),
            Part::ToolCall { id, name, arguments } => {
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": arguments_object(arguments)}))
            }
            Part::Reasoning { text, signature } => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.as_deref().unwrap_or_default(),
            })),
            Part::Image { .. } | Part::ToolResult { .. } => None,
        })
        .collect();
    let called_tools = response.content.iter().any(|part| matches!(part, Part::ToolCall { .. }));
    let stop_reason = match response.stop_reason {
        None if !called_tools => Value::Null,
        reason => stop_reason_to_wire(effective_stop_reason(reason, called_tools)).into(),
    };
    json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage_to_wire(&response.usage.unwrap_or_default()),
    })
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// What the content block being streamed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamBlock {
    Text,
    Thinking,
    /// A client tool call, with its canonical tool-call index.
    ToolUse(u32),
    /// Redacted thinking, server tool calls and results, unknown types.
    Ignored,
}

/// Decodes Anthropic's named stream events into canonical ones. Anthropic streams one
/// content block at a time, so only the open block is remembered.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The open content block: its wire index and kind.
    open: Option<(u64, UpstreamBlock)>,
    tool_calls: u32,
    /// Prompt counts from `message_start`, completed by `message_delta`.
    input: InputCounts,
    /// `output_tokens` reported so far (cumulative on the wire).
    output_tokens: u64,
    complete: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn block_start(&mut self, data: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let index = data.get("index").and_then(Value::as_u64).ok_or(DecodeError::Malformed("block without index"))?;
        let block = data.get("content_block").ok_or(DecodeError::Malformed("content_block_start without a block"))?;
        let text_of = |key: &str| block.get(key).and_then(Value::as_str).filter(|text| !text.is_empty());
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = text_of("text") {
                    out.push(StreamEvent::TextDelta { text: text.to_owned() });
                }
                UpstreamBlock::Text
            }
            Some("thinking") => {
                if let Some(text) = text_of("thinking") {
                    out.push(StreamEvent::ReasoningDelta { text: text.to_owned() });
                }
                UpstreamBlock::Thinking
            }
            Some("tool_use") => {
                let (Some(id), Some(name)) = (text_of("id"), block.get("name").and_then(Value::as_str)) else {
                    return Err(DecodeError::Malformed("tool_use block without id or name"));
                };
                let tool_index = self.tool_calls;
                self.tool_calls += 1;
                out.push(StreamEvent::ToolCallStart { index: tool_index, id: id.to_owned(), name: name.to_owned() });
                // Anthropic starts with `{}` and streams the input; an input given up
                // front is passed on whole.
                if let Some(input) = block.get("input").and_then(Value::as_object).filter(|input| !input.is_empty()) {
                    out.push(StreamEvent::ToolCallDelta {
                        index: tool_index,
                        arguments: Value::from(input.clone()).to_string(),
                    });
                }
                UpstreamBlock::ToolUse(tool_index)
            }
            _ => UpstreamBlock::Ignored,
        };
        self.open = Some((index, kind));
        Ok(())
    }

    fn block_delta(&mut self, data: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let index = data.get("index").and_then(Value::as_u64).ok_or(DecodeError::Malformed("block without index"))?;
        let delta = data.get("delta").ok_or(DecodeError::Malformed("content_block_delta without a delta"))?;
        let block = self.open.filter(|(open, _)| *open == index).map(|(_, kind)| kind);
        if block == Some(UpstreamBlock::Ignored) {
            return Ok(());
        }
        let field = |key: &str| {
            delta.get(key).and_then(Value::as_str).ok_or(DecodeError::Malformed("content_block_delta field"))
        };
        // Text and thinking need no block bookkeeping, so they pass even when a lax
        // Anthropic-compatible server skipped `content_block_start`; tool input cannot.
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => push_text(out, field("text")?, |text| StreamEvent::TextDelta { text }),
            Some("thinking_delta") => push_text(out, field("thinking")?, |text| StreamEvent::ReasoningDelta { text }),
            Some("signature_delta") => {
                push_text(out, field("signature")?, |signature| StreamEvent::ReasoningSignature { signature })
            }
            Some("input_json_delta") => {
                let Some(UpstreamBlock::ToolUse(tool_index)) = block else {
                    return Err(DecodeError::Malformed("input_json_delta outside a tool_use block"));
                };
                push_text(out, field("partial_json")?, |arguments| StreamEvent::ToolCallDelta {
                    index: tool_index,
                    arguments,
                });
            }
            // `citations_delta` and delta types newer than this code.
            _ => {}
        }
        Ok(())
    }

    fn message_delta(&mut self, data: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        match data.get("delta").and_then(|delta| delta.get("stop_reason")) {
            None | Some(Value::Null) => {}
            Some(Value::String(reason)) => out.push(StreamEvent::Finish { stop_reason: stop_reason_from_wire(reason) }),
            Some(_) => return Err(DecodeError::Malformed("stop_reason is not a string")),
        }
        if let Some(usage) = data.get("usage").and_then(Value::as_object) {
            self.input = InputCounts::read(usage, self.input);
            let usage = self.input.usage(usage, self.output_tokens);
            self.output_tokens = usage.output_tokens;
            out.push(StreamEvent::Usage { usage });
        }
        Ok(())
    }
}

fn push_text(out: &mut Vec<StreamEvent>, text: &str, event: impl FnOnce(String) -> StreamEvent) {
    if !text.is_empty() {
        out.push(event(text.to_owned()));
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let data: Value =
            serde_json::from_str(&event.data).map_err(|_| DecodeError::Malformed("stream event data is not JSON"))?;
        // The data's `type` is authoritative; the SSE name is a fallback for lax servers.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .ok_or(DecodeError::Malformed("stream event without a type"))?;
        match kind {
            "message_start" => {
                let message = data
                    .get("message")
                    .and_then(Value::as_object)
                    .ok_or(DecodeError::Malformed("message_start without a message"))?;
                let id = optional_str(message, "id").ok_or(DecodeError::Malformed("message id is not a string"))?;
                let model =
                    optional_str(message, "model").ok_or(DecodeError::Malformed("message model is not a string"))?;
                if let Some(usage) = message.get("usage").and_then(Value::as_object) {
                    self.input = InputCounts::read(usage, InputCounts::default());
                    self.output_tokens = usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                }
                out.push(StreamEvent::Start { id: id.to_owned(), model: model.to_owned(), created: None });
            }
            "content_block_start" => self.block_start(&data, out)?,
            "content_block_delta" => self.block_delta(&data, out)?,
            "content_block_stop" => self.open = None,
            "message_delta" => self.message_delta(&data, out)?,
            "message_stop" => self.complete = true,
            "error" => return Err(upstream_error(data.get("error"))),
            // `ping`, and event types added later: Anthropic's versioning policy says
            // clients must ignore events they do not know.
            _ => {}
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.complete
    }
}

/// The content block the encoder has open, with its wire index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    #[default]
    None,
    Text(u32),
    Thinking(u32),
    ToolUse(u32),
}

/// Encodes canonical stream events as Anthropic's stream.
///
/// Blocks are opened when their first piece arrives (a text block at the first text, a
/// thinking block at the first reasoning, a `tool_use` block at `ToolCallStart`) and a
/// new kind of piece closes the open block, so the output has Anthropic's shape: one block
/// at a time, indexes `0..` in order. Argument fragments of a tool call whose block was
/// already closed (an upstream interleaving parallel tool calls, which OpenAI does not do
/// in practice) are still sent, at that block's index: the SDKs accumulate deltas by
/// index, so no argument text is lost and nothing is buffered. The bookkeeping is one
/// pair of numbers per tool call.
#[derive(Debug, Default)]
pub struct Encoder {
    started: bool,
    /// `finish()` or `error()` ran: nothing more is written.
    ended: bool,
    open: OpenBlock,
    next_block: u32,
    /// (canonical tool-call index, wire block index) for every tool call started.
    tool_blocks: Vec<(u32, u32)>,
    stop_reason: Option<StopReason>,
    usage: Option<TokenUsage>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<SseEvent>) {
        self.started = true;
        emit(
            out,
            json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id),
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            }),
        );
    }

    /// `Start` always comes first; this keeps the output valid if it did not.
    fn ensure_started(&mut self, out: &mut Vec<SseEvent>) {
        if !self.started {
            self.start("msg_veil", "", out);
        }
    }

    fn close_open(&mut self, out: &mut Vec<SseEvent>) {
        let index = match self.open {
            OpenBlock::None => return,
            OpenBlock::Text(index) | OpenBlock::Thinking(index) | OpenBlock::ToolUse(index) => index,
        };
        emit(out, json!({"type": "content_block_stop", "index": index}));
        self.open = OpenBlock::None;
    }

    /// Closes the open block and starts `block` at the next index, which it returns.
    fn open_block(&mut self, block: Value, out: &mut Vec<SseEvent>) -> u32 {
        self.close_open(out);
        let index = self.next_block;
        self.next_block += 1;
        emit(out, json!({"type": "content_block_start", "index": index, "content_block": block}));
        index
    }

    fn text_block(&mut self, out: &mut Vec<SseEvent>) -> u32 {
        match self.open {
            OpenBlock::Text(index) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = OpenBlock::Text(index);
                index
            }
        }
    }

    fn thinking_block(&mut self, out: &mut Vec<SseEvent>) -> u32 {
        match self.open {
            OpenBlock::Thinking(index) => index,
            _ => {
                // `signature` is a required field of the SDKs' thinking block.
                let index = self.open_block(json!({"type": "thinking", "thinking": "", "signature": ""}), out);
                self.open = OpenBlock::Thinking(index);
                index
            }
        }
    }
}

fn emit(out: &mut Vec<SseEvent>, data: Value) {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("message").to_owned();
    out.push(SseEvent::named(name, data.to_string()));
}

fn delta(out: &mut Vec<SseEvent>, index: u32, delta: Value) {
    emit(out, json!({"type": "content_block_delta", "index": index, "delta": delta}));
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        if let StreamEvent::Start { id, model, .. } = &event {
            if !self.started {
                self.start(id, model, out);
            }
            return;
        }
        self.ensure_started(out);
        match event {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    let index = self.text_block(out);
                    delta(out, index, json!({"type": "text_delta", "text": text}));
                }
            }
            StreamEvent::ReasoningDelta { text } => {
                if !text.is_empty() {
                    let index = self.thinking_block(out);
                    delta(out, index, json!({"type": "thinking_delta", "thinking": text}));
                }
            }
            StreamEvent::ReasoningSignature { signature } => {
                let index = self.thinking_block(out);
                delta(out, index, json!({"type": "signature_delta", "signature": signature}));
                // The signature ends its thinking block.
                self.close_open(out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.tool_blocks.iter().any(|(tool, _)| *tool == index) {
                    return;
                }
                let block = self.open_block(json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
                self.open = OpenBlock::ToolUse(block);
                self.tool_blocks.push((index, block));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                // A fragment for a tool call never started has no block to go to.
                if let Some(&(_, block)) = self.tool_blocks.iter().find(|(tool, _)| *tool == index)
                    && !arguments.is_empty()
                {
                    delta(out, block, json!({"type": "input_json_delta", "partial_json": arguments}));
                }
            }
            StreamEvent::Finish { stop_reason } => self.stop_reason = Some(stop_reason),
            StreamEvent::Usage { usage } => self.usage = Some(usage),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.close_open(out);
        let stop_reason = effective_stop_reason(self.stop_reason, !self.tool_blocks.is_empty());
        // The SDKs merge these counts into the message from `message_start`, which
        // reported zeros: an OpenAI upstream tells usage only at the end.
        emit(
            out,
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason_to_wire(stop_reason), "stop_sequence": null},
                "usage": usage_to_wire(&self.usage.unwrap_or_default()),
            }),
        );
        emit(out, json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        emit(
            out,
            json!({
                "type": "error",
                "error": {"type": anthropic_type(error.status, &error.code), "message": error.message},
            }),
        );
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;
    use serde_json::json;

    const REQUEST: &str = include_str!("../tests/fixtures/anthropic/request.json");
    const RESPONSE_TEXT: &str = include_str!("../tests/fixtures/anthropic/response_text.json");
    const RESPONSE_TOOL: &str = include_str!("../tests/fixtures/anthropic/response_tool.json");
    const STREAM_TEXT: &str = include_str!("../tests/fixtures/anthropic/stream_text.sse");
    const STREAM_TOOL: &str = include_str!("../tests/fixtures/anthropic/stream_tool.sse");

    const MODEL: &str = "claude-sonnet-4-5-20250929";
    const CALL_ID: &str = "toolu_01A09q90qw90lq917835lq9";
    const PIXEL: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn text(text: &str) -> Part {
        Part::Text { text: text.into() }
    }

    fn weather_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {
                    "type": "string",
                    "enum": ["celsius", "fahrenheit"],
                    "description": "The unit of temperature, either 'celsius' or 'fahrenheit'"
                }
            },
            "required": ["location"]
        })
    }

    fn minimal(extra: Value) -> Value {
        let mut body = json!({"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest { model: "claude-x".into(), messages, ..ChatRequest::default() }
    }

    fn parse_error(body: Value) -> ProtocolError {
        parse_request(&body).unwrap_err()
    }

    fn sse_events(text: &str) -> Vec<SseEvent> {
        SseParser::new().push(text.as_bytes()).unwrap()
    }

    fn decode_all(text: &str) -> (Vec<StreamEvent>, bool) {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for event in sse_events(text) {
            decoder.decode(&event, &mut out).unwrap();
        }
        (out, decoder.is_complete())
    }

    fn encode_all(events: Vec<StreamEvent>) -> Vec<SseEvent> {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        for event in events {
            encoder.encode(event, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    fn usage(input: u64, cached: u64, write: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            cached_tokens: cached,
            cache_write_tokens: write,
            output_tokens: output,
            ..TokenUsage::default()
        }
    }

    // --- requests ------------------------------------------------------------------------

    #[test]
    fn parses_the_fixture_request() {
        let parsed = parse_request(&fixture(REQUEST)).unwrap();
        let expected = ChatRequest {
            model: MODEL.into(),
            system: vec!["You are a helpful assistant with access to a weather tool.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/png".into(), data: PIXEL.into() },
                        },
                        text("Where was this photo taken?"),
                    ],
                },
                Message::text(Role::Assistant, "It looks like the Golden Gate Bridge in San Francisco, CA."),
                Message::text(Role::User, "What's the weather like there right now?"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        text("I'll check the current weather in San Francisco for you."),
                        Part::ToolCall {
                            id: CALL_ID.into(),
                            name: "get_weather".into(),
                            arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: CALL_ID.into(),
                        content: vec![text("15 degrees, foggy")],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Get the current weather in a given location".into()),
                parameters: weather_schema(),
            }],
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: None,
            max_output_tokens: Some(1024),
            temperature: Some(0.7),
            top_p: None,
            top_k: None,
            stop: vec!["\n\nHuman:".into()],
            seed: None,
            response_format: None,
            reasoning_effort: None,
            stream: false,
            user: Some("user-7f3a9c".into()),
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn the_fixture_request_encodes_back_for_an_anthropic_upstream() {
        let encoded = encode_request(&parse_request(&fixture(REQUEST)).unwrap());
        let expected = json!({
            "model": MODEL,
            "max_tokens": 1024,
            "system": "You are a helpful assistant with access to a weather tool.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "Where was this photo taken?"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "It looks like the Golden Gate Bridge in San Francisco, CA."}
                ]},
                {"role": "user", "content": [{"type": "text", "text": "What's the weather like there right now?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
                    {"type": "tool_use", "id": CALL_ID, "name": "get_weather",
                     "input": {"location": "San Francisco, CA", "unit": "celsius"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": CALL_ID, "content": "15 degrees, foggy"}
                ]}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": weather_schema()
            }],
            "tool_choice": {"type": "auto"},
            "temperature": 0.7,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "user-7f3a9c"}
        });
        assert_eq!(encoded, expected);
    }

    #[test]
    fn max_tokens_and_model_are_required_like_anthropic_requires_them() {
        let error = parse_error(json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(error, ProtocolError::at("max_tokens", "`max_tokens` is required"));
        let error = parse_error(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(error, ProtocolError::at("model", "`model` is required"));
        let error = parse_error(minimal(json!({"max_tokens": -1})));
        assert_eq!(error, ProtocolError::at("max_tokens", "`max_tokens` must be a non-negative integer"));
        let error = parse_error(minimal(json!({"messages": []})));
        assert_eq!(error, ProtocolError::at("messages", "`messages` must hold at least one message"));
        assert_eq!(parse_error(json!([1])), ProtocolError::new("the request body must be a JSON object"));
    }

    #[test]
    fn wrong_types_and_unsupported_blocks_are_refused_by_field() {
        let cases = [
            (minimal(json!({"temperature": "hot"})), "temperature", "`temperature` must be a number"),
            (minimal(json!({"stream": "yes"})), "stream", "`stream` must be a boolean"),
            (minimal(json!({"stop_sequences": [1]})), "stop_sequences", "`stop_sequences` must be an array of strings"),
            (minimal(json!({"metadata": {"user_id": 7}})), "metadata", "`metadata.user_id` must be a string"),
            (
                minimal(json!({"messages": [{"role": "system", "content": "x"}]})),
                "messages",
                "`messages[0].role` must be `user` or `assistant`, not `system`",
            ),
            (
                minimal(json!({"messages": [{"role": "user", "content": 5}]})),
                "messages",
                "`messages[0].content` must be a string or an array of content blocks",
            ),
            (
                minimal(json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})),
                "messages",
                "`messages[0].content[0]`: document blocks (PDF and text documents) are not supported; send the text as a text block",
            ),
            (
                minimal(json!({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]})),
                "messages",
                "`messages[0].content[0]`: content blocks of type `search_result` are not supported",
            ),
            (
                minimal(json!({"messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
                ]}]})),
                "messages",
                "`messages[0].content[0].source.type`: image sources of type `file` are not supported (use `base64` or `url`)",
            ),
            (
                minimal(json!({"messages": [{"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t",
                     "content": [{"type": "tool_use", "id": "a", "name": "b"}]}
                ]}]})),
                "messages",
                "`messages[0].content[0].content[0]`: a tool result may hold only text and image blocks",
            ),
            (
                minimal(json!({"messages": [{"role": "assistant", "content": [
                    {"type": "tool_use", "id": "a", "name": "b", "input": "x"}
                ]}]})),
                "messages",
                "`messages[0].content[0].input` must be an object",
            ),
            (
                minimal(json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]})),
                "tools",
                "`tools[0]`: server tools (type `web_search_20250305`) are not supported; only tools with an `input_schema`",
            ),
            (minimal(json!({"tools": [{"name": "f"}]})), "tools", "`tools[0].input_schema` is required"),
            (minimal(json!({"tool_choice": {"type": "tool"}})), "tool_choice", "`tool_choice.name` is required"),
            (
                minimal(json!({"tool_choice": {"type": "required"}})),
                "tool_choice",
                "`tool_choice.type` must be `auto`, `any`, `tool` or `none`, not `required`",
            ),
            (minimal(json!({"thinking": {"type": "enabled"}})), "thinking", "`thinking.budget_tokens` is required"),
            (minimal(json!({"system": [{"type": "image"}]})), "system", "`system[0].type` must be `text`, not `image`"),
        ];
        for (body, param, message) in cases {
            assert_eq!(parse_error(body), ProtocolError::at(param, message));
        }
    }

    #[test]
    fn parses_every_block_kind_and_option() {
        let body = minimal(json!({
            "system": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "thinking", "thinking": "unsigned", "signature": ""},
                    {"type": "tool_use", "id": "toolu_1", "name": "f"}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                        {"type": "text", "text": "failed"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}}
                    ]},
                    {"type": "tool_result", "tool_use_id": "toolu_2"}
                ]}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "top_p": 0.9,
            "top_k": 40,
            "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 5000},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}
        }));
        let parsed = parse_request(&body).unwrap();
        assert_eq!(parsed.system, vec!["one".to_owned(), "two".to_owned()]);
        assert_eq!(
            parsed.messages,
            vec![
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Image { source: ImageSource::Url { url: "https://example.com/a.jpg".into() } },
                        text("look"),
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "hmm".into(), signature: Some("sig==".into()) },
                        Part::Reasoning { text: "unsigned".into(), signature: None },
                        Part::ToolCall { id: "toolu_1".into(), name: "f".into(), arguments: "{}".into() },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Part::ToolResult {
                            call_id: "toolu_1".into(),
                            content: vec![
                                text("failed"),
                                Part::Image {
                                    source: ImageSource::Base64 { media_type: "image/gif".into(), data: "R0lG".into() },
                                },
                            ],
                            is_error: true,
                        },
                        Part::ToolResult { call_id: "toolu_2".into(), content: vec![], is_error: false },
                    ],
                },
            ]
        );
        assert_eq!(parsed.tool_choice, Some(ToolChoice::Required));
        assert_eq!(parsed.parallel_tool_calls, Some(false));
        assert_eq!((parsed.top_p, parsed.top_k, parsed.stream), (Some(0.9), Some(40), true));
        assert_eq!(parsed.reasoning_effort.as_deref(), Some("medium"));
        assert_eq!(
            parsed.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "output".into(),
                schema: json!({"type": "object"}),
                strict: Some(true)
            })
        );
    }

    #[test]
    fn thinking_budgets_map_to_efforts() {
        let effort = |thinking: Value| parse_request(&minimal(thinking)).unwrap().reasoning_effort;
        let enabled = |budget: u64| effort(json!({"thinking": {"type": "enabled", "budget_tokens": budget}}));
        assert_eq!(enabled(1024).as_deref(), Some("low"));
        assert_eq!(enabled(2048).as_deref(), Some("low"));
        assert_eq!(enabled(2049).as_deref(), Some("medium"));
        assert_eq!(enabled(8192).as_deref(), Some("medium"));
        assert_eq!(enabled(8193).as_deref(), Some("high"));
        assert_eq!(effort(json!({"thinking": {"type": "disabled"}})), None);
        assert_eq!(effort(json!({"thinking": {"type": "adaptive"}})).as_deref(), Some("high"));
        let adaptive = |level: &str| {
            effort(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": level}})).unwrap()
        };
        assert_eq!(adaptive("low"), "low");
        assert_eq!(adaptive("max"), "xhigh");
        // Effort alone, without thinking, asks for no reasoning.
        assert_eq!(effort(json!({"output_config": {"effort": "low"}})), None);
    }

    #[test]
    fn disable_parallel_false_is_the_default() {
        let parsed =
            parse_request(&minimal(json!({"tool_choice": {"type": "auto", "disable_parallel_tool_use": false}})))
                .unwrap();
        assert_eq!((parsed.tool_choice, parsed.parallel_tool_calls), (Some(ToolChoice::Auto), None));
        let parsed = parse_request(&minimal(json!({"tool_choice": {"type": "tool", "name": "f"}}))).unwrap();
        assert_eq!(parsed.tool_choice, Some(ToolChoice::Named("f".into())));
        let parsed = parse_request(&minimal(json!({"tool_choice": {"type": "none"}, "system": ""}))).unwrap();
        assert_eq!((parsed.tool_choice, parsed.system), (Some(ToolChoice::None), vec![]));
    }

    #[test]
    fn encoding_merges_roles_puts_tool_results_first_and_drops_what_anthropic_rejects() {
        let messages = vec![
            Message::text(Role::User, "first"),
            Message::text(Role::User, "second"),
            Message {
                role: Role::Assistant,
                content: vec![
                    Part::Reasoning { text: "from deepseek".into(), signature: None },
                    text(""),
                    Part::ToolCall { id: "functions.get:0".into(), name: "get".into(), arguments: "not json".into() },
                    Part::ToolCall { id: "call_2".into(), name: "get".into(), arguments: r#"{"q":1}"#.into() },
                ],
            },
            // OpenAI sends one `tool` message per result, then maybe user text.
            Message {
                role: Role::User,
                content: vec![Part::ToolResult {
                    call_id: "functions.get:0".into(),
                    content: vec![text("a"), text("b")],
                    is_error: false,
                }],
            },
            Message { role: Role::User, content: vec![text("and also")] },
            Message {
                role: Role::User,
                content: vec![Part::ToolResult { call_id: "call_2".into(), content: vec![], is_error: true }],
            },
            Message { role: Role::Assistant, content: vec![text("")] },
        ];
        let encoded = encode_request(&request(messages));
        assert_eq!(
            encoded["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "functions_get_0", "name": "get", "input": {}},
                    {"type": "tool_use", "id": "call_2", "name": "get", "input": {"q": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "functions_get_0", "content": [
                        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}
                    ]},
                    {"type": "tool_result", "tool_use_id": "call_2", "is_error": true},
                    {"type": "text", "text": "and also"}
                ]}
            ])
        );
    }

    #[test]
    fn encoding_keeps_signed_thinking_and_urls() {
        let messages = vec![
            Message {
                role: Role::User,
                content: vec![Part::Image { source: ImageSource::Url { url: "https://x/y.png".into() } }],
            },
            Message {
                role: Role::Assistant,
                content: vec![Part::Reasoning { text: "t".into(), signature: Some("s".into()) }, text("answer")],
            },
        ];
        let encoded = encode_request(&request(messages));
        assert_eq!(
            encoded["messages"],
            json!([
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "text", "text": "answer"}
                ]}
            ])
        );
    }

    #[test]
    fn encoding_options() {
        let mut chat = request(vec![Message::text(Role::User, "hi")]);
        chat.system = vec!["a".into(), "b".into()];
        chat.tools = vec![Tool { name: "f".into(), description: None, parameters: Value::Null }];
        chat.tool_choice = Some(ToolChoice::Named("f".into()));
        chat.parallel_tool_calls = Some(false);
        chat.temperature = Some(0.2);
        chat.top_p = Some(0.5);
        chat.top_k = Some(3);
        chat.seed = Some(9);
        chat.response_format = Some(ResponseFormat::JsonObject);
        chat.stream = true;
        chat.user = Some("u".into());
        assert_eq!(
            encode_request(&chat),
            json!({
                "model": "claude-x",
                "max_tokens": 4096,
                "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
                "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
                "temperature": 0.2,
                "top_k": 3,
                "stream": true,
                "metadata": {"user_id": "u"}
            })
        );
    }

    #[test]
    fn tool_choice_mapping() {
        let choice = |choice: Option<ToolChoice>, parallel: Option<bool>| encode_tool_choice(choice.as_ref(), parallel);
        assert_eq!(choice(None, None), None);
        assert_eq!(choice(None, Some(true)), None);
        assert_eq!(choice(None, Some(false)), Some(json!({"type": "auto", "disable_parallel_tool_use": true})));
        assert_eq!(choice(Some(ToolChoice::Auto), None), Some(json!({"type": "auto"})));
        assert_eq!(choice(Some(ToolChoice::Required), None), Some(json!({"type": "any"})));
        assert_eq!(choice(Some(ToolChoice::None), Some(false)), Some(json!({"type": "none"})));
        // Without tools, Anthropic refuses a tool_choice.
        let mut chat = request(vec![Message::text(Role::User, "hi")]);
        chat.tool_choice = Some(ToolChoice::Required);
        assert_eq!(encode_request(&chat).get("tool_choice"), None);
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget_that_fits() {
        let encode = |effort: &str, max: Option<u64>| {
            let mut chat = request(vec![Message::text(Role::User, "hi")]);
            chat.reasoning_effort = Some(effort.into());
            chat.max_output_tokens = max;
            chat.temperature = Some(0.5);
            chat.top_p = Some(0.97);
            chat.top_k = Some(5);
            let body = encode_request(&chat);
            (
                body["max_tokens"].clone(),
                body.get("thinking").cloned(),
                body.get("temperature").cloned(),
                body.get("top_p").cloned(),
            )
        };
        let thinking = |budget: u64| Some(json!({"type": "enabled", "budget_tokens": budget}));
        // Thinking on: sampling changes Anthropic refuses alongside it are left out.
        assert_eq!(encode("low", Some(2000)), (json!(2000), thinking(1024), None, Some(json!(0.97))));
        assert_eq!(encode("medium", None), (json!(8192), thinking(4096), None, Some(json!(0.97))));
        assert_eq!(encode("high", None), (json!(20480), thinking(16384), None, Some(json!(0.97))));
        // The client's limit stands; a budget that does not fit under it is not asked for.
        assert_eq!(encode("high", Some(16384)), (json!(16384), None, Some(json!(0.5)), None));
        assert_eq!(encode("none", None), (json!(4096), None, Some(json!(0.5)), None));
    }

    #[test]
    fn thinking_is_not_asked_for_where_anthropic_refuses_it() {
        let mut chat = request(vec![Message::text(Role::User, "hi")]);
        chat.reasoning_effort = Some("high".into());
        chat.tools = vec![Tool { name: "f".into(), description: None, parameters: json!({"type": "object"}) }];
        chat.tool_choice = Some(ToolChoice::Required);
        assert_eq!(encode_request(&chat).get("thinking"), None);

        // Continuing a tool call turn whose thinking is not signed (history from another vendor).
        chat.tool_choice = None;
        chat.messages.push(Message {
            role: Role::Assistant,
            content: vec![Part::ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() }],
        });
        chat.messages.push(Message {
            role: Role::User,
            content: vec![Part::ToolResult { call_id: "c".into(), content: vec![text("ok")], is_error: false }],
        });
        assert_eq!(encode_request(&chat).get("thinking"), None);

        chat.messages[1].content.insert(0, Part::Reasoning { text: "r".into(), signature: Some("sig".into()) });
        assert_eq!(encode_request(&chat)["thinking"], json!({"type": "enabled", "budget_tokens": 16384}));
    }

    // --- whole answers -------------------------------------------------------------------

    #[test]
    fn parses_the_fixture_responses() {
        let parsed = parse_response(&fixture(RESPONSE_TEXT)).unwrap();
        assert_eq!(
            parsed,
            ChatResponse {
                id: "msg_01XFDUDYJgAACzvnptvVoYEL".into(),
                model: MODEL.into(),
                created: None,
                content: vec![text("Hello! It's nice to meet you. How can I help you today?")],
                stop_reason: Some(StopReason::EndTurn),
                usage: Some(usage(12, 0, 0, 18)),
            }
        );
        let parsed = parse_response(&fixture(RESPONSE_TOOL)).unwrap();
        assert_eq!(
            parsed,
            ChatResponse {
                id: "msg_01Aq9w938a90dw8q".into(),
                model: MODEL.into(),
                created: None,
                content: vec![
                    text("I'll check the current weather in San Francisco for you."),
                    Part::ToolCall {
                        id: CALL_ID.into(),
                        name: "get_weather".into(),
                        arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
                    },
                ],
                stop_reason: Some(StopReason::ToolUse),
                // 21 uncached + 1450 read + 188 written.
                usage: Some(usage(1659, 1450, 188, 73)),
            }
        );
    }

    #[test]
    fn parses_thinking_stop_reasons_and_errors() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "thinking", "thinking": "let me see", "signature": "EqQB"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                {"type": "text", "text": "done"}
            ],
            "stop_reason": "refusal",
            "usage": {"input_tokens": 5, "output_tokens": 9, "output_tokens_details": {"thinking_tokens": 4}}
        });
        let parsed = parse_response(&body).unwrap();
        assert_eq!(
            parsed.content,
            vec![Part::Reasoning { text: "let me see".into(), signature: Some("EqQB".into()) }, text("done")]
        );
        assert_eq!(parsed.stop_reason, Some(StopReason::ContentFilter));
        assert_eq!(parsed.usage, Some(TokenUsage { reasoning_tokens: 4, ..usage(5, 0, 0, 9) }));

        let reasons = [
            ("end_turn", StopReason::EndTurn),
            ("pause_turn", StopReason::EndTurn),
            ("max_tokens", StopReason::MaxTokens),
            ("model_context_window_exceeded", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("tool_use", StopReason::ToolUse),
            ("something_new", StopReason::EndTurn),
        ];
        for (wire, reason) in reasons {
            let body = json!({"id": "m", "model": "m", "content": [], "stop_reason": wire});
            assert_eq!(parse_response(&body).unwrap().stop_reason, Some(reason), "{wire}");
        }

        let error = json!({
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": "req_1"
        });
        assert_eq!(
            parse_response(&error),
            Err(DecodeError::Upstream { kind: Some("overloaded_error".into()), message: "Overloaded".into() })
        );
        assert_eq!(
            parse_response(&json!({"id": "m", "model": "m"})),
            Err(DecodeError::Malformed("message without a content array"))
        );
        assert_eq!(
            parse_response(&json!({"id": 5, "content": []})),
            Err(DecodeError::Malformed("message id is not a string"))
        );
        assert_eq!(
            parse_response(&json!({"content": [{"type": "text"}]})),
            Err(DecodeError::Malformed("content block field"))
        );
    }

    #[test]
    fn encodes_a_response_with_anthropic_usage() {
        let response = ChatResponse {
            id: "chatcmpl-123".into(),
            model: "gpt-4o".into(),
            created: Some(1),
            content: vec![
                Part::Reasoning { text: "thought".into(), signature: None },
                text(""),
                text("Let me look."),
                Part::ToolCall { id: "call_1".into(), name: "f".into(), arguments: r#"{"a":[1]}"#.into() },
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Some(TokenUsage { reasoning_tokens: 3, ..usage(1000, 600, 100, 50) }),
        };
        assert_eq!(
            encode_response(&response),
            json!({
                "id": "msg_chatcmpl-123",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o",
                "content": [
                    {"type": "thinking", "thinking": "thought", "signature": ""},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1]}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 300,
                    "cache_creation_input_tokens": 100,
                    "cache_read_input_tokens": 600,
                    "output_tokens": 50,
                    "output_tokens_details": {"thinking_tokens": 3}
                }
            })
        );
    }

    #[test]
    fn encoded_responses_parse_back() {
        for body in [RESPONSE_TEXT, RESPONSE_TOOL] {
            let parsed = parse_response(&fixture(body)).unwrap();
            let encoded = encode_response(&parsed);
            assert_eq!(parse_response(&encoded).unwrap(), parsed);
        }
        let empty = ChatResponse {
            id: "msg_x".into(),
            model: "m".into(),
            created: None,
            content: vec![],
            stop_reason: None,
            usage: None,
        };
        let encoded = encode_response(&empty);
        assert_eq!((encoded["id"].clone(), encoded["content"].clone()), (json!("msg_x"), json!([])));
        assert_eq!(encoded["stop_reason"], Value::Null);
        assert_eq!(encoded["usage"]["output_tokens"], 0);
    }

    // --- stream decoding -------------------------------------------------------------------

    fn start(id: &str) -> StreamEvent {
        StreamEvent::Start { id: id.into(), model: MODEL.into(), created: None }
    }

    fn text_delta(text: &str) -> StreamEvent {
        StreamEvent::TextDelta { text: text.into() }
    }

    fn tool_start() -> StreamEvent {
        StreamEvent::ToolCallStart { index: 0, id: CALL_ID.into(), name: "get_weather".into() }
    }

    fn tool_delta(index: u32, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCallDelta { index, arguments: arguments.into() }
    }

    fn text_stream_events() -> Vec<StreamEvent> {
        vec![
            start("msg_01XFDUDYJgAACzvnptvVoYEL"),
            text_delta("Hello"),
            text_delta("! It's nice to meet you."),
            text_delta(" How can I help you today?"),
            StreamEvent::Finish { stop_reason: StopReason::EndTurn },
            StreamEvent::Usage { usage: usage(12, 0, 0, 18) },
        ]
    }

    fn tool_stream_events() -> Vec<StreamEvent> {
        vec![
            start("msg_01Aq9w938a90dw8q"),
            text_delta("I'll check the current weather"),
            text_delta(" in San Francisco for you."),
            tool_start(),
            tool_delta(0, r#"{"location": "San Fra"#),
            tool_delta(0, r#"ncisco, CA""#),
            tool_delta(0, r#", "unit": "celsius"}"#),
            StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            StreamEvent::Usage { usage: usage(1659, 1450, 188, 73) },
        ]
    }

    #[test]
    fn decodes_the_fixture_streams() {
        assert_eq!(decode_all(STREAM_TEXT), (text_stream_events(), true));
        assert_eq!(decode_all(STREAM_TOOL), (tool_stream_events(), true));
    }

    #[test]
    fn decodes_thinking_and_ignores_what_it_does_not_carry() {
        let stream = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":1}}}"#,
            "\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"I need to"}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
            "\n\n",
            "event: content_block_stop\n",
            r#"data: {"type":"content_block_stop","index":0}"#,
            "\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"query\":1}"}}"#,
            "\n\n",
            "event: content_block_stop\n",
            r#"data: {"type":"content_block_stop","index":1}"#,
            "\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"citations_delta","citation":{}}}"#,
            "\n\n",
            "event: brand_new_event\n",
            r#"data: {"type":"brand_new_event"}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Answer"}}"#,
            "\n\n",
            "event: content_block_stop\n",
            r#"data: {"type":"content_block_stop","index":2}"#,
            "\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":30,"cache_creation_input_tokens":5}}"#,
            "\n\n",
        );
        let (events, complete) = decode_all(stream);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start { id: "msg_1".into(), model: "m".into(), created: None },
                StreamEvent::ReasoningDelta { text: "I need to".into() },
                StreamEvent::ReasoningSignature { signature: "EqQBCgIYAhIM".into() },
                text_delta("Answer"),
                StreamEvent::Finish { stop_reason: StopReason::MaxTokens },
                // Input counts from message_start, completed by message_delta's.
                StreamEvent::Usage { usage: usage(105, 90, 5, 30) },
            ]
        );
        // No message_stop: the body was cut off.
        assert!(!complete);
    }

    #[test]
    fn decoder_errors() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let error = SseEvent::named(
            "error",
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        );
        assert_eq!(
            decoder.decode(&error, &mut out),
            Err(DecodeError::Upstream { kind: Some("overloaded_error".into()), message: "Overloaded".into() })
        );
        assert_eq!(
            decoder.decode(&SseEvent::named("ping", "not json"), &mut out),
            Err(DecodeError::Malformed("stream event data is not JSON"))
        );
        let orphan = SseEvent::named(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        );
        assert_eq!(
            decoder.decode(&orphan, &mut out),
            Err(DecodeError::Malformed("input_json_delta outside a tool_use block"))
        );
        // The SSE name stands in for a missing `type`.
        decoder.decode(&SseEvent::named("message_stop", "{}"), &mut out).unwrap();
        assert!(decoder.is_complete());
        assert_eq!(out, vec![]);
    }

    // --- stream encoding -------------------------------------------------------------------

    /// What the SDKs' `accumulate_event` builds from a stream (anthropic-sdk-python's
    /// `MessageStream`), checking the ordering rules on the way: blocks are appended at
    /// their index, deltas go to started blocks, each block stops once, `message_stop`
    /// comes last and the SSE name matches the data's `type`.
    fn accumulate(events: &[SseEvent]) -> Value {
        let mut message = Value::Null;
        let mut json_buffers: Vec<String> = Vec::new();
        let mut stopped: Vec<bool> = Vec::new();
        let mut ended = false;
        for event in events {
            assert!(!ended, "an event after message_stop");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), data["type"].as_str());
            match data["type"].as_str().unwrap() {
                "message_start" => {
                    assert!(message.is_null());
                    message = data["message"].clone();
                }
                "content_block_start" => {
                    let content = message["content"].as_array_mut().unwrap();
                    assert_eq!(data["index"], json!(content.len()));
                    content.push(data["content_block"].clone());
                    json_buffers.push(String::new());
                    stopped.push(false);
                }
                "content_block_delta" => {
                    let index = data["index"].as_u64().unwrap() as usize;
                    let block = &mut message["content"][index];
                    let delta = &data["delta"];
                    match delta["type"].as_str().unwrap() {
                        "text_delta" => {
                            block["text"] = json!(format!(
                                "{}{}",
                                block["text"].as_str().unwrap(),
                                delta["text"].as_str().unwrap()
                            ));
                        }
                        "thinking_delta" => {
                            block["thinking"] = json!(format!(
                                "{}{}",
                                block["thinking"].as_str().unwrap(),
                                delta["thinking"].as_str().unwrap()
                            ));
                        }
                        "signature_delta" => block["signature"] = delta["signature"].clone(),
                        "input_json_delta" => {
                            json_buffers[index].push_str(delta["partial_json"].as_str().unwrap());
                            block["input"] = serde_json::from_str(&json_buffers[index]).unwrap_or(Value::Null);
                        }
                        other => panic!("unexpected delta {other}"),
                    }
                }
                "content_block_stop" => {
                    let index = data["index"].as_u64().unwrap() as usize;
                    assert!(!stopped[index], "block {index} stopped twice");
                    stopped[index] = true;
                }
                "message_delta" => {
                    message["stop_reason"] = data["delta"]["stop_reason"].clone();
                    message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                    for (key, value) in data["usage"].as_object().unwrap() {
                        message["usage"][key] = value.clone();
                    }
                }
                "message_stop" => ended = true,
                other => panic!("unexpected event {other}"),
            }
        }
        assert!(ended, "no message_stop");
        assert!(stopped.iter().all(|stopped| *stopped), "a block was never stopped");
        message
    }

    #[test]
    fn encodes_the_exact_event_sequence() {
        let out = encode_all(tool_stream_events());
        let wire: Vec<(String, Value)> =
            out.iter().map(|e| (e.event.clone().unwrap(), serde_json::from_str(&e.data).unwrap())).collect();
        let expected = [
            (
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "content": [],
                    "model": MODEL, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}
                }}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "I'll check the current weather"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": " in San Francisco for you."}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block":
                       {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": r#"{"location": "San Fra"#}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": r#"ncisco, CA""#}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": r#", "unit": "celsius"}"#}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                       "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188,
                                 "cache_read_input_tokens": 1450, "output_tokens": 73}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let expected: Vec<(String, Value)> = expected.into_iter().map(|(name, data)| (name.to_owned(), data)).collect();
        assert_eq!(wire, expected);
        assert_eq!(out[0].encode(), bytes::Bytes::from(format!("event: message_start\ndata: {}\n\n", out[0].data)));
    }

    #[test]
    fn the_sdk_accumulates_the_encoded_streams_into_the_fixture_messages() {
        let strip = |mut message: Value| {
            // Fields the canonical model does not carry.
            message["usage"].as_object_mut().unwrap().retain(|key, _| key != "cache_creation" && key != "service_tier");
            message
        };
        for (events, body) in [(text_stream_events(), RESPONSE_TEXT), (tool_stream_events(), RESPONSE_TOOL)] {
            assert_eq!(accumulate(&encode_all(events)), strip(fixture(body)));
        }
    }

    #[test]
    fn encoded_streams_decode_back() {
        for events in [text_stream_events(), tool_stream_events()] {
            let wire: Vec<u8> = encode_all(events.clone()).iter().flat_map(|e| e.encode().to_vec()).collect();
            assert_eq!(decode_all(std::str::from_utf8(&wire).unwrap()), (events, true));
        }
    }

    #[test]
    fn thinking_blocks_signatures_and_late_usage() {
        let events = vec![
            StreamEvent::Start { id: "abc".into(), model: "deepseek-reasoner".into(), created: Some(5) },
            StreamEvent::ReasoningDelta { text: "".into() },
            StreamEvent::ReasoningDelta { text: "Think".into() },
            StreamEvent::ReasoningDelta { text: "ing".into() },
            StreamEvent::ReasoningSignature { signature: "sig1".into() },
            StreamEvent::ReasoningSignature { signature: "sig2".into() },
            StreamEvent::TextDelta { text: "".into() },
            text_delta("Hi"),
            StreamEvent::ReasoningDelta { text: "more".into() },
            StreamEvent::Finish { stop_reason: StopReason::MaxTokens },
            // OpenAI reports usage in a last chunk, after finish_reason.
            StreamEvent::Usage { usage: TokenUsage { reasoning_tokens: 7, ..usage(40, 30, 0, 20) } },
        ];
        let message = accumulate(&encode_all(events));
        assert_eq!(
            message,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "deepseek-reasoner",
                "content": [
                    {"type": "thinking", "thinking": "Thinking", "signature": "sig1"},
                    {"type": "thinking", "thinking": "", "signature": "sig2"},
                    {"type": "text", "text": "Hi"},
                    {"type": "thinking", "thinking": "more", "signature": ""}
                ],
                "stop_reason": "max_tokens",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30,
                    "output_tokens": 20, "output_tokens_details": {"thinking_tokens": 7}
                }
            })
        );
    }

    #[test]
    fn interleaved_tool_call_fragments_reach_their_own_blocks() {
        let events = vec![
            start("msg_1"),
            StreamEvent::ToolCallStart { index: 0, id: "call_a".into(), name: "a".into() },
            tool_delta(0, r#"{"x":"#),
            StreamEvent::ToolCallStart { index: 1, id: "call_b".into(), name: "b".into() },
            tool_delta(1, r#"{"y":"#),
            tool_delta(0, "1}"),
            tool_delta(1, "2}"),
            // A repeated start and a fragment for a call never started change nothing.
            StreamEvent::ToolCallStart { index: 0, id: "call_a".into(), name: "a".into() },
            tool_delta(5, "{}"),
            // No Finish: tool calls were made, so the turn waits for results.
        ];
        let out = encode_all(events);
        let message = accumulate(&out);
        assert_eq!(
            message["content"],
            json!([
                {"type": "tool_use", "id": "call_a", "name": "a", "input": {"x": 1}},
                {"type": "tool_use", "id": "call_b", "name": "b", "input": {"y": 2}}
            ])
        );
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(out.len(), 11);
    }

    #[test]
    fn finish_without_events_still_makes_a_valid_message() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.finish(&mut out);
        encoder.finish(&mut out);
        encoder.encode(text_delta("late"), &mut out);
        let message = accumulate(&out);
        assert_eq!(message["content"], json!([]));
        assert_eq!(message["stop_reason"], "end_turn");
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn error_ends_the_stream_with_an_anthropic_error_event() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.encode(start("msg_1"), &mut out);
        encoder.encode(text_delta("partial"), &mut out);
        let error = ErrorInfo {
            status: 529,
            code: "upstream_overloaded".into(),
            openai_type: "server_error".into(),
            message: "The upstream is overloaded".into(),
            param: None,
        };
        encoder.error(&error, &mut out);
        encoder.finish(&mut out);
        encoder.error(&error, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[3].event.as_deref(), Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&out[3].data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "The upstream is overloaded"}})
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.decode(&out[3], &mut Vec::new()),
            Err(DecodeError::Upstream {
                kind: Some("overloaded_error".into()),
                message: "The upstream is overloaded".into()
            })
        );
    }
}

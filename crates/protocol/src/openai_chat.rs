//! OpenAI Chat Completions (`/v1/chat/completions`): the client format most tools speak and
//! the relay's pivot format, so this codec is lossless, in both directions, for everything
//! the canonical model can hold that Chat Completions can express.
//!
//! Requests ([`parse_request`], [`encode_request`]):
//! - `system` and `developer` messages, wherever they stand, become [`ChatRequest::system`]
//!   in order (text parts of one message joined with `\n`); encoding writes one `system`
//!   message per entry, at the front.
//! - `tool` messages become [`Part::ToolResult`]s of a `User` message; consecutive ones share
//!   one message, and the first `user` message right after them joins it too, so a turn that
//!   Anthropic or Gemini holds as one user message survives the round trip. Encoding writes
//!   one `tool` message per result (all of a message's results first, as OpenAI requires them
//!   right after the assistant's call) and then one `user` message with the other parts.
//!   OpenAI tool results carry text only and no error flag: `is_error` is dropped and images
//!   inside a result move into that following `user` message, so the model still sees them.
//! - Assistant `reasoning_content` (DeepSeek's convention, also `reasoning`) is parsed into
//!   [`Part::Reasoning`], but reasoning is DROPPED when encoding: OpenAI-compatible upstreams
//!   reject message fields they do not know. Assistant parts come back in OpenAI's order
//!   (reasoning, text, tool calls); empty assistant text is dropped (Anthropic rejects empty
//!   text blocks, and clients send `""` next to tool calls).
//! - The output cap is written as `max_tokens`, not `max_completion_tokens`: every
//!   OpenAI-compatible server (vLLM, Ollama, DeepSeek, Azure, OpenAI itself for non-reasoning
//!   models) accepts it. Both are read, `max_completion_tokens` winning.
//! - `top_k` is read and written (vLLM and most compatible servers take it) so that an
//!   Anthropic or Gemini request crossing the pivot keeps it; api.openai.com rejects it, so a
//!   provider for OpenAI itself must strip it.
//! - Dropped on parse: message `name`, image `detail`, function `strict`, `n`, `logprobs`,
//!   `stream_options` (re-derived from `stream`), and other vendor options. The legacy
//!   `function` role, `functions` and `function_call` are rejected with a clear error.
//!
//! Answers ([`parse_response`], [`encode_response`]) use the first choice; text parts are
//! joined into `content` (as a stream would concatenate them), a `refusal` is text with a
//! [`StopReason::ContentFilter`], and OpenAI's `stop` cannot tell a stop sequence from the
//! end of the turn, so both read back as [`StopReason::EndTurn`]. Reasoning signatures have
//! no place in this format and are dropped.
//!
//! Streams ([`Decoder`], [`Encoder`]) are `chat.completion.chunk` events ending in
//! `data: [DONE]`; usage comes in a last chunk with empty `choices` when asked for.

use crate::canonical::{
    ChatRequest, ChatResponse, ErrorInfo, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    TokenUsage, Tool, ToolChoice,
};
use crate::sse::SseEvent;
use crate::{DecodeError, ProtocolError, StreamDecoder, StreamEncoder};
use serde::Serialize;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Parses a Chat Completions request body.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ProtocolError> {
    match body {
        Value::Object(map) => parse_request_map(map),
        _ => Err(ProtocolError::new("the request body must be a JSON object")),
    }
}

/// [`parse_request`] for a body already known to be an object (saves a copy).
pub fn parse_request_map(body: &Map<String, Value>) -> Result<ChatRequest, ProtocolError> {
    if present(body, "functions").is_some() {
        return Err(ProtocolError::at("functions", "`functions` is deprecated and not supported; use `tools`"));
    }
    if present(body, "function_call").is_some() {
        return Err(ProtocolError::at(
            "function_call",
            "`function_call` is deprecated and not supported; use `tool_choice`",
        ));
    }
    let model = match present(body, "model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(Value::String(_)) | None => return Err(ProtocolError::at("model", "`model` is required")),
        Some(_) => return Err(ProtocolError::at("model", "`model` must be a string")),
    };
    let (system, messages) = parse_messages(body)?;
    let max_output_tokens = match opt_u64(body, "max_completion_tokens")? {
        Some(max) => Some(max),
        None => opt_u64(body, "max_tokens")?,
    };
    Ok(ChatRequest {
        model,
        system,
        messages,
        tools: parse_tools(body)?,
        tool_choice: parse_tool_choice(body)?,
        parallel_tool_calls: opt_bool(body, "parallel_tool_calls")?,
        max_output_tokens,
        temperature: opt_f64(body, "temperature")?,
        top_p: opt_f64(body, "top_p")?,
        top_k: opt_u64(body, "top_k")?,
        stop: parse_stop(body)?,
        seed: opt_i64(body, "seed")?,
        response_format: parse_response_format(body)?,
        reasoning_effort: opt_string(body, "reasoning_effort")?,
        stream: opt_bool(body, "stream")?.unwrap_or(false),
        user: opt_string(body, "user")?,
    })
}

/// A field's value, `null` counting as absent (many clients send `null` for "not set").
fn present<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|value| !value.is_null())
}

fn opt_string(body: &Map<String, Value>, key: &'static str) -> Result<Option<String>, ProtocolError> {
    match present(body, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ProtocolError::at(key, format!("`{key}` must be a string"))),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, ProtocolError> {
    match present(body, key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(ProtocolError::at(key, format!("`{key}` must be a boolean"))),
    }
}

fn opt_u64(body: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, ProtocolError> {
    match present(body, key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtocolError::at(key, format!("`{key}` must be a whole number >= 0"))),
    }
}

fn opt_i64(body: &Map<String, Value>, key: &'static str) -> Result<Option<i64>, ProtocolError> {
    match present(body, key) {
        None => Ok(None),
        Some(value) => {
            value.as_i64().map(Some).ok_or_else(|| ProtocolError::at(key, format!("`{key}` must be an integer")))
        }
    }
}

fn opt_f64(body: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, ProtocolError> {
    match present(body, key) {
        None => Ok(None),
        Some(value) => {
            value.as_f64().map(Some).ok_or_else(|| ProtocolError::at(key, format!("`{key}` must be a number")))
        }
    }
}

fn parse_messages(body: &Map<String, Value>) -> Result<(Vec<String>, Vec<Message>), ProtocolError> {
    let list = match present(body, "messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(ProtocolError::at("messages", "`messages` must not be empty")),
        None => return Err(ProtocolError::at("messages", "`messages` is required")),
        Some(_) => return Err(ProtocolError::at("messages", "`messages` must be an array")),
    };
    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::with_capacity(list.len());
    // The last canonical message holds tool results and nothing else: the next tool
    // message, or the first user message, belongs to the same turn.
    let mut open_tool_turn = false;
    for (at, message) in list.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(ProtocolError::at("messages", format!("messages[{at}] must be an object")));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) => role.as_str(),
            _ => return Err(ProtocolError::at("messages", format!("messages[{at}].role must be a string"))),
        };
        match role {
            "system" | "developer" => system.push(system_text(message, at)?),
            "user" => {
                let parts = user_parts(message, at)?;
                match messages.last_mut() {
                    Some(last) if open_tool_turn => last.content.extend(parts),
                    _ => messages.push(Message { role: Role::User, content: parts }),
                }
                open_tool_turn = false;
            }
            "assistant" => {
                messages.push(Message { role: Role::Assistant, content: assistant_parts(message, at)? });
                open_tool_turn = false;
            }
            "tool" => {
                let result = tool_result(message, at)?;
                match messages.last_mut() {
                    Some(last) if open_tool_turn => last.content.push(result),
                    _ => messages.push(Message { role: Role::User, content: vec![result] }),
                }
                open_tool_turn = true;
            }
            "function" => {
                return Err(ProtocolError::at(
                    "messages",
                    format!("messages[{at}]: the deprecated `function` role is not supported; use `tool` messages"),
                ));
            }
            other => {
                return Err(ProtocolError::at(
                    "messages",
                    format!(
                        "messages[{at}].role `{other}` is not one of `system`, `developer`, `user`, `assistant`, `tool`"
                    ),
                ));
            }
        }
    }
    Ok((system, messages))
}

/// The text of a system or developer message: a string, or text parts joined by `\n`.
fn system_text(message: &Map<String, Value>, at: usize) -> Result<String, ProtocolError> {
    match present(message, "content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let texts = parts
                .iter()
                .enumerate()
                .map(|(index, part)| text_part(part, at, index))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(texts.join("\n"))
        }
        None => Err(ProtocolError::at("messages", format!("messages[{at}].content is required"))),
        Some(_) => Err(ProtocolError::at("messages", format!("messages[{at}].content must be a string or an array"))),
    }
}

/// A `{"type": "text", "text": ...}` part's text.
fn text_part(part: &Value, at: usize, index: usize) -> Result<&str, ProtocolError> {
    match (part.get("type").and_then(Value::as_str), part.get("text")) {
        (Some("text"), Some(Value::String(text))) => Ok(text),
        (Some("text"), _) => {
            Err(ProtocolError::at("messages", format!("messages[{at}].content[{index}].text must be a string")))
        }
        _ => Err(ProtocolError::at(
            "messages",
            format!("messages[{at}].content[{index}] must be a `text` part in this message"),
        )),
    }
}

fn user_parts(message: &Map<String, Value>, at: usize) -> Result<Vec<Part>, ProtocolError> {
    match present(message, "content") {
        Some(Value::String(text)) => Ok(vec![Part::Text { text: text.clone() }]),
        Some(Value::Array(parts)) => parts.iter().enumerate().map(|(index, part)| user_part(part, at, index)).collect(),
        None => Err(ProtocolError::at("messages", format!("messages[{at}].content is required"))),
        Some(_) => Err(ProtocolError::at("messages", format!("messages[{at}].content must be a string or an array"))),
    }
}

fn user_part(part: &Value, at: usize, index: usize) -> Result<Part, ProtocolError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Part::Text { text: text_part(part, at, index)?.to_owned() }),
        Some("image_url") => {
            // Documented as `{"url", "detail"}`; some clients send the URL as a bare string.
            let url = match part.get("image_url") {
                Some(Value::String(url)) => Some(url.as_str()),
                Some(Value::Object(image)) => image.get("url").and_then(Value::as_str),
                _ => None,
            };
            let Some(url) = url else {
                return Err(ProtocolError::at(
                    "messages",
                    format!("messages[{at}].content[{index}].image_url.url must be a string"),
                ));
            };
            Ok(Part::Image { source: ImageSource::from_url(url) })
        }
        Some(other) => Err(ProtocolError::at(
            "messages",
            format!("messages[{at}].content[{index}]: content parts of type `{other}` are not supported"),
        )),
        None => Err(ProtocolError::at("messages", format!("messages[{at}].content[{index}].type must be a string"))),
    }
}

fn assistant_parts(message: &Map<String, Value>, at: usize) -> Result<Vec<Part>, ProtocolError> {
    let mut parts = Vec::new();
    for key in ["reasoning_content", "reasoning"] {
        match present(message, key) {
            None => {}
            Some(Value::String(text)) => {
                if !text.is_empty() {
                    parts.push(Part::Reasoning { text: text.clone(), signature: None });
                }
                break;
            }
            Some(_) => {
                return Err(ProtocolError::at("messages", format!("messages[{at}].{key} must be a string")));
            }
        }
    }
    match present(message, "content") {
        None => {}
        Some(Value::String(text)) => push_text(&mut parts, text),
        Some(Value::Array(content)) => {
            for (index, part) in content.iter().enumerate() {
                // Assistant content parts are `text` or `refusal`; a refusal is text the
                // model wrote.
                let text = match (part.get("type").and_then(Value::as_str), part.get("refusal")) {
                    (Some("refusal"), Some(Value::String(refusal))) => refusal.as_str(),
                    _ => text_part(part, at, index)?,
                };
                push_text(&mut parts, text);
            }
        }
        Some(_) => {
            return Err(ProtocolError::at(
                "messages",
                format!("messages[{at}].content must be a string, an array or null"),
            ));
        }
    }
    match present(message, "tool_calls") {
        None => {}
        Some(Value::Array(calls)) => {
            for (index, call) in calls.iter().enumerate() {
                parts.push(tool_call(call, at, index)?);
            }
        }
        Some(_) => return Err(ProtocolError::at("messages", format!("messages[{at}].tool_calls must be an array"))),
    }
    if present(message, "function_call").is_some() {
        return Err(ProtocolError::at(
            "messages",
            format!("messages[{at}].function_call is deprecated and not supported; use `tool_calls`"),
        ));
    }
    Ok(parts)
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text { text: text.to_owned() });
    }
}

fn tool_call(call: &Value, at: usize, index: usize) -> Result<Part, ProtocolError> {
    let path = || format!("messages[{at}].tool_calls[{index}]");
    let Value::Object(call) = call else {
        return Err(ProtocolError::at("messages", format!("{} must be an object", path())));
    };
    if let Some(kind) = present(call, "type")
        && kind.as_str() != Some("function")
    {
        return Err(ProtocolError::at("messages", format!("{}.type must be `function`", path())));
    }
    let Some(Value::String(id)) = call.get("id") else {
        return Err(ProtocolError::at("messages", format!("{}.id must be a string", path())));
    };
    let function = call.get("function");
    let Some(Value::String(name)) = function.and_then(|function| function.get("name")) else {
        return Err(ProtocolError::at("messages", format!("{}.function.name must be a string", path())));
    };
    let arguments = match function.and_then(|function| function.get("arguments")) {
        Some(Value::String(arguments)) => arguments.clone(),
        None | Some(Value::Null) => String::new(),
        // Not OpenAI's shape, but some clients send the object itself.
        Some(object @ Value::Object(_)) => object.to_string(),
        Some(_) => {
            return Err(ProtocolError::at("messages", format!("{}.function.arguments must be a string", path())));
        }
    };
    Ok(Part::ToolCall { id: id.clone(), name: name.clone(), arguments })
}

fn tool_result(message: &Map<String, Value>, at: usize) -> Result<Part, ProtocolError> {
    let Some(Value::String(call_id)) = message.get("tool_call_id") else {
        return Err(ProtocolError::at("messages", format!("messages[{at}].tool_call_id must be a string")));
    };
    let content = match present(message, "content") {
        None => Vec::new(),
        Some(Value::String(text)) => vec![Part::Text { text: text.clone() }],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(index, part)| Ok(Part::Text { text: text_part(part, at, index)?.to_owned() }))
            .collect::<Result<_, ProtocolError>>()?,
        Some(_) => {
            return Err(ProtocolError::at("messages", format!("messages[{at}].content must be a string or an array")));
        }
    };
    Ok(Part::ToolResult { call_id: call_id.clone(), content, is_error: false })
}

fn parse_tools(body: &Map<String, Value>) -> Result<Vec<Tool>, ProtocolError> {
    let list = match present(body, "tools") {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ProtocolError::at("tools", "`tools` must be an array")),
    };
    list.iter()
        .enumerate()
        .map(|(at, tool)| {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ProtocolError::at("tools", format!("tools[{at}].type must be `function`")));
            }
            let Some(Value::Object(function)) = tool.get("function") else {
                return Err(ProtocolError::at("tools", format!("tools[{at}].function must be an object")));
            };
            let Some(Value::String(name)) = function.get("name") else {
                return Err(ProtocolError::at("tools", format!("tools[{at}].function.name must be a string")));
            };
            let description = match present(function, "description") {
                None => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => {
                    return Err(ProtocolError::at(
                        "tools",
                        format!("tools[{at}].function.description must be a string"),
                    ));
                }
            };
            let parameters = match present(function, "parameters") {
                // OpenAI: "omitting `parameters` defines a function with an empty parameter list".
                None => json!({"type": "object", "properties": {}}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(ProtocolError::at(
                        "tools",
                        format!("tools[{at}].function.parameters must be an object"),
                    ));
                }
            };
            Ok(Tool { name: name.clone(), description, parameters })
        })
        .collect()
}

fn parse_tool_choice(body: &Map<String, Value>) -> Result<Option<ToolChoice>, ProtocolError> {
    const EXPECTED: &str =
        "`tool_choice` must be `auto`, `none`, `required` or {\"type\": \"function\", \"function\": {\"name\": ...}}";
    match present(body, "tool_choice") {
        None => Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(ProtocolError::at("tool_choice", EXPECTED)),
        },
        Some(choice @ Value::Object(_)) => {
            match (choice.get("type").and_then(Value::as_str), choice.pointer("/function/name")) {
                (Some("function"), Some(Value::String(name))) => Ok(Some(ToolChoice::Named(name.clone()))),
                _ => Err(ProtocolError::at("tool_choice", EXPECTED)),
            }
        }
        Some(_) => Err(ProtocolError::at("tool_choice", EXPECTED)),
    }
}

fn parse_stop(body: &Map<String, Value>) -> Result<Vec<String>, ProtocolError> {
    const EXPECTED: &str = "`stop` must be a string or an array of strings";
    match present(body, "stop") {
        None => Ok(Vec::new()),
        Some(Value::String(stop)) => Ok(vec![stop.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|stop| stop.as_str().map(str::to_owned).ok_or_else(|| ProtocolError::at("stop", EXPECTED)))
            .collect(),
        Some(_) => Err(ProtocolError::at("stop", EXPECTED)),
    }
}

fn parse_response_format(body: &Map<String, Value>) -> Result<Option<ResponseFormat>, ProtocolError> {
    let Some(format) = present(body, "response_format") else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Some(ResponseFormat::Text)),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let Some(Value::Object(spec)) = format.get("json_schema") else {
                return Err(ProtocolError::at("response_format", "`response_format.json_schema` must be an object"));
            };
            let Some(Value::String(name)) = spec.get("name") else {
                return Err(ProtocolError::at(
                    "response_format",
                    "`response_format.json_schema.name` must be a string",
                ));
            };
            let schema = match present(spec, "schema") {
                None => Value::Object(Map::new()),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(ProtocolError::at(
                        "response_format",
                        "`response_format.json_schema.schema` must be an object",
                    ));
                }
            };
            let strict = match present(spec, "strict") {
                None => None,
                Some(Value::Bool(strict)) => Some(*strict),
                Some(_) => {
                    return Err(ProtocolError::at(
                        "response_format",
                        "`response_format.json_schema.strict` must be a boolean",
                    ));
                }
            };
            Ok(Some(ResponseFormat::JsonSchema { name: name.clone(), schema, strict }))
        }
        _ => Err(ProtocolError::at(
            "response_format",
            "`response_format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

/// Writes a canonical request as a Chat Completions body. Absent options are omitted.
pub fn encode_request(request: &ChatRequest) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(request.model.clone()));
    body.insert("messages".into(), Value::Array(encode_messages(request)));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert("name".into(), Value::String(tool.name.clone()));
                if let Some(description) = &tool.description {
                    function.insert("description".into(), Value::String(description.clone()));
                }
                if !tool.parameters.is_null() {
                    function.insert("parameters".into(), tool.parameters.clone());
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    }
    if let Some(max) = request.max_output_tokens {
        body.insert("max_tokens".into(), json!(max));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if let Some(top_k) = request.top_k {
        body.insert("top_k".into(), json!(top_k));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(seed) = request.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(format) = &request.response_format {
        let format = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema, strict } => {
                let mut spec = Map::new();
                spec.insert("name".into(), Value::String(name.clone()));
                spec.insert("schema".into(), schema.clone());
                if let Some(strict) = strict {
                    spec.insert("strict".into(), Value::Bool(*strict));
                }
                json!({"type": "json_schema", "json_schema": spec})
            }
        };
        body.insert("response_format".into(), format);
    }
    if let Some(effort) = &request.reasoning_effort {
        body.insert("reasoning_effort".into(), Value::String(effort.clone()));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
        // Billing needs the usage of streamed answers too.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), Value::String(user.clone()));
    }
    body
}

fn encode_messages(request: &ChatRequest) -> Vec<Value> {
    let mut out = Vec::with_capacity(request.system.len() + request.messages.len());
    for text in &request.system {
        out.push(json!({"role": "system", "content": text}));
    }
    for message in &request.messages {
        match message.role {
            Role::User => encode_user(message, &mut out),
            Role::Assistant => out.push(encode_assistant(message)),
        }
    }
    out
}

/// A user message: its tool results as `tool` messages first, then the rest (with any
/// images the tool results held) as one `user` message.
fn encode_user(message: &Message, out: &mut Vec<Value>) {
    let mut rest: Vec<&Part> = Vec::new();
    let mut has_tool_results = false;
    for part in &message.content {
        if let Part::ToolResult { call_id, content, .. } = part {
            has_tool_results = true;
            let texts: Vec<&str> = content
                .iter()
                .filter_map(|part| match part {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            rest.extend(content.iter().filter(|part| matches!(part, Part::Image { .. })));
            let content = match texts.as_slice() {
                [] => Value::String(String::new()),
                [text] => Value::String((*text).to_owned()),
                texts => texts.iter().map(|text| json!({"type": "text", "text": text})).collect(),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
        }
    }
    let others = message.content.iter().filter(|part| matches!(part, Part::Text { .. } | Part::Image { .. }));
    rest.extend(others);
    if has_tool_results && rest.is_empty() {
        return;
    }
    let content = match rest.as_slice() {
        [] => Value::String(String::new()),
        [Part::Text { text }] => Value::String(text.clone()),
        parts => parts
            .iter()
            .filter_map(|part| match part {
                Part::Text { text } => Some(json!({"type": "text", "text": text})),
                Part::Image { source } => Some(json!({"type": "image_url", "image_url": {"url": source.to_url()}})),
                _ => None,
            })
            .collect(),
    };
    out.push(json!({"role": "user", "content": content}));
}

/// An assistant message: text as `content` (a string for one part, text parts for several,
/// `null` beside tool calls), tool calls as `tool_calls`. Reasoning is dropped.
fn encode_assistant(message: &Message) -> Value {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for part in &message.content {
        match part {
            Part::Text { text } => texts.push(text.as_str()),
            Part::ToolCall { id, name, arguments } => calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })),
            Part::Image { .. } | Part::ToolResult { .. } | Part::Reasoning { .. } => {}
        }
    }
    let content = match texts.as_slice() {
        [] if !calls.is_empty() => Value::Null,
        [] => Value::String(String::new()),
        [text] => Value::String((*text).to_owned()),
        texts => texts.iter().map(|text| json!({"type": "text", "text": text})).collect(),
    };
    let mut out = Map::new();
    out.insert("role".into(), Value::String("assistant".into()));
    out.insert("content".into(), content);
    if !calls.is_empty() {
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------------------

/// Parses a `chat.completion` object (its first choice).
pub fn parse_response(body: &Value) -> Result<ChatResponse, DecodeError> {
    let Value::Object(body) = body else {
        return Err(DecodeError::Malformed("chat completion is not a JSON object"));
    };
    let Some(choice) = body.get("choices").and_then(Value::as_array).and_then(|choices| choices.first()) else {
        return Err(DecodeError::Malformed("chat completion has no choices"));
    };
    let Some(message) = choice.get("message").filter(|message| message.is_object()) else {
        return Err(DecodeError::Malformed("chat completion choice has no message"));
    };
    let mut content = Vec::new();
    let reasoning = message.get("reasoning_content").and_then(Value::as_str);
    if let Some(text) = reasoning.or_else(|| message.get("reasoning").and_then(Value::as_str))
        && !text.is_empty()
    {
        content.push(Part::Reasoning { text: text.to_owned(), signature: None });
    }
    match message.get("content") {
        Some(Value::String(text)) => push_text(&mut content, text),
        // Not what OpenAI returns, but some compatible servers answer with text parts.
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    push_text(&mut content, text);
                }
            }
        }
        _ => {}
    }
    let refusal = message.get("refusal").and_then(Value::as_str).filter(|refusal| !refusal.is_empty());
    if let Some(refusal) = refusal {
        push_text(&mut content, refusal);
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let function = call.get("function");
            let name = function.and_then(|function| function.get("name")).and_then(Value::as_str);
            let Some(name) = name else {
                return Err(DecodeError::Malformed("tool call without a function name"));
            };
            let id = match call.get("id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => synthetic_call_id(content.len()),
            };
            let arguments = function.and_then(|function| function.get("arguments"));
            content.push(Part::ToolCall { id, name: name.to_owned(), arguments: arguments_text(arguments) });
        }
    }
    let mut stop_reason = choice.get("finish_reason").and_then(Value::as_str).map(stop_reason_from);
    if refusal.is_some() {
        stop_reason = Some(StopReason::ContentFilter);
    }
    Ok(ChatResponse {
        id: body.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        created: body.get("created").and_then(Value::as_i64),
        content,
        stop_reason,
        usage: body.get("usage").and_then(usage_from_openai),
    })
}

/// An id for a tool call whose upstream gave none, stable by position.
fn synthetic_call_id(position: usize) -> String {
    format!("call_{position}")
}

/// Tool arguments as JSON text: OpenAI sends a string; a few servers send the object.
fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}

/// OpenAI's `finish_reason`. `stop` covers stop sequences too (OpenAI does not tell them
/// apart); a reason this codec does not know still means generation ended normally.
fn stop_reason_from(reason: &str) -> StopReason {
    match reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

/// Writes a complete `chat.completion` object.
pub fn encode_response(response: &ChatResponse) -> Value {
    let mut texts = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for part in &response.content {
        match part {
            Part::Text { text } => texts.push_str(text),
            Part::Reasoning { text, .. } => reasoning.push_str(text),
            Part::ToolCall { id, name, arguments } => calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })),
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::String("assistant".into()));
    message.insert("content".into(), if texts.is_empty() { Value::Null } else { Value::String(texts) });
    message.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    let mut body = Map::new();
    body.insert("id".into(), Value::String(response.id.clone()));
    body.insert("object".into(), Value::String("chat.completion".into()));
    body.insert("created".into(), json!(response.created.unwrap_or_else(crate::unix_now)));
    body.insert("model".into(), Value::String(response.model.clone()));
    body.insert(
        "choices".into(),
        json!([{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": response.stop_reason.map(finish_reason),
        }]),
    );
    if let Some(usage) = &response.usage {
        body.insert("usage".into(), usage_to_openai(usage));
    }
    Value::Object(body)
}

// ---------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------

/// OpenAI's `usage` object in canonical form; `None` when it is not an object or counts
/// nothing. `prompt_tokens` already includes cached tokens; cache writes are Veil's
/// `prompt_tokens_details.cache_write_tokens` or a top-level `cache_creation_input_tokens`;
/// DeepSeek reports cache reads as `prompt_cache_hit_tokens`.
pub(crate) fn usage_from_openai(usage: &Value) -> Option<TokenUsage> {
    let usage = usage.as_object()?;
    if !["prompt_tokens", "completion_tokens", "total_tokens"].iter().any(|key| usage.contains_key(*key)) {
        return None;
    }
    let count = |value: Option<&Value>| value.and_then(Value::as_u64);
    let prompt_details = usage.get("prompt_tokens_details");
    let detail = |key: &str| count(prompt_details.and_then(|details| details.get(key)));
    Some(TokenUsage {
        input_tokens: count(usage.get("prompt_tokens")).unwrap_or(0),
        cached_tokens: detail("cached_tokens").or_else(|| count(usage.get("prompt_cache_hit_tokens"))).unwrap_or(0),
        cache_write_tokens: detail("cache_write_tokens")
            .or_else(|| count(usage.get("cache_creation_input_tokens")))
            .unwrap_or(0),
        output_tokens: count(usage.get("completion_tokens")).unwrap_or(0),
        reasoning_tokens: count(
            usage.get("completion_tokens_details").and_then(|details| details.get("reasoning_tokens")),
        )
        .unwrap_or(0),
        ..TokenUsage::default()
    })
}

/// Canonical usage as OpenAI's `usage` object (with Veil's `cache_write_tokens` extension
/// when there were cache writes).
pub(crate) fn usage_to_openai(usage: &TokenUsage) -> Value {
    let mut prompt_details = Map::new();
    prompt_details.insert("cached_tokens".into(), json!(usage.cached_tokens));
    if usage.cache_write_tokens != 0 {
        prompt_details.insert("cache_write_tokens".into(), json!(usage.cache_write_tokens));
    }
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// More distinct tool calls than any real answer has: past it the stream is treated as
/// broken rather than letting the index table grow.
const MAX_TOOL_CALLS: usize = 4096;

/// Decodes `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    done: bool,
    /// OpenAI tool call indices in the order their calls began; the position is the
    /// canonical index.
    tool_calls: Vec<u64>,
    /// The answer carried a `refusal`, which makes its end a content filter stop.
    refused: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn decode_tool_call(&mut self, call: &Value, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let function = call.get("function");
        let name = function.and_then(|function| function.get("name")).and_then(Value::as_str);
        // Some compatible servers omit `index`: a call with an id is a new one, a fragment
        // without one continues the last.
        let openai_index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            None if id.is_some() => self.tool_calls.len() as u64,
            None => self.tool_calls.last().copied().unwrap_or(0),
        };
        let position = match self.tool_calls.iter().position(|known| *known == openai_index) {
            Some(position) => position,
            None => {
                let Some(name) = name.filter(|name| !name.is_empty()) else {
                    return Err(DecodeError::Malformed("tool call fragment before the call's name"));
                };
                if self.tool_calls.len() >= MAX_TOOL_CALLS {
                    return Err(DecodeError::Malformed("too many tool calls in one answer"));
                }
                let position = self.tool_calls.len();
                self.tool_calls.push(openai_index);
                let id = id.map_or_else(|| synthetic_call_id(position), str::to_owned);
                out.push(StreamEvent::ToolCallStart { index: canonical_index(position), id, name: name.to_owned() });
                position
            }
        };
        let arguments = arguments_text(function.and_then(|function| function.get("arguments")));
        if !arguments.is_empty() {
            out.push(StreamEvent::ToolCallDelta { index: canonical_index(position), arguments });
        }
        Ok(())
    }
}

fn canonical_index(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

/// An error object an upstream sent inside its stream, in either shape seen in the wild:
/// `{"error": {...}}` (OpenAI) or `{"object": "error", ...}` (vLLM).
fn stream_error(chunk: &Value) -> Option<DecodeError> {
    let error = match chunk.get("error") {
        Some(error) if !error.is_null() => error,
        _ if chunk.get("object").and_then(Value::as_str) == Some("error") => chunk,
        _ => return None,
    };
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = match error {
        Value::String(message) => message.clone(),
        _ => text("message").unwrap_or_else(|| "the upstream reported an error".to_owned()),
    };
    Some(DecodeError::Upstream { kind: text("type").or_else(|| text("code")), message })
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|_| DecodeError::Malformed("stream chunk is not JSON"))?;
        if !chunk.is_object() {
            return Err(DecodeError::Malformed("stream chunk is not a JSON object"));
        }
        if let Some(error) = stream_error(&chunk) {
            return Err(error);
        }
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let usage = chunk.get("usage").and_then(usage_from_openai);
        // Azure opens with a chunk of `prompt_filter_results` only, with an empty id and
        // model: it carries nothing canonical and must not become the answer's identity.
        if choices.is_empty() && usage.is_none() {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                model: chunk.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
                created: chunk.get("created").and_then(Value::as_i64),
            });
        }
        // Only the first choice is relayed (`n` > 1 has no canonical form).
        let first = choices.iter().find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = first {
            if let Some(delta) = choice.get("delta") {
                let reasoning = delta.get("reasoning_content").and_then(Value::as_str);
                if let Some(text) = reasoning.or_else(|| delta.get("reasoning").and_then(Value::as_str))
                    && !text.is_empty()
                {
                    out.push(StreamEvent::ReasoningDelta { text: text.to_owned() });
                }
                if let Some(text) = delta.get("content").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(StreamEvent::TextDelta { text: text.to_owned() });
                }
                if let Some(text) = delta.get("refusal").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    self.refused = true;
                    out.push(StreamEvent::TextDelta { text: text.to_owned() });
                }
                if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        self.decode_tool_call(call, out)?;
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                let stop_reason = if self.refused { StopReason::ContentFilter } else { stop_reason_from(reason) };
                out.push(StreamEvent::Finish { stop_reason });
            }
        }
        if let Some(usage) = usage {
            out.push(StreamEvent::Usage { usage });
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.done
    }
}

/// Encodes canonical events as `chat.completion.chunk` events. Every chunk carries the
/// answer's id, time and model; usage (when asked for) comes in a last chunk with empty
/// `choices`, written by [`StreamEncoder::finish`] because usage may follow the finish.
#[derive(Debug)]
pub struct Encoder {
    include_usage: bool,
    id: String,
    model: String,
    created: i64,
    started: bool,
    finished: bool,
    /// `finish` or `error` ran: nothing more may be written.
    ended: bool,
    usage: Option<TokenUsage>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Encoder {
    /// `include_usage`: whether to write the usage chunk (the client asked for
    /// `stream_options.include_usage`).
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            id: String::new(),
            model: String::new(),
            created: 0,
            started: false,
            finished: false,
            ended: false,
            usage: None,
        }
    }

    fn start(&mut self, id: String, model: String, created: Option<i64>, out: &mut Vec<SseEvent>) {
        self.started = true;
        self.id = id;
        self.model = model;
        self.created = created.unwrap_or_else(crate::unix_now);
        let delta = Delta { role: Some("assistant"), content: Some(""), ..Delta::default() };
        out.push(self.chunk(delta, None));
    }

    /// A content event came before any `Start`: open the answer with made-up identity.
    fn ensure_started(&mut self, out: &mut Vec<SseEvent>) {
        if !self.started {
            self.start("chatcmpl-veil".to_owned(), String::new(), None, out);
        }
    }

    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> SseEvent {
        let choices = [ChunkChoice { index: 0, delta, logprobs: (), finish_reason }];
        self.write(&choices, None)
    }

    fn write(&self, choices: &[ChunkChoice<'_>], usage: Option<Value>) -> SseEvent {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        // Serialising these plain structs cannot fail.
        SseEvent::data(serde_json::to_string(&chunk).unwrap_or_default())
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    /// Always `null`: written because the SDKs' chunk types declare it.
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model, created } => {
                if !self.started {
                    self.start(id, model, created, out);
                }
            }
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    self.ensure_started(out);
                    out.push(self.chunk(Delta { content: Some(&text), ..Delta::default() }, None));
                }
            }
            StreamEvent::ReasoningDelta { text } => {
                if !text.is_empty() {
                    self.ensure_started(out);
                    out.push(self.chunk(Delta { reasoning_content: Some(&text), ..Delta::default() }, None));
                }
            }
            // Chat Completions has nowhere to put a reasoning signature.
            StreamEvent::ReasoningSignature { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                let call = ToolCallDelta {
                    index,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDelta { name: Some(&name), arguments: "" },
                };
                out.push(self.chunk(Delta { tool_calls: Some([call]), ..Delta::default() }, None));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !arguments.is_empty() {
                    self.ensure_started(out);
                    let call = ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionDelta { name: None, arguments: &arguments },
                    };
                    out.push(self.chunk(Delta { tool_calls: Some([call]), ..Delta::default() }, None));
                }
            }
            StreamEvent::Finish { stop_reason } => {
                if !self.finished {
                    self.finished = true;
                    self.ensure_started(out);
                    out.push(self.chunk(Delta::default(), Some(finish_reason(stop_reason))));
                }
            }
            StreamEvent::Usage { usage } => self.usage = Some(usage),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.include_usage
            && let Some(usage) = self.usage
        {
            self.ensure_started(out);
            out.push(self.write(&[], Some(usage_to_openai(&usage))));
        }
        out.push(SseEvent::done());
    }

    fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        out.push(SseEvent::data(crate::errors::openai(error).to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        parse_request(&body).unwrap()
    }

    fn request_error(body: Value) -> ProtocolError {
        parse_request(&body).unwrap_err()
    }

    fn text(text: &str) -> Part {
        Part::Text { text: text.into() }
    }

    fn call(id: &str, name: &str, arguments: &str) -> Part {
        Part::ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    fn result(call_id: &str, texts: &[&str]) -> Part {
        Part::ToolResult { call_id: call_id.into(), content: texts.iter().map(|t| text(t)).collect(), is_error: false }
    }

    fn usage(input: u64, cached: u64, written: u64, output: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            cached_tokens: cached,
            cache_write_tokens: written,
            output_tokens: output,
            reasoning_tokens: reasoning,
            ..TokenUsage::default()
        }
    }

    #[test]
    fn parses_a_full_request() {
        let parsed = request(json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ]},
                {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null, "reasoning_content": "hmm", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "thanks"},
                {"role": "user", "content": "again"},
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "parallel_tool_calls": false,
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "seed": -3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low",
            "stream": true,
            "user": "u-1",
            "n": 1,
        }));
        let expected = ChatRequest {
            model: "gpt-4o".into(),
            system: vec!["Be brief.".into(), "a\nb".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("What is this?"),
                        Part::Image { source: ImageSource::Url { url: "https://x.test/a.png".into() } },
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/png".into(), data: "AAAA".into() },
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "hmm".into(), signature: None },
                        call("call_1", "look", "{\"q\":1}"),
                    ],
                },
                Message { role: Role::User, content: vec![result("call_1", &["a cat"]), text("thanks")] },
                Message::text(Role::User, "again"),
            ],
            tools: vec![Tool {
                name: "look".into(),
                description: Some("Looks".into()),
                parameters: json!({"type": "object"}),
            }],
            tool_choice: Some(ToolChoice::Named("look".into())),
            parallel_tool_calls: Some(false),
            max_output_tokens: Some(200),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: None,
            stop: vec!["END".into()],
            seed: Some(-3),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: json!({"type": "object"}),
                strict: Some(true),
            }),
            reasoning_effort: Some("low".into()),
            stream: true,
            user: Some("u-1".into()),
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn consecutive_tool_messages_share_one_user_message() {
        let parsed = request(json!({"model": "m", "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "1"}, {"type": "text", "text": "2"}]},
            {"role": "tool", "tool_call_id": "b", "content": "3"},
            {"role": "assistant", "content": "done"},
        ]}));
        assert_eq!(
            parsed.messages,
            vec![
                Message::text(Role::User, "go"),
                Message { role: Role::Assistant, content: vec![call("a", "f", "{}"), call("b", "g", "{}")] },
                Message { role: Role::User, content: vec![result("a", &["1", "2"]), result("b", &["3"])] },
                Message::text(Role::Assistant, "done"),
            ]
        );
    }

    #[test]
    fn null_options_count_as_absent_and_defaults_apply() {
        let parsed = request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": null, "stop": null, "tools": null, "stream": null, "user": null,
            "tool_choice": "required",
        }));
        assert_eq!(
            parsed,
            ChatRequest {
                model: "m".into(),
                messages: vec![Message::text(Role::User, "hi")],
                tool_choice: Some(ToolChoice::Required),
                ..ChatRequest::default()
            }
        );
        let tools = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "now"}}]}));
        assert_eq!(tools.tools[0].parameters, json!({"type": "object", "properties": {}}));
        assert_eq!(tools.tools[0].description, None);
    }

    #[test]
    fn rejects_bad_requests_naming_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (json!({"messages": user}), "model"),
            (json!({"model": 3, "messages": user}), "model"),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": {}}), "messages"),
            (json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}), "messages"),
            (json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}), "messages"),
            (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}), "messages"),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages"),
            (json!({"model": "m", "messages": [{"role": "user", "content": 5}]}), "messages"),
            (json!({"model": "m", "messages": user, "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "messages": user, "max_tokens": -1}), "max_tokens"),
            (json!({"model": "m", "messages": user, "stop": [1]}), "stop"),
            (json!({"model": "m", "messages": user, "tools": [{"type": "custom"}]}), "tools"),
            (json!({"model": "m", "messages": user, "tool_choice": "sometimes"}), "tool_choice"),
            (json!({"model": "m", "messages": user, "response_format": {"type": "yaml"}}), "response_format"),
            (json!({"model": "m", "messages": user, "functions": []}), "functions"),
            (json!({"model": "m", "messages": user, "stream": "yes"}), "stream"),
        ];
        for (body, param) in cases {
            let error = request_error(body.clone());
            assert_eq!(error.param, Some(param), "{body}: {}", error.message);
        }
        assert_eq!(parse_request(&json!([1])).unwrap_err().param, None);
        let error = request_error(json!({"model": "m", "messages": [{"role": "user", "content": 5}]}));
        assert_eq!(error.message, "messages[0].content must be a string or an array");
    }

    #[test]
    fn encodes_a_request() {
        let canonical = ChatRequest {
            model: "m".into(),
            system: vec!["one".into(), "two".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("look"),
                        Part::Image { source: ImageSource::Url { url: "https://x.test/i.png".into() } },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "r".into(), signature: Some("s".into()) },
                        call("c", "f", "{}"),
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        text("and"),
                        Part::ToolResult {
                            call_id: "c".into(),
                            content: vec![
                                text("ok"),
                                Part::Image {
                                    source: ImageSource::Base64 { media_type: "image/png".into(), data: "QQ==".into() },
                                },
                            ],
                            is_error: true,
                        },
                    ],
                },
            ],
            tools: vec![Tool { name: "f".into(), description: None, parameters: json!({"type": "object"}) }],
            tool_choice: Some(ToolChoice::Auto),
            max_output_tokens: Some(10),
            top_k: Some(5),
            stop: vec!["x".into()],
            response_format: Some(ResponseFormat::JsonObject),
            stream: true,
            ..ChatRequest::default()
        };
        assert_eq!(
            Value::Object(encode_request(&canonical)),
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "one"},
                    {"role": "system", "content": "two"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/i.png"}},
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "c", "content": "ok"},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
                        {"type": "text", "text": "and"},
                    ]},
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "max_tokens": 10,
                "top_k": 5,
                "stop": ["x"],
                "response_format": {"type": "json_object"},
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn encodes_tool_result_text_parts_and_empty_messages() {
        let canonical = ChatRequest {
            model: "m".into(),
            messages: vec![
                Message { role: Role::User, content: vec![result("a", &["1", "2"]), result("b", &[])] },
                Message { role: Role::Assistant, content: vec![text("x"), text("y")] },
                Message { role: Role::Assistant, content: vec![] },
            ],
            ..ChatRequest::default()
        };
        assert_eq!(
            encode_request(&canonical)["messages"],
            json!([
                {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "1"}, {"type": "text", "text": "2"}]},
                {"role": "tool", "tool_call_id": "b", "content": ""},
                {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
                {"role": "assistant", "content": ""},
            ])
        );
    }

    #[test]
    fn request_round_trips() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                ]},
                {"role": "tool", "tool_call_id": "c", "content": "r"},
            ],
            "tool_choice": "none",
            "parallel_tool_calls": true,
            "temperature": 0.2,
            "top_p": 1.0,
            "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
            "reasoning_effort": "high",
            "user": "u",
        });
        let parsed = request(body.clone());
        assert_eq!(Value::Object(encode_request(&parsed)), body);
    }

    fn completion(message: Value, finish_reason: Value, usage: Value) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage,
        })
    }

    #[test]
    fn parses_a_response() {
        let body = completion(
            json!({"role": "assistant", "content": "Hi", "reasoning_content": "think", "refusal": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ]}),
            json!("tool_calls"),
            json!({
                "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0},
            }),
        );
        assert_eq!(
            parse_response(&body).unwrap(),
            ChatResponse {
                id: "chatcmpl-1".into(),
                model: "gpt-4o".into(),
                created: Some(1_700_000_000),
                content: vec![
                    Part::Reasoning { text: "think".into(), signature: None },
                    text("Hi"),
                    call("call_9", "f", "{}")
                ],
                stop_reason: Some(StopReason::ToolUse),
                usage: Some(usage(100, 60, 0, 20, 5)),
            }
        );
    }

    #[test]
    fn maps_finish_reasons_and_refusals() {
        for (reason, expected) in [
            (json!("stop"), Some(StopReason::EndTurn)),
            (json!("length"), Some(StopReason::MaxTokens)),
            (json!("tool_calls"), Some(StopReason::ToolUse)),
            (json!("function_call"), Some(StopReason::ToolUse)),
            (json!("content_filter"), Some(StopReason::ContentFilter)),
            (json!(null), None),
        ] {
            let body = completion(json!({"role": "assistant", "content": "x"}), reason, json!(null));
            assert_eq!(parse_response(&body).unwrap().stop_reason, expected);
        }
        let refused = completion(
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
            json!("stop"),
            json!(null),
        );
        let parsed = parse_response(&refused).unwrap();
        assert_eq!(parsed.content, vec![text("I can't help with that.")]);
        assert_eq!(parsed.stop_reason, Some(StopReason::ContentFilter));
        assert_eq!(parsed.usage, None);
    }

    #[test]
    fn rejects_malformed_responses() {
        assert_eq!(parse_response(&json!("x")), Err(DecodeError::Malformed("chat completion is not a JSON object")));
        assert_eq!(
            parse_response(&json!({"choices": []})),
            Err(DecodeError::Malformed("chat completion has no choices"))
        );
        assert_eq!(
            parse_response(&json!({"choices": [{"index": 0}]})),
            Err(DecodeError::Malformed("chat completion choice has no message"))
        );
    }

    #[test]
    fn encodes_a_response() {
        let response = ChatResponse {
            id: "chatcmpl-2".into(),
            model: "m".into(),
            created: Some(5),
            content: vec![
                Part::Reasoning { text: "r".into(), signature: Some("sig".into()) },
                text("a"),
                call("c", "f", "{}"),
                text("b"),
            ],
            stop_reason: Some(StopReason::StopSequence),
            usage: Some(usage(10, 4, 2, 7, 3)),
        };
        assert_eq!(
            encode_response(&response),
            json!({
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 5,
                "model": "m",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "ab",
                        "refusal": null,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                        "reasoning_content": "r",
                    },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 7,
                    "total_tokens": 17,
                    "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                },
            })
        );
        let bare = ChatResponse {
            id: "x".into(),
            model: "m".into(),
            created: None,
            content: vec![],
            stop_reason: None,
            usage: None,
        };
        let encoded = encode_response(&bare);
        assert!(encoded["created"].as_i64().unwrap() > 1_600_000_000);
        assert_eq!(encoded["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(encoded["choices"][0]["finish_reason"], Value::Null);
        assert!(encoded.get("usage").is_none());
    }

    #[test]
    fn usage_conventions() {
        assert_eq!(usage_from_openai(&json!(null)), None);
        assert_eq!(usage_from_openai(&json!({})), None);
        assert_eq!(
            usage_from_openai(&json!({"prompt_tokens": 9, "completion_tokens": 1, "cache_creation_input_tokens": 3})),
            Some(usage(9, 0, 3, 1, 0))
        );
        assert_eq!(
            usage_from_openai(&json!({
                "prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10,
                "prompt_cache_hit_tokens": 6, "prompt_cache_miss_tokens": 3,
            })),
            Some(usage(9, 6, 0, 1, 0))
        );
        assert_eq!(
            usage_to_openai(&usage(5, 0, 0, 2, 0)),
            json!({
                "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            })
        );
        let all = usage(100, 30, 20, 50, 10);
        assert_eq!(usage_from_openai(&usage_to_openai(&all)), Some(all));
    }

    fn decode_all(events: &[&str]) -> (Vec<StreamEvent>, Decoder) {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for data in events {
            decoder.decode(&SseEvent::data(*data), &mut out).unwrap();
        }
        (out, decoder)
    }

    #[test]
    fn decodes_a_text_stream() {
        let (events, decoder) = decode_all(&[
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start { id: "c1".into(), model: "m".into(), created: Some(7) },
                StreamEvent::ReasoningDelta { text: "hm".into() },
                StreamEvent::TextDelta { text: "Hel".into() },
                StreamEvent::Finish { stop_reason: StopReason::MaxTokens },
                StreamEvent::Usage { usage: usage(3, 0, 0, 2, 0) },
            ]
        );
        assert!(decoder.is_complete());
    }

    #[test]
    fn skips_azure_prompt_filter_chunk() {
        let (events, _) = decode_all(&[
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
            r#"{"choices":[{"content_filter_results":{},"delta":{"content":"Hi","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1741570283,"id":"chatcmpl-az","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}"#,
        ]);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "chatcmpl-az".into(),
                    model: "gpt-4o-2024-08-06".into(),
                    created: Some(1_741_570_283)
                },
                StreamEvent::TextDelta { text: "Hi".into() },
            ]
        );
    }

    #[test]
    fn decodes_tool_call_fragments() {
        let (events, decoder) = decode_all(&[
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_c","function":{"name":"h","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
        ]);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start { id: "c".into(), model: "m".into(), created: Some(1) },
                StreamEvent::ToolCallStart { index: 0, id: "call_a".into(), name: "f".into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: "{\"a\"".into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: ":1}".into() },
                StreamEvent::ToolCallStart { index: 1, id: "call_b".into(), name: "g".into() },
                StreamEvent::ToolCallDelta { index: 1, arguments: "{}".into() },
                StreamEvent::ToolCallStart { index: 2, id: "call_c".into(), name: "h".into() },
                StreamEvent::ToolCallDelta { index: 2, arguments: "{}".into() },
                StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            ]
        );
        assert!(!decoder.is_complete());
    }

    #[test]
    fn decoder_reports_errors() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(
                &SseEvent::data(r#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#),
                &mut out
            ),
            Err(DecodeError::Upstream { kind: Some("server_error".into()), message: "overloaded".into() })
        );
        assert_eq!(
            decoder.decode(&SseEvent::data(r#"{"object":"error","message":"bad","code":400}"#), &mut out),
            Err(DecodeError::Upstream { kind: None, message: "bad".into() })
        );
        assert_eq!(
            decoder.decode(&SseEvent::data("not json"), &mut out),
            Err(DecodeError::Malformed("stream chunk is not JSON"))
        );
        assert_eq!(
            decoder.decode(&SseEvent::data("[1]"), &mut out),
            Err(DecodeError::Malformed("stream chunk is not a JSON object"))
        );
        assert_eq!(
            decoder.decode(
                &SseEvent::data(
                    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#
                ),
                &mut out
            ),
            Err(DecodeError::Malformed("tool call fragment before the call's name"))
        );
        assert!(!decoder.is_complete());
    }

    #[test]
    fn decoder_maps_a_streamed_refusal_to_a_content_filter() {
        let (events, _) = decode_all(&[
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"refusal":"No."},"finish_reason":null}]}"#,
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ]);
        assert_eq!(
            events[1..],
            [
                StreamEvent::TextDelta { text: "No.".into() },
                StreamEvent::Finish { stop_reason: StopReason::ContentFilter }
            ]
        );
    }

    fn data(events: &[SseEvent]) -> Vec<Value> {
        events
            .iter()
            .map(|event| {
                assert_eq!(event.event, None);
                serde_json::from_str(&event.data).unwrap_or_else(|_| Value::String(event.data.clone()))
            })
            .collect()
    }

    fn chunk(delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": "c", "object": "chat.completion.chunk", "created": 9, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        })
    }

    #[test]
    fn encodes_a_stream() {
        let mut encoder = Encoder::new(true);
        let mut out = Vec::new();
        for event in [
            StreamEvent::Start { id: "c".into(), model: "m".into(), created: Some(9) },
            StreamEvent::ReasoningDelta { text: "r".into() },
            StreamEvent::ReasoningSignature { signature: "s".into() },
            StreamEvent::TextDelta { text: "Hi".into() },
            StreamEvent::TextDelta { text: String::new() },
            StreamEvent::ToolCallStart { index: 0, id: "call_1".into(), name: "f".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "{}".into() },
            StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            StreamEvent::Usage { usage: usage(4, 1, 0, 2, 0) },
        ] {
            encoder.encode(event, &mut out);
        }
        encoder.finish(&mut out);
        encoder.finish(&mut out);
        assert_eq!(
            data(&out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), json!(null)),
                chunk(json!({"reasoning_content": "r"}), json!(null)),
                chunk(json!({"content": "Hi"}), json!(null)),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                    json!(null)
                ),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}), json!(null)),
                chunk(json!({}), json!("tool_calls")),
                json!({
                    "id": "c", "object": "chat.completion.chunk", "created": 9, "model": "m", "choices": [],
                    "usage": {
                        "prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                        "prompt_tokens_details": {"cached_tokens": 1},
                        "completion_tokens_details": {"reasoning_tokens": 0},
                    },
                }),
                json!("[DONE]"),
            ]
        );
        // The wire order of a chunk's keys follows OpenAI's.
        assert!(
            out[0].data.starts_with(r#"{"id":"c","object":"chat.completion.chunk","created":9,"model":"m","choices":"#)
        );
    }

    #[test]
    fn encoder_without_usage_or_start() {
        let mut encoder = Encoder::new(false);
        let mut out = Vec::new();
        encoder.encode(StreamEvent::TextDelta { text: "x".into() }, &mut out);
        encoder.encode(StreamEvent::Usage { usage: usage(1, 0, 0, 1, 0) }, &mut out);
        encoder.finish(&mut out);
        let values = data(&out);
        assert_eq!(values.len(), 3);
        assert_eq!(values[0]["id"], "chatcmpl-veil");
        assert_eq!(values[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(values[1]["choices"][0]["delta"], json!({"content": "x"}));
        assert_eq!(values[1]["created"], values[0]["created"]);
        assert_eq!(values[2], json!("[DONE]"));
    }

    #[test]
    fn encoder_error_ends_the_stream() {
        let mut encoder = Encoder::new(true);
        let mut out = Vec::new();
        encoder.encode(StreamEvent::Start { id: "c".into(), model: "m".into(), created: Some(1) }, &mut out);
        let error = ErrorInfo {
            status: 502,
            code: "upstream_error".into(),
            openai_type: "server_error".into(),
            message: "the upstream failed".into(),
            param: None,
        };
        encoder.error(&error, &mut out);
        encoder.encode(StreamEvent::TextDelta { text: "late".into() }, &mut out);
        encoder.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            data(&out[1..]),
            vec![
                json!({"error": {"message": "the upstream failed", "type": "server_error", "param": null, "code": "upstream_error"}})
            ]
        );
    }
}

//! The OpenAI Responses API (`POST /v1/responses`) as a client format: what the openai
//! SDKs' `client.responses.create` and the Codex CLI send, and the answers and event
//! streams they expect back. The request and response parsers, the request and response
//! encoders and the stream decoder exist too, so that a round trip canonical → Responses
//! → canonical can be tested.
//!
//! Veil stores nothing, so this codec is stateless: a request naming server-side state
//! (`previous_response_id`, `conversation`, `prompt`, `item_reference` items, `file_id`
//! images) or asking for a `background` run is refused with a message saying to send the
//! full input instead. `store` is accepted and ignored; every answer says `"store": false`.
//! Only function tools exist here: OpenAI's built-in tools (web search, file search,
//! computer use, code interpreter, MCP, …) run on OpenAI's servers and are refused.
//!
//! Lossy in translation: the function tools' `strict` flag, image `detail`, reasoning
//! `encrypted_content`, `metadata`, `include`, `truncation`, `service_tier`, `text.verbosity`
//! and the cache and safety identifiers are dropped; system and developer messages inside
//! `input` join `instructions` as system text (they lose their position in the
//! conversation); a refusal is carried as text; and the canonical `stop`, `seed` and
//! `top_k`, which Responses cannot express, are dropped by [`encode_request`].
//!
//! Streaming: the Responses protocol repeats finished content. `response.output_text.done`,
//! `response.function_call_arguments.done`, `response.output_item.done` and the final
//! `response.completed` carry the whole text, arguments and output generated so far, so
//! unlike the other encoders [`Encoder`] keeps the answer it has sent (bounded by the
//! answer itself, which the client receives twice anyway). [`Decoder`] keeps only indices.

use crate::canonical::{
    ChatRequest, ChatResponse, ErrorInfo, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    TokenUsage, Tool, ToolChoice,
};
use crate::sse::SseEvent;
use crate::{DecodeError, ProtocolError, StreamDecoder, StreamEncoder, unix_now};
use serde_json::{Map, Value, json};

/// How to tell a client that Veil keeps no conversation state.
const STATELESS_HINT: &str = "Veil does not store conversations; send the full input in every request";

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Parses a Responses request body into canonical form.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ProtocolError> {
    let body = body.as_object().ok_or_else(|| ProtocolError::new("the request body must be a JSON object"))?;
    refuse_server_state(body)?;

    let mut request = ChatRequest {
        model: string_field(body, "model")?.ok_or_else(|| ProtocolError::at("model", "model is required"))?,
        ..ChatRequest::default()
    };
    if let Some(instructions) = string_field(body, "instructions")?
        && !instructions.is_empty()
    {
        request.system.push(instructions);
    }
    match field(body, "input") {
        None => return Err(ProtocolError::at("input", "input is required: a string or an array of input items")),
        Some(Value::String(text)) => request.messages.push(Message::text(Role::User, text.clone())),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                parse_input_item(item, index, &mut request)?;
            }
        }
        Some(_) => return Err(ProtocolError::at("input", "input must be a string or an array of input items")),
    }
    // An empty conversation (`input: []`, or only items that carry nothing) is refused here,
    // in the client's terms, rather than by the upstream translation.
    if request.messages.is_empty() && request.system.is_empty() {
        return Err(ProtocolError::at("input", "input must hold at least one message"));
    }
    request.tools = parse_tools(field(body, "tools"))?;
    request.tool_choice = parse_tool_choice(field(body, "tool_choice"), &mut request.tools)?;
    request.parallel_tool_calls = bool_field(body, "parallel_tool_calls")?;
    request.max_output_tokens = u64_field(body, "max_output_tokens")?;
    request.temperature = f64_field(body, "temperature")?;
    request.top_p = f64_field(body, "top_p")?;
    request.response_format = parse_text_config(field(body, "text"))?;
    request.reasoning_effort = parse_reasoning_config(field(body, "reasoning"))?;
    request.stream = bool_field(body, "stream")?.unwrap_or(false);
    request.user = string_field(body, "user")?;
    Ok(request)
}

/// Refuses the options that need state Veil does not keep.
fn refuse_server_state(body: &Map<String, Value>) -> Result<(), ProtocolError> {
    if field(body, "previous_response_id").is_some() {
        return Err(ProtocolError::at(
            "previous_response_id",
            format!("previous_response_id is not supported: {STATELESS_HINT}"),
        ));
    }
    if field(body, "conversation").is_some() {
        return Err(ProtocolError::at("conversation", format!("conversation is not supported: {STATELESS_HINT}")));
    }
    if field(body, "prompt").is_some() {
        return Err(ProtocolError::at(
            "prompt",
            "prompt templates are stored by OpenAI and are not supported: send instructions and input instead",
        ));
    }
    if bool_field(body, "background")? == Some(true) {
        return Err(ProtocolError::at(
            "background",
            "background responses are not supported: Veil stores no responses to poll; use stream instead",
        ));
    }
    Ok(())
}

/// A field of `object`, with JSON `null` read as absent (clients other than the SDKs send
/// `null` for options they leave unset).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|value| !value.is_null())
}

fn string_field(object: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ProtocolError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ProtocolError::at(name, format!("{name} must be a string"))),
    }
}

fn bool_field(object: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, ProtocolError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(ProtocolError::at(name, format!("{name} must be a boolean"))),
    }
}

fn u64_field(object: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ProtocolError> {
    match field(object, name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtocolError::at(name, format!("{name} must be a non-negative integer"))),
    }
}

fn f64_field(object: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, ProtocolError> {
    match field(object, name) {
        None => Ok(None),
        Some(value) => {
            value.as_f64().map(Some).ok_or_else(|| ProtocolError::at(name, format!("{name} must be a number")))
        }
    }
}

/// Appends `part` to the conversation, merging it into the last message when that has the
/// same role: Responses spreads one turn over several items (a message, its function
/// calls, reasoning), the canonical model keeps one message per turn.
fn push_part(messages: &mut Vec<Message>, role: Role, part: Part) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.push(part),
        _ => messages.push(Message { role, content: vec![part] }),
    }
}

fn parse_input_item(item: &Value, index: usize, request: &mut ChatRequest) -> Result<(), ProtocolError> {
    let item =
        item.as_object().ok_or_else(|| ProtocolError::at("input", format!("input[{index}] must be an object")))?;
    // Easy input messages (`{"role": "user", "content": "..."}`) may leave out the type.
    let kind = match field(item, "type") {
        None => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(ProtocolError::at("input", format!("input[{index}].type must be a string"))),
    };
    match kind {
        "message" => parse_message_item(item, index, request),
        "function_call" => {
            let call_id = item_string(item, index, "call_id")?;
            let name = item_string(item, index, "name")?;
            let arguments = match field(item, "arguments") {
                Some(Value::String(arguments)) => arguments.clone(),
                // Some clients send the arguments as an object; its JSON text is the same call.
                Some(arguments @ Value::Object(_)) => arguments.to_string(),
                _ => {
                    return Err(ProtocolError::at(
                        "input",
                        format!("input[{index}].arguments must be the JSON text of the call's arguments"),
                    ));
                }
            };
            push_part(&mut request.messages, Role::Assistant, Part::ToolCall { id: call_id, name, arguments });
            Ok(())
        }
        "function_call_output" => {
            let call_id = item_string(item, index, "call_id")?;
            let content = match field(item, "output") {
                Some(Value::String(text)) => vec![Part::Text { text: text.clone() }],
                Some(Value::Array(parts)) => {
                    let mut content = Vec::with_capacity(parts.len());
                    for part in parts {
                        content.push(parse_content_part(part, index, Role::User)?);
                    }
                    content
                }
                _ => {
                    return Err(ProtocolError::at(
                        "input",
                        format!("input[{index}].output must be a string or an array of content parts"),
                    ));
                }
            };
            push_part(&mut request.messages, Role::User, Part::ToolResult { call_id, content, is_error: false });
            Ok(())
        }
        "reasoning" => {
            // Stateless clients (Codex with `store: false`) resend reasoning items whose
            // only content is encrypted; such an item carries nothing another model can use.
            let text = reasoning_text(item);
            if !text.is_empty() {
                push_part(&mut request.messages, Role::Assistant, Part::Reasoning { text, signature: None });
            }
            Ok(())
        }
        "item_reference" => Err(ProtocolError::at(
            "input",
            format!("input[{index}] is an item_reference, which is not supported: {STATELESS_HINT}"),
        )),
        other => Err(ProtocolError::at(
            "input",
            format!(
                "input[{index}] has type `{other}`, which is not supported: input items may be messages, \
                 function_call, function_call_output and reasoning items"
            ),
        )),
    }
}

fn item_string(item: &Map<String, Value>, index: usize, name: &str) -> Result<String, ProtocolError> {
    match field(item, name) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(ProtocolError::at("input", format!("input[{index}].{name} is required and must be a string"))),
    }
}

/// The text of a reasoning item: its summaries, or else its raw reasoning text.
fn reasoning_text(item: &Map<String, Value>) -> String {
    let texts = |key: &str, kind: &str| -> Vec<String> {
        field(item, key)
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter(|part| part.get("type").and_then(Value::as_str).is_none_or(|t| t == kind))
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .filter(|text| !text.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let summaries = texts("summary", "summary_text");
    if summaries.is_empty() { texts("content", "reasoning_text").join("\n\n") } else { summaries.join("\n\n") }
}

fn parse_message_item(item: &Map<String, Value>, index: usize, request: &mut ChatRequest) -> Result<(), ProtocolError> {
    let role = match field(item, "role").and_then(Value::as_str) {
        Some("user") => Some(Role::User),
        Some("assistant") => Some(Role::Assistant),
        Some("system" | "developer") => None,
        _ => {
            return Err(ProtocolError::at(
                "input",
                format!("input[{index}].role must be one of user, assistant, system and developer"),
            ));
        }
    };
    let parts = match field(item, "content") {
        Some(Value::String(text)) => vec![Part::Text { text: text.clone() }],
        Some(Value::Array(parts)) => {
            let mut content = Vec::with_capacity(parts.len());
            for part in parts {
                content.push(parse_content_part(part, index, role.unwrap_or(Role::Assistant))?);
            }
            content
        }
        _ => {
            return Err(ProtocolError::at(
                "input",
                format!("input[{index}].content must be a string or an array of content parts"),
            ));
        }
    };
    match role {
        Some(role) => {
            for part in parts {
                push_part(&mut request.messages, role, part);
            }
        }
        None => {
            let mut text = String::new();
            for part in parts {
                match part {
                    Part::Text { text: piece } => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&piece);
                    }
                    _ => {
                        return Err(ProtocolError::at(
                            "input",
                            format!("input[{index}] is a system or developer message, which may hold only text"),
                        ));
                    }
                }
            }
            if !text.is_empty() {
                request.system.push(text);
            }
        }
    }
    Ok(())
}

/// One content part of a message or a function call output. `role` decides whether an
/// image is allowed (only users and tools send images).
fn parse_content_part(part: &Value, index: usize, role: Role) -> Result<Part, ProtocolError> {
    let part = part
        .as_object()
        .ok_or_else(|| ProtocolError::at("input", format!("input[{index}]: content parts must be objects")))?;
    let kind = field(part, "type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "input_text" | "output_text" | "text" => match field(part, "text") {
            Some(Value::String(text)) => Ok(Part::Text { text: text.clone() }),
            _ => Err(ProtocolError::at("input", format!("input[{index}]: a {kind} part needs a string `text`"))),
        },
        "refusal" => match field(part, "refusal") {
            Some(Value::String(text)) => Ok(Part::Text { text: text.clone() }),
            _ => Err(ProtocolError::at("input", format!("input[{index}]: a refusal part needs a string `refusal`"))),
        },
        "input_image" if role == Role::User => {
            if field(part, "file_id").is_some() {
                return Err(ProtocolError::at(
                    "input",
                    format!(
                        "input[{index}]: images by file_id are not supported: Veil stores no files; \
                         send the image as image_url (an https or data: URL)"
                    ),
                ));
            }
            match field(part, "image_url") {
                Some(Value::String(url)) => Ok(Part::Image { source: ImageSource::from_url(url) }),
                _ => Err(ProtocolError::at("input", format!("input[{index}]: an input_image part needs image_url"))),
            }
        }
        "input_image" => Err(ProtocolError::at(
            "input",
            format!("input[{index}]: images are only allowed in user messages and function call outputs"),
        )),
        "input_file" => Err(ProtocolError::at(
            "input",
            format!("input[{index}]: input_file parts are not supported; send the file's text as input_text"),
        )),
        other => Err(ProtocolError::at(
            "input",
            format!("input[{index}]: content parts of type `{other}` are not supported"),
        )),
    }
}

fn parse_tools(tools: Option<&Value>) -> Result<Vec<Tool>, ProtocolError> {
    let Some(tools) = tools else { return Ok(Vec::new()) };
    let tools = tools.as_array().ok_or_else(|| ProtocolError::at("tools", "tools must be an array"))?;
    let mut parsed = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let tool =
            tool.as_object().ok_or_else(|| ProtocolError::at("tools", format!("tools[{index}] must be an object")))?;
        let kind = field(tool, "type").and_then(Value::as_str).unwrap_or_default();
        if kind != "function" {
            return Err(ProtocolError::at(
                "tools",
                format!(
                    "tools[{index}] has type `{kind}`: only function tools are supported, OpenAI's built-in \
                     tools (web search, file search, computer use, code interpreter, MCP, …) cannot run here"
                ),
            ));
        }
        let name = match field(tool, "name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => return Err(ProtocolError::at("tools", format!("tools[{index}].name is required"))),
        };
        let description = match field(tool, "description") {
            None => None,
            Some(Value::String(description)) => Some(description.clone()),
            Some(_) => return Err(ProtocolError::at("tools", format!("tools[{index}].description must be a string"))),
        };
        let parameters = match field(tool, "parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(parameters @ Value::Object(_)) => parameters.clone(),
            Some(_) => {
                return Err(ProtocolError::at(
                    "tools",
                    format!("tools[{index}].parameters must be a JSON Schema object"),
                ));
            }
        };
        parsed.push(Tool { name, description, parameters });
    }
    Ok(parsed)
}

/// Parses `tool_choice`. An `allowed_tools` choice narrows `tools` to the allowed ones,
/// which is what it means for a model that sees only this request.
fn parse_tool_choice(choice: Option<&Value>, tools: &mut Vec<Tool>) -> Result<Option<ToolChoice>, ProtocolError> {
    let Some(choice) = choice else { return Ok(None) };
    let invalid = || {
        ProtocolError::at(
            "tool_choice",
            "tool_choice must be \"auto\", \"none\", \"required\", {\"type\": \"function\", \"name\": ...} \
             or {\"type\": \"allowed_tools\", ...}",
        )
    };
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(invalid()),
        },
        Value::Object(choice) => match field(choice, "type").and_then(Value::as_str) {
            Some("function") => match field(choice, "name") {
                Some(Value::String(name)) => Ok(Some(ToolChoice::Named(name.clone()))),
                _ => Err(ProtocolError::at("tool_choice", "tool_choice.name is required for a function choice")),
            },
            Some("allowed_tools") => {
                let mode = match field(choice, "mode").and_then(Value::as_str) {
                    Some("auto") | None => ToolChoice::Auto,
                    Some("required") => ToolChoice::Required,
                    Some(_) => {
                        return Err(ProtocolError::at("tool_choice", "tool_choice.mode must be auto or required"));
                    }
                };
                let allowed = field(choice, "tools").and_then(Value::as_array).ok_or_else(|| {
                    ProtocolError::at("tool_choice", "tool_choice.tools must list the allowed function tools")
                })?;
                let mut names = Vec::with_capacity(allowed.len());
                for tool in allowed {
                    match (tool.get("type").and_then(Value::as_str), tool.get("name").and_then(Value::as_str)) {
                        (Some("function"), Some(name)) => names.push(name),
                        _ => {
                            return Err(ProtocolError::at(
                                "tool_choice",
                                "tool_choice.tools may only name function tools: {\"type\": \"function\", \"name\": ...}",
                            ));
                        }
                    }
                }
                tools.retain(|tool| names.contains(&tool.name.as_str()));
                Ok(Some(mode))
            }
            Some(other) => Err(ProtocolError::at(
                "tool_choice",
                format!("tool_choice of type `{other}` names a built-in tool, which is not supported"),
            )),
            None => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

/// `text.format`: the shape of the answer's text.
fn parse_text_config(text: Option<&Value>) -> Result<Option<ResponseFormat>, ProtocolError> {
    let Some(text) = text else { return Ok(None) };
    let text = text.as_object().ok_or_else(|| ProtocolError::at("text", "text must be an object"))?;
    let Some(format) = field(text, "format") else { return Ok(None) };
    let format = format.as_object().ok_or_else(|| ProtocolError::at("text", "text.format must be an object"))?;
    match field(format, "type").and_then(Value::as_str) {
        Some("text") => Ok(Some(ResponseFormat::Text)),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let name = match field(format, "name") {
                Some(Value::String(name)) => name.clone(),
                _ => return Err(ProtocolError::at("text", "text.format.name is required for json_schema")),
            };
            let schema = match field(format, "schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                _ => return Err(ProtocolError::at("text", "text.format.schema must be a JSON Schema object")),
            };
            let strict = match field(format, "strict") {
                None => None,
                Some(Value::Bool(strict)) => Some(*strict),
                Some(_) => return Err(ProtocolError::at("text", "text.format.strict must be a boolean")),
            };
            Ok(Some(ResponseFormat::JsonSchema { name, schema, strict }))
        }
        _ => Err(ProtocolError::at("text", "text.format.type must be text, json_object or json_schema")),
    }
}

fn parse_reasoning_config(reasoning: Option<&Value>) -> Result<Option<String>, ProtocolError> {
    let Some(reasoning) = reasoning else { return Ok(None) };
    let reasoning =
        reasoning.as_object().ok_or_else(|| ProtocolError::at("reasoning", "reasoning must be an object"))?;
    match field(reasoning, "effort") {
        None => Ok(None),
        Some(Value::String(effort)) => Ok(Some(effort.clone())),
        Some(_) => Err(ProtocolError::at("reasoning", "reasoning.effort must be a string")),
    }
}

/// Encodes a canonical request as a Responses request body. The first system text becomes
/// `instructions`, later ones system messages at the head of `input`, so parsing gives
/// them back in order. Function tools say `strict: false`, because Responses otherwise
/// defaults to strict schemas, which the canonical tool (from any format) may not meet.
pub fn encode_request(request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    let mut system = request.system.iter();
    if let Some(instructions) = system.next() {
        body.insert("instructions".into(), json!(instructions));
    }
    let mut input: Vec<Value> = system.map(|text| json!({"role": "system", "content": text})).collect();
    for message in &request.messages {
        encode_message(message, &mut input);
    }
    body.insert("input".into(), Value::Array(input));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                let mut encoded = json!({
                    "type": "function",
                    "name": tool.name,
                    "parameters": tool.parameters,
                    "strict": false,
                });
                if let (Some(description), Some(object)) = (&tool.description, encoded.as_object_mut()) {
                    object.insert("description".into(), json!(description));
                }
                encoded
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        body.insert("tool_choice".into(), encode_tool_choice(choice));
    }
    if let Some(parallel) = request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(max) = request.max_output_tokens {
        body.insert("max_output_tokens".into(), json!(max));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if let Some(format) = &request.response_format {
        let format = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema, strict } => {
                let mut encoded = json!({"type": "json_schema", "name": name, "schema": schema});
                if let (Some(strict), Some(object)) = (strict, encoded.as_object_mut()) {
                    object.insert("strict".into(), json!(strict));
                }
                encoded
            }
        };
        body.insert("text".into(), json!({ "format": format }));
    }
    if let Some(effort) = &request.reasoning_effort {
        body.insert("reasoning".into(), json!({ "effort": effort }));
    }
    if request.stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), json!(user));
    }
    body.insert("store".into(), json!(false));
    Value::Object(body)
}

fn encode_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Named(name) => json!({"type": "function", "name": name}),
    }
}

/// One canonical message as input items, in order: runs of text and images become one
/// message item; tool calls, tool results and reasoning become items of their own.
fn encode_message(message: &Message, input: &mut Vec<Value>) {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut pending: Vec<Value> = Vec::new();
    let flush = |pending: &mut Vec<Value>, input: &mut Vec<Value>| {
        if !pending.is_empty() {
            input.push(json!({"type": "message", "role": role, "content": std::mem::take(pending)}));
        }
    };
    for part in &message.content {
        match part {
            Part::Text { text } => {
                let kind = if message.role == Role::Assistant { "output_text" } else { "input_text" };
                pending.push(json!({"type": kind, "text": text}));
            }
            Part::Image { source } => pending.push(encode_image(source)),
            Part::ToolCall { id, name, arguments } => {
                flush(&mut pending, input);
                input.push(json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}));
            }
            Part::ToolResult { call_id, content, .. } => {
                flush(&mut pending, input);
                let output = match content.as_slice() {
                    [Part::Text { text }] => json!(text),
                    parts => Value::Array(
                        parts
                            .iter()
                            .filter_map(|part| match part {
                                Part::Text { text } => Some(json!({"type": "input_text", "text": text})),
                                Part::Image { source } => Some(encode_image(source)),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                input.push(json!({"type": "function_call_output", "call_id": call_id, "output": output}));
            }
            Part::Reasoning { text, .. } => {
                flush(&mut pending, input);
                input.push(json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}));
            }
        }
    }
    flush(&mut pending, input);
}

fn encode_image(source: &ImageSource) -> Value {
    json!({"type": "input_image", "image_url": source.to_url(), "detail": "auto"})
}

// ---------------------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------------------

/// The identity of an answer, shared by its response object and its output items.
#[derive(Debug, Clone)]
struct Head {
    id: String,
    model: String,
    created_at: i64,
}

impl Head {
    fn new(id: &str, model: &str, created: Option<i64>) -> Self {
        let created_at = created.unwrap_or_else(unix_now);
        let id = if id.starts_with("resp_") {
            id.to_owned()
        } else if id.is_empty() {
            format!("resp_{created_at}")
        } else {
            format!("resp_{id}")
        };
        Self { id, model: model.to_owned(), created_at }
    }

    /// An output item's id: the item kind's prefix (`msg`, `fc`, `rs`), the response id's
    /// body and the item's position, so ids are unique within and across answers.
    fn item_id(&self, prefix: &str, output_index: usize) -> String {
        let body = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{body}_{output_index}")
    }

    /// The response object, as the non-streamed answer and inside the stream's lifecycle
    /// events. Fields Veil cannot know about the request keep OpenAI's defaults.
    fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        stop_reason: Option<StopReason>,
        usage: Option<&TokenUsage>,
    ) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete_reason(stop_reason).map(|reason| json!({"reason": reason})),
            "instructions": null,
            "max_output_tokens": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "store": false,
            "temperature": null,
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "usage": usage.map(usage_to_responses),
            "user": null,
            "metadata": {},
        })
    }
}

/// `incomplete_details.reason` for a stop reason that leaves the answer incomplete.
fn incomplete_reason(stop_reason: Option<StopReason>) -> Option<&'static str> {
    match stop_reason {
        Some(StopReason::MaxTokens) => Some("max_output_tokens"),
        Some(StopReason::ContentFilter) => Some("content_filter"),
        Some(StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse) | None => None,
    }
}

fn final_status(stop_reason: Option<StopReason>) -> &'static str {
    if incomplete_reason(stop_reason).is_some() { "incomplete" } else { "completed" }
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    json!({"id": id, "type": "reasoning", "summary": summary})
}

fn function_call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

/// Responses' usage shape. Both counts already include their details (cached input,
/// reasoning output), as in the canonical model. Cache writes, which OpenAI does not
/// report, ride along as Veil's `input_tokens_details.cache_write_tokens` when nonzero.
pub fn usage_to_responses(usage: &TokenUsage) -> Value {
    let mut input_details = json!({"cached_tokens": usage.cached_tokens});
    if usage.cache_write_tokens > 0
        && let Some(details) = input_details.as_object_mut()
    {
        details.insert("cache_write_tokens".into(), json!(usage.cache_write_tokens));
    }
    json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": input_details,
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens(),
    })
}

/// Reads Responses' usage shape (absent counts are 0).
pub fn usage_from_responses(usage: &Value) -> Result<TokenUsage, DecodeError> {
    if !usage.is_object() {
        return Err(DecodeError::Malformed("usage is not an object"));
    }
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let cache_write = match count("/input_tokens_details/cache_write_tokens") {
        0 => count("/cache_creation_input_tokens"),
        tokens => tokens,
    };
    Ok(TokenUsage {
        input_tokens: count("/input_tokens"),
        cached_tokens: count("/input_tokens_details/cached_tokens"),
        cache_write_tokens: cache_write,
        output_tokens: count("/output_tokens"),
        reasoning_tokens: count("/output_tokens_details/reasoning_tokens"),
        ..TokenUsage::default()
    })
}

/// Encodes a whole answer as a Response object. Output items follow the generation order:
/// a reasoning item per reasoning part, one message item per run of text, a function call
/// item per tool call. When the answer stopped early the last item is `incomplete`.
pub fn encode_response(response: &ChatResponse) -> Value {
    let head = Head::new(&response.id, &response.model, response.created);
    let mut output: Vec<Value> = Vec::new();
    let mut text: Option<String> = None;
    let flush_text = |text: &mut Option<String>, output: &mut Vec<Value>| {
        if let Some(text) = text.take() {
            output.push(message_item(&head.item_id("msg", output.len()), "completed", &text));
        }
    };
    for part in &response.content {
        match part {
            Part::Text { text: piece } => text.get_or_insert_default().push_str(piece),
            Part::Reasoning { text: reasoning, .. } => {
                flush_text(&mut text, &mut output);
                output.push(reasoning_item(&head.item_id("rs", output.len()), reasoning));
            }
            Part::ToolCall { id, name, arguments } => {
                flush_text(&mut text, &mut output);
                let call_id = if id.is_empty() { format!("call_{}", output.len()) } else { id.clone() };
                output.push(function_call_item(
                    &head.item_id("fc", output.len()),
                    "completed",
                    &call_id,
                    name,
                    arguments,
                ));
            }
            // Images and tool results are what clients send, never part of an answer.
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    flush_text(&mut text, &mut output);
    let status = final_status(response.stop_reason);
    if status == "incomplete"
        && let Some(Value::Object(last)) = output.last_mut()
        && last.contains_key("status")
    {
        last.insert("status".into(), json!("incomplete"));
    }
    head.response(status, output, response.stop_reason, response.usage.as_ref())
}

/// Parses a Response object into canonical form. A `failed` response is the upstream's error.
pub fn parse_response(body: &Value) -> Result<ChatResponse, DecodeError> {
    let object = body.as_object().ok_or(DecodeError::Malformed("response is not an object"))?;
    let status = object.get("status").and_then(Value::as_str).unwrap_or("completed");
    if status == "failed" {
        return Err(upstream_error(object.get("error")));
    }
    let id = object.get("id").and_then(Value::as_str).ok_or(DecodeError::Malformed("response has no id"))?;
    let model = object.get("model").and_then(Value::as_str).unwrap_or_default();
    let created = object.get("created_at").and_then(|at| at.as_i64().or_else(|| at.as_f64().map(|at| at as i64)));
    let items =
        object.get("output").and_then(Value::as_array).ok_or(DecodeError::Malformed("response has no output"))?;
    let mut content = Vec::new();
    for item in items {
        parse_output_item(item, &mut content)?;
    }
    let has_tool_calls = content.iter().any(|part| matches!(part, Part::ToolCall { .. }));
    let stop_reason = stop_reason_for(status, object.get("incomplete_details"), has_tool_calls);
    let usage = match object.get("usage") {
        None | Some(Value::Null) => None,
        Some(usage) => Some(usage_from_responses(usage)?),
    };
    Ok(ChatResponse { id: id.to_owned(), model: model.to_owned(), created, content, stop_reason, usage })
}

fn parse_output_item(item: &Value, content: &mut Vec<Part>) -> Result<(), DecodeError> {
    let item = item.as_object().ok_or(DecodeError::Malformed("output item is not an object"))?;
    match item.get("type").and_then(Value::as_str) {
        Some("message") => {
            let parts = item
                .get("content")
                .and_then(Value::as_array)
                .ok_or(DecodeError::Malformed("message has no content"))?;
            for part in parts {
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("output_text") => part.get("text"),
                    Some("refusal") => part.get("refusal"),
                    _ => None,
                };
                if let Some(text) = text.and_then(Value::as_str) {
                    content.push(Part::Text { text: text.to_owned() });
                }
            }
        }
        Some("function_call") => {
            let text = |key: &str| item.get(key).and_then(Value::as_str);
            let (Some(call_id), Some(name)) = (text("call_id"), text("name")) else {
                return Err(DecodeError::Malformed("function_call item lacks call_id or name"));
            };
            content.push(Part::ToolCall {
                id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: text("arguments").unwrap_or("{}").to_owned(),
            });
        }
        Some("reasoning") => {
            let text = reasoning_text(item);
            if !text.is_empty() {
                content.push(Part::Reasoning { text, signature: None });
            }
        }
        // Built-in tool calls run on the vendor's side and are not part of a chat answer.
        _ => {}
    }
    Ok(())
}

fn stop_reason_for(status: &str, incomplete_details: Option<&Value>, has_tool_calls: bool) -> Option<StopReason> {
    match status {
        "completed" if has_tool_calls => Some(StopReason::ToolUse),
        "completed" => Some(StopReason::EndTurn),
        "incomplete" => match incomplete_details.and_then(|details| details.get("reason")).and_then(Value::as_str) {
            Some("content_filter") => Some(StopReason::ContentFilter),
            _ => Some(StopReason::MaxTokens),
        },
        _ => None,
    }
}

/// The error of a `failed` response or an `error` event (flat or nested under `error`).
fn upstream_error(error: Option<&Value>) -> DecodeError {
    let error = error.map(|error| error.get("error").filter(|inner| inner.is_object()).unwrap_or(error));
    let text = |key: &str| error.and_then(|error| error.get(key)).and_then(Value::as_str);
    DecodeError::Upstream {
        kind: text("code").or_else(|| text("type")).map(str::to_owned),
        message: text("message").unwrap_or("the upstream reported an error").to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// Decodes a Responses event stream into canonical events. Keeps the function calls' output
/// indices (to number them) and whether their arguments were streamed, nothing else.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    complete: bool,
    /// Function call items seen: output index, canonical index, whether arguments streamed.
    calls: Vec<CallSeen>,
}

#[derive(Debug)]
struct CallSeen {
    output_index: u64,
    arguments_streamed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn call_index(&self, output_index: u64) -> Option<usize> {
        self.calls.iter().position(|call| call.output_index == output_index)
    }

    fn start(&mut self, response: Option<&Value>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let text = |key: &str| response.and_then(|r| r.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned();
        let created = response
            .and_then(|r| r.get("created_at"))
            .and_then(|at| at.as_i64().or_else(|| at.as_f64().map(|at| at as i64)));
        out.push(StreamEvent::Start { id: text("id"), model: text("model"), created });
    }
}

fn u32_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        if event.data.trim() == "[DONE]" {
            return Ok(());
        }
        let data: Value =
            serde_json::from_str(&event.data).map_err(|_| DecodeError::Malformed("event data is not JSON"))?;
        let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or_default();
        let output_index = data.get("output_index").and_then(Value::as_u64);
        let delta = || data.get("delta").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "error" => return Err(upstream_error(Some(&data))),
            "response.failed" => return Err(upstream_error(data.get("response").and_then(|r| r.get("error")))),
            "response.created" | "response.in_progress" | "response.queued" => self.start(data.get("response"), out),
            "response.output_item.added" => {
                self.start(None, out);
                let item = data.get("item");
                if item.and_then(|item| item.get("type")).and_then(Value::as_str) == Some("function_call") {
                    let text =
                        |key: &str| item.and_then(|item| item.get(key)).and_then(Value::as_str).unwrap_or_default();
                    let index = u32_index(self.calls.len());
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: text("call_id").to_owned(),
                        name: text("name").to_owned(),
                    });
                    let arguments = text("arguments");
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta { index, arguments: arguments.to_owned() });
                    }
                    self.calls.push(CallSeen {
                        output_index: output_index.unwrap_or(u64::MAX),
                        arguments_streamed: !arguments.is_empty(),
                    });
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                self.start(None, out);
                if !delta().is_empty() {
                    out.push(StreamEvent::TextDelta { text: delta().to_owned() });
                }
            }
            // Summaries are paragraphs: separate the second and later ones.
            "response.reasoning_summary_part.added"
                if data.get("summary_index").and_then(Value::as_u64).unwrap_or(0) > 0 =>
            {
                out.push(StreamEvent::ReasoningDelta { text: "\n\n".to_owned() });
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.start(None, out);
                if !delta().is_empty() {
                    out.push(StreamEvent::ReasoningDelta { text: delta().to_owned() });
                }
            }
            "response.function_call_arguments.delta" => {
                let position = output_index
                    .and_then(|at| self.call_index(at))
                    .ok_or(DecodeError::Malformed("arguments for a function call that was never added"))?;
                if let Some(call) = self.calls.get_mut(position) {
                    call.arguments_streamed = true;
                }
                if !delta().is_empty() {
                    out.push(StreamEvent::ToolCallDelta { index: u32_index(position), arguments: delta().to_owned() });
                }
            }
            "response.function_call_arguments.done" => {
                // Servers that send the arguments only whole still deliver them.
                if let Some(position) = output_index.and_then(|at| self.call_index(at))
                    && let Some(call) = self.calls.get_mut(position)
                    && !call.arguments_streamed
                {
                    call.arguments_streamed = true;
                    let arguments = data.get("arguments").and_then(Value::as_str).unwrap_or_default();
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            index: u32_index(position),
                            arguments: arguments.to_owned(),
                        });
                    }
                }
            }
            "response.completed" | "response.incomplete" => {
                self.start(data.get("response"), out);
                let response = data.get("response");
                let status = if kind == "response.completed" { "completed" } else { "incomplete" };
                let details = response.and_then(|r| r.get("incomplete_details"));
                if let Some(stop_reason) = stop_reason_for(status, details, !self.calls.is_empty()) {
                    out.push(StreamEvent::Finish { stop_reason });
                }
                if let Some(usage) = response.and_then(|r| r.get("usage")).filter(|usage| !usage.is_null()) {
                    out.push(StreamEvent::Usage { usage: usage_from_responses(usage)? });
                }
                self.complete = true;
            }
            // Part and item boundaries, `.done` repeats and annotations carry nothing new.
            _ => {}
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.complete
    }
}

/// Encodes canonical stream events as the Responses event stream: `response.created` and
/// `response.in_progress`, then per output item its `added` event, content deltas and
/// `done` events, and at the end `response.completed` (or `response.incomplete`). Every
/// event is named after its `type` and numbered by `sequence_number`.
///
/// Tool calls are encoded one after another, as every upstream streams them: a new tool
/// call closes the previous one, and a fragment for a call already closed is dropped.
#[derive(Debug, Default)]
pub struct Encoder {
    sequence_number: u64,
    head: Option<Head>,
    open: Option<OpenItem>,
    /// Finished output items, repeated in the final `response.completed` as the protocol requires.
    finished_items: Vec<Value>,
    stop_reason: Option<StopReason>,
    usage: Option<TokenUsage>,
    /// `finish()` or `error()` ran: nothing may follow.
    ended: bool,
}

#[derive(Debug)]
struct OpenItem {
    kind: OpenKind,
    item_id: String,
    output_index: usize,
    /// The item's text, summary or arguments so far, which its `done` events repeat.
    text: String,
}

#[derive(Debug, PartialEq)]
enum OpenKind {
    Message,
    Reasoning,
    FunctionCall { tool_index: u32, call_id: String, name: String },
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn emit(&mut self, out: &mut Vec<SseEvent>, kind: &str, mut data: Value) {
        if let Some(object) = data.as_object_mut() {
            object.insert("type".into(), json!(kind));
            object.insert("sequence_number".into(), json!(self.sequence_number));
        }
        self.sequence_number += 1;
        out.push(SseEvent::named(kind, data.to_string()));
    }

    /// Writes `response.created` and `response.in_progress` once, before anything else.
    fn ensure_started(&mut self, out: &mut Vec<SseEvent>, id: &str, model: &str, created: Option<i64>) {
        if self.head.is_some() {
            return;
        }
        let head = Head::new(id, model, created);
        let response = head.response("in_progress", Vec::new(), None, None);
        self.head = Some(head);
        self.emit(out, "response.created", json!({ "response": response.clone() }));
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn head(&mut self, out: &mut Vec<SseEvent>) -> Head {
        self.ensure_started(out, "", "", None);
        self.head.clone().unwrap_or_else(|| Head::new("", "", None))
    }

    /// Opens an output item of `kind` unless one is open already.
    fn open(&mut self, out: &mut Vec<SseEvent>, kind: OpenKind) {
        if self.open.as_ref().is_some_and(|open| open.kind == kind) {
            return;
        }
        self.close_open(out, "completed");
        let head = self.head(out);
        let output_index = self.finished_items.len();
        let (item_id, item) = match &kind {
            OpenKind::Message => {
                let id = head.item_id("msg", output_index);
                let item =
                    json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
                (id, item)
            }
            OpenKind::Reasoning => {
                let id = head.item_id("rs", output_index);
                (id.clone(), reasoning_item(&id, ""))
            }
            OpenKind::FunctionCall { call_id, name, .. } => {
                let id = head.item_id("fc", output_index);
                (id.clone(), function_call_item(&id, "in_progress", call_id, name, ""))
            }
        };
        self.emit(out, "response.output_item.added", json!({"output_index": output_index, "item": item}));
        match &kind {
            OpenKind::Message => self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": output_text_part("")}),
            ),
            OpenKind::Reasoning => self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({
                    "item_id": item_id,
                    "output_index": output_index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }),
            ),
            OpenKind::FunctionCall { .. } => {}
        }
        self.open = Some(OpenItem { kind, item_id, output_index, text: String::new() });
    }

    /// Writes the `done` events of the open item, if any, and keeps the finished item.
    fn close_open(&mut self, out: &mut Vec<SseEvent>, status: &str) {
        let Some(OpenItem { kind, item_id, output_index, text }) = self.open.take() else { return };
        let item = match kind {
            OpenKind::Message => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": output_text_part(&text)}),
                );
                message_item(&item_id, status, &text)
            }
            OpenKind::Reasoning => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({
                        "item_id": item_id,
                        "output_index": output_index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": text},
                    }),
                );
                reasoning_item(&item_id, &text)
            }
            OpenKind::FunctionCall { call_id, name, .. } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index, "arguments": text}),
                );
                function_call_item(&item_id, status, &call_id, &name, &text)
            }
        };
        self.emit(out, "response.output_item.done", json!({"output_index": output_index, "item": item.clone()}));
        self.finished_items.push(item);
    }

    /// Appends a delta to the open item and writes its delta event.
    fn delta(&mut self, out: &mut Vec<SseEvent>, delta: String) {
        let Some(open) = &self.open else { return };
        let (kind, data) = match &open.kind {
            OpenKind::Message => (
                "response.output_text.delta",
                json!({"item_id": open.item_id, "output_index": open.output_index, "content_index": 0, "delta": delta, "logprobs": []}),
            ),
            OpenKind::Reasoning => (
                "response.reasoning_summary_text.delta",
                json!({"item_id": open.item_id, "output_index": open.output_index, "summary_index": 0, "delta": delta}),
            ),
            OpenKind::FunctionCall { .. } => (
                "response.function_call_arguments.delta",
                json!({"item_id": open.item_id, "output_index": open.output_index, "delta": delta}),
            ),
        };
        self.emit(out, kind, data);
        if let Some(open) = &mut self.open {
            open.text.push_str(&delta);
        }
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model, created } => self.ensure_started(out, &id, &model, created),
            // Empty deltas would open items with nothing in them.
            StreamEvent::TextDelta { text } if !text.is_empty() => {
                self.open(out, OpenKind::Message);
                self.delta(out, text);
            }
            StreamEvent::ReasoningDelta { text } if !text.is_empty() => {
                self.open(out, OpenKind::Reasoning);
                self.delta(out, text);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let call_id = if id.is_empty() { format!("call_{index}") } else { id };
                self.close_open(out, "completed");
                self.open(out, OpenKind::FunctionCall { tool_index: index, call_id, name });
            }
            StreamEvent::ToolCallDelta { index, arguments } if !arguments.is_empty() => {
                let is_open_call = matches!(
                    &self.open,
                    Some(OpenItem { kind: OpenKind::FunctionCall { tool_index, .. }, .. }) if *tool_index == index
                );
                if is_open_call {
                    self.delta(out, arguments);
                }
            }
            StreamEvent::Finish { stop_reason } => self.stop_reason = Some(stop_reason),
            StreamEvent::Usage { usage } => self.usage = Some(usage),
            // Anthropic's signature has no place in a Responses reasoning item.
            StreamEvent::TextDelta { .. }
            | StreamEvent::ReasoningDelta { .. }
            | StreamEvent::ToolCallDelta { .. }
            | StreamEvent::ReasoningSignature { .. } => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        let head = self.head(out);
        let status = final_status(self.stop_reason);
        self.close_open(out, status);
        self.ended = true;
        let output = std::mem::take(&mut self.finished_items);
        let response = head.response(status, output, self.stop_reason, self.usage.as_ref());
        let kind = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
        self.emit(out, kind, json!({ "response": response }));
    }

    /// Writes Responses' `error` event. Its fields are flat as OpenAI documents them and
    /// also nested under `error`, which is what makes the openai SDKs raise.
    fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.emit(
            out,
            "error",
            json!({
                "code": error.code,
                "message": error.message,
                "param": error.param,
                "error": {
                    "type": error.openai_type,
                    "code": error.code,
                    "message": error.message,
                    "param": error.param,
                },
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    const REQUEST: &str = include_str!("../tests/fixtures/responses/request.json");
    const RESPONSE_TEXT: &str = include_str!("../tests/fixtures/responses/response_text.json");
    const RESPONSE_TOOL: &str = include_str!("../tests/fixtures/responses/response_tool.json");
    const STREAM_TEXT: &str = include_str!("../tests/fixtures/responses/stream_text.sse");
    const STREAM_TOOL: &str = include_str!("../tests/fixtures/responses/stream_tool.sse");

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn sse_events(text: &str) -> Vec<SseEvent> {
        SseParser::new().push(text.as_bytes()).unwrap()
    }

    fn text(text: &str) -> Part {
        Part::Text { text: text.into() }
    }

    fn call(id: &str, name: &str, arguments: &str) -> Part {
        Part::ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    fn error_at(body: Value) -> ProtocolError {
        parse_request(&body).unwrap_err()
    }

    fn weather_parameters() -> Value {
        json!({
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}},
            "required": ["location"],
            "additionalProperties": false,
        })
    }

    fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            cached_tokens: cached,
            output_tokens: output,
            reasoning_tokens: reasoning,
            ..TokenUsage::default()
        }
    }

    /// The events' names and data as JSON, checking each is named after its `type` and
    /// that sequence numbers count up from 0.
    fn decoded(events: &[SseEvent]) -> Vec<Value> {
        events
            .iter()
            .enumerate()
            .map(|(position, event)| {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.event.as_deref(), data["type"].as_str(), "event name and type differ");
                assert_eq!(data["sequence_number"], json!(position), "sequence_number out of order");
                data
            })
            .collect()
    }

    fn kinds(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|event| event.event.as_deref().unwrap()).collect()
    }

    // --- requests ---------------------------------------------------------------------

    #[test]
    fn parses_the_documented_request() {
        let request = parse_request(&fixture(REQUEST)).unwrap();
        let image = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg";
        let expected = ChatRequest {
            model: "gpt-4.1".into(),
            system: vec!["You are a helpful travel assistant. Answer concisely.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("What is in this image?"),
                        Part::Image { source: ImageSource::Url { url: image.into() } },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![text(
                        "A wooden boardwalk runs through tall green grass under a blue sky with light clouds.",
                    )],
                },
                Message { role: Role::User, content: vec![text("Nice. What's the weather like in Paris today?")] },
                Message {
                    role: Role::Assistant,
                    content: vec![call("call_12345xyz", "get_weather", "{\"location\":\"Paris, France\"}")],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: "call_12345xyz".into(),
                        content: vec![text("{\"temperature\":14,\"unit\":\"celsius\",\"conditions\":\"light rain\"}")],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Get current temperature for a given location.".into()),
                parameters: weather_parameters(),
            }],
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: Some(true),
            max_output_tokens: Some(1024),
            temperature: Some(0.7),
            user: Some("user_1234".into()),
            ..ChatRequest::default()
        };
        assert_eq!(request, expected);
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let request =
            parse_request(&json!({"model": "gpt-4.1", "input": "Hi", "stream": true, "store": true})).unwrap();
        assert_eq!(request.messages, vec![Message::text(Role::User, "Hi")]);
        assert!(request.stream);
        assert_eq!(request.model, "gpt-4.1");
    }

    #[test]
    fn items_of_one_turn_merge_into_one_message() {
        let request = parse_request(&json!({
            "model": "gpt-5",
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Rome?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [
                    {"type": "summary_text", "text": "Two cities."},
                    {"type": "summary_text", "text": "Call twice."}
                ], "encrypted_content": "gAAAA"},
                {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": {"city": "Rome"}},
                {"type": "function_call_output", "call_id": "call_a", "output": "14C"},
                {"type": "function_call_output", "call_id": "call_b", "output": [
                    {"type": "input_text", "text": "19C"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
                ]},
                {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAA"},
                {"role": "assistant", "content": "Paris 14C, Rome 19C."}
            ]
        }))
        .unwrap();
        assert_eq!(
            request.messages,
            vec![
                Message::text(Role::User, "Weather in Paris and Rome?"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "Two cities.\n\nCall twice.".into(), signature: None },
                        call("call_a", "get_weather", "{\"city\":\"Paris\"}"),
                        call("call_b", "get_weather", "{\"city\":\"Rome\"}"),
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Part::ToolResult { call_id: "call_a".into(), content: vec![text("14C")], is_error: false },
                        Part::ToolResult {
                            call_id: "call_b".into(),
                            content: vec![
                                text("19C"),
                                Part::Image {
                                    source: ImageSource::Base64 {
                                        media_type: "image/png".into(),
                                        data: "iVBORw0KGgo=".into()
                                    },
                                },
                            ],
                            is_error: false,
                        },
                    ],
                },
                Message::text(Role::Assistant, "Paris 14C, Rome 19C."),
            ]
        );
    }

    #[test]
    fn system_and_developer_messages_follow_instructions() {
        let request = parse_request(&json!({
            "model": "gpt-4.1",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"role": "system", "content": [{"type": "input_text", "text": "No emoji."}, {"type": "input_text", "text": "No lists."}]},
                {"role": "user", "content": "Hello"}
            ]
        }))
        .unwrap();
        assert_eq!(request.system, vec!["Be brief.", "Answer in French.", "No emoji.\nNo lists."]);
        assert_eq!(request.messages, vec![Message::text(Role::User, "Hello")]);
    }

    #[test]
    fn options_are_read() {
        let request = parse_request(&json!({
            "model": "o4-mini",
            "input": "Hi",
            "top_p": 0.5,
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "tool_choice": {"type": "function", "name": "get_weather"},
            "tools": [{"type": "function", "name": "get_weather", "parameters": null, "strict": null}],
            "metadata": {"k": "v"},
            "safety_identifier": "abc",
            "prompt_cache_key": "key",
            "background": false,
            "previous_response_id": null,
            "include": ["reasoning.encrypted_content"]
        }))
        .unwrap();
        assert_eq!(request.top_p, Some(0.5));
        assert_eq!(request.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            request.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: json!({"type": "object"}),
                strict: Some(true)
            })
        );
        assert_eq!(request.tool_choice, Some(ToolChoice::Named("get_weather".into())));
        assert_eq!(
            request.tools,
            vec![Tool {
                name: "get_weather".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}})
            }]
        );
        assert_eq!(request.user, None);
    }

    #[test]
    fn allowed_tools_narrow_the_tool_list() {
        let tool = |name: &str| json!({"type": "function", "name": name, "parameters": {"type": "object"}});
        let request = parse_request(&json!({
            "model": "gpt-4.1",
            "input": "Hi",
            "tools": [tool("a"), tool("b"), tool("c")],
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "c"}, {"type": "function", "name": "a"}]}
        }))
        .unwrap();
        assert_eq!(request.tools.iter().map(|tool| tool.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(request.tool_choice, Some(ToolChoice::Required));
        for (mode, choice) in
            [("auto", ToolChoice::Auto), ("none", ToolChoice::None), ("required", ToolChoice::Required)]
        {
            let request = parse_request(&json!({"model": "m", "input": "Hi", "tool_choice": mode})).unwrap();
            assert_eq!(request.tool_choice, Some(choice));
        }
    }

    #[test]
    fn server_state_is_refused_with_a_hint() {
        let error = error_at(json!({"model": "m", "input": "Hi", "previous_response_id": "resp_1"}));
        assert_eq!(error.param, Some("previous_response_id"));
        assert!(error.message.contains("send the full input"), "{}", error.message);
        let error = error_at(json!({"model": "m", "input": "Hi", "conversation": "conv_1"}));
        assert_eq!(error.param, Some("conversation"));
        assert!(error.message.contains("does not store conversations"), "{}", error.message);
        assert_eq!(error_at(json!({"model": "m", "input": "Hi", "background": true})).param, Some("background"));
        assert_eq!(error_at(json!({"model": "m", "input": "Hi", "prompt": {"id": "pmpt_1"}})).param, Some("prompt"));
        let error = error_at(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
        assert_eq!(error.param, Some("input"));
        assert!(error.message.contains("item_reference") && error.message.contains("send the full input"));
        let error = error_at(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
        );
        assert!(error.message.contains("file_id"), "{}", error.message);
    }

    #[test]
    fn unsupported_input_is_refused_clearly() {
        let error = error_at(json!({"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]}));
        assert_eq!(error.param, Some("tools"));
        assert!(error.message.contains("`web_search`") && error.message.contains("only function tools"));
        let error = error_at(json!({"model": "m", "input": "Hi", "tool_choice": {"type": "file_search"}}));
        assert_eq!(error.param, Some("tool_choice"));
        let error = error_at(json!({"model": "m", "input": [{"type": "local_shell_call", "id": "x"}]}));
        assert!(error.message.contains("`local_shell_call`"), "{}", error.message);
        let error = error_at(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}),
        );
        assert!(error.message.contains("input_file"), "{}", error.message);
        let error = error_at(
            json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
        );
        assert!(error.message.contains("only allowed in user messages"), "{}", error.message);
        let error = error_at(json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}));
        assert!(error.message.contains("input[0].role"), "{}", error.message);
        let error =
            error_at(json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}));
        assert!(error.message.contains("input[0].call_id"), "{}", error.message);
        assert_eq!(error_at(json!({"input": "Hi"})).param, Some("model"));
        assert_eq!(error_at(json!({"model": "m"})).param, Some("input"));
        // Found by fuzzing: an empty input became a working body the relay itself refused.
        assert_eq!(error_at(json!({"model": "m", "input": []})).param, Some("input"));
        assert_eq!(
            error_at(json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]})).param,
            Some("input")
        );
        assert_eq!(error_at(json!({"model": "m", "input": "Hi", "temperature": "hot"})).param, Some("temperature"));
        assert_eq!(
            error_at(json!({"model": "m", "input": "Hi", "max_output_tokens": -1})).param,
            Some("max_output_tokens")
        );
        assert_eq!(
            error_at(json!({"model": "m", "input": "Hi", "text": {"format": {"type": "xml"}}})).param,
            Some("text")
        );
        assert_eq!(error_at(json!(["not", "an", "object"])).param, None);
    }

    #[test]
    fn encoded_requests_parse_back() {
        let mut request = parse_request(&fixture(REQUEST)).unwrap();
        request.system.push("Second system text.".into());
        request.messages.push(Message {
            role: Role::Assistant,
            content: vec![Part::Reasoning { text: "Thinking.".into(), signature: None }, text("Done.")],
        });
        request.response_format = Some(ResponseFormat::JsonObject);
        request.reasoning_effort = Some("low".into());
        request.tool_choice = Some(ToolChoice::Named("get_weather".into()));
        request.stream = true;
        let body = encode_request(&request);
        assert_eq!(body["instructions"], "You are a helpful travel assistant. Answer concisely.");
        assert_eq!(body["input"][0], json!({"role": "system", "content": "Second system text."}));
        assert_eq!(body["tools"][0]["strict"], false);
        assert_eq!(body["store"], false);
        assert_eq!(body["tool_choice"], json!({"type": "function", "name": "get_weather"}));
        assert_eq!(parse_request(&body).unwrap(), request);
    }

    // --- whole answers ----------------------------------------------------------------

    #[test]
    fn encodes_a_text_answer_as_a_complete_response_object() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "gpt-4.1".into(),
            created: Some(1_741_476_542),
            content: vec![text("Hello "), text("there.")],
            stop_reason: Some(StopReason::EndTurn),
            usage: Some(usage(36, 0, 87, 0)),
        };
        assert_eq!(
            encode_response(&response),
            json!({
                "id": "resp_chatcmpl-1",
                "object": "response",
                "created_at": 1_741_476_542,
                "status": "completed",
                "background": false,
                "error": null,
                "incomplete_details": null,
                "instructions": null,
                "max_output_tokens": null,
                "model": "gpt-4.1",
                "output": [{
                    "id": "msg_chatcmpl-1_0",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello there.", "annotations": [], "logprobs": []}],
                }],
                "parallel_tool_calls": true,
                "previous_response_id": null,
                "store": false,
                "temperature": null,
                "tool_choice": "auto",
                "tools": [],
                "top_p": null,
                "usage": {
                    "input_tokens": 36,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 87,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 123,
                },
                "user": null,
                "metadata": {},
            })
        );
    }

    #[test]
    fn encodes_reasoning_text_and_tool_calls_in_order() {
        let response = ChatResponse {
            id: "resp_abc".into(),
            model: "o4-mini".into(),
            created: Some(1),
            content: vec![
                Part::Reasoning { text: "Need weather.".into(), signature: Some("sig".into()) },
                text("Checking."),
                call("call_1", "get_weather", "{\"location\":\"Paris\"}"),
                call("", "get_time", "{}"),
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Some(TokenUsage { cache_write_tokens: 5, ..usage(100, 40, 30, 12) }),
        };
        let body = encode_response(&response);
        assert_eq!(body["id"], "resp_abc");
        assert_eq!(body["status"], "completed");
        assert_eq!(
            body["output"],
            json!([
                {"id": "rs_abc_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Need weather."}]},
                {
                    "id": "msg_abc_1", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}],
                },
                {
                    "id": "fc_abc_2", "type": "function_call", "status": "completed",
                    "call_id": "call_1", "name": "get_weather", "arguments": "{\"location\":\"Paris\"}",
                },
                {
                    "id": "fc_abc_3", "type": "function_call", "status": "completed",
                    "call_id": "call_3", "name": "get_time", "arguments": "{}",
                },
            ])
        );
        assert_eq!(
            body["usage"],
            json!({
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 5},
                "output_tokens": 30,
                "output_tokens_details": {"reasoning_tokens": 12},
                "total_tokens": 130,
            })
        );
    }

    #[test]
    fn stopped_answers_are_incomplete() {
        for (stop_reason, reason) in
            [(StopReason::MaxTokens, "max_output_tokens"), (StopReason::ContentFilter, "content_filter")]
        {
            let response = ChatResponse {
                id: "r".into(),
                model: "m".into(),
                created: Some(1),
                content: vec![text("Once upon")],
                stop_reason: Some(stop_reason),
                usage: None,
            };
            let body = encode_response(&response);
            assert_eq!(body["status"], "incomplete");
            assert_eq!(body["incomplete_details"], json!({"reason": reason}));
            assert_eq!(body["output"][0]["status"], "incomplete");
            assert_eq!(body["usage"], Value::Null);
            assert_eq!(parse_response(&body).unwrap().stop_reason, Some(stop_reason));
        }
    }

    #[test]
    fn parses_the_documented_responses() {
        let text_answer = parse_response(&fixture(RESPONSE_TEXT)).unwrap();
        assert_eq!(text_answer.id, "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b");
        assert_eq!(text_answer.model, "gpt-4.1-2025-04-14");
        assert_eq!(text_answer.created, Some(1_741_476_542));
        assert_eq!(text_answer.stop_reason, Some(StopReason::EndTurn));
        assert_eq!(text_answer.usage, Some(usage(36, 0, 87, 0)));
        assert_eq!(text_answer.content.len(), 1);
        assert!(matches!(&text_answer.content[0], Part::Text { text } if text.starts_with("In a peaceful grove")));

        let tool_answer = parse_response(&fixture(RESPONSE_TOOL)).unwrap();
        assert_eq!(
            tool_answer,
            ChatResponse {
                id: "resp_67ccf18ef5fc8190b16dbee19bc54e5f087bb177ab789d5c".into(),
                model: "gpt-4.1-2025-04-14".into(),
                created: Some(1_741_484_430),
                content: vec![call("call_unLAR8MvFNptuiZK6K6HCy5k", "get_weather", "{\"location\":\"Paris, France\"}")],
                stop_reason: Some(StopReason::ToolUse),
                usage: Some(usage(2120, 1920, 18, 0)),
            }
        );
    }

    #[test]
    fn encoded_responses_parse_back() {
        let response = ChatResponse {
            id: "resp_1".into(),
            model: "gpt-5".into(),
            created: Some(1_700_000_000),
            content: vec![
                Part::Reasoning { text: "Think.".into(), signature: None },
                text("Let me check."),
                call("call_9", "lookup", "{\"q\":\"x\"}"),
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Some(TokenUsage { cache_write_tokens: 7, ..usage(50, 20, 40, 25) }),
        };
        assert_eq!(parse_response(&encode_response(&response)).unwrap(), response);
    }

    #[test]
    fn failed_responses_are_upstream_errors() {
        let body = json!({
            "id": "resp_1", "object": "response", "status": "failed", "output": [],
            "error": {"code": "rate_limit_exceeded", "message": "Slow down."}
        });
        assert_eq!(
            parse_response(&body),
            Err(DecodeError::Upstream { kind: Some("rate_limit_exceeded".into()), message: "Slow down.".into() })
        );
        assert_eq!(parse_response(&json!({"id": "r"})), Err(DecodeError::Malformed("response has no output")));
        assert_eq!(parse_response(&json!("text")), Err(DecodeError::Malformed("response is not an object")));
    }

    // --- stream encoder ---------------------------------------------------------------

    fn encode_all(events: Vec<StreamEvent>) -> Vec<SseEvent> {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        for event in events {
            encoder.encode(event, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    fn start() -> StreamEvent {
        StreamEvent::Start { id: "resp_s".into(), model: "gpt-4.1".into(), created: Some(1_756_734_168) }
    }

    #[test]
    fn encodes_a_text_stream_event_by_event() {
        let out = encode_all(vec![
            start(),
            StreamEvent::TextDelta { text: String::new() },
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::Finish { stop_reason: StopReason::EndTurn },
            StreamEvent::Usage { usage: usage(9, 0, 2, 0) },
        ]);
        let data = decoded(&out);
        assert_eq!(
            kinds(&out),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(data[0]["response"]["status"], "in_progress");
        assert_eq!(data[0]["response"]["output"], json!([]));
        assert_eq!(data[0]["response"]["id"], "resp_s");
        assert_eq!(data[0]["response"]["usage"], Value::Null);
        assert_eq!(
            data[2],
            json!({
                "type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                "item": {"id": "msg_s_0", "type": "message", "status": "in_progress", "role": "assistant", "content": []},
            })
        );
        assert_eq!(
            data[3],
            json!({
                "type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_s_0", "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            })
        );
        assert_eq!(
            data[4],
            json!({
                "type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_s_0", "output_index": 0,
                "content_index": 0, "delta": "Hel", "logprobs": [],
            })
        );
        assert_eq!(
            data[6],
            json!({
                "type": "response.output_text.done", "sequence_number": 6, "item_id": "msg_s_0", "output_index": 0,
                "content_index": 0, "text": "Hello", "logprobs": [],
            })
        );
        assert_eq!(data[7]["part"], json!({"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}));
        let item = json!({
            "id": "msg_s_0", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
        });
        assert_eq!(data[8]["item"], item);
        assert_eq!(data[8]["output_index"], 0);
        let completed = &data[9]["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"], json!([item]));
        assert_eq!(completed["store"], false);
        assert_eq!(completed["usage"]["total_tokens"], 11);
        assert_eq!(completed["created_at"], 1_756_734_168);
    }

    #[test]
    fn encodes_reasoning_and_tool_calls_as_items() {
        let out = encode_all(vec![
            start(),
            StreamEvent::ReasoningDelta { text: "Weather".into() },
            StreamEvent::ReasoningSignature { signature: "sig".into() },
            StreamEvent::ToolCallStart { index: 0, id: "call_a".into(), name: "get_weather".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "{\"city\":".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "\"Paris\"}".into() },
            StreamEvent::ToolCallStart { index: 1, id: "call_b".into(), name: "get_time".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "late".into() },
            StreamEvent::ToolCallDelta { index: 1, arguments: "{}".into() },
            StreamEvent::Finish { stop_reason: StopReason::ToolUse },
        ]);
        let data = decoded(&out);
        assert_eq!(
            kinds(&out),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(data[2]["item"], json!({"id": "rs_s_0", "type": "reasoning", "summary": []}));
        assert_eq!(
            data[4],
            json!({
                "type": "response.reasoning_summary_text.delta", "sequence_number": 4, "item_id": "rs_s_0",
                "output_index": 0, "summary_index": 0, "delta": "Weather",
            })
        );
        assert_eq!(data[5]["text"], "Weather");
        assert_eq!(data[6]["part"], json!({"type": "summary_text", "text": "Weather"}));
        assert_eq!(
            data[8],
            json!({
                "type": "response.output_item.added", "sequence_number": 8, "output_index": 1,
                "item": {
                    "id": "fc_s_1", "type": "function_call", "status": "in_progress",
                    "call_id": "call_a", "name": "get_weather", "arguments": "",
                },
            })
        );
        assert_eq!(
            data[9],
            json!({
                "type": "response.function_call_arguments.delta", "sequence_number": 9, "item_id": "fc_s_1",
                "output_index": 1, "delta": "{\"city\":",
            })
        );
        assert_eq!(
            data[11],
            json!({
                "type": "response.function_call_arguments.done", "sequence_number": 11, "item_id": "fc_s_1",
                "output_index": 1, "arguments": "{\"city\":\"Paris\"}",
            })
        );
        assert_eq!(data[13]["output_index"], 2);
        let output = &data[17]["response"]["output"];
        assert_eq!(output.as_array().unwrap().len(), 3);
        assert_eq!(
            output[0],
            json!({"id": "rs_s_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Weather"}]})
        );
        assert_eq!(output[1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(output[2], data[16]["item"]);
        assert_eq!(output[2]["arguments"], "{}");
        assert_eq!(data[17]["response"]["status"], "completed");
        assert_eq!(data[17]["response"]["usage"], Value::Null);
    }

    #[test]
    fn a_stream_cut_by_max_tokens_ends_incomplete() {
        let out = encode_all(vec![
            start(),
            StreamEvent::TextDelta { text: "Once".into() },
            StreamEvent::Finish { stop_reason: StopReason::MaxTokens },
            StreamEvent::Usage { usage: usage(5, 0, 1, 0) },
        ]);
        let data = decoded(&out);
        assert_eq!(kinds(&out).last(), Some(&"response.incomplete"));
        let last = data.last().unwrap();
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(last["response"]["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(last["response"]["usage"]["output_tokens"], 1);
    }

    #[test]
    fn finish_without_events_is_still_a_valid_stream() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.finish(&mut out);
        encoder.finish(&mut out);
        encoder.encode(StreamEvent::TextDelta { text: "late".into() }, &mut out);
        let data = decoded(&out);
        assert_eq!(kinds(&out), ["response.created", "response.in_progress", "response.completed"]);
        assert!(data[2]["response"]["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(data[2]["response"]["output"], json!([]));
    }

    #[test]
    fn an_error_ends_the_stream() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.encode(start(), &mut out);
        encoder.encode(StreamEvent::TextDelta { text: "Hi".into() }, &mut out);
        let error = ErrorInfo {
            status: 502,
            code: "upstream_error".into(),
            openai_type: "server_error".into(),
            message: "The upstream failed.".into(),
            param: None,
        };
        encoder.error(&error, &mut out);
        encoder.finish(&mut out);
        encoder.error(&error, &mut out);
        let data = decoded(&out);
        assert_eq!(out.len(), 6);
        assert_eq!(
            data[5],
            json!({
                "type": "error",
                "sequence_number": 5,
                "code": "upstream_error",
                "message": "The upstream failed.",
                "param": null,
                "error": {"type": "server_error", "code": "upstream_error", "message": "The upstream failed.", "param": null},
            })
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.decode(&out[5], &mut Vec::new()),
            Err(DecodeError::Upstream { kind: Some("upstream_error".into()), message: "The upstream failed.".into() })
        );
    }

    // --- stream decoder ---------------------------------------------------------------

    fn decode_all(events: &[SseEvent]) -> (Vec<StreamEvent>, bool) {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for event in events {
            decoder.decode(event, &mut out).unwrap();
        }
        (out, decoder.is_complete())
    }

    #[test]
    fn decodes_the_documented_text_stream() {
        let (events, complete) = decode_all(&sse_events(STREAM_TEXT));
        assert!(complete);
        let mut expected = vec![StreamEvent::Start {
            id: "resp_68b5a2d8c1b0819d9c5e2f0a6c3f1e7d0b4a2c6e8f1d3b5a".into(),
            model: "gpt-4.1-2025-04-14".into(),
            created: Some(1_756_734_168),
        }];
        for piece in ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"] {
            expected.push(StreamEvent::TextDelta { text: piece.into() });
        }
        expected.push(StreamEvent::Finish { stop_reason: StopReason::EndTurn });
        expected.push(StreamEvent::Usage { usage: usage(9, 0, 10, 0) });
        assert_eq!(events, expected);
    }

    #[test]
    fn decodes_the_documented_tool_stream() {
        let (events, complete) = decode_all(&sse_events(STREAM_TOOL));
        assert!(complete);
        let mut expected = vec![
            StreamEvent::Start {
                id: "resp_68b5a3f1a2c4819eb7d6e5f4a3b2c1d00e9f8a7b6c5d4e3f".into(),
                model: "gpt-4.1-2025-04-14".into(),
                created: Some(1_756_734_449),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into(),
            },
        ];
        for piece in ["{\"", "location", "\":\"", "Paris", ",", " France", "\"}"] {
            expected.push(StreamEvent::ToolCallDelta { index: 0, arguments: piece.into() });
        }
        expected.push(StreamEvent::Finish { stop_reason: StopReason::ToolUse });
        expected.push(StreamEvent::Usage { usage: usage(2120, 1920, 18, 0) });
        assert_eq!(events, expected);
    }

    #[test]
    fn decodes_whole_arguments_and_multi_part_summaries() {
        let events = [
            json!({"type": "response.created", "response": {"id": "resp_1", "model": "m", "created_at": 5.0}}),
            json!({"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 0}),
            json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "A"}),
            json!({"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 1}),
            json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 1, "delta": "B"}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.done", "output_index": 1, "arguments": "{\"x\":1}"}),
            json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "content_filter"}, "usage": null}}),
        ];
        let events: Vec<SseEvent> = events.iter().map(|data| SseEvent::data(data.to_string())).collect();
        let (decoded, complete) = decode_all(&events);
        assert!(complete);
        assert_eq!(
            decoded,
            vec![
                StreamEvent::Start { id: "resp_1".into(), model: "m".into(), created: Some(5) },
                StreamEvent::ReasoningDelta { text: "A".into() },
                StreamEvent::ReasoningDelta { text: "\n\n".into() },
                StreamEvent::ReasoningDelta { text: "B".into() },
                StreamEvent::ToolCallStart { index: 0, id: "c1".into(), name: "f".into() },
                StreamEvent::ToolCallDelta { index: 0, arguments: "{\"x\":1}".into() },
                StreamEvent::Finish { stop_reason: StopReason::ContentFilter },
            ]
        );
    }

    #[test]
    fn decodes_failures_as_upstream_errors() {
        let mut decoder = Decoder::new();
        let failed = SseEvent::named(
            "response.failed",
            json!({"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error", "message": "Boom."}}})
                .to_string(),
        );
        assert_eq!(
            decoder.decode(&failed, &mut Vec::new()),
            Err(DecodeError::Upstream { kind: Some("server_error".into()), message: "Boom.".into() })
        );
        let flat =
            SseEvent::named("error", r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow.","param":null}"#);
        assert_eq!(
            decoder.decode(&flat, &mut Vec::new()),
            Err(DecodeError::Upstream { kind: Some("rate_limit_exceeded".into()), message: "Slow.".into() })
        );
        assert_eq!(
            decoder.decode(&SseEvent::data("not json"), &mut Vec::new()),
            Err(DecodeError::Malformed("event data is not JSON"))
        );
        let orphan =
            SseEvent::data(r#"{"type":"response.function_call_arguments.delta","output_index":3,"delta":"x"}"#);
        assert!(matches!(decoder.decode(&orphan, &mut Vec::new()), Err(DecodeError::Malformed(_))));
        assert!(!decoder.is_complete());
    }

    #[test]
    fn streams_round_trip_through_the_encoder_and_decoder() {
        let events = vec![
            start(),
            StreamEvent::ReasoningDelta { text: "Plan".into() },
            StreamEvent::TextDelta { text: "Let me ".into() },
            StreamEvent::TextDelta { text: "look.".into() },
            StreamEvent::ToolCallStart { index: 0, id: "call_1".into(), name: "search".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "{\"q\":".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "\"rust\"}".into() },
            StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            StreamEvent::Usage { usage: TokenUsage { cache_write_tokens: 3, ..usage(20, 10, 8, 2) } },
        ];
        let wire = encode_all(events.clone());
        // Through the wire form, as the client would read it.
        let bytes: Vec<u8> = wire.iter().flat_map(|event| event.encode().to_vec()).collect();
        let reparsed = SseParser::new().push(&bytes).unwrap();
        assert_eq!(reparsed, wire);
        let (decoded, complete) = decode_all(&reparsed);
        assert!(complete);
        assert_eq!(decoded, events);
    }

    #[test]
    fn fixtures_are_consistent_event_streams() {
        for stream in [STREAM_TEXT, STREAM_TOOL] {
            let events = sse_events(stream);
            decoded(&events);
            assert!(stream.ends_with("\n\n"));
        }
    }
}

//! The Gemini API wire format (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`), both as a client format (what the google-genai SDKs
//! send) and as an upstream type.
//!
//! This module owns the translation between Gemini's `GenerateContentRequest` /
//! `GenerateContentResponse` and the canonical model, and Gemini's event stream (every SSE
//! `data:` is a whole `GenerateContentResponse` chunk, unnamed, with no terminal marker).
//!
//! Promises and deliberate choices:
//! - Input accepts the camelCase field names and the snake_case ones the REST API also
//!   accepts (`system_instruction`, `inline_data`, `function_call`, …); output is camelCase.
//! - The model and the stream flag live in the URL, never in the body.
//! - Gemini function calls often carry no `id`. Parsed requests get `call_<n>` (n counting
//!   calls in the request) and a `functionResponse` without an id answers the earliest
//!   unanswered call of the same name. Answers get `call_<responseId>_<n>` so ids stay
//!   unique across the turns of a conversation (`call_<n>` when there is no `responseId`).
//! - Usage: `promptTokenCount` (which includes `cachedContentTokenCount`) plus
//!   `toolUsePromptTokenCount` is the input; `candidatesTokenCount + thoughtsTokenCount` is
//!   the output, of which `thoughtsTokenCount` is reasoning.
//! - Reasoning parts are dropped from requests sent upstream: Gemini keeps reasoning context
//!   through opaque thought signatures, which the canonical model cannot carry. Gemini 3
//!   rejects a replayed function call without a signature, so each model turn's first
//!   function call carries Google's documented bypass value instead (not for `gemini-1*` /
//!   `gemini-2*` models, which need none).
//! - The stream encoder holds one tool call's argument fragments until the call is complete
//!   (Gemini sends function calls whole); nothing else is buffered.
//! - Tool kinds other than function declarations (Google Search, code execution, …),
//!   `cachedContent` (Veil stores nothing), several candidates and non-image media are
//!   refused with a [`ProtocolError`] naming the field.

use crate::canonical::{
    ChatRequest, ChatResponse, ErrorInfo, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    TokenUsage, Tool, ToolChoice,
};
use crate::sse::SseEvent;
use crate::{DecodeError, ProtocolError, StreamDecoder, StreamEncoder};
use serde_json::{Map, Value, json};

/// Google's documented value for a function call replayed without the thought signature
/// the model gave it (e.g. a conversation that went through another format).
const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The schema name used for `responseSchema` / `responseJsonSchema`, which have none.
const RESPONSE_SCHEMA_NAME: &str = "response";

// ---------------------------------------------------------------------------------------
// Small JSON helpers
// ---------------------------------------------------------------------------------------

/// The value of a field given under its camelCase or its snake_case name (`null` counts
/// as absent, as it does for the REST API).
fn field<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).filter(|v| !v.is_null()).or_else(|| object.get(snake).filter(|v| !v.is_null()))
}

fn as_object<'a>(value: &'a Value, param: &'static str, what: &str) -> Result<&'a Map<String, Value>, ProtocolError> {
    value.as_object().ok_or_else(|| ProtocolError::at(param, format!("{what} must be an object")))
}

fn as_array<'a>(value: &'a Value, param: &'static str, what: &str) -> Result<&'a Vec<Value>, ProtocolError> {
    value.as_array().ok_or_else(|| ProtocolError::at(param, format!("{what} must be an array")))
}

fn as_str<'a>(value: &'a Value, param: &'static str, what: &str) -> Result<&'a str, ProtocolError> {
    value.as_str().ok_or_else(|| ProtocolError::at(param, format!("{what} must be a string")))
}

fn as_f64(value: &Value, param: &'static str, what: &str) -> Result<f64, ProtocolError> {
    value.as_f64().ok_or_else(|| ProtocolError::at(param, format!("{what} must be a number")))
}

/// A non-negative integer. Gemini's SDKs type some counts as floats (`top_k`), so an
/// integral float is accepted too.
fn as_count(value: &Value, param: &'static str, what: &str) -> Result<u64, ProtocolError> {
    if let Some(count) = value.as_u64() {
        return Ok(count);
    }
    match value.as_f64() {
        Some(float) if float >= 0.0 && float.fract() == 0.0 && float < 1.0e19 => Ok(float as u64),
        _ => Err(ProtocolError::at(param, format!("{what} must be a non-negative integer"))),
    }
}

/// The JSON text of a tool call's arguments object.
fn args_text(args: Option<&Value>) -> String {
    match args {
        Some(value @ Value::Object(_)) => value.to_string(),
        _ => "{}".to_owned(),
    }
}

/// The arguments object for Gemini's `args`: the parsed text when it is an object, an
/// empty object otherwise (Gemini has no way to carry anything else).
fn args_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(Map::new()),
    }
}

/// A `u64` token count from `usageMetadata`, 0 when absent or not a count.
fn count(object: &Map<String, Value>, camel: &str, snake: &str) -> u64 {
    field(object, camel, snake).and_then(Value::as_u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Parses a client's `generateContent` body. `model` and `stream` come from the URL; the
/// model may be given as `models/NAME`.
pub fn parse_request(model: &str, stream: bool, body: &Value) -> Result<ChatRequest, ProtocolError> {
    let body = body.as_object().ok_or_else(|| ProtocolError::new("the request body must be a JSON object"))?;
    if field(body, "cachedContent", "cached_content").is_some() {
        return Err(ProtocolError::at(
            "cachedContent",
            "cachedContent is not supported: this relay stores no cached content; send the full contents instead",
        ));
    }
    let mut request = ChatRequest {
        model: model.strip_prefix("models/").unwrap_or(model).to_owned(),
        stream,
        ..ChatRequest::default()
    };

    if let Some(system) = field(body, "systemInstruction", "system_instruction") {
        request.system = parse_system(system)?;
    }

    let contents = field(body, "contents", "contents")
        .ok_or_else(|| ProtocolError::at("contents", "contents is required"))
        .and_then(|value| as_array(value, "contents", "contents"))?;
    if contents.is_empty() {
        return Err(ProtocolError::at("contents", "contents must not be empty"));
    }
    let mut calls = CallLedger::default();
    for content in contents {
        request.messages.push(parse_content(content, &mut calls)?);
    }

    if let Some(tools) = field(body, "tools", "tools") {
        request.tools = parse_tools(tools)?;
    }
    if let Some(tool_config) = field(body, "toolConfig", "tool_config") {
        request.tool_choice = parse_tool_config(tool_config)?;
    }
    if let Some(config) = field(body, "generationConfig", "generation_config") {
        parse_generation_config(config, &mut request)?;
    }
    // `safetySettings` and `labels` have no canonical counterpart: ignored.
    Ok(request)
}

fn parse_system(system: &Value) -> Result<Vec<String>, ProtocolError> {
    // The REST API takes a Content; a bare string is a common SDK shorthand, accepted too.
    if let Some(text) = system.as_str() {
        return Ok(vec![text.to_owned()]);
    }
    let system = as_object(system, "systemInstruction", "systemInstruction")?;
    let parts = field(system, "parts", "parts")
        .ok_or_else(|| ProtocolError::at("systemInstruction", "systemInstruction.parts is required"))
        .and_then(|parts| as_array(parts, "systemInstruction", "systemInstruction.parts"))?;
    parts
        .iter()
        .map(|part| {
            let text = as_object(part, "systemInstruction", "a systemInstruction part")
                .ok()
                .and_then(|part| field(part, "text", "text"))
                .and_then(Value::as_str);
            text.map(str::to_owned)
                .ok_or_else(|| ProtocolError::at("systemInstruction", "systemInstruction parts must be text parts"))
        })
        .collect()
}

/// Tool call ids seen so far in a request, to give id-less calls and results matching ids.
#[derive(Default)]
struct CallLedger {
    /// Calls counted so far (the `n` of `call_<n>`).
    seen: usize,
    /// Calls not yet answered, oldest first: (id, name).
    unanswered: Vec<(String, String)>,
}

impl CallLedger {
    fn call(&mut self, id: Option<&str>, name: &str) -> String {
        let id = id.filter(|id| !id.is_empty()).map_or_else(|| format!("call_{}", self.seen), str::to_owned);
        self.seen += 1;
        self.unanswered.push((id.clone(), name.to_owned()));
        id
    }

    fn answer(&mut self, id: Option<&str>, name: &str) -> Option<String> {
        let position = match id.filter(|id| !id.is_empty()) {
            Some(id) => match self.unanswered.iter().position(|(call_id, _)| call_id == id) {
                Some(position) => position,
                // An explicit id the ledger does not know (e.g. a truncated history): trust it.
                None => return Some(id.to_owned()),
            },
            None => self.unanswered.iter().position(|(_, call_name)| call_name == name)?,
        };
        Some(self.unanswered.remove(position).0)
    }
}

fn parse_content(content: &Value, calls: &mut CallLedger) -> Result<Message, ProtocolError> {
    let content = as_object(content, "contents", "each item of contents")?;
    let role = match field(content, "role", "role").map(|role| as_str(role, "contents", "contents[].role")) {
        // A single-turn request may leave the role out: it is the user's.
        None => Role::User,
        Some(Ok("user" | "function")) => Role::User,
        Some(Ok("model")) => Role::Assistant,
        Some(Ok(other)) => {
            return Err(ProtocolError::at(
                "contents",
                format!("contents[].role must be \"user\" or \"model\", not {other:?}"),
            ));
        }
        Some(Err(error)) => return Err(error),
    };
    let parts = match field(content, "parts", "parts") {
        Some(parts) => as_array(parts, "contents", "contents[].parts")?.as_slice(),
        None => &[],
    };
    let mut message = Message { role, content: Vec::with_capacity(parts.len()) };
    for part in parts {
        if let Some(part) = parse_part(part, calls)? {
            message.content.push(part);
        }
    }
    Ok(message)
}

fn parse_part(part: &Value, calls: &mut CallLedger) -> Result<Option<Part>, ProtocolError> {
    let part = as_object(part, "contents", "each part")?;
    if let Some(text) = field(part, "text", "text") {
        let text = as_str(text, "contents", "a part's text")?.to_owned();
        if field(part, "thought", "thought").and_then(Value::as_bool) == Some(true) {
            let signature =
                field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str).map(str::to_owned);
            return Ok(Some(Part::Reasoning { text, signature }));
        }
        return Ok(Some(Part::Text { text }));
    }
    if let Some(blob) = field(part, "inlineData", "inline_data") {
        let blob = as_object(blob, "contents", "inlineData")?;
        let media_type = field(blob, "mimeType", "mime_type")
            .ok_or_else(|| ProtocolError::at("contents", "inlineData.mimeType is required"))
            .and_then(|value| as_str(value, "contents", "inlineData.mimeType"))?;
        require_image(media_type, "inlineData")?;
        let data = field(blob, "data", "data")
            .ok_or_else(|| ProtocolError::at("contents", "inlineData.data is required"))
            .and_then(|value| as_str(value, "contents", "inlineData.data"))?;
        let source = ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
        return Ok(Some(Part::Image { source }));
    }
    if let Some(file) = field(part, "fileData", "file_data") {
        let file = as_object(file, "contents", "fileData")?;
        if let Some(media_type) = field(file, "mimeType", "mime_type") {
            require_image(as_str(media_type, "contents", "fileData.mimeType")?, "fileData")?;
        }
        let url = field(file, "fileUri", "file_uri")
            .ok_or_else(|| ProtocolError::at("contents", "fileData.fileUri is required"))
            .and_then(|value| as_str(value, "contents", "fileData.fileUri"))?;
        return Ok(Some(Part::Image { source: ImageSource::from_url(url) }));
    }
    if let Some(call) = field(part, "functionCall", "function_call") {
        let call = as_object(call, "contents", "functionCall")?;
        let name = function_name(call, "functionCall")?;
        let id = field(call, "id", "id").and_then(Value::as_str);
        let args = field(call, "args", "args");
        if args.is_some_and(|args| !args.is_object()) {
            return Err(ProtocolError::at("contents", "functionCall.args must be an object"));
        }
        let id = calls.call(id, name);
        return Ok(Some(Part::ToolCall { id, name: name.to_owned(), arguments: args_text(args) }));
    }
    if let Some(response) = field(part, "functionResponse", "function_response") {
        let response = as_object(response, "contents", "functionResponse")?;
        let name = function_name(response, "functionResponse")?;
        let id = field(response, "id", "id").and_then(Value::as_str);
        let call_id = calls.answer(id, name).ok_or_else(|| {
            ProtocolError::at("contents", format!("functionResponse for {name:?} answers no earlier functionCall"))
        })?;
        let (text, is_error) = function_response_text(field(response, "response", "response"));
        let content = vec![Part::Text { text }];
        return Ok(Some(Part::ToolResult { call_id, content, is_error }));
    }
    // A part that carries only a thought signature (or nothing) holds no content.
    let Some(kind) =
        part.keys().find(|key| !matches!(key.as_str(), "thoughtSignature" | "thought_signature" | "thought"))
    else {
        return Ok(None);
    };
    Err(ProtocolError::at(
        "contents",
        format!(
            "unsupported part kind {kind:?}: only text, inlineData and fileData images, functionCall and functionResponse parts are supported"
        ),
    ))
}

fn require_image(media_type: &str, what: &str) -> Result<(), ProtocolError> {
    if media_type.starts_with("image/") {
        Ok(())
    } else {
        Err(ProtocolError::at(
            "contents",
            format!("{what} with mimeType {media_type:?} is not supported: only images are"),
        ))
    }
}

fn function_name<'a>(object: &'a Map<String, Value>, what: &str) -> Result<&'a str, ProtocolError> {
    match field(object, "name", "name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(ProtocolError::at("contents", format!("{what}.name is required"))),
    }
}

/// The text of a function response and whether it reports an error. A lone `content` or
/// `output` string is the text itself; a lone `result` (what [`encode_request`] and the
/// google-genai SDK wrap output in) is unwrapped whatever it holds; a lone `error`
/// (Gemini's documented key for failures) marks an error; anything else is the object's
/// JSON text.
fn function_response_text(response: Option<&Value>) -> (String, bool) {
    let Some(response) = response else {
        return (String::new(), false);
    };
    if let Some(object) = response.as_object()
        && object.len() == 1
        && let Some((key, value)) = object.iter().next()
    {
        let is_error = key == "error";
        if matches!(key.as_str(), "content" | "output" | "result" | "error") {
            return match value.as_str() {
                Some(text) => (text.to_owned(), is_error),
                None if is_error || key == "result" => (value.to_string(), is_error),
                None => (response.to_string(), false),
            };
        }
    }
    (response.to_string(), false)
}

fn parse_tools(tools: &Value) -> Result<Vec<Tool>, ProtocolError> {
    let mut parsed = Vec::new();
    for tool in as_array(tools, "tools", "tools")? {
        let tool = as_object(tool, "tools", "each tool")?;
        for (key, value) in tool {
            if value.is_null() {
                continue;
            }
            if key != "functionDeclarations" && key != "function_declarations" {
                return Err(ProtocolError::at(
                    "tools",
                    format!("tool kind {key:?} is not supported: only functionDeclarations are"),
                ));
            }
            for declaration in as_array(value, "tools", "functionDeclarations")? {
                parsed.push(parse_function_declaration(declaration)?);
            }
        }
    }
    Ok(parsed)
}

fn parse_function_declaration(declaration: &Value) -> Result<Tool, ProtocolError> {
    let declaration = as_object(declaration, "tools", "each function declaration")?;
    let name = match field(declaration, "name", "name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(ProtocolError::at("tools", "functionDeclarations[].name is required")),
    };
    let description = match field(declaration, "description", "description") {
        Some(description) => Some(as_str(description, "tools", "functionDeclarations[].description")?.to_owned()),
        None => None,
    };
    let parameters = if let Some(schema) = field(declaration, "parametersJsonSchema", "parameters_json_schema") {
        schema.clone()
    } else if let Some(schema) = field(declaration, "parameters", "parameters") {
        openapi_to_json_schema(schema)
    } else {
        json!({"type": "object", "properties": {}})
    };
    if !parameters.is_object() {
        return Err(ProtocolError::at("tools", "functionDeclarations[].parameters must be an object"));
    }
    Ok(Tool { name, description, parameters })
}

/// Gemini's `Schema` (an OpenAPI 3.0 subset: upper-case `type`s such as `OBJECT`,
/// `nullable`, `propertyOrdering`) as JSON Schema, which the other formats take.
fn openapi_to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut converted = Map::with_capacity(object.len());
            let nullable = object.get("nullable").and_then(Value::as_bool) == Some(true);
            for (key, value) in object {
                match key.as_str() {
                    "nullable" | "propertyOrdering" | "property_ordering" => {}
                    "type" => {
                        if let Some(kind) = value.as_str().filter(|kind| *kind != "TYPE_UNSPECIFIED") {
                            let kind = Value::String(kind.to_ascii_lowercase());
                            let kind = if nullable { json!([kind, "null"]) } else { kind };
                            converted.insert(key.clone(), kind);
                        }
                    }
                    "properties" | "$defs" | "definitions" => {
                        let inner = value.as_object().map_or_else(
                            || value.clone(),
                            |properties| {
                                Value::Object(
                                    properties.iter().map(|(k, v)| (k.clone(), openapi_to_json_schema(v))).collect(),
                                )
                            },
                        );
                        converted.insert(key.clone(), inner);
                    }
                    "items" | "additionalProperties" | "not" => {
                        converted.insert(key.clone(), openapi_to_json_schema(value));
                    }
                    "anyOf" | "any_of" | "oneOf" | "allOf" | "prefixItems" => {
                        let name = if key == "any_of" { "anyOf".to_owned() } else { key.clone() };
                        let inner = value.as_array().map_or_else(
                            || value.clone(),
                            |items| Value::Array(items.iter().map(openapi_to_json_schema).collect()),
                        );
                        converted.insert(name, inner);
                    }
                    _ => {
                        converted.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(converted)
        }
        other => other.clone(),
    }
}

fn parse_tool_config(tool_config: &Value) -> Result<Option<ToolChoice>, ProtocolError> {
    let tool_config = as_object(tool_config, "toolConfig", "toolConfig")?;
    let Some(config) = field(tool_config, "functionCallingConfig", "function_calling_config") else {
        return Ok(None);
    };
    let config = as_object(config, "toolConfig", "toolConfig.functionCallingConfig")?;
    let allowed: Vec<&str> = match field(config, "allowedFunctionNames", "allowed_function_names") {
        Some(names) => as_array(names, "toolConfig", "allowedFunctionNames")?
            .iter()
            .map(|name| as_str(name, "toolConfig", "allowedFunctionNames[]"))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let Some(mode) = field(config, "mode", "mode") else {
        return Ok(None);
    };
    Ok(match as_str(mode, "toolConfig", "functionCallingConfig.mode")? {
        "MODE_UNSPECIFIED" => None,
        // VALIDATED is AUTO with schema-checked calls: the canonical model has only AUTO.
        "AUTO" | "VALIDATED" => Some(ToolChoice::Auto),
        "NONE" => Some(ToolChoice::None),
        "ANY" => match allowed.as_slice() {
            [only] => Some(ToolChoice::Named((*only).to_owned())),
            // Several allowed names cannot be expressed: any tool is required.
            _ => Some(ToolChoice::Required),
        },
        other => {
            return Err(ProtocolError::at(
                "toolConfig",
                format!("functionCallingConfig.mode must be AUTO, ANY, NONE or VALIDATED, not {other:?}"),
            ));
        }
    })
}

fn parse_generation_config(config: &Value, request: &mut ChatRequest) -> Result<(), ProtocolError> {
    const PARAM: &str = "generationConfig";
    let config = as_object(config, PARAM, "generationConfig")?;
    if let Some(value) = field(config, "candidateCount", "candidate_count")
        && as_count(value, PARAM, "generationConfig.candidateCount")? > 1
    {
        return Err(ProtocolError::at(PARAM, "generationConfig.candidateCount above 1 is not supported"));
    }
    if let Some(value) = field(config, "maxOutputTokens", "max_output_tokens") {
        request.max_output_tokens = Some(as_count(value, PARAM, "generationConfig.maxOutputTokens")?);
    }
    if let Some(value) = field(config, "temperature", "temperature") {
        request.temperature = Some(as_f64(value, PARAM, "generationConfig.temperature")?);
    }
    if let Some(value) = field(config, "topP", "top_p") {
        request.top_p = Some(as_f64(value, PARAM, "generationConfig.topP")?);
    }
    if let Some(value) = field(config, "topK", "top_k") {
        request.top_k = Some(as_count(value, PARAM, "generationConfig.topK")?);
    }
    if let Some(value) = field(config, "seed", "seed") {
        request.seed =
            Some(value.as_i64().ok_or_else(|| ProtocolError::at(PARAM, "generationConfig.seed must be an integer"))?);
    }
    if let Some(value) = field(config, "stopSequences", "stop_sequences") {
        request.stop = as_array(value, PARAM, "generationConfig.stopSequences")?
            .iter()
            .map(|stop| as_str(stop, PARAM, "generationConfig.stopSequences[]").map(str::to_owned))
            .collect::<Result<_, _>>()?;
    }

    let mime_type = match field(config, "responseMimeType", "response_mime_type") {
        Some(value) => Some(as_str(value, PARAM, "generationConfig.responseMimeType")?),
        None => None,
    };
    let schema = if let Some(schema) = field(config, "responseJsonSchema", "response_json_schema") {
        Some(schema.clone())
    } else {
        field(config, "responseSchema", "response_schema").map(openapi_to_json_schema)
    };
    request.response_format = match (mime_type, schema) {
        (_, Some(schema)) => {
            Some(ResponseFormat::JsonSchema { name: RESPONSE_SCHEMA_NAME.to_owned(), schema, strict: None })
        }
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (None | Some("text/plain"), None) => None,
        (Some(other), None) => {
            return Err(ProtocolError::at(
                PARAM,
                format!(
                    "generationConfig.responseMimeType {other:?} is not supported: use text/plain or application/json"
                ),
            ));
        }
    };

    if let Some(thinking) = field(config, "thinkingConfig", "thinking_config") {
        let thinking = as_object(thinking, PARAM, "generationConfig.thinkingConfig")?;
        if let Some(level) = field(thinking, "thinkingLevel", "thinking_level") {
            let level = as_str(level, PARAM, "thinkingConfig.thinkingLevel")?.to_ascii_lowercase();
            request.reasoning_effort = (level != "thinking_level_unspecified").then_some(level);
        } else if let Some(budget) = field(thinking, "thinkingBudget", "thinking_budget") {
            let budget = budget
                .as_i64()
                .ok_or_else(|| ProtocolError::at(PARAM, "thinkingConfig.thinkingBudget must be an integer"))?;
            request.reasoning_effort = effort_for_budget(budget).map(str::to_owned);
        }
    }
    Ok(())
}

/// OpenAI's reasoning effort for a Gemini thinking budget. -1 (dynamic) leaves the choice
/// to the upstream; 0 (thinking off) is the least effort there is.
fn effort_for_budget(budget: i64) -> Option<&'static str> {
    match budget {
        ..0 => None,
        0 => Some("minimal"),
        1..=2048 => Some("low"),
        2049..=8192 => Some("medium"),
        _ => Some("high"),
    }
}

/// The thinking budget for an OpenAI reasoning effort. 512 is within every thinking
/// model's range (Flash-Lite's minimum), and 24576 is Flash's maximum.
fn budget_for_effort(effort: &str) -> Option<i64> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(512),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" | "xhigh" => Some(24576),
        _ => None,
    }
}

/// Encodes a canonical request as a Gemini `generateContent` body. The model and the
/// stream flag belong in the URL and are not written.
pub fn encode_request(request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("contents".to_owned(), Value::Array(encode_contents(request)));
    if !request.system.is_empty() {
        let parts: Vec<Value> = request.system.iter().map(|text| json!({"text": text})).collect();
        body.insert("systemInstruction".to_owned(), json!({"parts": parts}));
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration = Map::new();
                declaration.insert("name".to_owned(), Value::String(tool.name.clone()));
                if let Some(description) = &tool.description {
                    declaration.insert("description".to_owned(), Value::String(description.clone()));
                }
                declaration.insert("parametersJsonSchema".to_owned(), tool.parameters.clone());
                Value::Object(declaration)
            })
            .collect();
        body.insert("tools".to_owned(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert("toolConfig".to_owned(), json!({"functionCallingConfig": config}));
    }
    let config = encode_generation_config(request);
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }
    // `user` and `parallel_tool_calls` have no Gemini counterpart: dropped.
    Value::Object(body)
}

fn encode_generation_config(request: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = request.max_output_tokens {
        config.insert("maxOutputTokens".to_owned(), json!(max));
    }
    if let Some(temperature) = request.temperature {
        config.insert("temperature".to_owned(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        config.insert("topP".to_owned(), json!(top_p));
    }
    if let Some(top_k) = request.top_k {
        config.insert("topK".to_owned(), json!(top_k));
    }
    if !request.stop.is_empty() {
        config.insert("stopSequences".to_owned(), json!(request.stop));
    }
    if let Some(seed) = request.seed {
        config.insert("seed".to_owned(), json!(seed));
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            config.insert("responseJsonSchema".to_owned(), schema.clone());
        }
    }
    if let Some(budget) = request.reasoning_effort.as_deref().and_then(budget_for_effort) {
        config.insert("thinkingConfig".to_owned(), json!({"thinkingBudget": budget}));
    }
    config
}

fn encode_contents(request: &ChatRequest) -> Vec<Value> {
    let sign_calls = needs_thought_signature(&request.model);
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::with_capacity(message.content.len());
        for part in &message.content {
            encode_request_part(request, part, &mut parts);
        }
        if parts.is_empty() {
            // Gemini refuses a turn without parts (e.g. one that held only reasoning).
            continue;
        }
        // Gemini wants turns to alternate: consecutive turns of one role become one.
        match contents.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    contents
        .into_iter()
        .map(|(role, mut parts)| {
            if role == "model" && sign_calls {
                // Only the first function call of a step carries a signature (as Gemini's own).
                if let Some(Value::Object(first_call)) =
                    parts.iter_mut().find(|part| part.get("functionCall").is_some())
                {
                    first_call.insert("thoughtSignature".to_owned(), json!(SKIP_THOUGHT_SIGNATURE));
                }
            }
            json!({"role": role, "parts": parts})
        })
        .collect()
}

/// Whether replayed function calls need a thought signature: Gemini 3 and later validate
/// them; the 1.x and 2.x models predate signatures.
fn needs_thought_signature(model: &str) -> bool {
    let model = model.rsplit('/').next().unwrap_or(model);
    !(model.starts_with("gemini-1") || model.starts_with("gemini-2"))
}

fn encode_request_part(request: &ChatRequest, part: &Part, parts: &mut Vec<Value>) {
    match part {
        Part::Text { text } => parts.push(json!({"text": text})),
        Part::Image { source } => parts.push(encode_image(source)),
        Part::ToolCall { id, name, arguments } => {
            parts.push(json!({"functionCall": {"id": id, "name": name, "args": args_object(arguments)}}));
        }
        Part::ToolResult { call_id, content, is_error } => {
            // Gemini needs the function's name; an unknown call falls back to its id.
            let name = request.tool_name_for(call_id).unwrap_or(call_id);
            let text: String = content
                .iter()
                .filter_map(|part| match part {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            // `error` is Gemini's documented key for a failed call; `result` holds output.
            let key = if *is_error { "error" } else { "result" };
            let mut response = Map::new();
            response.insert(key.to_owned(), value);
            parts.push(json!({"functionResponse": {"id": call_id, "name": name, "response": response}}));
            // Images a tool returned follow its response in the same turn.
            for part in content {
                if let Part::Image { source } = part {
                    parts.push(encode_image(source));
                }
            }
        }
        // Reasoning goes back to Gemini as thought signatures, which canonical reasoning
        // does not carry; its text is not an input Gemini accepts.
        Part::Reasoning { .. } => {}
    }
}

fn encode_image(source: &ImageSource) -> Value {
    match source {
        ImageSource::Base64 { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        ImageSource::Url { url } => json!({"fileData": {"mimeType": guess_image_type(url), "fileUri": url}}),
    }
}

/// An image URL's media type from its extension (Gemini's `fileData` requires one).
fn guess_image_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// The canonical stop reason for a candidate's `finishReason`. Gemini reports STOP for
/// function calls too, so `has_call` turns it into a tool-use stop. A malformed or
/// unexpected function call is the model failing to call, not a filter: EndTurn.
fn stop_reason(finish_reason: &str, has_call: bool) -> StopReason {
    match finish_reason {
        "STOP" if has_call => StopReason::ToolUse,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "LANGUAGE"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn finish_reason(stop_reason: Option<StopReason>) -> &'static str {
    match stop_reason {
        None | Some(StopReason::EndTurn | StopReason::ToolUse | StopReason::StopSequence) => "STOP",
        Some(StopReason::MaxTokens) => "MAX_TOKENS",
        Some(StopReason::ContentFilter) => "SAFETY",
    }
}

fn parse_usage(usage: &Value) -> Option<TokenUsage> {
    let usage = usage.as_object()?;
    let thoughts = count(usage, "thoughtsTokenCount", "thoughts_token_count");
    Some(TokenUsage {
        input_tokens: count(usage, "promptTokenCount", "prompt_token_count").saturating_add(count(
            usage,
            "toolUsePromptTokenCount",
            "tool_use_prompt_token_count",
        )),
        cached_tokens: count(usage, "cachedContentTokenCount", "cached_content_token_count"),
        output_tokens: count(usage, "candidatesTokenCount", "candidates_token_count").saturating_add(thoughts),
        reasoning_tokens: thoughts,
        ..TokenUsage::default()
    })
}

fn encode_usage(usage: &TokenUsage) -> Value {
    let mut metadata = Map::new();
    metadata.insert("promptTokenCount".to_owned(), json!(usage.input_tokens));
    metadata
        .insert("candidatesTokenCount".to_owned(), json!(usage.output_tokens.saturating_sub(usage.reasoning_tokens)));
    metadata.insert("totalTokenCount".to_owned(), json!(usage.input_tokens.saturating_add(usage.output_tokens)));
    if usage.cached_tokens > 0 {
        metadata.insert("cachedContentTokenCount".to_owned(), json!(usage.cached_tokens));
    }
    if usage.reasoning_tokens > 0 {
        metadata.insert("thoughtsTokenCount".to_owned(), json!(usage.reasoning_tokens));
    }
    Value::Object(metadata)
}

/// An answer's id: Gemini's `responseId`, or a fixed stand-in when there is none.
fn response_id(body: &Map<String, Value>) -> String {
    field(body, "responseId", "response_id").and_then(Value::as_str).unwrap_or("gemini-response").to_owned()
}

/// The id of the `index`th function call of an answer without ids of its own: unique
/// across a conversation's answers when Gemini gave a `responseId`.
fn synthetic_call_id(response_id: Option<&str>, index: u32) -> String {
    match response_id {
        Some(response_id) if !response_id.is_empty() => {
            let safe: String = response_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            format!("call_{safe}_{index}")
        }
        _ => format!("call_{index}"),
    }
}

fn upstream_error(error: &Value) -> DecodeError {
    let kind = error.get("status").and_then(Value::as_str).map(str::to_owned).or_else(|| {
        error
            .get("code")
            .and_then(|code| code.as_u64().map(|code| code.to_string()).or(code.as_str().map(str::to_owned)))
    });
    let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
    DecodeError::Upstream { kind, message }
}

/// The first candidate of a response chunk, if it has one.
fn first_candidate(body: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, DecodeError> {
    match field(body, "candidates", "candidates") {
        None => Ok(None),
        Some(Value::Array(candidates)) => match candidates.first() {
            None => Ok(None),
            Some(Value::Object(candidate)) => Ok(Some(candidate)),
            Some(_) => Err(DecodeError::Malformed("a Gemini candidate is not an object")),
        },
        Some(_) => Err(DecodeError::Malformed("Gemini candidates is not an array")),
    }
}

/// The parts of a candidate's content (none when it was withheld).
fn candidate_parts(candidate: &Map<String, Value>) -> Result<&[Value], DecodeError> {
    let Some(content) = field(candidate, "content", "content") else {
        return Ok(&[]);
    };
    let content = content.as_object().ok_or(DecodeError::Malformed("a Gemini candidate's content is not an object"))?;
    match field(content, "parts", "parts") {
        None => Ok(&[]),
        Some(Value::Array(parts)) => Ok(parts),
        Some(_) => Err(DecodeError::Malformed("a Gemini content's parts is not an array")),
    }
}

/// What one response part means, in canonical terms.
enum ResponsePiece<'a> {
    Text(&'a str),
    Thought(&'a str, Option<&'a str>),
    Call {
        id: Option<&'a str>,
        name: &'a str,
        args: Option<&'a Value>,
    },
    Image(ImageSource),
    /// Parts the relay never asks for (executable code, …) or that hold only a signature.
    Nothing,
}

fn response_piece(part: &Value) -> Result<ResponsePiece<'_>, DecodeError> {
    let part = part.as_object().ok_or(DecodeError::Malformed("a Gemini part is not an object"))?;
    if let Some(text) = field(part, "text", "text") {
        let text = text.as_str().ok_or(DecodeError::Malformed("a Gemini part's text is not a string"))?;
        if field(part, "thought", "thought").and_then(Value::as_bool) == Some(true) {
            let signature = field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str);
            return Ok(ResponsePiece::Thought(text, signature));
        }
        return Ok(ResponsePiece::Text(text));
    }
    if let Some(call) = field(part, "functionCall", "function_call") {
        let call = call.as_object().ok_or(DecodeError::Malformed("a Gemini functionCall is not an object"))?;
        let name = field(call, "name", "name")
            .and_then(Value::as_str)
            .ok_or(DecodeError::Malformed("a Gemini functionCall has no name"))?;
        let id = field(call, "id", "id").and_then(Value::as_str).filter(|id| !id.is_empty());
        return Ok(ResponsePiece::Call { id, name, args: field(call, "args", "args") });
    }
    if let Some(blob) = field(part, "inlineData", "inline_data").and_then(Value::as_object) {
        let media_type = field(blob, "mimeType", "mime_type").and_then(Value::as_str);
        let data = field(blob, "data", "data").and_then(Value::as_str);
        if let (Some(media_type), Some(data)) = (media_type, data) {
            return Ok(ResponsePiece::Image(ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            }));
        }
    }
    Ok(ResponsePiece::Nothing)
}

/// Parses a whole `GenerateContentResponse` (its first candidate).
pub fn parse_response(body: &Value) -> Result<ChatResponse, DecodeError> {
    let body = body.as_object().ok_or(DecodeError::Malformed("a Gemini response is not a JSON object"))?;
    if let Some(error) = body.get("error") {
        return Err(upstream_error(error));
    }
    let mut response = ChatResponse {
        id: response_id(body),
        model: field(body, "modelVersion", "model_version").and_then(Value::as_str).unwrap_or_default().to_owned(),
        created: None,
        content: Vec::new(),
        stop_reason: None,
        usage: field(body, "usageMetadata", "usage_metadata").and_then(parse_usage),
    };
    let response_id = field(body, "responseId", "response_id").and_then(Value::as_str);
    let Some(candidate) = first_candidate(body)? else {
        // A prompt the safety filters refused: no candidates, only the reason.
        let blocked = field(body, "promptFeedback", "prompt_feedback")
            .and_then(Value::as_object)
            .and_then(|feedback| field(feedback, "blockReason", "block_reason"))
            .is_some();
        if blocked {
            response.stop_reason = Some(StopReason::ContentFilter);
            return Ok(response);
        }
        return Err(DecodeError::Malformed("a Gemini response has no candidates"));
    };

    let mut calls = 0_u32;
    for part in candidate_parts(candidate)? {
        match response_piece(part)? {
            ResponsePiece::Text(text) => response.content.push(Part::Text { text: text.to_owned() }),
            ResponsePiece::Thought(text, signature) => response
                .content
                .push(Part::Reasoning { text: text.to_owned(), signature: signature.map(str::to_owned) }),
            ResponsePiece::Call { id, name, args } => {
                let id = id.map_or_else(|| synthetic_call_id(response_id, calls), str::to_owned);
                calls += 1;
                response.content.push(Part::ToolCall { id, name: name.to_owned(), arguments: args_text(args) });
            }
            ResponsePiece::Image(source) => response.content.push(Part::Image { source }),
            ResponsePiece::Nothing => {}
        }
    }
    response.stop_reason = field(candidate, "finishReason", "finish_reason")
        .and_then(Value::as_str)
        .map(|reason| stop_reason(reason, calls > 0));
    Ok(response)
}

fn encode_response_part(part: &Part) -> Option<Value> {
    match part {
        Part::Text { text } => Some(json!({"text": text})),
        // An Anthropic signature is no Gemini thought signature: not passed on.
        Part::Reasoning { text, .. } => Some(json!({"text": text, "thought": true})),
        Part::ToolCall { id, name, arguments } => {
            Some(json!({"functionCall": {"id": id, "name": name, "args": args_object(arguments)}}))
        }
        Part::Image { source } => Some(encode_image(source)),
        Part::ToolResult { .. } => None,
    }
}

/// Encodes a whole answer as a `GenerateContentResponse`.
pub fn encode_response(response: &ChatResponse) -> Value {
    let parts: Vec<Value> = response.content.iter().filter_map(encode_response_part).collect();
    let mut candidate = Map::new();
    if !parts.is_empty() {
        candidate.insert("content".to_owned(), json!({"role": "model", "parts": parts}));
    }
    if let Some(stop_reason) = response.stop_reason {
        candidate.insert("finishReason".to_owned(), json!(finish_reason(Some(stop_reason))));
    }
    candidate.insert("index".to_owned(), json!(0));
    let mut body = Map::new();
    body.insert("candidates".to_owned(), json!([candidate]));
    if let Some(usage) = &response.usage {
        body.insert("usageMetadata".to_owned(), encode_usage(usage));
    }
    body.insert("modelVersion".to_owned(), json!(response.model));
    body.insert("responseId".to_owned(), json!(response.id));
    Value::Object(body)
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// Decodes Gemini's stream (`streamGenerateContent?alt=sse`): one whole response chunk per
/// event. Function calls arrive whole in one chunk; usage is cumulative in each chunk.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    /// The `responseId` of the first chunk, for synthetic tool call ids.
    response_id: Option<String>,
    /// Tool calls seen so far (the next call's index).
    calls: u32,
    /// The last usage emitted, so an unchanged repeat is not emitted again.
    usage: Option<TokenUsage>,
    /// A chunk with a `finishReason` (or a blocked prompt) has been seen.
    finished: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|_| DecodeError::Malformed("a Gemini chunk is not JSON"))?;
        let chunk = chunk.as_object().ok_or(DecodeError::Malformed("a Gemini chunk is not a JSON object"))?;
        if let Some(error) = chunk.get("error") {
            return Err(upstream_error(error));
        }
        if !self.started {
            self.started = true;
            self.response_id = field(chunk, "responseId", "response_id").and_then(Value::as_str).map(str::to_owned);
            out.push(StreamEvent::Start {
                id: response_id(chunk),
                model: field(chunk, "modelVersion", "model_version")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                created: None,
            });
        }

        let candidate = first_candidate(chunk)?;
        let mut finish = None;
        if let Some(candidate) = candidate {
            for part in candidate_parts(candidate)? {
                match response_piece(part)? {
                    ResponsePiece::Text(text) if !text.is_empty() => {
                        out.push(StreamEvent::TextDelta { text: text.to_owned() });
                    }
                    ResponsePiece::Thought(text, _) if !text.is_empty() => {
                        out.push(StreamEvent::ReasoningDelta { text: text.to_owned() });
                    }
                    ResponsePiece::Call { id, name, args } => {
                        let index = self.calls;
                        self.calls += 1;
                        let id =
                            id.map_or_else(|| synthetic_call_id(self.response_id.as_deref(), index), str::to_owned);
                        out.push(StreamEvent::ToolCallStart { index, id, name: name.to_owned() });
                        out.push(StreamEvent::ToolCallDelta { index, arguments: args_text(args) });
                    }
                    ResponsePiece::Text(_) | ResponsePiece::Thought(..) => {}
                    // A stream of text and tool events has no place for a whole image.
                    ResponsePiece::Image(_) | ResponsePiece::Nothing => {}
                }
            }
            finish = field(candidate, "finishReason", "finish_reason")
                .and_then(Value::as_str)
                .map(|reason| stop_reason(reason, self.calls > 0));
        } else if field(chunk, "promptFeedback", "prompt_feedback")
            .and_then(Value::as_object)
            .and_then(|feedback| field(feedback, "blockReason", "block_reason"))
            .is_some()
        {
            finish = Some(StopReason::ContentFilter);
        }
        if let Some(stop_reason) = finish
            && !self.finished
        {
            self.finished = true;
            out.push(StreamEvent::Finish { stop_reason });
        }

        if let Some(usage) = field(chunk, "usageMetadata", "usage_metadata").and_then(parse_usage)
            && self.usage != Some(usage)
        {
            self.usage = Some(usage);
            out.push(StreamEvent::Usage { usage });
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.finished
    }
}

/// A tool call whose argument fragments are being gathered: Gemini sends calls whole.
#[derive(Debug)]
struct PendingCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Encodes canonical stream events as Gemini's stream: one unnamed `data:` chunk per text
/// or reasoning piece and per whole tool call, then a last chunk with the `finishReason`
/// and usage. Holds at most one tool call's arguments.
#[derive(Debug, Default)]
pub struct Encoder {
    id: String,
    model: String,
    pending_call: Option<PendingCall>,
    stop_reason: Option<StopReason>,
    usage: Option<TokenUsage>,
    /// `finish` or `error` has written the end of the stream.
    ended: bool,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn chunk(&self, parts: Vec<Value>, finish_reason: Option<&str>, usage: Option<&TokenUsage>) -> SseEvent {
        let mut candidate = Map::new();
        candidate.insert("content".to_owned(), json!({"role": "model", "parts": parts}));
        if let Some(reason) = finish_reason {
            candidate.insert("finishReason".to_owned(), json!(reason));
        }
        candidate.insert("index".to_owned(), json!(0));
        let mut body = Map::new();
        body.insert("candidates".to_owned(), json!([candidate]));
        if let Some(usage) = usage {
            body.insert("usageMetadata".to_owned(), encode_usage(usage));
        }
        body.insert("modelVersion".to_owned(), json!(self.model));
        body.insert("responseId".to_owned(), json!(self.id));
        SseEvent::data(Value::Object(body).to_string())
    }

    fn flush_call(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(call) = self.pending_call.take() {
            let part =
                json!({"functionCall": {"id": call.id, "name": call.name, "args": args_object(&call.arguments)}});
            out.push(self.chunk(vec![part], None, None));
        }
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, model, .. } => {
                self.id = id;
                self.model = model;
            }
            StreamEvent::TextDelta { text } => {
                self.flush_call(out);
                if !text.is_empty() {
                    out.push(self.chunk(vec![json!({"text": text})], None, None));
                }
            }
            StreamEvent::ReasoningDelta { text } => {
                self.flush_call(out);
                if !text.is_empty() {
                    out.push(self.chunk(vec![json!({"text": text, "thought": true})], None, None));
                }
            }
            StreamEvent::ReasoningSignature { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.flush_call(out);
                self.pending_call = Some(PendingCall { index, id, name, arguments: String::new() });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.pending_call.as_mut().filter(|call| call.index == index) {
                    call.arguments.push_str(&arguments);
                }
            }
            StreamEvent::Finish { stop_reason } => {
                self.flush_call(out);
                self.stop_reason = Some(stop_reason);
            }
            StreamEvent::Usage { usage } => self.usage = Some(usage),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.flush_call(out);
        self.ended = true;
        // Gemini's last chunk carries an empty text part next to the finish reason; SDKs
        // that read `parts[0]` unguarded rely on a part being there.
        let reason = finish_reason(self.stop_reason);
        out.push(self.chunk(vec![json!({"text": ""})], Some(reason), self.usage.as_ref()));
    }

    fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.pending_call = None;
        out.push(SseEvent::data(crate::errors::gemini(error).to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    const REQUEST: &str = include_str!("../tests/fixtures/gemini/request.json");
    const RESPONSE_TEXT: &str = include_str!("../tests/fixtures/gemini/response_text.json");
    const RESPONSE_TOOL: &str = include_str!("../tests/fixtures/gemini/response_tool.json");
    const STREAM_TEXT: &str = include_str!("../tests/fixtures/gemini/stream_text.sse");
    const STREAM_TOOL: &str = include_str!("../tests/fixtures/gemini/stream_tool.sse");
    const PNG: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    fn parse(body: Value) -> Result<ChatRequest, ProtocolError> {
        parse_request("gemini-2.5-flash", false, &body)
    }

    fn user(body: Value) -> Value {
        json!({"contents": [{"role": "user", "parts": [body]}]})
    }

    fn text(text: &str) -> Part {
        Part::Text { text: text.to_owned() }
    }

    fn sse(wire: &str) -> Vec<SseEvent> {
        SseParser::new().push(wire.as_bytes()).unwrap()
    }

    fn decode_all(wire: &str) -> (Vec<StreamEvent>, bool) {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for event in sse(wire) {
            decoder.decode(&event, &mut out).unwrap();
        }
        (out, decoder.is_complete())
    }

    fn data_json(events: &[SseEvent]) -> Vec<Value> {
        events
            .iter()
            .map(|event| {
                assert_eq!(event.event, None);
                serde_json::from_str(&event.data).unwrap()
            })
            .collect()
    }

    #[test]
    fn parses_the_fixture_request() {
        let body: Value = serde_json::from_str(REQUEST).unwrap();
        let request = parse_request("models/gemini-2.5-flash", true, &body).unwrap();
        let expected = ChatRequest {
            model: "gemini-2.5-flash".into(),
            system: vec!["You are a helpful travel assistant. Keep answers short.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("Which city is this photo from?"),
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/png".into(), data: PNG.into() },
                        },
                    ],
                },
                Message::text(Role::Assistant, "That looks like Boston, Massachusetts."),
                Message::text(Role::User, "What's the weather like there right now?"),
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolCall {
                        id: "call_0".into(),
                        name: "get_current_weather".into(),
                        arguments: r#"{"location":"Boston, MA"}"#.into(),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: "call_0".into(),
                        content: vec![text(r#"{"description":"Sunny","temperature":22,"unit":"celsius"}"#)],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "get_current_weather".into(),
                description: Some("Get the current weather in a given location".into()),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }),
            }],
            tool_choice: Some(ToolChoice::Auto),
            max_output_tokens: Some(1024),
            temperature: Some(0.7),
            top_p: Some(0.95),
            top_k: Some(40),
            stop: vec!["END".into()],
            stream: true,
            ..ChatRequest::default()
        };
        assert_eq!(request, expected);
    }

    #[test]
    fn accepts_snake_case_field_names() {
        let body = json!({
            "system_instruction": {"role": "system", "parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Look"},
                    {"inline_data": {"mime_type": "image/webp", "data": "AAAA"}},
                    {"file_data": {"mime_type": "image/png", "file_uri": "https://example.com/a.png"}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Thinking it over", "thought": true, "thought_signature": "c2ln"},
                    {"function_call": {"id": "fc-1", "name": "look", "args": {"at": "a"}}}
                ]},
                {"role": "user", "parts": [{"function_response": {"id": "fc-1", "name": "look", "response": {"output": "a cat"}}}]}
            ],
            "tools": [{"function_declarations": [{"name": "look", "parameters_json_schema": {"type": "object"}}]}],
            "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["look"]}},
            "generation_config": {
                "max_output_tokens": 50, "top_k": 3.0, "top_p": 0.5, "stop_sequences": ["x"], "seed": -7,
                "response_mime_type": "application/json",
                "thinking_config": {"thinking_budget": 4096}
            }
        });
        let request = parse(body).unwrap();
        assert_eq!(request.system, vec!["Be brief.".to_owned(), "Be kind.".to_owned()]);
        assert_eq!(
            request.messages,
            vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("Look"),
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/webp".into(), data: "AAAA".into() }
                        },
                        Part::Image { source: ImageSource::Url { url: "https://example.com/a.png".into() } },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "Thinking it over".into(), signature: Some("c2ln".into()) },
                        Part::ToolCall { id: "fc-1".into(), name: "look".into(), arguments: r#"{"at":"a"}"#.into() },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: "fc-1".into(),
                        content: vec![text("a cat")],
                        is_error: false
                    }],
                },
            ]
        );
        assert_eq!(
            request.tools,
            vec![Tool { name: "look".into(), description: None, parameters: json!({"type": "object"}) }]
        );
        assert_eq!(request.tool_choice, Some(ToolChoice::Named("look".into())));
        assert_eq!(request.max_output_tokens, Some(50));
        assert_eq!(request.top_k, Some(3));
        assert_eq!(request.top_p, Some(0.5));
        assert_eq!(request.stop, vec!["x".to_owned()]);
        assert_eq!(request.seed, Some(-7));
        assert_eq!(request.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(request.reasoning_effort.as_deref(), Some("medium"));
    }

    #[test]
    fn function_responses_without_ids_answer_the_earliest_open_call_of_that_name() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "a", "args": {"n": 1}}},
                {"functionCall": {"name": "b"}},
                {"functionCall": {"name": "a", "args": {"n": 2}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "a", "response": {"content": "one"}}},
                {"functionResponse": {"name": "a", "response": {"result": "two"}}},
                {"functionResponse": {"name": "b", "response": {"error": "boom"}}}
            ]}
        ]});
        let request = parse(body).unwrap();
        let calls: Vec<(String, String)> = request.messages[1]
            .content
            .iter()
            .map(|part| match part {
                Part::ToolCall { id, arguments, .. } => (id.clone(), arguments.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                ("call_0".to_owned(), r#"{"n":1}"#.to_owned()),
                ("call_1".to_owned(), "{}".to_owned()),
                ("call_2".to_owned(), r#"{"n":2}"#.to_owned()),
            ]
        );
        assert_eq!(
            request.messages[2].content,
            vec![
                Part::ToolResult { call_id: "call_0".into(), content: vec![text("one")], is_error: false },
                Part::ToolResult { call_id: "call_2".into(), content: vec![text("two")], is_error: false },
                Part::ToolResult { call_id: "call_1".into(), content: vec![text("boom")], is_error: true },
            ]
        );

        let orphan =
            json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}]});
        assert_eq!(
            parse(orphan),
            Err(ProtocolError::at("contents", "functionResponse for \"a\" answers no earlier functionCall"))
        );
    }

    #[test]
    fn function_response_objects_become_text() {
        assert_eq!(function_response_text(Some(&json!({"output": "x"}))), ("x".to_owned(), false));
        assert_eq!(function_response_text(Some(&json!({"content": "y"}))), ("y".to_owned(), false));
        assert_eq!(function_response_text(Some(&json!({"output": [1]}))), (r#"{"output":[1]}"#.to_owned(), false));
        assert_eq!(function_response_text(Some(&json!({"error": {"code": 1}}))), (r#"{"code":1}"#.to_owned(), true));
        assert_eq!(function_response_text(Some(&json!({"result": {"a": 1}}))), (r#"{"a":1}"#.to_owned(), false));
        assert_eq!(
            function_response_text(Some(&json!({"output": "x", "extra": 1}))),
            (r#"{"extra":1,"output":"x"}"#.to_owned(), false)
        );
        assert_eq!(function_response_text(None), (String::new(), false));
    }

    #[test]
    fn refuses_what_it_cannot_translate_with_the_field_named() {
        let cases = [
            (
                json!({"cachedContent": "cachedContents/abc", "contents": [{"parts": [{"text": "hi"}]}]}),
                ProtocolError::at(
                    "cachedContent",
                    "cachedContent is not supported: this relay stores no cached content; send the full contents instead",
                ),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]}),
                ProtocolError::at(
                    "tools",
                    "tool kind \"googleSearch\" is not supported: only functionDeclarations are",
                ),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"codeExecution": {}}]}),
                ProtocolError::at(
                    "tools",
                    "tool kind \"codeExecution\" is not supported: only functionDeclarations are",
                ),
            ),
            (json!({}), ProtocolError::at("contents", "contents is required")),
            (json!({"contents": []}), ProtocolError::at("contents", "contents must not be empty")),
            (json!({"contents": {"parts": []}}), ProtocolError::at("contents", "contents must be an array")),
            (
                json!({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}),
                ProtocolError::at("contents", "contents[].role must be \"user\" or \"model\", not \"assistant\""),
            ),
            (
                user(json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}})),
                ProtocolError::at(
                    "contents",
                    "inlineData with mimeType \"application/pdf\" is not supported: only images are",
                ),
            ),
            (
                user(json!({"executableCode": {"language": "PYTHON", "code": "1"}})),
                ProtocolError::at(
                    "contents",
                    "unsupported part kind \"executableCode\": only text, inlineData and fileData images, functionCall and functionResponse parts are supported",
                ),
            ),
            (user(json!({"text": 5})), ProtocolError::at("contents", "a part's text must be a string")),
            (
                user(json!({"codeExecutionResult": {"outcome": "OUTCOME_OK"}, "thoughtSignature": "c2ln"})),
                ProtocolError::at(
                    "contents",
                    "unsupported part kind \"codeExecutionResult\": only text, inlineData and fileData images, functionCall and functionResponse parts are supported",
                ),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 2}}),
                ProtocolError::at("generationConfig", "generationConfig.candidateCount above 1 is not supported"),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"temperature": "hot"}}),
                ProtocolError::at("generationConfig", "generationConfig.temperature must be a number"),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}}),
                ProtocolError::at(
                    "generationConfig",
                    "generationConfig.responseMimeType \"text/x.enum\" is not supported: use text/plain or application/json",
                ),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}),
                ProtocolError::at(
                    "toolConfig",
                    "functionCallingConfig.mode must be AUTO, ANY, NONE or VALIDATED, not \"SOMETIMES\"",
                ),
            ),
            (
                json!({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [{"description": "x"}]}]}),
                ProtocolError::at("tools", "functionDeclarations[].name is required"),
            ),
            (json!([1]), ProtocolError::new("the request body must be a JSON object")),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(body.clone()), Err(expected), "{body}");
        }
    }

    #[test]
    fn signature_only_parts_and_legacy_roles_are_accepted() {
        let request = parse(json!({"contents": [
            {"parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"thoughtSignature": "c2ln"}, {"functionCall": {"name": "f"}}]},
            {"role": "function", "parts": [{"functionResponse": {"name": "f", "response": {"output": "ok"}}}]}
        ]}))
        .unwrap();
        assert_eq!(
            request.messages,
            vec![
                Message::text(Role::User, "hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolCall { id: "call_0".into(), name: "f".into(), arguments: "{}".into() }],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: "call_0".into(),
                        content: vec![text("ok")],
                        is_error: false
                    }],
                },
            ]
        );
    }

    #[test]
    fn maps_tool_config_modes() {
        let choice = |config: Value| {
            parse(json!({"contents": [{"parts": [{"text": "hi"}]}], "toolConfig": {"functionCallingConfig": config}}))
                .unwrap()
                .tool_choice
        };
        assert_eq!(choice(json!({"mode": "AUTO"})), Some(ToolChoice::Auto));
        assert_eq!(choice(json!({"mode": "VALIDATED"})), Some(ToolChoice::Auto));
        assert_eq!(choice(json!({"mode": "NONE"})), Some(ToolChoice::None));
        assert_eq!(choice(json!({"mode": "ANY"})), Some(ToolChoice::Required));
        assert_eq!(choice(json!({"mode": "ANY", "allowedFunctionNames": ["a"]})), Some(ToolChoice::Named("a".into())));
        assert_eq!(choice(json!({"mode": "ANY", "allowedFunctionNames": ["a", "b"]})), Some(ToolChoice::Required));
        assert_eq!(choice(json!({"mode": "MODE_UNSPECIFIED"})), None);
        assert_eq!(choice(json!({})), None);
    }

    #[test]
    fn maps_response_formats_and_thinking() {
        let config = |config: Value| {
            parse(json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config})).unwrap()
        };
        let schema = config(json!({
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": true}}, "propertyOrdering": ["n"]}
        }));
        assert_eq!(
            schema.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "response".into(),
                schema: json!({"type": "object", "properties": {"n": {"type": ["integer", "null"]}}}),
                strict: None,
            })
        );
        let json_schema = config(
            json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "array", "items": {"$ref": "#/$defs/a"}}}),
        );
        assert_eq!(
            json_schema.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "response".into(),
                schema: json!({"type": "array", "items": {"$ref": "#/$defs/a"}}),
                strict: None,
            })
        );
        assert_eq!(config(json!({"responseMimeType": "text/plain"})).response_format, None);

        let effort = |budget: i64| {
            config(json!({"thinkingConfig": {"thinkingBudget": budget, "includeThoughts": true}})).reasoning_effort
        };
        assert_eq!(effort(-1), None);
        assert_eq!(effort(0).as_deref(), Some("minimal"));
        assert_eq!(effort(1024).as_deref(), Some("low"));
        assert_eq!(effort(2048).as_deref(), Some("low"));
        assert_eq!(effort(2049).as_deref(), Some("medium"));
        assert_eq!(effort(8192).as_deref(), Some("medium"));
        assert_eq!(effort(8193).as_deref(), Some("high"));
        assert_eq!(
            config(json!({"thinkingConfig": {"thinkingLevel": "HIGH"}})).reasoning_effort.as_deref(),
            Some("high")
        );
    }

    #[test]
    fn encodes_a_request_for_a_gemini_upstream() {
        let request = ChatRequest {
            model: "gemini-3-pro-preview".into(),
            system: vec!["Be brief.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("What is in these?"),
                        Part::Image {
                            source: ImageSource::Base64 { media_type: "image/png".into(), data: PNG.into() },
                        },
                        Part::Image { source: ImageSource::Url { url: "https://example.com/cat.WEBP?size=2".into() } },
                        Part::Image { source: ImageSource::Url { url: "https://example.com/photo".into() } },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Reasoning { text: "Let me look.".into(), signature: Some("sig".into()) },
                        text("Checking."),
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "lookup".into(),
                            arguments: r#"{"q":"cat"}"#.into(),
                        },
                        Part::ToolCall { id: "toolu_2".into(), name: "count".into(), arguments: "not json".into() },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Part::ToolResult {
                            call_id: "toolu_1".into(),
                            content: vec![text(r#"{"kind":"cat"}"#)],
                            is_error: false,
                        },
                        Part::ToolResult { call_id: "toolu_2".into(), content: vec![text("too many")], is_error: true },
                    ],
                },
                Message::text(Role::User, "Thanks!"),
                Message {
                    role: Role::Assistant,
                    content: vec![Part::Reasoning { text: "hm".into(), signature: None }],
                },
            ],
            tools: vec![Tool {
                name: "lookup".into(),
                description: Some("Looks things up".into()),
                parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            }],
            tool_choice: Some(ToolChoice::Named("lookup".into())),
            parallel_tool_calls: Some(false),
            max_output_tokens: Some(256),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(20),
            stop: vec!["STOP".into()],
            seed: Some(42),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: json!({"type": "object"}),
                strict: Some(true),
            }),
            reasoning_effort: Some("medium".into()),
            stream: true,
            user: Some("user-1".into()),
        };
        assert_eq!(
            encode_request(&request),
            json!({
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "What is in these?"},
                        {"inlineData": {"mimeType": "image/png", "data": PNG}},
                        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.WEBP?size=2"}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}
                    ]},
                    {"role": "model", "parts": [
                        {"text": "Checking."},
                        {"functionCall": {"id": "toolu_1", "name": "lookup", "args": {"q": "cat"}},
                         "thoughtSignature": "skip_thought_signature_validator"},
                        {"functionCall": {"id": "toolu_2", "name": "count", "args": {}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"id": "toolu_1", "name": "lookup", "response": {"result": {"kind": "cat"}}}},
                        {"functionResponse": {"id": "toolu_2", "name": "count", "response": {"error": "too many"}}},
                        {"text": "Thanks!"}
                    ]}
                ],
                "tools": [{"functionDeclarations": [{
                    "name": "lookup",
                    "description": "Looks things up",
                    "parametersJsonSchema": {"type": "object", "properties": {"q": {"type": "string"}}}
                }]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
                "generationConfig": {
                    "maxOutputTokens": 256,
                    "temperature": 0.5,
                    "topP": 0.9,
                    "topK": 20,
                    "stopSequences": ["STOP"],
                    "seed": 42,
                    "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "object"},
                    "thinkingConfig": {"thinkingBudget": 8192}
                }
            })
        );
    }

    #[test]
    fn older_models_get_no_signature_and_minimal_requests_stay_minimal() {
        let request = ChatRequest {
            model: "models/gemini-2.5-flash".into(),
            messages: vec![
                Message::text(Role::User, "hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() }],
                },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        call_id: "c".into(),
                        content: vec![text("plain")],
                        is_error: false,
                    }],
                },
            ],
            tool_choice: Some(ToolChoice::Required),
            response_format: Some(ResponseFormat::JsonObject),
            ..ChatRequest::default()
        };
        assert_eq!(
            encode_request(&request),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}]},
                    {"role": "model", "parts": [{"functionCall": {"id": "c", "name": "f", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"id": "c", "name": "f", "response": {"result": "plain"}}}]}
                ],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
                "generationConfig": {"responseMimeType": "application/json"}
            })
        );
    }

    #[test]
    fn the_fixture_request_survives_a_round_trip() {
        let body: Value = serde_json::from_str(REQUEST).unwrap();
        let request = parse_request("gemini-2.5-flash", false, &body).unwrap();
        let encoded = encode_request(&request);
        assert_eq!(parse_request("gemini-2.5-flash", false, &encoded).unwrap(), request);
        assert_eq!(encoded["contents"][3]["parts"][0]["functionCall"]["id"], "call_0");
        assert_eq!(
            encoded["contents"][4]["parts"][0]["functionResponse"],
            json!({"id": "call_0", "name": "get_current_weather",
                   "response": {"result": {"description": "Sunny", "temperature": 22, "unit": "celsius"}}})
        );
    }

    #[test]
    fn parses_the_fixture_responses() {
        let response = parse_response(&serde_json::from_str(RESPONSE_TEXT).unwrap()).unwrap();
        assert_eq!(
            response,
            ChatResponse {
                id: "nJxuaOn3Hbi_kdUPs8W_yAk".into(),
                model: "gemini-2.5-flash".into(),
                created: None,
                content: vec![text("It's sunny in Boston right now, at 22 degrees Celsius.")],
                stop_reason: Some(StopReason::EndTurn),
                usage: Some(TokenUsage {
                    input_tokens: 361,
                    output_tokens: 109,
                    reasoning_tokens: 95,
                    ..TokenUsage::default()
                }),
            }
        );

        let response = parse_response(&serde_json::from_str(RESPONSE_TOOL).unwrap()).unwrap();
        assert_eq!(
            response,
            ChatResponse {
                id: "q51uaLT_MoSIkdUP4d2NgAc".into(),
                model: "gemini-2.5-flash".into(),
                created: None,
                content: vec![Part::ToolCall {
                    id: "call_q51uaLT_MoSIkdUP4d2NgAc_0".into(),
                    name: "get_current_weather".into(),
                    arguments: r#"{"location":"Boston, MA","unit":"celsius"}"#.into(),
                }],
                stop_reason: Some(StopReason::ToolUse),
                usage: Some(TokenUsage {
                    input_tokens: 2153,
                    cached_tokens: 2027,
                    output_tokens: 88,
                    reasoning_tokens: 64,
                    ..TokenUsage::default()
                }),
            }
        );
    }

    #[test]
    fn maps_finish_reasons_blocks_and_errors() {
        let finish = |reason: &str, parts: Value| {
            parse_response(
                &json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": reason}]}),
            )
            .unwrap()
            .stop_reason
        };
        assert_eq!(finish("MAX_TOKENS", json!([{"text": "a"}])), Some(StopReason::MaxTokens));
        assert_eq!(finish("SAFETY", json!([])), Some(StopReason::ContentFilter));
        assert_eq!(finish("RECITATION", json!([])), Some(StopReason::ContentFilter));
        assert_eq!(finish("PROHIBITED_CONTENT", json!([])), Some(StopReason::ContentFilter));
        assert_eq!(finish("MALFORMED_FUNCTION_CALL", json!([])), Some(StopReason::EndTurn));
        assert_eq!(finish("OTHER", json!([])), Some(StopReason::EndTurn));

        let thoughtful = parse_response(&json!({"candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "plan", "thought": true},
                {"text": "answer", "thoughtSignature": "abc"},
                {"functionCall": {"id": "own", "name": "f", "args": {"a": 1}}},
                {"functionCall": {"name": "g"}}
            ]},
            "finishReason": "STOP"
        }]}))
        .unwrap();
        assert_eq!(thoughtful.id, "gemini-response");
        assert_eq!(
            thoughtful.content,
            vec![
                Part::Reasoning { text: "plan".into(), signature: None },
                text("answer"),
                Part::ToolCall { id: "own".into(), name: "f".into(), arguments: r#"{"a":1}"#.into() },
                Part::ToolCall { id: "call_1".into(), name: "g".into(), arguments: "{}".into() },
            ]
        );
        assert_eq!(thoughtful.usage, None);

        let blocked = parse_response(&json!({
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r1"
        }))
        .unwrap();
        assert_eq!(
            blocked,
            ChatResponse {
                id: "r1".into(),
                model: "gemini-2.5-pro".into(),
                created: None,
                content: vec![],
                stop_reason: Some(StopReason::ContentFilter),
                usage: Some(TokenUsage { input_tokens: 9, ..TokenUsage::default() }),
            }
        );
        assert_eq!(
            parse_response(&json!({"modelVersion": "x"})),
            Err(DecodeError::Malformed("a Gemini response has no candidates"))
        );
        assert_eq!(
            parse_response(&json!({"candidates": {}})),
            Err(DecodeError::Malformed("Gemini candidates is not an array"))
        );
        assert_eq!(
            parse_response(
                &json!({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}})
            ),
            Err(DecodeError::Upstream {
                kind: Some("RESOURCE_EXHAUSTED".into()),
                message: "Resource exhausted".into()
            })
        );
    }

    #[test]
    fn encodes_a_whole_answer() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
            created: Some(1),
            content: vec![
                Part::Reasoning { text: "think".into(), signature: Some("anthropic-sig".into()) },
                text("Calling."),
                Part::ToolCall { id: "call_a".into(), name: "f".into(), arguments: r#"{"x":[1]}"#.into() },
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Some(TokenUsage {
                input_tokens: 100,
                cached_tokens: 40,
                output_tokens: 30,
                reasoning_tokens: 10,
                ..TokenUsage::default()
            }),
        };
        assert_eq!(
            encode_response(&response),
            json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [
                        {"text": "think", "thought": true},
                        {"text": "Calling."},
                        {"functionCall": {"id": "call_a", "name": "f", "args": {"x": [1]}}}
                    ]},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {
                    "promptTokenCount": 100,
                    "candidatesTokenCount": 20,
                    "totalTokenCount": 130,
                    "cachedContentTokenCount": 40,
                    "thoughtsTokenCount": 10
                },
                "modelVersion": "gpt-4o",
                "responseId": "chatcmpl-1"
            })
        );
        let filtered = ChatResponse {
            id: "r".into(),
            model: "m".into(),
            created: None,
            content: vec![],
            stop_reason: Some(StopReason::ContentFilter),
            usage: Some(TokenUsage { input_tokens: 5, output_tokens: 0, ..TokenUsage::default() }),
        };
        assert_eq!(
            encode_response(&filtered),
            json!({
                "candidates": [{"finishReason": "SAFETY", "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 0, "totalTokenCount": 5},
                "modelVersion": "m",
                "responseId": "r"
            })
        );
        // Usage survives a round trip exactly.
        let parsed = parse_response(&encode_response(&response)).unwrap();
        assert_eq!(parsed.usage, response.usage);
        assert_eq!(parsed.stop_reason, Some(StopReason::ToolUse));
    }

    #[test]
    fn decodes_the_fixture_streams() {
        let (events, complete) = decode_all(STREAM_TEXT);
        assert!(complete);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "nJxuaOn3Hbi_kdUPs8W_yAk".into(),
                    model: "gemini-2.5-flash".into(),
                    created: None
                },
                StreamEvent::TextDelta { text: "It's sunny in Boston".into() },
                StreamEvent::Usage {
                    usage: TokenUsage {
                        input_tokens: 361,
                        output_tokens: 99,
                        reasoning_tokens: 95,
                        ..TokenUsage::default()
                    }
                },
                StreamEvent::TextDelta { text: " right now, at 22 degrees Celsius.".into() },
                StreamEvent::Finish { stop_reason: StopReason::EndTurn },
                StreamEvent::Usage {
                    usage: TokenUsage {
                        input_tokens: 361,
                        output_tokens: 109,
                        reasoning_tokens: 95,
                        ..TokenUsage::default()
                    }
                },
            ]
        );

        let (events, complete) = decode_all(STREAM_TOOL);
        assert!(complete);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "q51uaLT_MoSIkdUP4d2NgAc".into(),
                    model: "gemini-2.5-flash".into(),
                    created: None
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_q51uaLT_MoSIkdUP4d2NgAc_0".into(),
                    name: "get_current_weather".into(),
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: r#"{"location":"Boston, MA","unit":"celsius"}"#.into()
                },
                StreamEvent::Finish { stop_reason: StopReason::ToolUse },
                StreamEvent::Usage {
                    usage: TokenUsage {
                        input_tokens: 2153,
                        cached_tokens: 2027,
                        output_tokens: 88,
                        reasoning_tokens: 64,
                        ..TokenUsage::default()
                    }
                },
            ]
        );
    }

    #[test]
    fn the_decoder_handles_thoughts_repeats_blocks_and_errors() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let usage = json!({"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4});
        let chunk = |parts: Value, finish: Option<&str>| {
            let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
            if let Some(finish) = finish {
                candidate["finishReason"] = json!(finish);
            }
            SseEvent::data(json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "m"}).to_string())
        };
        decoder.decode(&chunk(json!([{"text": "hmm", "thought": true}]), None), &mut out).unwrap();
        decoder.decode(&chunk(json!([{"text": ""}]), None), &mut out).unwrap();
        assert!(!decoder.is_complete());
        decoder.decode(&chunk(json!([{"text": "cut"}]), Some("MAX_TOKENS")), &mut out).unwrap();
        assert!(decoder.is_complete());
        assert_eq!(
            out,
            vec![
                StreamEvent::Start { id: "gemini-response".into(), model: "m".into(), created: None },
                StreamEvent::ReasoningDelta { text: "hmm".into() },
                StreamEvent::Usage { usage: TokenUsage { input_tokens: 3, output_tokens: 1, ..TokenUsage::default() } },
                StreamEvent::TextDelta { text: "cut".into() },
                StreamEvent::Finish { stop_reason: StopReason::MaxTokens },
            ]
        );

        let mut blocked = Decoder::new();
        let mut out = Vec::new();
        blocked
            .decode(
                &SseEvent::data(r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "b"}"#),
                &mut out,
            )
            .unwrap();
        assert!(blocked.is_complete());
        assert_eq!(
            out,
            vec![
                StreamEvent::Start { id: "b".into(), model: String::new(), created: None },
                StreamEvent::Finish { stop_reason: StopReason::ContentFilter },
            ]
        );

        let mut failing = Decoder::new();
        assert_eq!(
            failing.decode(
                &SseEvent::data(
                    r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#
                ),
                &mut Vec::new()
            ),
            Err(DecodeError::Upstream { kind: Some("UNAVAILABLE".into()), message: "The model is overloaded.".into() })
        );
        assert_eq!(
            failing.decode(&SseEvent::data("[DONE]"), &mut Vec::new()),
            Err(DecodeError::Malformed("a Gemini chunk is not JSON"))
        );
        assert!(!failing.is_complete());
    }

    #[test]
    fn encodes_a_text_stream() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        let usage = TokenUsage { input_tokens: 10, output_tokens: 7, reasoning_tokens: 2, ..TokenUsage::default() };
        for event in [
            StreamEvent::Start { id: "chatcmpl-9".into(), model: "gpt-4o".into(), created: Some(5) },
            StreamEvent::ReasoningDelta { text: "ponder".into() },
            StreamEvent::ReasoningSignature { signature: "s".into() },
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: String::new() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::Finish { stop_reason: StopReason::StopSequence },
            StreamEvent::Usage { usage },
        ] {
            encoder.encode(event, &mut out);
        }
        encoder.finish(&mut out);
        encoder.finish(&mut out);
        let chunk = |parts: Value| {
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                   "modelVersion": "gpt-4o", "responseId": "chatcmpl-9"})
        };
        assert_eq!(
            data_json(&out),
            vec![
                chunk(json!([{"text": "ponder", "thought": true}])),
                chunk(json!([{"text": "Hel"}])),
                chunk(json!([{"text": "lo"}])),
                json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17, "thoughtsTokenCount": 2},
                    "modelVersion": "gpt-4o",
                    "responseId": "chatcmpl-9"
                }),
            ]
        );
        assert_eq!(
            out[1].encode(),
            bytes::Bytes::from(
                "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\
                 \"modelVersion\":\"gpt-4o\",\"responseId\":\"chatcmpl-9\"}\n\n"
            )
        );
    }

    #[test]
    fn encodes_tool_calls_whole() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        for event in [
            StreamEvent::Start { id: "r".into(), model: "m".into(), created: None },
            StreamEvent::ToolCallStart { index: 0, id: "call_a".into(), name: "f".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: r#"{"ci"#.into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: r#"ty":"Paris"}"#.into() },
        ] {
            encoder.encode(event, &mut out);
        }
        assert!(out.is_empty(), "a call is held until complete");
        encoder.encode(StreamEvent::ToolCallStart { index: 1, id: "call_b".into(), name: "g".into() }, &mut out);
        assert_eq!(out.len(), 1, "the next call completes the first");
        encoder.encode(StreamEvent::ToolCallDelta { index: 1, arguments: "not an object".into() }, &mut out);
        encoder.encode(StreamEvent::Finish { stop_reason: StopReason::ToolUse }, &mut out);
        encoder.encode(StreamEvent::ToolCallStart { index: 2, id: "call_c".into(), name: "h".into() }, &mut out);
        encoder.encode(StreamEvent::ToolCallDelta { index: 2, arguments: "{}".into() }, &mut out);
        encoder.finish(&mut out);
        let call = |call: Value| {
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": call}]}, "index": 0}],
                   "modelVersion": "m", "responseId": "r"})
        };
        assert_eq!(
            data_json(&out),
            vec![
                call(json!({"id": "call_a", "name": "f", "args": {"city": "Paris"}})),
                call(json!({"id": "call_b", "name": "g", "args": {}})),
                call(json!({"id": "call_c", "name": "h", "args": {}})),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                       "modelVersion": "m", "responseId": "r"}),
            ]
        );
    }

    #[test]
    fn error_ends_the_stream_with_googles_error_shape() {
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.encode(StreamEvent::Start { id: "r".into(), model: "m".into(), created: None }, &mut out);
        encoder.encode(StreamEvent::ToolCallStart { index: 0, id: "c".into(), name: "f".into() }, &mut out);
        let error = ErrorInfo {
            status: 503,
            code: "upstream_unavailable".into(),
            openai_type: "server_error".into(),
            message: "The upstream is unavailable.".into(),
            param: None,
        };
        encoder.error(&error, &mut out);
        encoder.encode(StreamEvent::TextDelta { text: "late".into() }, &mut out);
        encoder.finish(&mut out);
        assert_eq!(
            data_json(&out),
            vec![json!({"error": {
                "code": 503,
                "message": "The upstream is unavailable.",
                "status": "UNAVAILABLE",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "UPSTREAM_UNAVAILABLE", "domain": "veil"}]
            }})]
        );
    }

    #[test]
    fn encoded_streams_decode_to_the_same_events() {
        let usage = TokenUsage {
            input_tokens: 50,
            cached_tokens: 20,
            output_tokens: 9,
            reasoning_tokens: 4,
            ..TokenUsage::default()
        };
        let events = vec![
            StreamEvent::Start { id: "resp-1".into(), model: "gemini-2.5-pro".into(), created: None },
            StreamEvent::ReasoningDelta { text: "a".into() },
            StreamEvent::TextDelta { text: "b".into() },
            StreamEvent::ToolCallStart { index: 0, id: "call_x".into(), name: "f".into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: r#"{"k":"#.into() },
            StreamEvent::ToolCallDelta { index: 0, arguments: "true}".into() },
            StreamEvent::Finish { stop_reason: StopReason::ToolUse },
            StreamEvent::Usage { usage },
        ];
        let mut encoder = Encoder::new();
        let mut wire = Vec::new();
        for event in events.clone() {
            encoder.encode(event, &mut wire);
        }
        encoder.finish(&mut wire);
        let text: String = wire.iter().map(|event| String::from_utf8(event.encode().to_vec()).unwrap()).collect();
        let (decoded, complete) = decode_all(&text);
        assert!(complete);
        assert_eq!(
            decoded,
            vec![
                events[0].clone(),
                events[1].clone(),
                events[2].clone(),
                events[3].clone(),
                StreamEvent::ToolCallDelta { index: 0, arguments: r#"{"k":true}"#.into() },
                events[6].clone(),
                events[7].clone(),
            ]
        );
    }

    #[test]
    fn guesses_image_types_from_extensions() {
        assert_eq!(guess_image_type("https://x/a.png"), "image/png");
        assert_eq!(guess_image_type("https://x/a.GIF#frag"), "image/gif");
        assert_eq!(guess_image_type("https://x/a.heic"), "image/heic");
        assert_eq!(guess_image_type("https://x/a.jpeg"), "image/jpeg");
        assert_eq!(guess_image_type("https://x.example/path"), "image/jpeg");
    }
}

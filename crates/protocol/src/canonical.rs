//! The canonical chat model: what a conversation, an answer and a stream of answer pieces
//! are, independent of any vendor. Every wire format converts to and from these types, so
//! N client formats and M upstream types need N + M codecs instead of N × M translators.
//!
//! The model keeps what every format can express (text, images, tools, tool calls and
//! results, reasoning, stop reasons, usage) and what Veil acts on. Vendor-only options
//! that have no counterpart elsewhere are dropped in translation; when the client format
//! and the upstream type are the same, the relay forwards the body untouched instead.

use serde::Serialize;
pub use veil_domain::TokenUsage;

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChatRequest {
    /// The model the client asked for (a public name; the relay maps it per channel).
    pub model: String,
    /// System instructions in order: OpenAI `system`/`developer` messages, Anthropic
    /// `system`, Gemini `systemInstruction`, Responses `instructions`.
    pub system: Vec<String>,
    /// The conversation, oldest first. Tool results are parts of `User` messages (as in
    /// Anthropic's and Gemini's formats); OpenAI's `tool` messages map onto that.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn (`None`: the upstream default).
    pub parallel_tool_calls: Option<bool>,
    /// Upper bound on generated tokens (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`, `maxOutputTokens`, `inferenceConfig.maxTokens`).
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    /// Reasoning effort as OpenAI names it (`low`, `medium`, `high`, …), if asked.
    pub reasoning_effort: Option<String>,
    pub stream: bool,
    /// The client's end-user identifier (OpenAI `user`, Anthropic `metadata.user_id`).
    /// The identity firewall removes or replaces it before a call leaves.
    pub user: Option<String>,
}

impl ChatRequest {
    /// The name of the tool a tool call with `call_id` invoked, looked up in the
    /// conversation; formats such as Gemini's need it for tool results.
    pub fn tool_name_for(&self, call_id: &str) -> Option<&str> {
        self.messages.iter().flat_map(|m| &m.content).find_map(|part| match part {
            Part::ToolCall { id, name, .. } if id == call_id => Some(name.as_str()),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self { role, content: vec![Part::Text { text: text.into() }] }
    }
}

/// One piece of a message or an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    /// The model asked to call a tool. `arguments` is the JSON text of the arguments
    /// object, kept as text so that streamed fragments concatenate to it exactly.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a tool call, sent back by the client.
    ToolResult {
        call_id: String,
        /// Text and image parts of the result.
        content: Vec<Part>,
        is_error: bool,
    },
    /// The model's visible reasoning (Anthropic `thinking`, DeepSeek `reasoning_content`,
    /// Gemini `thought` parts). `signature` is Anthropic's integrity token, when present.
    Reasoning {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// An `http(s)` URL the upstream fetches itself.
    Url { url: String },
    /// Inline bytes, base64-encoded, with their media type (e.g. `image/png`).
    Base64 { media_type: String, data: String },
}

impl ImageSource {
    /// Parses a `data:` URL (`data:image/png;base64,...`) into inline bytes; any other
    /// URL is kept as a URL.
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((media_type, data)) = rest.split_once(";base64,")
        {
            return Self::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
        }
        Self::Url { url: url.to_owned() }
    }

    /// The image as a URL, inline bytes becoming a `data:` URL.
    pub fn to_url(&self) -> String {
        match self {
            Self::Url { url } => url.clone(),
            Self::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// A function the model may call. `parameters` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool may be called.
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// This tool must be called.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching `schema`.
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        strict: Option<bool>,
    },
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished its turn.
    EndTurn,
    /// `max_output_tokens` was reached.
    MaxTokens,
    /// One of `stop` was generated.
    StopSequence,
    /// The model is waiting for tool results.
    ToolUse,
    /// The upstream withheld or cut the output (safety, recitation, refusal).
    ContentFilter,
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Unix seconds, when the upstream said; encoders fill in the current time otherwise.
    pub created: Option<i64>,
    /// Text, tool calls and reasoning, in the order generated.
    pub content: Vec<Part>,
    pub stop_reason: Option<StopReason>,
    /// `None` when the upstream reported no usage.
    pub usage: Option<TokenUsage>,
}

/// One step of a streamed answer. Decoders turn a vendor's events into these; encoders
/// turn them into a vendor's events. Pieces arrive in generation order; a new kind of
/// piece (text after a tool call, a second tool call) opens a new content block.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The answer begins. Always the first event.
    Start { id: String, model: String, created: Option<i64> },
    /// Text appended to the answer.
    TextDelta { text: String },
    /// Reasoning text appended to the answer.
    ReasoningDelta { text: String },
    /// A reasoning block's signature (Anthropic), which closes that block.
    ReasoningSignature { signature: String },
    /// A tool call begins. `index` counts tool calls in this answer from 0.
    ToolCallStart { index: u32, id: String, name: String },
    /// A fragment of the JSON text of tool call `index`'s arguments.
    ToolCallDelta { index: u32, arguments: String },
    /// Generation stopped. Usage may still follow.
    Finish { stop_reason: StopReason },
    /// Token usage so far; a later `Usage` replaces an earlier one.
    Usage { usage: TokenUsage },
}

/// An error to show a client, in terms every format's error shape can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    pub status: u16,
    /// Veil's stable error code (e.g. `model_not_found`).
    pub code: String,
    /// OpenAI's error `type` for this code (e.g. `invalid_request_error`).
    pub openai_type: String,
    pub message: String,
    pub param: Option<String>,
}

//! Client and vendor wire formats, and translation between them through one canonical
//! model ([`canonical`]). No IO: everything here is a pure function of its input, so it
//! is tested with golden files and property tests and can be fuzzed on its own.
//!
//! Each chat format has a module with the same shape:
//! - `parse_request` / `encode_request`: a request body to and from [`ChatRequest`];
//! - `parse_response` / `encode_response`: a whole answer to and from [`ChatResponse`];
//! - `Decoder` ([`StreamDecoder`]) and `Encoder` ([`StreamEncoder`]): a stream's events
//!   to and from [`StreamEvent`]s, one event at a time, never buffering the answer.
//!
//! The relay's working form is OpenAI Chat Completions (what the firewall, screening and
//! metering read), so a call from client format X to upstream type Y goes
//! X → canonical → OpenAI Chat → canonical → Y, and back the same way; [`translate`]
//! holds those compositions so the server and the golden tests run the same code.

pub mod anthropic;
pub mod bedrock;
pub mod canonical;
pub mod errors;
pub mod gemini;
pub mod openai_chat;
pub mod responses;
pub mod sse;
pub mod translate;

pub use canonical::{
    ChatRequest, ChatResponse, ErrorInfo, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    Tool, ToolChoice,
};
pub use sse::{SseEvent, SseParser};

/// The wire format a client speaks, chosen by the route it called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientFormat {
    /// `/v1/chat/completions` (and the other OpenAI routes).
    OpenAiChat,
    /// `/v1/responses`.
    OpenAiResponses,
    /// `/v1/messages`.
    Anthropic,
    /// `/v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
    Gemini,
}

/// A request body that cannot be translated: the client's mistake, reported to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub message: String,
    /// The offending field, when there is one (OpenAI's `param`).
    pub param: Option<&'static str>,
}

impl ProtocolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), param: None }
    }

    pub fn at(param: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), param: Some(param) }
    }
}

/// An upstream answer that cannot be decoded, or an error the upstream reported inside a
/// stream. Messages from the upstream may echo the prompt: for the client only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed upstream answer: {0}")]
    Malformed(&'static str),
    /// The upstream sent an error event mid-stream (e.g. Anthropic's `overloaded_error`).
    #[error("the upstream reported an error mid-stream")]
    Upstream { kind: Option<String>, message: String },
}

/// Turns one vendor's stream events into canonical ones.
pub trait StreamDecoder: Send {
    /// Decodes one event, appending what it means to `out` (often nothing: pings,
    /// block boundaries the canonical model does not need).
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError>;

    /// Whether the vendor's normal end of stream has been seen (OpenAI `[DONE]`,
    /// Anthropic `message_stop`, Responses `response.completed`, Gemini's last chunk
    /// with a `finishReason`, Bedrock `messageStop` plus `metadata`). A body that ends
    /// before this was cut off.
    fn is_complete(&self) -> bool;
}

/// Turns canonical stream events into one vendor's stream events.
pub trait StreamEncoder: Send {
    /// Encodes one event, appending the wire events it becomes to `out`.
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<SseEvent>);

    /// The stream completed normally: close what is open and write the format's end
    /// (OpenAI `[DONE]`, Anthropic `message_delta` + `message_stop`, …).
    fn finish(&mut self, out: &mut Vec<SseEvent>);

    /// The stream failed after it started: write the format's error event, which ends it.
    fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>);
}

/// Seconds since the Unix epoch, for answers whose upstream gave no time.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

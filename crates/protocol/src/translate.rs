//! Compositions of the codecs the relay uses, so that the server and the golden tests
//! run exactly the same translation.
//!
//! The relay's working form is an OpenAI Chat Completions body. A client request in
//! another format becomes one ([`client_request`]); a provider for another upstream type
//! turns it into its vendor's body ([`upstream_request`]) and the vendor's answer back
//! into OpenAI's ([`upstream_response`], [`StreamTranslator::from_upstream`]); the relay
//! hands the client its own format again ([`client_response`],
//! [`StreamTranslator::to_client`]).

use crate::canonical::{ChatRequest, ErrorInfo, StreamEvent};
use crate::sse::SseEvent;
use crate::{ClientFormat, DecodeError, ProtocolError, StreamDecoder, StreamEncoder};
use crate::{anthropic, bedrock, gemini, openai_chat, responses};
use serde_json::{Map, Value};

/// The wire format of an upstream type's chat API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamFormat {
    /// OpenAI Chat Completions (OpenAI, Azure, and every OpenAI-compatible server).
    OpenAiChat,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
    /// Amazon Bedrock Converse.
    Bedrock,
}

/// Where the model and the stream flag come from when the body does not carry them
/// (Gemini puts both in the URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteHints<'a> {
    pub model: Option<&'a str>,
    pub stream: bool,
}

/// Parses a client's request in `format` into canonical form.
pub fn parse_client_request(
    format: ClientFormat,
    body: &Value,
    hints: RouteHints<'_>,
) -> Result<ChatRequest, ProtocolError> {
    match format {
        ClientFormat::OpenAiChat => openai_chat::parse_request(body),
        ClientFormat::OpenAiResponses => responses::parse_request(body),
        ClientFormat::Anthropic => anthropic::parse_request(body),
        ClientFormat::Gemini => gemini::parse_request(hints.model.unwrap_or_default(), hints.stream, body),
    }
}

/// A client's request in `format` as the relay's working OpenAI Chat body.
pub fn client_request(
    format: ClientFormat,
    body: &Value,
    hints: RouteHints<'_>,
) -> Result<Map<String, Value>, ProtocolError> {
    Ok(openai_chat::encode_request(&parse_client_request(format, body, hints)?))
}

/// The relay's OpenAI Chat body as the request body of an upstream of type `format`,
/// for `model`, the name the channel's upstream knows (codecs may adapt to it, e.g.
/// Gemini 3's thought signatures).
pub fn upstream_request(
    format: UpstreamFormat,
    body: &Map<String, Value>,
    model: &str,
) -> Result<Value, ProtocolError> {
    let mut request = openai_chat::parse_request_map(body)?;
    model.clone_into(&mut request.model);
    Ok(match format {
        UpstreamFormat::OpenAiChat => Value::Object(openai_chat::encode_request(&request)),
        UpstreamFormat::Anthropic => anthropic::encode_request(&request),
        UpstreamFormat::Gemini => gemini::encode_request(&request),
        UpstreamFormat::Bedrock => bedrock::encode_request(&request),
    })
}

/// An upstream's whole answer as an OpenAI Chat completion body. `model` is the model
/// the call was sent to, for answers that do not name theirs (Bedrock's).
pub fn upstream_response(format: UpstreamFormat, body: &Value, model: &str) -> Result<Value, DecodeError> {
    let mut response = match format {
        UpstreamFormat::OpenAiChat => openai_chat::parse_response(body)?,
        UpstreamFormat::Anthropic => anthropic::parse_response(body)?,
        UpstreamFormat::Gemini => gemini::parse_response(body)?,
        UpstreamFormat::Bedrock => bedrock::parse_response(body)?,
    };
    if response.model.is_empty() {
        model.clone_into(&mut response.model);
    }
    Ok(openai_chat::encode_response(&response))
}

/// An OpenAI Chat completion body as the answer a client of `format` expects.
pub fn client_response(format: ClientFormat, body: &Value) -> Result<Value, DecodeError> {
    let response = openai_chat::parse_response(body)?;
    Ok(match format {
        ClientFormat::OpenAiChat => openai_chat::encode_response(&response),
        ClientFormat::OpenAiResponses => responses::encode_response(&response),
        ClientFormat::Anthropic => anthropic::encode_response(&response),
        ClientFormat::Gemini => gemini::encode_response(&response),
    })
}

/// Re-encodes a stream event by event: one vendor's events in, another's out.
pub struct StreamTranslator {
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    /// Reused between events to save an allocation each.
    scratch: Vec<StreamEvent>,
}

impl StreamTranslator {
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self { decoder, encoder, scratch: Vec::new() }
    }

    /// From an upstream of type `format` to OpenAI Chat chunks (usage always included).
    /// `model` is the model the call was sent to, for streams that do not name theirs.
    pub fn from_upstream(format: UpstreamFormat, model: &str) -> Self {
        let decoder: Box<dyn StreamDecoder> = match format {
            UpstreamFormat::OpenAiChat => Box::new(openai_chat::Decoder::new()),
            UpstreamFormat::Anthropic => Box::new(anthropic::Decoder::new()),
            UpstreamFormat::Gemini => Box::new(gemini::Decoder::new()),
            UpstreamFormat::Bedrock => Box::new(bedrock::Decoder::for_model(model)),
        };
        Self::new(decoder, Box::new(openai_chat::Encoder::new(true)))
    }

    /// From OpenAI Chat chunks to the stream a client of `format` expects.
    pub fn to_client(format: ClientFormat) -> Self {
        let encoder: Box<dyn StreamEncoder> = match format {
            ClientFormat::OpenAiChat => Box::new(openai_chat::Encoder::new(true)),
            ClientFormat::OpenAiResponses => Box::new(responses::Encoder::new()),
            ClientFormat::Anthropic => Box::new(anthropic::Encoder::new()),
            ClientFormat::Gemini => Box::new(gemini::Encoder::new()),
        };
        Self::new(Box::new(openai_chat::Decoder::new()), encoder)
    }

    /// Translates one event, appending the result to `out`.
    pub fn push(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), DecodeError> {
        self.scratch.clear();
        self.decoder.decode(event, &mut self.scratch)?;
        for event in self.scratch.drain(..) {
            self.encoder.encode(event, out);
        }
        Ok(())
    }

    /// Whether the source's normal end has been seen.
    pub fn is_complete(&self) -> bool {
        self.decoder.is_complete()
    }

    /// The source ended normally: writes the target's end.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.encoder.finish(out);
    }

    /// The source failed: writes the target's error event.
    pub fn error(&mut self, error: &ErrorInfo, out: &mut Vec<SseEvent>) {
        self.encoder.error(error, out);
    }
}

//! The client request targets: a body in one client format, through the translation the
//! relay runs on it ([`translate::client_request`]) and on to every upstream type
//! ([`translate::upstream_request`]).
//!
//! Checks that whatever the translation accepts, the relay accepts too: its working OpenAI
//! Chat body parses again, re-encodes to itself (the pivot codec is lossless), and becomes a
//! body for every upstream type. An OpenAI Chat client's body is also handed to the upstream
//! translation as it is, which is what the relay does with it.

use serde_json::{Map, Value};
use veil_protocol::ClientFormat;
use veil_protocol::openai_chat;
use veil_protocol::translate::{self, RouteHints, UpstreamFormat};

/// Every upstream wire format.
pub(crate) const UPSTREAM_FORMATS: [UpstreamFormat; 4] =
    [UpstreamFormat::OpenAiChat, UpstreamFormat::Anthropic, UpstreamFormat::Gemini, UpstreamFormat::Bedrock];

/// The name a channel's upstream knows the model by, as providers pass it.
pub(crate) const UPSTREAM_MODEL: &str = "fuzz-upstream-model";

pub fn openai_chat_request(data: &[u8]) {
    let Some(body) = json_object(data) else { return };
    // The relay forwards an OpenAI client's body as it is; non-OpenAI upstreams translate it.
    for format in UPSTREAM_FORMATS {
        let _ = translate::upstream_request(format, &body, UPSTREAM_MODEL);
    }
    check_client_request(ClientFormat::OpenAiChat, body, RouteHints::default());
}

pub fn responses_request(data: &[u8]) {
    let Some(body) = json_object(data) else { return };
    check_client_request(ClientFormat::OpenAiResponses, body, RouteHints::default());
}

pub fn anthropic_request(data: &[u8]) {
    let Some(body) = json_object(data) else { return };
    check_client_request(ClientFormat::Anthropic, body, RouteHints::default());
}

pub fn gemini_request(data: &[u8]) {
    let Some(body) = json_object(data) else { return };
    // The model and the stream flag come from the URL, which always names a model.
    let hints = RouteHints { model: Some("models/gemini-2.5-flash"), stream: data.len() % 2 == 1 };
    check_client_request(ClientFormat::Gemini, body, hints);
}

/// The body as the handlers receive it: a JSON object (anything else is refused earlier).
fn json_object(data: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(data) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn check_client_request(format: ClientFormat, body: Map<String, Value>, hints: RouteHints<'_>) {
    let Ok(working) = translate::client_request(format, &Value::Object(body), hints) else { return };
    let reparsed = openai_chat::parse_request_map(&working);
    assert!(reparsed.is_ok(), "{format:?}: the relay's working body does not parse again: {reparsed:?}");
    if let Ok(request) = reparsed {
        let again = openai_chat::encode_request(&request);
        assert_eq!(again, working, "{format:?}: re-encoding the working body changed it");
    }
    for upstream in UPSTREAM_FORMATS {
        let translated = translate::upstream_request(upstream, &working, UPSTREAM_MODEL);
        assert!(translated.is_ok(), "{format:?} → {upstream:?}: the working body was refused: {translated:?}");
    }
}

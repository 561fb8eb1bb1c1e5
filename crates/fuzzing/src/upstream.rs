//! `upstream_responses`: what an upstream may answer, through the relay's translations.
//!
//! The input is read both ways an answer arrives. As a whole JSON body it goes through
//! [`translate::upstream_response`] for every upstream type and, when accepted, through
//! [`translate::client_response`] for every client format, which must accept the relay's own
//! output; the raw body also goes straight to `client_response` (an OpenAI upstream's answer
//! is handed on untranslated). As an SSE stream its events go through
//! [`StreamTranslator::from_upstream`] for every upstream type, and the OpenAI chunks that
//! come out through [`StreamTranslator::to_client`] for every client format, which must
//! accept every one of them; the raw events also go straight to `to_client`.

use crate::requests::{UPSTREAM_FORMATS, UPSTREAM_MODEL};
use serde_json::Value;
use veil_protocol::sse::SseParser;
use veil_protocol::translate::{self, StreamTranslator, UpstreamFormat};
use veil_protocol::{ClientFormat, ErrorInfo, SseEvent};

/// Every client wire format.
const CLIENT_FORMATS: [ClientFormat; 4] =
    [ClientFormat::OpenAiChat, ClientFormat::OpenAiResponses, ClientFormat::Anthropic, ClientFormat::Gemini];

pub fn upstream_responses(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        check_whole_answer(&body);
    }
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    // A parse error ends the stream; the events before it were already passed on.
    let _ = parser.push_into(data, &mut events);
    for format in UPSTREAM_FORMATS {
        check_stream(format, &events);
    }
    for client in CLIENT_FORMATS {
        let mut translator = StreamTranslator::to_client(client);
        let mut out = Vec::new();
        for event in &events {
            // The relay skips a chunk it cannot read and goes on.
            let _ = translator.push(event, &mut out);
        }
        translator.finish(&mut out);
    }
}

fn check_whole_answer(body: &Value) {
    for client in CLIENT_FORMATS {
        let _ = translate::client_response(client, body);
    }
    for format in UPSTREAM_FORMATS {
        let Ok(openai) = translate::upstream_response(format, body, UPSTREAM_MODEL) else { continue };
        for client in CLIENT_FORMATS {
            let answer = translate::client_response(client, &openai);
            assert!(answer.is_ok(), "{format:?} → {client:?}: the relay refused its own answer: {answer:?}");
        }
    }
}

/// Translates `events` from an upstream of type `format` the way the provider does (stopping
/// at the vendor's end or at the first error), then hands the OpenAI chunks to each client
/// format's translator the way the relay does.
pub(crate) fn check_stream(format: UpstreamFormat, events: &[SseEvent]) {
    let mut translator = StreamTranslator::from_upstream(format, UPSTREAM_MODEL);
    let mut chunks = Vec::new();
    let mut completed = false;
    for event in events {
        if translator.push(event, &mut chunks).is_err() {
            break;
        }
        if translator.is_complete() {
            translator.finish(&mut chunks);
            completed = true;
            break;
        }
    }
    for client in CLIENT_FORMATS {
        let mut to_client = StreamTranslator::to_client(client);
        let mut out = Vec::new();
        for chunk in &chunks {
            let pushed = to_client.push(chunk, &mut out);
            assert!(pushed.is_ok(), "{format:?} → {client:?}: the relay refused its own chunk: {pushed:?}");
        }
        if completed {
            assert!(to_client.is_complete(), "{format:?} → {client:?}: a completed stream did not complete");
            to_client.finish(&mut out);
        } else {
            to_client.error(&stream_failure(), &mut out);
        }
    }
}

/// What the relay tells a client whose upstream stream failed.
fn stream_failure() -> ErrorInfo {
    ErrorInfo {
        status: 502,
        code: "upstream_error".to_owned(),
        openai_type: "api_error".to_owned(),
        message: "the upstream stream failed".to_owned(),
        param: None,
    }
}

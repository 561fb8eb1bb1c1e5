//! The client formats other than OpenAI Chat: Anthropic Messages, Gemini and OpenAI
//! Responses. Each handler translates the request into the relay's working form
//! (`veil-protocol`), hands it to the same relay as every other call, and lets the relay
//! answer in the client's format; each format's routes re-render errors in that
//! format's shape ([`shape_errors`]), malformed JSON and authentication included.

pub mod anthropic;
pub mod gemini;
pub mod responses;

use crate::error::{ApiError, reshape};
use crate::openai::stream::Framing;
use crate::relay::{self, Inbound};
use crate::request_meta::RequestMeta;
use crate::state::{AppState, Principal};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::sync::Arc;
use veil_protocol::translate::{self, RouteHints};
use veil_protocol::{ClientFormat, ProtocolError};

/// Layers for each format's routes: errors rendered in its shape.
pub async fn anthropic_errors(response: Response) -> Response {
    reshape(ClientFormat::Anthropic, response)
}

pub async fn gemini_errors(response: Response) -> Response {
    reshape(ClientFormat::Gemini, response)
}

/// A request the translation refused: the client's mistake, in its format's shape.
pub fn refused(error: ProtocolError) -> ApiError {
    let api = ApiError::invalid_request(error.message);
    match error.param {
        Some(param) => api.with_param(param),
        None => api,
    }
}

/// How a chat route's client speaks.
pub struct ChatRoute<'a> {
    pub format: ClientFormat,
    /// Recorded as the call's path.
    pub route: &'static str,
    /// What the URL says that the body does not (Gemini's model and stream flag).
    pub hints: RouteHints<'a>,
    pub framing: Framing,
}

impl ChatRoute<'static> {
    /// A route whose body says everything, answered as server-sent events when streamed.
    pub fn plain(format: ClientFormat, route: &'static str) -> Self {
        Self { format, route, hints: RouteHints::default(), framing: Framing::Sse }
    }
}

/// Translates a chat request made on `route` and relays it.
pub async fn relay_chat(
    state: &Arc<AppState>,
    principal: Arc<Principal>,
    meta: RequestMeta,
    route: ChatRoute<'_>,
    body: Map<String, Value>,
) -> Response {
    let ChatRoute { format, route, hints, framing } = route;
    let body = match translate::client_request(format, &Value::Object(body), hints) {
        Ok(body) => body,
        Err(error) => return refused(error).into_response(),
    };
    let inbound = Inbound { endpoint: veil_providers::Endpoint::ChatCompletions, format, route, framing, body };
    relay::relay(state, principal, meta, inbound).await
}

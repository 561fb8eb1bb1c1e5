//! `POST /v1/messages` and `POST /v1/messages/count_tokens`, Anthropic's Messages API.
//! The key comes as `x-api-key` (or a bearer token); `anthropic-version` is accepted
//! whatever its value, since Veil answers in the one version it translates to.

use crate::formats::{ChatRoute, refused, relay_chat};
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use veil_protocol::ClientFormat;
use veil_protocol::translate::{self, RouteHints};

pub async fn messages(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    relay_chat(&state, principal, meta, ChatRoute::plain(ClientFormat::Anthropic, "/v1/messages"), body).await
}

/// Counts the prompt locally. No tokenizer for Claude is public, so this is a count under
/// OpenAI's o200k vocabulary, not Anthropic's; the call is not relayed.
pub async fn count_tokens(
    State(_state): State<Arc<AppState>>,
    Authenticated(_principal): Authenticated,
    OpenAiJson(mut body): OpenAiJson,
) -> Response {
    // count_tokens takes no `max_tokens`; the Messages parser requires one.
    body.entry("max_tokens").or_insert(Value::from(1));
    match translate::client_request(ClientFormat::Anthropic, &Value::Object(body), RouteHints::default()) {
        Ok(request) => {
            Json(json!({ "input_tokens": crate::openai::usage::vocabulary_count(request).await })).into_response()
        }
        Err(error) => refused(error).into_response(),
    }
}

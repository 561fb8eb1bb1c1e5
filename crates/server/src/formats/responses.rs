//! `POST /v1/responses`, OpenAI's Responses API, served statelessly: Veil keeps no
//! conversation, so `previous_response_id` is refused and every answer says
//! `"store": false`.

use crate::formats::{ChatRoute, relay_chat};
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;
use veil_protocol::ClientFormat;

pub async fn create(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    relay_chat(&state, principal, meta, ChatRoute::plain(ClientFormat::OpenAiResponses, "/v1/responses"), body).await
}

//! Gemini's routes: `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` (`?alt=sse` for server-sent events, else one JSON array
//! streamed element by element, as Google's API does), `:countTokens`, and the model
//! list `GET /v1beta/models[/{model}]`. The key comes as `x-goog-api-key` or `?key=`.

use crate::error::ApiError;
use crate::formats::{ChatRoute, refused, relay_chat};
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::{Authenticated, visible_models};
use crate::openai::stream::Framing;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use veil_domain::ErrorCode;
use veil_protocol::ClientFormat;
use veil_protocol::translate::{self, RouteHints};

/// `POST /v1beta/models/{model}:{method}`.
pub async fn model_method(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    Path(model_method): Path<String>,
    RawQuery(query): RawQuery,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    let Some((model, method)) = model_method.rsplit_once(':') else {
        return unknown_method().into_response();
    };
    let sse = query.as_deref().is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    match method {
        "generateContent" => {
            let route = ChatRoute {
                format: ClientFormat::Gemini,
                route: "/v1beta/models/{model}:generateContent",
                hints: RouteHints { model: Some(model), stream: false },
                framing: Framing::Sse,
            };
            relay_chat(&state, principal, meta, route, body).await
        }
        "streamGenerateContent" => {
            let route = ChatRoute {
                format: ClientFormat::Gemini,
                route: "/v1beta/models/{model}:streamGenerateContent",
                hints: RouteHints { model: Some(model), stream: true },
                framing: if sse { Framing::Sse } else { Framing::JsonArray },
            };
            relay_chat(&state, principal, meta, route, body).await
        }
        "countTokens" => count_tokens(model, body).await,
        _ => unknown_method().into_response(),
    }
}

/// The prompt counted under OpenAI's o200k vocabulary (no Gemini tokenizer is public),
/// not relayed.
async fn count_tokens(model: &str, mut body: Map<String, Value>) -> Response {
    // The request is either a bare `contents` list or a whole `generateContentRequest`.
    if let Some(Value::Object(inner)) = body.remove("generateContentRequest") {
        body = inner;
    }
    let hints = RouteHints { model: Some(model), stream: false };
    match translate::client_request(ClientFormat::Gemini, &Value::Object(body), hints) {
        Ok(request) => {
            Json(json!({ "totalTokens": crate::openai::usage::vocabulary_count(request).await })).into_response()
        }
        Err(error) => refused(error).into_response(),
    }
}

fn unknown_method() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "Unknown method; Veil serves generateContent, streamGenerateContent and countTokens.",
    )
}

/// `GET /v1beta/models`: the models this key may use, as Gemini lists them.
pub async fn list_models(State(state): State<Arc<AppState>>, Authenticated(principal): Authenticated) -> Json<Value> {
    let models: Vec<Value> = visible_models(&state, &principal).iter().map(|m| model_object(m.as_str())).collect();
    Json(json!({ "models": models }))
}

/// `GET /v1beta/models/{model}`.
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let wanted = model.strip_prefix("models/").unwrap_or(&model);
    visible_models(&state, &principal)
        .iter()
        .find(|m| m.as_str() == wanted)
        .map(|m| Json(model_object(m.as_str())))
        .ok_or_else(|| ApiError::model_not_found(&wanted.chars().take(64).collect::<String>()))
}

pub fn model_object(name: &str) -> Value {
    json!({
        "name": format!("models/{name}"),
        "displayName": name,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

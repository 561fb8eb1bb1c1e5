//! Thin handlers for the OpenAI-compatible routes: extract, call the relay, return.

use crate::auth;
use crate::error::ApiError;
use crate::openai::body::OpenAiJson;
use crate::relay;
use crate::request_meta::RequestMeta;
use crate::state::{AppState, Principal};
use crate::transparency;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use veil_domain::{ChannelKind, ModelName};
use veil_providers::Endpoint;

/// An authenticated caller; rejection renders in OpenAI's error shape.
pub struct Authenticated(pub Arc<Principal>);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        auth::authenticate(state, parts, &meta)
            .await
            .map(Authenticated)
            .inspect(|a| state.risk.note_call(&a.0, meta.client_ip, veil_domain::Timestamp::now()))
    }
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    relay::relay_openai(&state, principal, meta, Endpoint::ChatCompletions, body).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    relay::relay_openai(&state, principal, meta, Endpoint::Completions, body).await
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    relay::relay_openai(&state, principal, meta, Endpoint::Embeddings, body).await
}

/// The models a key may use: its group's, narrowed by its own allow-list.
pub fn visible_models(state: &AppState, principal: &Principal) -> Vec<ModelName> {
    let snapshot = state.snapshot.load();
    snapshot
        .catalogue
        .models_for_group(&principal.user.group)
        .into_iter()
        .filter(|model| key_allows(principal, model))
        .cloned()
        .collect()
}

/// `GET /v1/models`: only the models this key may use, listed the way the caller's
/// client expects: Anthropic's shape for a key sent as `x-api-key` (or with an
/// `anthropic-version` header), Gemini's for `x-goog-api-key` or `?key=`, else OpenAI's.
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Json<Value> {
    let models = visible_models(&state, &principal);
    let bearer = headers.contains_key(axum::http::header::AUTHORIZATION);
    if !bearer && (headers.contains_key("x-api-key") || headers.contains_key("anthropic-version")) {
        let data: Vec<Value> = models
            .iter()
            .map(|m| json!({"type": "model", "id": m.as_str(), "display_name": m.as_str(), "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        let first = models.first().map(ModelName::as_str);
        let last = models.last().map(ModelName::as_str);
        return Json(json!({ "data": data, "has_more": false, "first_id": first, "last_id": last }));
    }
    let query_key = query.as_deref().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("key=")));
    if !bearer && (headers.contains_key("x-goog-api-key") || query_key) {
        let data: Vec<Value> = models.iter().map(|m| crate::formats::gemini::model_object(m.as_str())).collect();
        return Json(json!({ "models": data }));
    }
    let data: Vec<Value> = models.iter().map(|model| model_object(&state, &principal, model)).collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state.snapshot.load();
    let model = ModelName::parse(&id)
        .ok()
        .filter(|m| snapshot.catalogue.models_for_group(&principal.user.group).contains(&m))
        .filter(|m| key_allows(&principal, m))
        .ok_or_else(|| ApiError::model_not_found(&id.chars().take(64).collect::<String>()))?;
    Ok(Json(model_object(&state, &principal, &model)))
}

fn key_allows(principal: &Principal, model: &ModelName) -> bool {
    principal.key.models.as_ref().is_none_or(|allowed| allowed.contains(model))
}

/// An OpenAI model object plus `data_policies`: what each channel serving the model for
/// this caller does with data.
fn model_object(state: &AppState, principal: &Principal, model: &ModelName) -> Value {
    let snapshot = state.snapshot.load();
    let serving: Vec<_> = snapshot
        .catalogue
        .channels()
        .map(|c| &c.channel)
        .filter(|c| c.serves(model) && c.admits_group(&principal.user.group))
        .collect();
    let owner = serving
        .first()
        .map(|c| match c.kind {
            ChannelKind::Echo => "veil-echo-test-provider".to_owned(),
            _ => c.policy.operator.clone(),
        })
        .unwrap_or_else(|| "veil".to_owned());
    let policies: Vec<Value> = serving.into_iter().map(transparency::policy_json).collect();
    json!({ "id": model.as_str(), "object": "model", "created": 0, "owned_by": owner, "data_policies": policies })
}

pub async fn not_found() -> ApiError {
    ApiError::new(axum::http::StatusCode::NOT_FOUND, veil_domain::ErrorCode::NotFound, "Unknown route.")
}

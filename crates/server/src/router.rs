//! Route table and layer order. From the outside in: request identity and access log,
//! body limit, then the routes. Authentication is an extractor on each relay route, so
//! a route without it is visibly unauthenticated; the only such routes are the public
//! transparency pages, the health checks, `/metrics` and the fallback.

use crate::admin_api;
use crate::formats;
use crate::me;
use crate::openai::body::BodyLimit;
use crate::openai::handlers;
use crate::request_meta;
use crate::state::AppState;
use crate::transparency;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router, middleware};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub fn build(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let anthropic = Router::new()
        .route("/v1/messages", post(formats::anthropic::messages))
        .route("/v1/messages/count_tokens", post(formats::anthropic::count_tokens))
        .layer(middleware::map_response(formats::anthropic_errors));
    let gemini = Router::new()
        .route("/v1beta/models", get(formats::gemini::list_models))
        .route("/v1beta/models/{model}", get(formats::gemini::get_model).post(formats::gemini::model_method))
        .layer(middleware::map_response(formats::gemini_errors));
    Router::new()
        .merge(anthropic)
        .merge(gemini)
        .route("/v1/responses", post(formats::responses::create))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/images/generations", post(crate::openai::media::image_generations))
        .route("/v1/images/edits", post(crate::openai::media::image_edits))
        .route("/v1/audio/speech", post(crate::openai::media::audio_speech))
        .route("/v1/audio/transcriptions", post(crate::openai::media::audio_transcriptions))
        .route("/v1/moderations", post(crate::openai::media::moderations))
        .route("/v1/models", get(handlers::list_models))
        // Google's SDKs default to API version `v1`: their POSTs share the OpenAI model path.
        .route(
            "/v1/models/{*id}",
            get(handlers::get_model)
                .merge(post(formats::gemini::model_method).layer(middleware::map_response(formats::gemini_errors))),
        )
        .route("/api/me/export", get(me::export))
        .route("/api/me/risk", get(me::risk))
        .route("/api/me", axum::routing::delete(me::erase))
        .route("/api/me/keys/{id}/capture", axum::routing::put(me::enable_capture).delete(me::disable_capture))
        .route("/api/me/captures", get(me::list_captures))
        .route("/api/redeem", post(crate::redeem::redeem))
        .route("/v1/videos", post(crate::videos::create))
        .route("/v1/videos/{id}", get(crate::videos::retrieve))
        .route("/v1/videos/{id}/content", get(crate::videos::content))
        // Generated media: the signed URL is the only credential.
        .route("/v1/media/{id}", get(crate::media::serve))
        .route("/api/usage", get(crate::reports::usage))
        .route("/api/usage/calls", get(crate::reports::calls))
        .route("/api/bills", get(crate::reports::bills))
        // Legacy balance endpoints; some front-ends call them without the `/v1` prefix.
        .route("/v1/dashboard/billing/subscription", get(crate::reports::legacy_subscription))
        .route("/v1/dashboard/billing/usage", get(crate::reports::legacy_usage))
        .route("/dashboard/billing/subscription", get(crate::reports::legacy_subscription))
        .route("/dashboard/billing/usage", get(crate::reports::legacy_usage))
        .route("/api/channels", get(crate::channels::list).post(crate::channel_admin::create))
        .route(
            "/api/channels/{name}",
            get(crate::channels::get).put(crate::channel_admin::replace).delete(crate::channel_admin::delete),
        )
        .route("/api/channels/{name}/enable", post(crate::channels::enable))
        .route("/api/channels/{name}/disable", post(crate::channels::disable))
        .route("/api/channels/{name}/test", post(crate::channels::test))
        .route(
            "/api/channels/{name}/credential",
            axum::routing::put(admin_api::set_credential).delete(admin_api::clear_credential),
        )
        .route("/api/models", get(crate::admin_billing::list_models))
        .route("/api/models/{name}", axum::routing::put(crate::admin_billing::set_price))
        .route("/api/users/{name}/credit", post(crate::admin_billing::credit_user))
        .route("/api/privacy/models", get(transparency::models_json))
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/models", get(transparency::models_page))
        .route("/privacy", get(transparency::privacy_page))
        .route("/", get(transparency::home_page))
        // The web console: its own security headers and CSRF-checked forms (see console/).
        .merge(crate::console::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(middleware::from_fn(request_meta::layer))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if state.store_healthy.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
    }
}

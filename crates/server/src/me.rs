//! `/api/me/…`: what a signed-in user can do about their own data. Authenticated by one
//! of the user's API keys (console sessions come with the console). Handlers only
//! sequence the account operations; the rules live in `account.rs`.

use crate::account;
use crate::error::ApiError;
use crate::openai::handlers::Authenticated;
use crate::refresh;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /api/me/export`
pub async fn export(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let user = &principal.user;
    account::export(state.store.as_ref(), user, account::actor_user(user.id)).await.map(Json).map_err(|error| {
        tracing::error!(error = %error, "export failed");
        ApiError::internal()
    })
}

/// `DELETE /api/me`: erases the caller's account. The key used for this call stops
/// working before the response is sent.
pub async fn erase(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let user = &principal.user;
    let report = account::erase(state.store.as_ref(), user, account::actor_user(user.id)).await.map_err(|error| {
        tracing::error!(error = %error, "erasure failed");
        ApiError::internal()
    })?;
    if let Err(error) = refresh::refresh_once(&state).await {
        tracing::warn!(error = %error, "could not refresh after an erasure; other paths catch up within the refresh interval");
    }
    Ok(Json(json!({
        "erased": true,
        "keys_deleted": report.keys_deleted,
        "records_anonymised": report.records_anonymised,
    })))
}

//! The management API's first routes (`/api/channels/…`), for admins only: an admin or
//! root account authenticates with one of its API keys. A channel credential sent here
//! is sealed before it reaches the store (the database alone reveals none) and is
//! write-only: no route ever returns it.

use crate::account;
use crate::error::ApiError;
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::refresh;
use crate::state::{AppState, Principal, credential_aad};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use veil_domain::{ChannelName, ErrorCode, Role};
use veil_store::SealedCredential;
use zeroize::Zeroizing;

pub(crate) fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    match principal.user.role {
        Role::Admin | Role::Root => Ok(()),
        Role::User => {
            Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::PermissionDenied, "This needs an admin account."))
        }
    }
}

fn no_channel() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such channel.")
}

pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %error, "management API failure");
    ApiError::internal()
}

/// `PUT /api/channels/{name}/credential` with `{"api_key": "…"}`.
pub async fn set_credential(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let channel = ChannelName::parse(&name).map_err(|_| no_channel())?;
    let secret = body
        .get("api_key")
        .and_then(credential_secret)
        .ok_or_else(|| ApiError::invalid_request(format!("`api_key` {CREDENTIAL_RULE}.")).with_param("api_key"))?;
    let sealed = seal_credential(&state, &channel, &secret).ok_or_else(ApiError::internal)?;
    change(&state, &principal, &channel, Some(sealed), "channel.credential.set").await
}

/// What [`credential_secret`] accepts, for error messages.
pub(crate) const CREDENTIAL_RULE: &str = "must be a non-empty string of at most 4096 bytes";

/// A channel credential as a request carries it (`api_key`), trimmed; `None` when it is
/// not a non-empty string of at most 4096 bytes.
pub(crate) fn credential_secret(value: &Value) -> Option<Zeroizing<String>> {
    match value {
        Value::String(secret) if !secret.trim().is_empty() && secret.len() <= 4096 => {
            Some(Zeroizing::new(secret.trim().to_owned()))
        }
        _ => None,
    }
}

/// Seals a channel credential for the store: it opens only for this channel, under this
/// installation's key. `None` when this server has no sealer or sealing failed.
pub(crate) fn seal_credential(state: &AppState, channel: &ChannelName, secret: &str) -> Option<SealedCredential> {
    let sealer = state.credential_sealer.as_ref()?;
    let (nonce, ciphertext) = sealer.seal(&credential_aad(channel), secret.as_bytes())?;
    Some(SealedCredential { channel: channel.clone(), nonce, ciphertext })
}

/// `DELETE /api/channels/{name}/credential`: back to the channel's `api_key_env`.
pub async fn clear_credential(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let channel = ChannelName::parse(&name).map_err(|_| no_channel())?;
    change(&state, &principal, &channel, None, "channel.credential.clear").await
}

async fn change(
    state: &AppState,
    principal: &Principal,
    channel: &ChannelName,
    sealed: Option<SealedCredential>,
    action: &str,
) -> Result<Json<Value>, ApiError> {
    let stored = sealed.is_some();
    if !state.store.set_channel_credential(channel, sealed).await.map_err(internal)? {
        return Err(no_channel());
    }
    account::audit(
        state.store.as_ref(),
        account::actor_user(principal.user.id),
        action,
        None,
        Some(channel.to_string()),
        json!({}),
    )
    .await
    .map_err(internal)?;
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a credential change");
    }
    Ok(Json(json!({"channel": channel, "credential_stored": stored})))
}

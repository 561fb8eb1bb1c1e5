//! `/api/me/…`: what a signed-in user can do about their own data. Authenticated by one
//! of the user's API keys or by a console session (see `auth::Caller`). Handlers only
//! sequence the account operations; the rules live in `account.rs`.

use crate::account;
use crate::auth::AccountCaller;
use crate::error::ApiError;
use crate::openai::body::OpenAiJson;
use crate::refresh;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use veil_domain::{ErrorCode, KeyId, Timestamp};

/// `GET /api/me/export`. Reachable with a suspended key: the owner must be able to see
/// why it was suspended (the export holds the keys' suspension and the audit entries).
pub async fn export(
    State(state): State<Arc<AppState>>,
    crate::auth::AccountView(principal): crate::auth::AccountView,
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
    AccountCaller(principal): AccountCaller,
) -> Result<Json<Value>, ApiError> {
    let report = erase_account(&state, &principal.user).await?;
    Ok(Json(json!({
        "erased": true,
        "keys_deleted": report.keys_deleted,
        "records_anonymised": report.records_anonymised,
    })))
}

/// Erases `user`'s account (the body of `DELETE /api/me`, shared with the console): its keys
/// and sessions stop working on this instance before this returns.
pub(crate) async fn erase_account(
    state: &AppState,
    user: &veil_domain::User,
) -> Result<veil_store::ErasureReport, ApiError> {
    let report = account::erase(state.store.as_ref(), user, account::actor_user(user.id)).await.map_err(|error| {
        tracing::error!(error = %error, "erasure failed");
        ApiError::internal()
    })?;
    state.billing.forget_user(user.id);
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after an erasure; other paths catch up within the refresh interval");
    }
    Ok(report)
}

/// `PUT /api/me/keys/{id}/capture` with `{"hours": 1–24}`: turn debug capture on for
/// one of the caller's own keys.
pub async fn enable_capture(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    Path(id): Path<String>,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    let hours = match body.get("hours") {
        Some(Value::Number(n)) => n.as_u64().filter(|h| (1..=24).contains(h)),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid_request("`hours` must be a whole number from 1 to 24.").with_param("hours"))?;
    let (key, until) = capture_for(&state, principal.user.id, &id, Some(hours)).await?;
    Ok(Json(json!({"key_id": key, "capture_until": until.map(Timestamp::to_rfc3339)})))
}

/// `DELETE /api/me/keys/{id}/capture`
pub async fn disable_capture(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (key, _) = capture_for(&state, principal.user.id, &id, None).await?;
    Ok(Json(json!({"key_id": key, "capture_until": null})))
}

/// Turns debug capture on for `hours` (1–24, checked by the caller) or, with `None`, off, for
/// one of `user`'s own keys: shared by the `/api/me` routes and the console.
pub(crate) async fn capture_for(
    state: &AppState,
    user: veil_domain::UserId,
    id: &str,
    hours: Option<u64>,
) -> Result<(KeyId, Option<Timestamp>), ApiError> {
    let key = own_key(state, user, id).await?;
    let until = hours.map(|hours| Timestamp::now().plus_millis(i64::try_from(hours).unwrap_or(24) * 3_600_000));
    let details = hours.map_or_else(|| json!({}), |hours| json!({"hours": hours}));
    set_capture(state, user, key, until, details).await?;
    Ok((key, until))
}

/// `GET /api/me/captures`: the caller's unexpired captures, opened for them alone.
pub async fn list_captures(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
) -> Result<Json<Value>, ApiError> {
    let user = principal.user.id;
    let stored = state.store.list_captures(user, Timestamp::now()).await.map_err(internal)?;
    let sealer = state.sealer.as_ref().ok_or_else(ApiError::internal)?;
    let mut captures = Vec::with_capacity(stored.len());
    for capture in &stored {
        let aad = crate::capture::associated_data(user, &capture.request_id);
        let Ok(plain) = sealer.open(&aad, &capture.nonce, &capture.ciphertext) else {
            tracing::warn!("a debug capture did not open; skipped");
            continue;
        };
        captures.push(json!({
            "request_id": capture.request_id,
            "key_id": capture.key_id,
            "time": capture.time.to_rfc3339(),
            "expires_at": capture.expires_at.to_rfc3339(),
            "capture": serde_json::from_slice::<Value>(&plain).unwrap_or(Value::Null),
        }));
    }
    account::audit(
        state.store.as_ref(),
        account::actor_user(user),
        "capture.read",
        Some(user),
        None,
        json!({"count": captures.len()}),
    )
    .await
    .map_err(internal)?;
    Ok(Json(json!({"object": "list", "data": captures})))
}

async fn own_key(state: &AppState, user: veil_domain::UserId, id: &str) -> Result<KeyId, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such key of yours.");
    let id = KeyId::parse(id).map_err(|_| not_found())?;
    let keys = state.store.list_keys(Some(user)).await.map_err(internal)?;
    keys.iter().find(|k| k.id == id && k.revoked_at.is_none()).map(|k| k.id).ok_or_else(not_found)
}

async fn set_capture(
    state: &AppState,
    user: veil_domain::UserId,
    key: KeyId,
    until: Option<Timestamp>,
    details: Value,
) -> Result<(), ApiError> {
    state.store.set_key_capture(key, until).await.map_err(internal)?;
    let action = if until.is_some() { "capture.enable" } else { "capture.disable" };
    account::audit(state.store.as_ref(), account::actor_user(user), action, Some(user), Some(key.to_string()), details)
        .await
        .map_err(internal)?;
    // Take effect on this instance before answering.
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a capture change");
    }
    Ok(())
}

fn internal(error: veil_store::StoreError) -> ApiError {
    tracing::error!(error = %error, "store failure");
    ApiError::internal()
}

/// How many of the caller's most recent audit entries `GET /api/me/risk` looks through.
const RISK_AUDIT_LIMIT: u32 = 1_000;

/// `GET /api/me/risk`: the suspension state of the caller's keys and what risk control
/// (or an admin) decided about them, newest first. Reachable with a suspended key.
pub async fn risk(
    State(state): State<Arc<AppState>>,
    crate::auth::AccountView(principal): crate::auth::AccountView,
) -> Result<Json<Value>, ApiError> {
    let user = principal.user.id;
    let keys = state.store.list_keys(Some(user)).await.map_err(internal)?;
    let entries = state.store.list_audit(Some(user), RISK_AUDIT_LIMIT).await.map_err(internal)?;
    Ok(Json(crate::risk::owner_report(&keys, &entries)))
}

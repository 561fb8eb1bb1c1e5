//! The management API for channels' state, admins only: `GET /api/channels` and
//! `GET /api/channels/{name}` (each channel with its routing state, error rate, latency
//! and cool-down), `POST /api/channels/{name}/enable|disable|test`.
//!
//! A channel's `state` is `disabled` when the config disables it (`enabled = false`) or
//! when `channel_states` does (`disabled_reason`: `credential_rejected` or `admin`);
//! otherwise it is this instance's live health (`healthy`, `cooling_down`, `half_open`),
//! or, for `veil admin` which has no live board, the snapshot a server last saved.
//! Enabling lifts only a `channel_states` disabling: the config's own switch stays the
//! config's. Every change is audited and reaches routing before the answer.
//!
//! [`status_json`] is shared with `veil admin channel list --json`, so both speak the same
//! field names.

use crate::account;
use crate::admin_api::{internal, require_admin};
use crate::error::ApiError;
use crate::openai::handlers::Authenticated;
use crate::probe;
use crate::state::{AppState, credential_aad};
use crate::views::channel_json;
use crate::{health, refresh};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use veil_domain::{Channel, ChannelName, ErrorCode};
use veil_store::{ChannelHealthSnapshot, ChannelState, DisabledReason, StoreError};
use zeroize::Zeroizing;

/// A channel with its state. `live` (this server's board) wins over the snapshot stored in
/// `stored`; a disabling always wins.
pub fn status_json(channel: &Channel, stored: Option<&ChannelState>, live: Option<&ChannelHealthSnapshot>) -> Value {
    let mut value = channel_json(channel);
    let disabled_reason = stored.and_then(|s| s.disabled_reason);
    let health = live.or_else(|| stored.and_then(|s| s.health.as_ref()));
    let state = if !channel.enabled || disabled_reason.is_some() {
        "disabled"
    } else {
        health.map_or("healthy", |h| h.state.as_str())
    };
    let fields = json!({
        "state": state,
        "disabled_reason": disabled_reason.map(DisabledReason::as_str),
        "disabled_at": stored.and_then(|s| s.disabled_at).map(|t| t.to_rfc3339()),
        "error_rate": health.map_or(0.0, ChannelHealthSnapshot::error_rate),
        "latency_p50_ms": health.and_then(|h| h.latency_p50_ms),
        "latency_p95_ms": health.and_then(|h| h.latency_p95_ms),
        "calls": health.map_or(0, |h| h.calls),
        "cooling_until": health.and_then(|h| h.cooling_until).map(|t| t.to_rfc3339()),
        "health_updated_at": health.map(|h| h.updated_at.to_rfc3339()),
    });
    if let (Value::Object(target), Value::Object(fields)) = (&mut value, fields) {
        target.extend(fields);
    }
    value
}

fn no_channel() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such channel.")
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound(_) => no_channel(),
        other => internal(other),
    }
}

/// Every channel in the store, by name, with its state as this server sees it.
pub(crate) async fn statuses(state: &AppState) -> Result<Vec<(ChannelName, Value)>, ApiError> {
    let channels = state.store.list_channels().await.map_err(internal)?;
    let stored = state.store.channel_states().await.map_err(internal)?;
    let credentials = state.store.channel_credentials().await.map_err(internal)?;
    let snapshot = state.snapshot.load_full();
    Ok(channels
        .iter()
        .map(|channel| {
            let kept = stored.iter().find(|s| s.channel == channel.name);
            // Only a channel this server routes to has a live view worth more than the stored one.
            let live =
                snapshot.catalogue.channel_by_name(channel.name.as_str()).map(|_| state.health.snapshot(&channel.name));
            let mut value = status_json(channel, kept, live.as_ref());
            // Whether one is stored, never what it is.
            value["has_stored_credential"] = Value::Bool(credentials.iter().any(|c| c.channel == channel.name));
            (channel.name.clone(), value)
        })
        .collect())
}

pub(crate) async fn status(state: &AppState, name: &ChannelName) -> Result<Value, ApiError> {
    statuses(state).await?.into_iter().find(|(n, _)| n == name).map(|(_, value)| value).ok_or_else(no_channel)
}

fn parse_name(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|_| no_channel())
}

/// `GET /api/channels`
pub async fn list(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let data: Vec<Value> = statuses(&state).await?.into_iter().map(|(_, value)| value).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/channels/{name}`
pub async fn get(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    Ok(Json(status(&state, &parse_name(&name)?).await?))
}

/// `POST /api/channels/{name}/disable`: out of routing on every instance until enabled.
pub async fn disable(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let name = parse_name(&name)?;
    disable_channel(&state, &name, account::actor_user(principal.user.id)).await?;
    Ok(Json(status(&state, &name).await?))
}

/// Takes a channel out of routing as `actor` (audited by `health::disable`): shared by the
/// JSON API and the console.
pub(crate) async fn disable_channel(state: &AppState, name: &ChannelName, actor: String) -> Result<(), ApiError> {
    health::disable(state, name, DisabledReason::Admin, actor, None).await.map(|_| ()).map_err(store_error)
}

/// `POST /api/channels/{name}/enable`: lifts a disabling (a rejected credential's or an
/// admin's) and forgets the channel's health history on this instance.
pub async fn enable(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let name = parse_name(&name)?;
    enable_channel(&state, &name, account::actor_user(principal.user.id)).await?;
    Ok(Json(status(&state, &name).await?))
}

/// Lifts a channel's disabling as `actor` (audited when there was one), forgets its health
/// history here and applies it: shared by the JSON API and the console.
pub(crate) async fn enable_channel(state: &AppState, name: &ChannelName, actor: String) -> Result<(), ApiError> {
    if state.store.enable_channel(name).await.map_err(store_error)? {
        account::audit(state.store.as_ref(), actor, "channel.enable", None, Some(name.to_string()), json!({}))
            .await
            .map_err(internal)?;
    }
    state.health.reset(name);
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after enabling a channel");
    }
    Ok(())
}

/// `POST /api/channels/{name}/test`: one probe call now. A channel in routing records the
/// result on its health (a success brings a cooling channel back once its cool-down is
/// over, as a probe does); a disabled one is probed with its own credential all the same,
/// so an admin can check a fixed credential before enabling it.
pub async fn test(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let name = parse_name(&name)?;
    Ok(Json(test_channel(&state, &name).await?))
}

/// One probe call to a channel now, answered as `POST /api/channels/{name}/test` answers:
/// shared by the JSON API and the console.
pub(crate) async fn test_channel(state: &AppState, name: &ChannelName) -> Result<Value, ApiError> {
    let snapshot = state.snapshot.load_full();
    let outcome = match snapshot.catalogue.channel_by_name(name.as_str()) {
        Some(candidate) => probe::probe_and_record(state, candidate).await,
        None => {
            let channels = state.store.list_channels().await.map_err(internal)?;
            let channel = channels.into_iter().find(|c| &c.name == name).ok_or_else(no_channel)?;
            let credential = stored_credential(state, name).await?;
            let provider = veil_providers::provider_with(
                &channel,
                &state.http,
                credential.as_ref().map(|c| c.as_ref().map(|s| s.as_str())),
            );
            probe::probe(provider.as_ref(), &channel).await
        }
    };
    Ok(match outcome {
        Ok(report) => json!({
            "channel": name,
            "ok": true,
            "model": report.model,
            "latency_ms": u64::try_from(report.latency.as_millis()).unwrap_or(u64::MAX),
        }),
        Err(error) => json!({"channel": name, "ok": false, "error": error.describe()}),
    })
}

/// The channel's credential stored through the management API, opened: `Some(None)` when
/// one is stored but does not open, `None` when none is stored.
async fn stored_credential(
    state: &AppState,
    name: &ChannelName,
) -> Result<Option<Option<Zeroizing<String>>>, ApiError> {
    let sealed = state.store.channel_credentials().await.map_err(internal)?;
    Ok(sealed.into_iter().find(|s| &s.channel == name).map(|sealed| {
        state
            .credential_sealer
            .as_ref()
            .and_then(|sealer| sealer.open(&credential_aad(name), &sealed.nonce, &sealed.ciphertext).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Zeroizing::new)
    }))
}

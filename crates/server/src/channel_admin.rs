//! Channels created, replaced and deleted at run time, admins only: `POST /api/channels`,
//! `PUT /api/channels/{name}`, `DELETE /api/channels/{name}`. The work is done by plain
//! functions over [`AppState`] ([`create_channel`], [`replace_channel`], [`delete_channel`])
//! so the web console can call what the API calls; the handlers only authenticate and
//! translate.
//!
//! Promises:
//! - A channel is defined with the keys of a `[[channel]]` table and goes through the config
//!   file's own validation ([`veil_config::channel_from`]): same checks, same defaults, an
//!   unknown key refused, every error naming its field. Nothing invalid is stored.
//! - Channels made here are not `managed`: the file's seeding retires only its own, so they
//!   outlive restarts and SIGHUP. A channel the file declares is refused here (changed in the
//!   file); a taken name is refused on creation.
//! - The optional `api_key` is write-only, sealed as `PUT /api/channels/{name}/credential`
//!   seals it, and stored in the same transaction as the channel; a replacement without one
//!   keeps the stored credential. Deleting takes the credential and the channel's state along.
//! - Every change is audited and has reached this instance's routing when the call returns.

use crate::account;
use crate::admin_api::{CREDENTIAL_RULE, credential_secret, internal, require_admin, seal_credential};
use crate::channels;
use crate::error::ApiError;
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::refresh;
use crate::state::AppState;
use crate::views::channel_json;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use veil_config::ConfigError;
use veil_domain::{Channel, ChannelName, ErrorCode, Model, Pricing};
use veil_store::{ApiChannelOutcome, ApiChannelWrite, StoreError};
use zeroize::Zeroizing;

/// A channel as an admin defines it, validated, with the credential to seal for it.
pub struct ChannelDefinition {
    pub channel: Channel,
    pub api_key: Option<Zeroizing<String>>,
}

/// Why a channel change was not made. Messages may repeat what the admin sent: they are
/// for the admin's answer, never for a log line.
#[derive(Debug, thiserror::Error)]
pub enum ChannelChangeError {
    /// `field` is the key at fault: `base_url`, `model_mapping.NAME`, an unknown key…
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("a channel named {0} exists already")]
    Exists(ChannelName),
    #[error("no such channel")]
    Missing,
    #[error("channel {0} is declared in the config file")]
    Managed(ChannelName),
    #[error("the channel credential could not be sealed")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChannelChangeError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.to_owned(), message: message.into() }
    }
}

impl ChannelDefinition {
    /// A definition from a JSON object with the keys of a `[[channel]]` table plus an
    /// optional `api_key`. `path_name` is the name a replacement is addressed to: it wins,
    /// and the body may repeat it but not contradict it.
    pub fn from_json(
        mut fields: Map<String, Value>,
        path_name: Option<&ChannelName>,
    ) -> Result<Self, ChannelChangeError> {
        let api_key = match fields.remove("api_key") {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(credential_secret(&value).ok_or_else(|| ChannelChangeError::invalid("api_key", CREDENTIAL_RULE))?)
            }
        };
        if let Some(path_name) = path_name {
            match fields.get("name") {
                None => {
                    fields.insert("name".to_owned(), Value::String(path_name.to_string()));
                }
                Some(Value::String(name)) if name == path_name.as_str() => {}
                Some(_) => {
                    return Err(ChannelChangeError::invalid(
                        "name",
                        format!("must be the name in the path, \"{path_name}\", or be left out"),
                    ));
                }
            }
        }
        let channel = veil_config::channel_from(Value::Object(fields)).map_err(|error| match error {
            ConfigError::Invalid { key, message } => ChannelChangeError::Invalid { field: key, message },
            other => ChannelChangeError::Invalid { field: String::new(), message: other.to_string() },
        })?;
        Ok(Self { channel, api_key })
    }
}

/// Adds a channel; its name must be free. `actor` is who the audit log names.
pub async fn create_channel(
    state: &AppState,
    actor: String,
    definition: ChannelDefinition,
) -> Result<(), ChannelChangeError> {
    write(state, actor, definition, ApiChannelWrite::Create).await
}

/// Replaces a channel made through this module, keeping its stored credential unless the
/// definition brings one, and its disabling (`channel_states`). Its health history on this
/// instance starts over: what it was measured against may have changed.
pub async fn replace_channel(
    state: &AppState,
    actor: String,
    definition: ChannelDefinition,
) -> Result<(), ChannelChangeError> {
    let name = definition.channel.name.clone();
    write(state, actor, definition, ApiChannelWrite::Replace).await?;
    state.health.reset(&name);
    Ok(())
}

/// Deletes a channel made through this module, with its credential and state.
pub async fn delete_channel(state: &AppState, actor: String, name: &ChannelName) -> Result<(), ChannelChangeError> {
    outcome(state.store.delete_api_channel(name).await?, name)?;
    account::audit(state.store.as_ref(), actor, "channel.delete", None, Some(name.to_string()), json!({})).await?;
    state.health.reset(name);
    apply(state).await;
    Ok(())
}

async fn write(
    state: &AppState,
    actor: String,
    definition: ChannelDefinition,
    mode: ApiChannelWrite,
) -> Result<(), ChannelChangeError> {
    let ChannelDefinition { channel, api_key } = definition;
    let sealed = match &api_key {
        Some(secret) => Some(seal_credential(state, &channel.name, secret).ok_or(ChannelChangeError::Sealing)?),
        None => None,
    };
    let credential_stored = sealed.is_some();
    outcome(state.store.write_api_channel(&channel, sealed, mode).await?, &channel.name)?;
    list_unknown_models(state, &channel).await?;
    let action = match mode {
        ApiChannelWrite::Create => "channel.create",
        ApiChannelWrite::Replace => "channel.update",
    };
    let mut details = channel_json(&channel);
    details["credential_stored"] = Value::Bool(credential_stored);
    account::audit(state.store.as_ref(), actor, action, None, Some(channel.name.to_string()), details).await?;
    apply(state).await;
    Ok(())
}

fn outcome(outcome: ApiChannelOutcome, name: &ChannelName) -> Result<(), ChannelChangeError> {
    match outcome {
        ApiChannelOutcome::Done => Ok(()),
        ApiChannelOutcome::Exists => Err(ChannelChangeError::Exists(name.clone())),
        ApiChannelOutcome::Missing => Err(ChannelChangeError::Missing),
        ApiChannelOutcome::Managed => Err(ChannelChangeError::Managed(name.clone())),
    }
}

/// As the file does for a channel's models it does not declare: each model the store does
/// not know yet is listed unpriced (calls to it are refused until an admin prices it), so
/// it shows in `GET /api/models` and call records can name it.
async fn list_unknown_models(state: &AppState, channel: &Channel) -> Result<(), StoreError> {
    let known = state.store.list_models().await?;
    for name in channel.models.iter().filter(|name| !known.iter().any(|model| &model.name == *name)) {
        let model = Model { name: name.clone(), pricing: Pricing::Unpriced, max_output_tokens: None, managed: false };
        state.store.upsert_model(&model).await?;
    }
    Ok(())
}

/// The change reaches this instance's routing before the answer; other instances follow
/// the store's revision.
async fn apply(state: &AppState) {
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a channel change");
    }
}

impl From<ChannelChangeError> for ApiError {
    fn from(error: ChannelChangeError) -> Self {
        match error {
            ChannelChangeError::Invalid { field, message } if field.is_empty() || field == "." => {
                ApiError::invalid_request(format!("Invalid channel: {message}."))
            }
            ChannelChangeError::Invalid { field, message } => {
                ApiError::invalid_request(format!("Invalid channel field `{field}`: {message}.")).with_param(field)
            }
            ChannelChangeError::Exists(name) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("A channel named `{name}` exists already; change it with PUT /api/channels/{name}."),
            ),
            ChannelChangeError::Missing => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such channel.")
            }
            ChannelChangeError::Managed(name) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("Channel `{name}` is declared in the config file; change it there."),
            ),
            ChannelChangeError::Sealing => internal("a channel credential could not be sealed"),
            ChannelChangeError::Store(error) => internal(error),
        }
    }
}

/// The name in the path: one that cannot be a channel's is no channel.
fn path_name(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|_| ChannelChangeError::Missing.into())
}

/// `POST /api/channels`: 201 with the channel as `GET /api/channels/{name}` shows it.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Result<Response, ApiError> {
    require_admin(&principal)?;
    let definition = ChannelDefinition::from_json(body, None)?;
    let name = definition.channel.name.clone();
    create_channel(&state, account::actor_user(principal.user.id), definition).await?;
    let location = format!("/api/channels/{name}");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(channels::status(&state, &name).await?))
        .into_response())
}

/// `PUT /api/channels/{name}`: the whole definition, replaced.
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let name = path_name(&name)?;
    let definition = ChannelDefinition::from_json(body, Some(&name))?;
    replace_channel(&state, account::actor_user(principal.user.id), definition).await?;
    Ok(Json(channels::status(&state, &name).await?))
}

/// `DELETE /api/channels/{name}`: 204.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&principal)?;
    let name = path_name(&name)?;
    delete_channel(&state, account::actor_user(principal.user.id), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The console's admin pages (`/console/admin/…`): channels, models and prices, groups,
//! users, redemption codes, the audit log and the settings view. Promises: every handler
//! refuses a signed-in `user` with the 403 page (the nav shows these pages only to `admin`
//! and `root`); every form is CSRF-checked by [`SignedInForm`] before the role is; every
//! change goes through the function the JSON management API uses for it (so it is
//! validated, audited and applied the same way); credentials and redemption codes are
//! write-only (a code is shown once, on the response that made it).

use super::session::{SignedIn, SignedInForm};
use super::{ConsoleError, layout, render};
use crate::account;
use crate::admin_billing;
use crate::channel_admin::{self, ChannelChangeError, ChannelDefinition};
use crate::channels;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use veil_console::admin::{
    AuditPage, AuditRow, ChannelFields, ChannelFormPage, ChannelRow, ChannelsPage, CodeRow, CodesPage, GroupFields,
    GroupFormPage, GroupRow, GroupsPage, ModelRow, ModelsPage, SettingsPage, UserRow, UsersPage,
};
use veil_console::pages::{Figure, Flash};
use veil_domain::{
    ChannelName, FirewallMode, Group, GroupName, KeyLimits, Model, ModelName, Money, Multiplier, Pricing,
    PrivacyRequirement, Role, Timestamp, User, UserName,
};
use veil_secrets::RedemptionCode;
use veil_store::{NewRedemptionCode, UserChange};

/// Codes one form may make, as `veil admin code create` allows.
const MAX_CODES: u32 = 1_000;
/// Audit entries the page shows.
const AUDIT_ENTRIES: u32 = 100;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/admin", get(|| async { axum::response::Redirect::to("/console/admin/") }))
        .route("/console/admin/", get(channels_page))
        .route("/console/admin/channels/new", get(new_channel_page).post(create_channel))
        .route("/console/admin/channels/{name}", get(edit_channel_page).post(update_channel))
        .route("/console/admin/channels/{name}/enable", post(enable_channel))
        .route("/console/admin/channels/{name}/disable", post(disable_channel))
        .route("/console/admin/channels/{name}/test", post(test_channel))
        .route("/console/admin/channels/{name}/delete", post(delete_channel))
        .route("/console/admin/models", get(models_page))
        .route("/console/admin/models/{name}", post(set_price))
        .route("/console/admin/groups", get(groups_page))
        .route("/console/admin/groups/new", get(new_group_page))
        .route("/console/admin/groups/save", post(save_group))
        .route("/console/admin/groups/{name}", get(edit_group_page))
        .route("/console/admin/users", get(users_page))
        .route("/console/admin/users/{name}/{action}", post(user_action))
        .route("/console/admin/codes", get(codes_page).post(create_codes))
        .route("/console/admin/audit", get(audit_page))
        .route("/console/admin/settings", get(settings_page))
}

pub fn is_admin(user: &User) -> bool {
    matches!(user.role, Role::Admin | Role::Root)
}

/// The signed-in user, if an admin or root; otherwise the 403 page.
fn require_admin(who: &SignedIn) -> Result<(), ConsoleError> {
    if is_admin(&who.user) { Ok(()) } else { Err(ConsoleError::Forbidden) }
}

fn actor(who: &SignedIn) -> String {
    account::actor_user(who.user.id)
}

fn notice(text: impl Into<String>) -> Flash {
    Flash { notice: Some(text.into()), error: None }
}

fn error(text: impl Into<String>) -> Flash {
    Flash { notice: None, error: Some(text.into()) }
}

/// Money with at least two decimals, exact beyond them.
pub fn amount(money: Money) -> String {
    let text = money.to_decimal_string();
    match text.split_once('.') {
        None => format!("{text}.00"),
        Some((_, decimals)) if decimals.len() < 2 => format!("{text}{}", "0".repeat(2 - decimals.len())),
        Some(_) => text,
    }
}

fn api_message(error: ApiError) -> Result<String, ConsoleError> {
    if error.status.is_server_error() {
        return Err(ConsoleError::Internal);
    }
    Ok(error.message)
}

// ---------------------------------------------------------------------------------------
// Channels

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn list_text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn channel_row(status: &Value) -> ChannelRow {
    let state = text(status, "state");
    let reason = text(status, "disabled_reason");
    let credential = if status.get("has_stored_credential") == Some(&Value::Bool(true)) {
        "set".to_owned()
    } else if !text(status, "api_key_env").is_empty() {
        format!("from ${}", text(status, "api_key_env"))
    } else {
        "not set".to_owned()
    };
    ChannelRow {
        name: text(status, "name"),
        kind: text(status, "type"),
        models: list_text(status, "models"),
        priority: text(status, "priority"),
        weight: text(status, "weight"),
        class: text(status, "class"),
        disabled: state == "disabled",
        state: if reason.is_empty() { state } else { format!("{state} ({reason})") },
        error_rate: format!("{:.1} %", status.get("error_rate").and_then(Value::as_f64).unwrap_or(0.0) * 100.0),
        p50: status.get("latency_p50_ms").and_then(Value::as_u64).map_or_else(|| "–".into(), |ms| format!("{ms} ms")),
        cooling_until: status
            .get("cooling_until")
            .and_then(Value::as_str)
            .and_then(|at| Timestamp::parse_rfc3339(at).ok())
            .map_or_else(|| "–".into(), super::accounts::short_time),
        credential,
        managed: status.get("managed") == Some(&Value::Bool(true)),
    }
}

async fn channels(state: &AppState, who: &SignedIn, flash: Flash) -> Result<Response, ConsoleError> {
    let statuses = channels::statuses(state).await.map_err(|_| ConsoleError::Internal)?;
    let page = ChannelsPage {
        layout: layout(who, "Channels", "admin-channels"),
        flash,
        channels: statuses.iter().map(|(_, status)| channel_row(status)).collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn channels_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    channels(&state, &who, Flash::default()).await
}

const CHANNEL_KINDS: [&str; 6] = ["openai", "azure", "anthropic", "gemini", "bedrock", "echo"];

fn channel_fields(status: &Value) -> ChannelFields {
    let mapping = status
        .get("model_mapping")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(public, upstream)| format!("{public}={}", upstream.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .join("\n");
    let flag = |key: &str| status.get(key) == Some(&Value::Bool(true));
    ChannelFields {
        name: text(status, "name"),
        kind: text(status, "type"),
        base_url: text(status, "base_url"),
        api_key_env: text(status, "api_key_env"),
        models: list_text(status, "models"),
        model_mapping: mapping,
        priority: text(status, "priority"),
        weight: text(status, "weight"),
        groups: list_text(status, "groups"),
        retention: text(status, "retention"),
        training: flag("training"),
        region: text(status, "region"),
        human_review: flag("human_review"),
        operator: text(status, "operator"),
        connect_timeout: text(status, "connect_timeout"),
        first_byte_timeout: text(status, "first_byte_timeout"),
        idle_timeout: text(status, "idle_timeout"),
        total_timeout: text(status, "total_timeout"),
        rpm: text(status, "rpm"),
        max_concurrent: text(status, "max_concurrent"),
        tls_verify: flag("tls_verify"),
        probe_interval: text(status, "probe_interval"),
        enabled: flag("enabled"),
    }
}

/// The form's fields as they were sent, to show again beside an error.
fn posted_fields(form: &SignedInForm) -> ChannelFields {
    let on = |name: &str| !form.field(name).is_empty();
    ChannelFields {
        name: form.field("name").to_owned(),
        kind: form.field("type").to_owned(),
        base_url: form.field("base_url").to_owned(),
        api_key_env: form.field("api_key_env").to_owned(),
        models: form.field("models").to_owned(),
        model_mapping: form.field("model_mapping").to_owned(),
        priority: form.field("priority").to_owned(),
        weight: form.field("weight").to_owned(),
        groups: form.field("groups").to_owned(),
        retention: form.field("retention").to_owned(),
        training: on("training"),
        region: form.field("region").to_owned(),
        human_review: on("human_review"),
        operator: form.field("operator").to_owned(),
        connect_timeout: form.field("connect_timeout").to_owned(),
        first_byte_timeout: form.field("first_byte_timeout").to_owned(),
        idle_timeout: form.field("idle_timeout").to_owned(),
        total_timeout: form.field("total_timeout").to_owned(),
        rpm: form.field("rpm").to_owned(),
        max_concurrent: form.field("max_concurrent").to_owned(),
        tls_verify: on("tls_verify"),
        probe_interval: form.field("probe_interval").to_owned(),
        enabled: on("enabled"),
    }
}

fn comma_list(raw: &str) -> Vec<Value> {
    raw.split(',').map(str::trim).filter(|item| !item.is_empty()).map(|item| Value::String(item.to_owned())).collect()
}

/// The form as the keys of a `[[channel]]` table (plus `api_key`), for the config file's
/// own validation (`ChannelDefinition::from_json`): the console adds no rules of its own.
fn channel_table(form: &SignedInForm) -> Result<Map<String, Value>, ChannelChangeError> {
    let mut table = Map::new();
    for key in [
        "name",
        "type",
        "base_url",
        "api_key_env",
        "retention",
        "region",
        "operator",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "total_timeout",
        "probe_interval",
    ] {
        if !form.field(key).is_empty() {
            table.insert(key.to_owned(), Value::String(form.field(key).to_owned()));
        }
    }
    table.insert("models".into(), Value::Array(comma_list(form.field("models"))));
    if !form.field("groups").is_empty() {
        table.insert("groups".into(), Value::Array(comma_list(form.field("groups"))));
    }
    let mut mapping = Map::new();
    for line in form.field("model_mapping").lines().map(str::trim).filter(|line| !line.is_empty()) {
        let Some((public, upstream)) = line.split_once('=') else {
            return Err(ChannelChangeError::Invalid {
                field: "model_mapping".into(),
                message: "each line must be public=upstream".into(),
            });
        };
        mapping.insert(public.trim().to_owned(), Value::String(upstream.trim().to_owned()));
    }
    table.insert("model_mapping".into(), Value::Object(mapping));
    for key in ["priority", "weight", "rpm", "max_concurrent"] {
        let raw = form.field(key);
        if raw.is_empty() {
            continue;
        }
        let number = raw.parse::<i64>().map_err(|_| ChannelChangeError::Invalid {
            field: key.to_owned(),
            message: "must be a whole number".into(),
        })?;
        table.insert(key.to_owned(), Value::from(number));
    }
    for key in ["training", "human_review", "enabled", "tls_verify"] {
        table.insert(key.to_owned(), Value::Bool(!form.field(key).is_empty()));
    }
    // A password is taken as typed (untrimmed); empty keeps the stored one.
    if let Some(secret) = form.form.get("api_key").filter(|secret| !secret.is_empty()) {
        table.insert("api_key".into(), Value::String(secret.clone()));
    }
    Ok(table)
}

fn change_message(error: ChannelChangeError) -> Result<String, ConsoleError> {
    match error {
        ChannelChangeError::Store(store) => Err(store.into()),
        ChannelChangeError::Sealing => Err(ConsoleError::Internal),
        ChannelChangeError::Invalid { field, message } if field.is_empty() || field == "." => {
            Ok(format!("Not saved: {message}."))
        }
        ChannelChangeError::Invalid { field, message } => Ok(format!("Not saved: {field}: {message}.")),
        other => Ok(format!("Not saved: {other}.")),
    }
}

struct ChannelForm<'a> {
    editing: Option<String>,
    managed: bool,
    fields: ChannelFields,
    credential: &'a str,
}

fn channel_form(who: &SignedIn, flash: Flash, form: ChannelForm<'_>) -> Result<Response, ConsoleError> {
    let title = form.editing.as_ref().map_or_else(|| "New channel".to_owned(), |name| format!("Channel {name}"));
    let page = ChannelFormPage {
        layout: layout(who, &title, "admin-channels"),
        flash,
        editing: form.editing,
        managed: form.managed,
        fields: form.fields,
        credential: form.credential.to_owned(),
        kinds: CHANNEL_KINDS.iter().map(|kind| (*kind).to_owned()).collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn new_channel_page(who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let fields = ChannelFields {
        kind: "openai".into(),
        weight: "1".into(),
        priority: "0".into(),
        tls_verify: true,
        enabled: true,
        ..ChannelFields::default()
    };
    channel_form(&who, Flash::default(), ChannelForm { editing: None, managed: false, fields, credential: "not set" })
}

async fn create_channel(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let outcome = match channel_table(&form) {
        Ok(table) => match ChannelDefinition::from_json(table, None) {
            Ok(definition) => {
                let name = definition.channel.name.clone();
                channel_admin::create_channel(&state, actor(who), definition).await.map(|()| name)
            }
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match outcome {
        Ok(name) => channels(&state, who, notice(format!("Channel {name} created."))).await,
        Err(failure) => {
            let message = change_message(failure)?;
            let fields = posted_fields(&form);
            channel_form(
                who,
                error(message),
                ChannelForm { editing: None, managed: false, fields, credential: "not set" },
            )
        }
    }
}

fn channel_name(raw: &str) -> Result<ChannelName, ConsoleError> {
    ChannelName::parse(raw).map_err(|_| ConsoleError::NotFound)
}

async fn channel_status(state: &AppState, name: &ChannelName) -> Result<Value, ConsoleError> {
    channels::status(state, name).await.map_err(|error| match error.status.as_u16() {
        404 => ConsoleError::NotFound,
        _ => ConsoleError::Internal,
    })
}

fn credential_text(status: &Value) -> &'static str {
    if status.get("has_stored_credential") == Some(&Value::Bool(true)) { "set" } else { "not set" }
}

async fn edit_channel_page(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    who: SignedIn,
) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let status = channel_status(&state, &channel_name(&name)?).await?;
    let form = ChannelForm {
        editing: Some(text(&status, "name")),
        managed: status.get("managed") == Some(&Value::Bool(true)),
        fields: channel_fields(&status),
        credential: credential_text(&status),
    };
    channel_form(&who, Flash::default(), form)
}

async fn update_channel(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let name = channel_name(&name)?;
    let status = channel_status(&state, &name).await?;
    let outcome = match channel_table(&form).and_then(|table| ChannelDefinition::from_json(table, Some(&name))) {
        Ok(definition) => channel_admin::replace_channel(&state, actor(who), definition).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => channels(&state, who, notice(format!("Channel {name} saved."))).await,
        Err(failure) => {
            let message = change_message(failure)?;
            let fields = ChannelFields { name: name.to_string(), ..posted_fields(&form) };
            let form = ChannelForm {
                editing: Some(name.to_string()),
                managed: status.get("managed") == Some(&Value::Bool(true)),
                fields,
                credential: credential_text(&status),
            };
            channel_form(who, error(message), form)
        }
    }
}

/// What an admin can do to a channel from its row in the list.
#[derive(Debug, Clone, Copy)]
enum ChannelAction {
    Enable,
    Disable,
    Test,
    Delete,
}

async fn channel_action(
    state: &AppState,
    name: &str,
    form: &SignedInForm,
    action: ChannelAction,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let name = channel_name(name)?;
    channel_status(state, &name).await?;
    let flash = match action {
        ChannelAction::Enable => channels::enable_channel(state, &name, actor(who))
            .await
            .map(|()| notice(format!("Channel {name} enabled."))),
        ChannelAction::Disable => channels::disable_channel(state, &name, actor(who))
            .await
            .map(|()| notice(format!("Channel {name} disabled."))),
        ChannelAction::Test => channels::test_channel(state, &name).await.map(|report| {
            if report.get("ok") == Some(&Value::Bool(true)) {
                notice(format!("Channel {name} answered in {} ms.", text(&report, "latency_ms")))
            } else {
                error(format!("Channel {name} failed its test: {}.", text(&report, "error")))
            }
        }),
        ChannelAction::Delete => match channel_admin::delete_channel(state, actor(who), &name).await {
            Ok(()) => Ok(notice(format!("Channel {name} deleted."))),
            Err(failure) => Ok(error(change_message(failure)?)),
        },
    };
    let flash = match flash {
        Ok(flash) => flash,
        Err(failure) => error(api_message(failure)?),
    };
    channels(state, who, flash).await
}

async fn enable_channel(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    channel_action(&state, &name, &form, ChannelAction::Enable).await
}

async fn disable_channel(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    channel_action(&state, &name, &form, ChannelAction::Disable).await
}

async fn test_channel(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    channel_action(&state, &name, &form, ChannelAction::Test).await
}

async fn delete_channel(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    channel_action(&state, &name, &form, ChannelAction::Delete).await
}

// ---------------------------------------------------------------------------------------
// Models and prices

fn model_row(model: &Model, currency: &str) -> ModelRow {
    let (price, input, cached, output, image, second, free) = match &model.pricing {
        Pricing::Priced(p) => (
            format!(
                "{} in / {} cached / {} out per 1M tokens; {} per image; {} per second ({currency})",
                amount(p.input),
                amount(p.cached_input),
                amount(p.output),
                amount(p.per_image),
                amount(p.per_second)
            ),
            amount(p.input),
            amount(p.cached_input),
            amount(p.output),
            amount(p.per_image),
            amount(p.per_second),
            false,
        ),
        Pricing::Free => {
            ("free".into(), String::new(), String::new(), String::new(), String::new(), String::new(), true)
        }
        _ => (
            "not priced: calls are refused".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            false,
        ),
    };
    ModelRow {
        name: model.name.to_string(),
        price,
        input,
        cached_input: cached,
        output,
        per_image: image,
        per_second: second,
        max_output_tokens: model.max_output_tokens.map(|n| n.to_string()).unwrap_or_default(),
        free,
        managed: model.managed,
    }
}

async fn models(state: &AppState, who: &SignedIn, flash: Flash) -> Result<Response, ConsoleError> {
    let models = state.store.list_models().await?;
    let page = ModelsPage {
        layout: layout(who, "Models and prices", "admin-models"),
        flash,
        currency: state.currency.clone(),
        models: models.iter().map(|model| model_row(model, &state.currency)).collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn models_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    models(&state, &who, Flash::default()).await
}

async fn set_price(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let name = ModelName::parse(&name).map_err(|_| ConsoleError::NotFound)?;
    if !state.store.list_models().await?.iter().any(|model| model.name == name) {
        return Err(ConsoleError::NotFound);
    }
    let pricing = if form.field("free").is_empty() {
        let mut fields = Map::new();
        for key in ["input", "cached_input", "output", "per_image", "per_second"] {
            if !form.field(key).is_empty() {
                fields.insert(key.to_owned(), Value::String(form.field(key).to_owned()));
            }
        }
        match admin_billing::parse_price(&fields) {
            Ok(price) => Pricing::Priced(price),
            Err(failure) => return models(&state, who, error(api_message(failure)?)).await,
        }
    } else {
        Pricing::Free
    };
    let max_output_tokens = match form.field("max_output_tokens") {
        "" => None,
        raw => match raw.parse::<u32>().ok().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => return models(&state, who, error("Max output tokens must be a positive whole number.")).await,
        },
    };
    let model = Model { name, pricing, max_output_tokens, managed: false };
    admin_billing::save_price(&state, actor(who), &model).await?;
    models(&state, who, notice(format!("Price of {} saved.", model.name))).await
}

// ---------------------------------------------------------------------------------------
// Groups

fn group_row(group: &Group, currency: &str) -> GroupRow {
    let privacy = &group.privacy;
    let limits = [
        group.limits.rpm.map(|n| format!("{n} rpm")),
        group.limits.tpm.map(|n| format!("{n} tpm")),
        group.limits.max_concurrent.map(|n| format!("{n} at once")),
    ];
    let limits: Vec<String> = limits.into_iter().flatten().collect();
    let caps: Vec<String> = [
        group.daily_spend.map(|m| format!("{} {currency} a day", amount(m))),
        group.monthly_spend.map(|m| format!("{} {currency} a month", amount(m))),
    ]
    .into_iter()
    .flatten()
    .collect();
    GroupRow {
        name: group.name.to_string(),
        multiplier: group.multiplier.to_decimal_string(),
        privacy: format!(
            "firewall {}; retention {}; training {}; regions {}",
            privacy.firewall.as_str(),
            privacy.max_retention_days.map_or_else(|| "any".into(), |days| format!("≤ {days} days")),
            if privacy.allow_training { "allowed" } else { "refused" },
            privacy.regions.as_ref().map_or_else(|| "any".into(), |regions| regions.join(", ")),
        ),
        limits: if limits.is_empty() { "none".into() } else { limits.join(", ") },
        spend_caps: if caps.is_empty() { "none".into() } else { caps.join(", ") },
        screening_rules: (group.deny_keywords.len() + group.deny_patterns.len()).to_string(),
        managed: group.managed,
    }
}

async fn groups_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    groups(&state, &who, Flash::default()).await
}

async fn groups(state: &AppState, who: &SignedIn, flash: Flash) -> Result<Response, ConsoleError> {
    let groups = state.store.list_groups().await?;
    let page = GroupsPage {
        layout: layout(who, "Groups", "admin-groups"),
        flash,
        groups: groups.iter().map(|group| group_row(group, &state.currency)).collect(),
    };
    Ok(render(&page)?.into_response())
}

fn group_fields(group: &Group) -> GroupFields {
    let number = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    GroupFields {
        name: group.name.to_string(),
        multiplier: group.multiplier.to_decimal_string(),
        firewall: group.privacy.firewall.as_str().to_owned(),
        max_retention_days: number(group.privacy.max_retention_days),
        allow_training: group.privacy.allow_training,
        regions: group.privacy.regions.as_ref().map(|r| r.join(", ")).unwrap_or_default(),
        rpm: number(group.limits.rpm),
        tpm: number(group.limits.tpm),
        max_concurrent: number(group.limits.max_concurrent),
        daily_spend: group.daily_spend.map(amount).unwrap_or_default(),
        monthly_spend: group.monthly_spend.map(amount).unwrap_or_default(),
        deny_keywords: group.deny_keywords.join("\n"),
        deny_patterns: group.deny_patterns.join("\n"),
    }
}

fn group_form(
    who: &SignedIn,
    flash: Flash,
    editing: bool,
    managed: bool,
    fields: GroupFields,
) -> Result<Response, ConsoleError> {
    let title = if editing { format!("Group {}", fields.name) } else { "New group".to_owned() };
    let page = GroupFormPage { layout: layout(who, &title, "admin-groups"), flash, editing, managed, fields };
    Ok(render(&page)?.into_response())
}

async fn new_group_page(who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let mut fields = group_fields(&Group::builtin_default());
    fields.name = String::new();
    group_form(&who, Flash::default(), false, false, fields)
}

async fn edit_group_page(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    who: SignedIn,
) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let group = state.store.list_groups().await?.into_iter().find(|g| g.name.as_str() == name);
    let group = group.ok_or(ConsoleError::NotFound)?;
    group_form(&who, Flash::default(), true, group.managed, group_fields(&group))
}

/// The group a form describes, checked as the config file checks a `[[group]]` table.
fn parse_group(form: &SignedInForm) -> Result<Group, String> {
    let field = |name: &str| Some(form.field(name)).filter(|value| !value.is_empty());
    let count = |name: &str, label: &str| {
        field(name).map(str::parse::<u32>).transpose().map_err(|_| format!("{label} must be a whole number."))
    };
    let money = |name: &str, label: &str| {
        field(name)
            .map(Money::parse_decimal)
            .transpose()
            .map_err(|_| format!("{label} must be an amount such as 5 or 1.50."))
    };
    let lines = |name: &str| -> Vec<String> {
        form.field(name).lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
    };
    let name = GroupName::parse(form.field("name")).map_err(|e| format!("The name is not valid: {e}."))?;
    let multiplier = match field("multiplier") {
        Some(raw) => Multiplier::parse_decimal(raw).map_err(|e| format!("The multiplier is not valid: {e}."))?,
        None => Multiplier::ONE,
    };
    let firewall = FirewallMode::parse(form.field("firewall")).ok_or("The firewall must be off, identity or pii.")?;
    let deny_patterns = lines("deny_patterns");
    if let Some(bad) = deny_patterns.iter().find(|pattern| regex::Regex::new(pattern).is_err()) {
        return Err(format!("Denied pattern {bad:?} is not a valid regular expression."));
    }
    let regions: Vec<String> =
        form.field("regions").split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect();
    Ok(Group {
        name,
        multiplier,
        privacy: PrivacyRequirement {
            max_retention_days: count("max_retention_days", "Retention days")?,
            allow_training: field("allow_training").is_some(),
            regions: if regions.is_empty() { None } else { Some(regions) },
            firewall,
        },
        limits: KeyLimits {
            rpm: count("rpm", "Requests per minute")?,
            tpm: count("tpm", "Tokens per minute")?,
            max_concurrent: count("max_concurrent", "Concurrent calls")?,
        },
        daily_spend: money("daily_spend", "The daily cap")?,
        monthly_spend: money("monthly_spend", "The monthly cap")?,
        deny_keywords: lines("deny_keywords"),
        deny_patterns,
        managed: false,
    })
}

async fn save_group(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let existing = state.store.list_groups().await?.into_iter().find(|g| g.name.as_str() == form.field("name"));
    if existing.as_ref().is_some_and(|group| group.managed) {
        let message = "This group is declared in the config file: change it there.";
        return groups(&state, who, error(message)).await;
    }
    let group = match parse_group(&form) {
        Ok(group) => group,
        Err(message) => {
            let mut fields = existing.as_ref().map(group_fields).unwrap_or_default();
            fields.name = form.field("name").to_owned();
            return group_form(who, error(message), existing.is_some(), false, fields);
        }
    };
    state.store.upsert_group(&group).await?;
    let details = json!({
        "multiplier": group.multiplier.to_decimal_string(),
        "firewall": group.privacy.firewall.as_str(),
        "max_retention_days": group.privacy.max_retention_days,
        "allow_training": group.privacy.allow_training,
        "regions": group.privacy.regions,
        "screening_rules": group.deny_keywords.len() + group.deny_patterns.len(),
    });
    let action = if existing.is_some() { "group.update" } else { "group.create" };
    account::audit(state.store.as_ref(), actor(who), action, None, Some(group.name.to_string()), details).await?;
    if let Err(error) = crate::refresh::refresh_once(&state).await {
        tracing::warn!(error = %error, "could not refresh after a group change");
    }
    groups(&state, who, notice(format!("Group {} saved.", group.name))).await
}

// ---------------------------------------------------------------------------------------
// Users

async fn users(state: &AppState, who: &SignedIn, flash: Flash) -> Result<Response, ConsoleError> {
    let users = state.store.list_users().await?;
    let groups = state.store.list_groups().await?;
    let roles: &[Role] =
        if who.user.role == Role::Root { &[Role::User, Role::Admin, Role::Root] } else { &[Role::User] };
    let page = UsersPage {
        layout: layout(who, "Users", "admin-users"),
        flash,
        currency: state.currency.clone(),
        users: users
            .iter()
            .map(|summary| UserRow {
                name: summary.user.name.to_string(),
                email: summary.user.email.clone().unwrap_or_default(),
                role: summary.user.role.to_string(),
                group: summary.user.group.to_string(),
                balance: amount(summary.balance),
                disabled: summary.user.disabled,
            })
            .collect(),
        groups: groups.iter().map(|group| group.name.to_string()).collect(),
        roles: roles.iter().map(ToString::to_string).collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn users_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    users(&state, &who, Flash::default()).await
}

/// A change to an account, planned from a form: what to store, the audit entry, the notice.
struct PlannedChange {
    change: UserChange,
    action: &'static str,
    details: Value,
    notice: String,
}

async fn user_action(
    State(state): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let name = UserName::parse(&name).map_err(|_| ConsoleError::NotFound)?;
    let target = state.store.user_by_name(&name).await?.ok_or(ConsoleError::NotFound)?;
    let root = who.user.role == Role::Root;
    let refused = "Only root may make admins and roots, or change what an admin or root is or may do.";
    let planned: Result<PlannedChange, String> = match action.as_str() {
        "credit" => {
            let Some(credit) = Money::parse_decimal(form.field("amount")).ok().filter(|amount| *amount != Money::ZERO)
            else {
                return users(&state, who, error("The amount must be a non-zero decimal such as 5 or -1.50.")).await;
            };
            // The JSON API's credit path: ledger entry and audit in one.
            let balance = admin_billing::credit_account(&state, actor(who), target.id, credit).await?;
            let currency = &state.currency;
            let message =
                format!("Credited {} {currency} to {name}; balance {} {currency}.", amount(credit), amount(balance));
            return users(&state, who, notice(message)).await;
        }
        "role" => match Role::parse(form.field("role")) {
            None => Err("The role must be user, admin or root.".to_owned()),
            Some(role) if !root && (role != Role::User || is_admin(&target)) => Err(refused.to_owned()),
            Some(role) => Ok(PlannedChange {
                change: UserChange { role: Some(role), ..UserChange::default() },
                action: "user.role",
                details: json!({"role": role.as_str()}),
                notice: format!("{name} is now {role}."),
            }),
        },
        "group" => match GroupName::parse(form.field("group")) {
            Err(_) => Err("Choose a group.".to_owned()),
            Ok(group) => Ok(PlannedChange {
                notice: format!("{name} is now in group {group}."),
                details: json!({"group": group.as_str()}),
                change: UserChange { group: Some(group), ..UserChange::default() },
                action: "user.group",
            }),
        },
        "disable" | "enable" => {
            let disable = action == "disable";
            if disable && target.id == who.user.id {
                Err("You cannot disable your own account.".to_owned())
            } else if !root && is_admin(&target) {
                Err(refused.to_owned())
            } else {
                Ok(PlannedChange {
                    change: UserChange { disabled: Some(disable), ..UserChange::default() },
                    action: if disable { "user.disable" } else { "user.enable" },
                    details: json!({}),
                    notice: format!("{name} is {}.", if disable { "disabled" } else { "enabled again" }),
                })
            }
        }
        _ => return Err(ConsoleError::NotFound),
    };
    let flash = match planned {
        Err(message) => error(message),
        Ok(planned) => match state.store.update_user(target.id, &planned.change).await {
            Err(veil_store::StoreError::NotFound(_)) => error("No such group."),
            Err(other) => return Err(other.into()),
            Ok(false) => return Err(ConsoleError::NotFound),
            Ok(true) => {
                if planned.change.disabled == Some(true) {
                    state.store.delete_console_sessions(target.id, None).await?;
                }
                account::audit(
                    state.store.as_ref(),
                    actor(who),
                    planned.action,
                    Some(target.id),
                    Some(target.name.to_string()),
                    planned.details,
                )
                .await?;
                // The revision moved: cached keys of the account are looked up again.
                if let Err(error) = crate::refresh::refresh_once(&state).await {
                    tracing::warn!(error = %error, "could not refresh after an account change");
                }
                notice(planned.notice)
            }
        },
    };
    users(&state, who, flash).await
}

// ---------------------------------------------------------------------------------------
// Redemption codes

fn code_status(code: &veil_store::StoredRedemptionCode, now: Timestamp) -> &'static str {
    if code.redeemed_at.is_some() {
        "redeemed"
    } else if code.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

async fn codes(state: &AppState, who: &SignedIn, flash: Flash, created: Vec<String>) -> Result<Response, ConsoleError> {
    let now = Timestamp::now();
    let stored = state.store.list_redemption_codes(200).await?;
    let page = CodesPage {
        layout: layout(who, "Redemption codes", "admin-codes"),
        flash,
        currency: state.currency.clone(),
        created,
        codes: stored
            .iter()
            .map(|code| CodeRow {
                prefix: code.prefix.clone(),
                amount: amount(code.amount),
                status: code_status(code, now).to_owned(),
                created: super::accounts::short_time(code.created_at),
                expires: code.expires_at.map_or_else(|| "never".into(), super::accounts::short_time),
                redeemed_by: code.redeemed_by_name.as_ref().map(ToString::to_string).unwrap_or_default(),
            })
            .collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn codes_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    codes(&state, &who, Flash::default(), Vec::new()).await
}

/// `30d`, `12h` (from now) or an RFC 3339 instant, as `veil admin code create --expires`.
fn parse_expiry(raw: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(at) = Timestamp::parse_rfc3339(raw) {
        return Ok(at);
    }
    let lifetime = veil_config::parse_duration(raw).map_err(|_| "Expiry must be like 30d, 12h or an RFC 3339 time.")?;
    Ok(now.plus_millis(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)))
}

async fn create_codes(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    require_admin(who)?;
    let now = Timestamp::now();
    let parsed = (|| {
        let value = Money::parse_decimal(form.field("amount"))
            .ok()
            .filter(|value| *value > Money::ZERO)
            .ok_or("The amount must be a positive decimal such as 5 or 2.50.")?;
        let count = match form.field("count") {
            "" => 1,
            raw => {
                raw.parse::<u32>().ok().filter(|n| (1..=MAX_CODES).contains(n)).ok_or("Make from 1 to 1000 codes.")?
            }
        };
        let expires_at = match form.field("expires") {
            "" => None,
            raw => Some(parse_expiry(raw, now)?),
        };
        if expires_at.is_some_and(|at| at <= now) {
            return Err("The expiry must lie in the future.".to_owned());
        }
        Ok::<_, String>((value, count, expires_at))
    })()
    .map_err(|message: String| message);
    let (value, count, expires_at) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return codes(&state, who, error(message), Vec::new()).await,
    };
    let Some(hasher) = state.redemptions.hasher() else {
        tracing::error!("redemption codes cannot be made: the code-hashing key is unavailable");
        return Err(ConsoleError::Internal);
    };
    let made: Vec<RedemptionCode> = (0..count).map(|_| RedemptionCode::generate()).collect();
    let rows: Vec<NewRedemptionCode> = made
        .iter()
        .map(|code| NewRedemptionCode {
            hash: hasher.hash(code.expose()),
            prefix: code.prefix(),
            amount: value,
            created_at: now,
            expires_at,
        })
        .collect();
    state.store.create_redemption_codes(&rows).await?;
    // Audited before they are shown, as the CLI does: no unaudited credit is handed out.
    account::audit(
        state.store.as_ref(),
        actor(who),
        "code.create",
        None,
        None,
        json!({"count": count, "amount": value.to_decimal_string(), "expires_at": expires_at.map(Timestamp::to_rfc3339)}),
    )
    .await?;
    let message = format!("{count} code(s) worth {} {} each created.", amount(value), state.currency);
    codes(&state, who, notice(message), made.iter().map(|code| code.expose().to_owned()).collect()).await
}

// ---------------------------------------------------------------------------------------
// Audit log and settings

async fn audit_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let verification = state.store.verify_audit().await?;
    let entries = state.store.list_audit(None, AUDIT_ENTRIES).await?;
    // People are named, not numbered; an erased account keeps its id.
    let names: std::collections::HashMap<String, String> = state
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|summary| (summary.user.id.to_string(), summary.user.name.to_string()))
        .collect();
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned());
    let (chain_intact, chain_status) = match verification.first_broken {
        None => (true, format!("Chain intact: all {} entries verify.", verification.entries)),
        Some(seq) => (
            false,
            format!("Chain BROKEN at entry {seq} of {}: the log was changed outside Veil.", verification.entries),
        ),
    };
    let page = AuditPage {
        layout: layout(&who, "Audit log", "admin-audit"),
        chain_intact,
        chain_status,
        entries: entries
            .iter()
            .map(|entry| AuditRow {
                seq: entry.seq.to_string(),
                time: super::accounts::short_time(entry.time),
                actor: entry
                    .actor
                    .strip_prefix("user:")
                    .map_or_else(|| entry.actor.clone(), |id| format!("user {}", name_of(id))),
                action: entry.action.clone(),
                subject: match (&entry.subject_user, &entry.target) {
                    (Some(user), Some(target)) if *target == user.to_string() => name_of(target),
                    (Some(user), None) => name_of(&user.to_string()),
                    (_, Some(target)) => target.clone(),
                    (None, None) => String::new(),
                },
            })
            .collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn settings_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    require_admin(&who)?;
    let page = SettingsPage {
        layout: layout(&who, "Settings", "admin-settings"),
        settings: state
            .console
            .operator_settings
            .iter()
            .map(|(label, value)| Figure { label: label.clone(), value: value.clone() })
            .collect(),
    };
    Ok(render(&page)?.into_response())
}

/// What the settings page shows of the configuration: no secret, no database password.
pub fn settings_view(settings: &veil_config::Settings) -> Vec<(String, String)> {
    let set = |present: bool| if present { "set" } else { "not set" }.to_owned();
    let database = if settings.database_url.starts_with("sqlite:") { "SQLite" } else { "PostgreSQL" };
    let routing = &settings.routing;
    let lower = |debug: String| debug.to_lowercase();
    vec![
        ("Listen".into(), settings.listen.to_string()),
        ("TLS".into(), if settings.tls.is_some() { "on" } else { "off" }.into()),
        ("Database".into(), database.into()),
        ("Redis".into(), if settings.redis_url.is_some() { "on" } else { "off" }.into()),
        ("Call record retention".into(), format!("{} days", settings.log_retention_days)),
        ("IP logging".into(), lower(format!("{:?}", settings.ip_logging))),
        ("Generated media kept".into(), format!("{} s", settings.media_ttl.as_secs())),
        ("Billing currency".into(), settings.currency.clone()),
        ("Billing durability".into(), lower(format!("{:?}", settings.durability))),
        ("Console sign-up".into(), if settings.console.signup { "open" } else { "closed" }.into()),
        ("Sign-up group".into(), settings.console.signup_group.to_string()),
        (
            "Sign-up e-mail domains".into(),
            if settings.console.signup_domains.is_empty() {
                "any".into()
            } else {
                settings.console.signup_domains.join(", ")
            },
        ),
        (
            "OpenID Connect sign-in".into(),
            settings.console.oidc.as_ref().map_or("off".into(), |oidc| {
                let accounts = if oidc.create_accounts { "creates accounts" } else { "existing accounts only" };
                format!("{} (client {}, {accounts})", oidc.issuer, oidc.client_id)
            }),
        ),
        ("Routing: error-rate threshold".into(), format!("{}", routing.error_rate_threshold)),
        ("Routing: minimum calls".into(), routing.min_calls.to_string()),
        ("Routing: window".into(), format!("{} s", routing.window.as_secs())),
        (
            "Routing: cool-down".into(),
            format!("{} s (at most {} s)", routing.cooldown.as_secs(), routing.max_cooldown.as_secs()),
        ),
        ("Routing: attempts per call".into(), routing.max_attempts.to_string()),
        ("Notifications: webhook".into(), set(settings.notifications.webhook_url.is_some())),
        ("Notifications: webhook secret".into(), set(settings.notifications.webhook_secret.is_some())),
        (
            "Notifications: e-mail".into(),
            settings.notifications.smtp.as_ref().map_or("off".into(), |smtp| {
                let security = match smtp.security {
                    veil_config::SmtpSecurity::Plain => "plain",
                    veil_config::SmtpSecurity::Tls => "TLS",
                    veil_config::SmtpSecurity::StartTls => "STARTTLS",
                };
                format!("{}:{} ({security}), from {}", smtp.host, smtp.port, smtp.from)
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_at_least_two_decimals_and_stay_exact() {
        let shown = |text: &str| amount(Money::parse_decimal(text).unwrap_or(Money::ZERO));
        assert_eq!(shown("5"), "5.00");
        assert_eq!(shown("1.5"), "1.50");
        assert_eq!(shown("0.15"), "0.15");
        assert_eq!(shown("-2"), "-2.00");
        assert_eq!(shown("0.000000001"), "0.000000001");
    }
}

//! The signed-in user's pages: dashboard, keys, call records, bills, redeem and privacy.
//! Thin: each reads through the store (aggregates for charts, never raw records) or calls
//! the function the JSON API uses for the same action (`reports::calls_for`,
//! `redeem::redeem_for`, `me::capture_for`, `me::erase_account`, `account::export`).

use super::session::{self, SignedIn, SignedInForm};
use super::{ConsoleError, layout, message_page, render};
use crate::account;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use time::macros::format_description;
use time::{Date, Duration as Days, OffsetDateTime};
use veil_console::chart::{self, ChartKind, Series};
use veil_console::pages::{
    BillRow, BillsPage, DashboardPage, Figure, Flash, KeyRow, KeysPage, ModelPolicyRow, ModelUsageRow, PrivacyPage,
    RecordRow, RecordsPage, RedeemPage,
};
use veil_console::security::SESSION_COOKIE;
use veil_domain::money::NANOS_PER_UNIT;
use veil_domain::{ApiKey, KeyId, Money, Timestamp};
use veil_store::CallRecordFilter;

/// Days the dashboard's charts cover, today included.
const DASHBOARD_DAYS: i64 = 30;
/// Call records per console page.
const RECORDS_PER_PAGE: u32 = 50;

fn midnight(day: Date) -> Timestamp {
    Timestamp::from_unix_millis(day.midnight().assume_utc().unix_timestamp().saturating_mul(1_000))
}

fn units(amount: Money) -> f64 {
    amount.nanos() as f64 / NANOS_PER_UNIT as f64
}

fn money(amount: Money, currency: &str) -> String {
    format!("{} {currency}", amount.to_decimal_string())
}

fn limit_text(value: Option<u32>) -> String {
    value.map_or_else(|| "no limit".to_owned(), |v| v.to_string())
}

// ---------------------------------------------------------------------------------------
// Dashboard

pub async fn dashboard(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    let user = &who.user;
    let today = OffsetDateTime::now_utc().date();
    let first = today.checked_sub(Days::days(DASHBOARD_DAYS - 1)).unwrap_or(today);
    let end = today.next_day().map_or_else(Timestamp::now, midnight);
    // Daily aggregates per model: the charts never see a call record.
    let rows = state.store.usage_by_day(user.id, None, midnight(first), end).await?;
    let balance = state.store.balance(user.id).await?;

    let mut per_day: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut day = first;
    while day <= today {
        per_day.insert(day.to_string(), (0.0, 0));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    let mut by_model: BTreeMap<String, (u64, u64, u64, i64)> = BTreeMap::new();
    for row in &rows {
        if let Some(entry) = per_day.get_mut(&row.day) {
            entry.0 += units(row.cost);
            entry.1 += row.calls;
        }
        let model = row.model.as_ref().map_or_else(|| "(none)".to_owned(), ToString::to_string);
        let totals = by_model.entry(model).or_default();
        totals.0 += row.calls;
        totals.1 += row.input_tokens;
        totals.2 += row.output_tokens;
        totals.3 = totals.3.saturating_add(row.cost.nanos());
    }
    let label = |day: &str| day.get(5..).unwrap_or(day).to_owned();
    let currency = &state.currency;
    let spend = Series {
        title: format!("Spend per day ({currency})"),
        description: format!("Spend per UTC day over the last {DASHBOARD_DAYS} days, in {currency}."),
        points: per_day.iter().map(|(day, (cost, _))| (label(day), *cost)).collect(),
        decimals: 2,
    };
    let calls = Series {
        title: "Calls per day".into(),
        description: format!("Calls per UTC day over the last {DASHBOARD_DAYS} days."),
        points: per_day.iter().map(|(day, (_, calls))| (label(day), *calls as f64)).collect(),
        decimals: 0,
    };
    let total_calls: u64 = per_day.values().map(|(_, calls)| calls).sum();
    let total_cost = Money::from_nanos(by_model.values().fold(0_i64, |sum, t| sum.saturating_add(t.3)));
    let group = state.snapshot.load().group(&user.group);
    let page = DashboardPage {
        layout: layout(&who, "Dashboard", "dashboard"),
        figures: vec![
            Figure { label: "Balance".into(), value: money(balance, currency) },
            Figure { label: format!("Spend, {DASHBOARD_DAYS} days"), value: money(total_cost, currency) },
            Figure { label: format!("Calls, {DASHBOARD_DAYS} days"), value: total_calls.to_string() },
            Figure { label: "Group".into(), value: user.group.to_string() },
        ],
        limits: vec![
            Figure { label: "Requests per minute".into(), value: limit_text(group.limits.rpm) },
            Figure { label: "Tokens per minute".into(), value: limit_text(group.limits.tpm) },
            Figure { label: "Concurrent calls".into(), value: limit_text(group.limits.max_concurrent) },
            Figure {
                label: "Daily spend".into(),
                value: group.daily_spend.map_or_else(|| "no limit".into(), |m| money(m, currency)),
            },
            Figure {
                label: "Monthly spend".into(),
                value: group.monthly_spend.map_or_else(|| "no limit".into(), |m| money(m, currency)),
            },
        ],
        spend_chart: chart::svg(&spend, ChartKind::Bars, "spend-chart"),
        spend_table: chart::table(&spend),
        calls_chart: chart::svg(&calls, ChartKind::Line, "calls-chart"),
        calls_table: chart::table(&calls),
        by_model: by_model
            .into_iter()
            .map(|(model, (calls, input, output, cost))| ModelUsageRow {
                model,
                calls: calls.to_string(),
                input_tokens: input.to_string(),
                output_tokens: output.to_string(),
                cost: money(Money::from_nanos(cost), currency),
            })
            .collect(),
    };
    Ok(render(&page)?.into_response())
}

// ---------------------------------------------------------------------------------------
// Keys

fn key_row(key: &ApiKey, now: Timestamp, capture_until: Option<Timestamp>) -> KeyRow {
    let status = if key.revoked_at.is_some() {
        "revoked"
    } else if !key.is_usable_at(now) {
        "expired"
    } else if key.suspended_at.is_some() {
        "suspended"
    } else {
        "active"
    };
    KeyRow {
        id: key.id.to_string(),
        name: key.name.clone().unwrap_or_else(|| "(unnamed)".into()),
        prefix: key.prefix.clone(),
        status: status.into(),
        models: key.models.as_ref().map_or_else(
            || "all of the group's".into(),
            |m| m.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        ),
        expires: key.expires_at.map_or_else(|| "never".into(), super::accounts::short_time),
        limits: key_limits(key),
        training: if key.allow_training { "consented" } else { "no" }.into(),
        capture_until: capture_until
            .filter(|until| *until > now)
            .map_or_else(|| "off".into(), |until| format!("on until {}", super::accounts::short_time(until))),
        active: status == "active" || status == "suspended",
    }
}

/// A key's own restrictions in a few words.
fn key_limits(key: &ApiKey) -> String {
    let mut parts = Vec::new();
    if let Some(quota) = key.quota {
        parts.push(format!("quota {}", quota.to_decimal_string()));
    }
    if let Some(cap) = key.daily_spend {
        parts.push(format!("{} a day", cap.to_decimal_string()));
    }
    if let Some(cap) = key.monthly_spend {
        parts.push(format!("{} a month", cap.to_decimal_string()));
    }
    if let Some(rpm) = key.limits.rpm {
        parts.push(format!("{rpm} rpm"));
    }
    if let Some(tpm) = key.limits.tpm {
        parts.push(format!("{tpm} tpm"));
    }
    if let Some(concurrent) = key.limits.max_concurrent {
        parts.push(format!("{concurrent} at once"));
    }
    if !key.ip_allow.is_empty() {
        parts.push(format!("{} networks", key.ip_allow.len()));
    }
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

async fn key_rows(state: &AppState, who: &SignedIn) -> Result<Vec<KeyRow>, ConsoleError> {
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for key in state.store.list_keys(Some(who.user.id)).await? {
        let capture = state.store.key_capture(key.id).await?;
        rows.push(key_row(&key, now, capture));
    }
    Ok(rows)
}

async fn keys(
    state: &AppState,
    who: &SignedIn,
    flash: Flash,
    created_secret: Option<String>,
) -> Result<Response, ConsoleError> {
    let snapshot = state.snapshot.load();
    let models = snapshot.catalogue.models_for_group(&who.user.group).into_iter().map(ToString::to_string).collect();
    let page = KeysPage {
        layout: layout(who, "API keys", "keys"),
        flash,
        keys: key_rows(state, who).await?,
        created_secret,
        models,
    };
    Ok(render(&page)?.into_response())
}

pub async fn keys_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    keys(&state, &who, Flash::default(), None).await
}

pub async fn create_key(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let options = match super::keys::parse_options(&who.user, &form.form) {
        Ok(options) => options,
        Err(message) => return keys(&state, who, Flash { notice: None, error: Some(message) }, None).await,
    };
    let (key, secret) =
        account::create_key(state.store.as_ref(), &state.hasher, options, account::actor_user(who.user.id)).await?;
    let notice = format!("Key {} created.", key.name.as_deref().unwrap_or(&key.prefix));
    keys(&state, who, Flash { notice: Some(notice), error: None }, Some(secret.expose().to_owned())).await
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let id = KeyId::parse(&id).map_err(|_| ConsoleError::NotFound)?;
    let own = state.store.list_keys(Some(who.user.id)).await?.into_iter().any(|k| k.id == id && k.revoked_at.is_none());
    if !own {
        return Err(ConsoleError::NotFound);
    }
    state.store.revoke_key(id, Timestamp::now()).await?;
    account::audit(
        state.store.as_ref(),
        account::actor_user(who.user.id),
        "key.revoke",
        Some(who.user.id),
        Some(id.to_string()),
        serde_json::json!({}),
    )
    .await?;
    // The key stops working on this instance before the page comes back.
    if let Err(error) = crate::refresh::refresh_once(&state).await {
        tracing::warn!(error = %error, "could not refresh after a revocation");
    }
    keys(&state, who, Flash { notice: Some("The key was revoked.".into()), error: None }, None).await
}

// ---------------------------------------------------------------------------------------
// Call records

fn day_param(params: &HashMap<String, String>, name: &str) -> Option<Date> {
    let raw = params.get(name)?;
    Date::parse(raw, &format_description!("[year]-[month]-[day]")).ok().filter(|_| raw.len() == 10)
}

pub async fn records_page(
    State(state): State<Arc<AppState>>,
    who: SignedIn,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let user_keys = state.store.list_keys(Some(who.user.id)).await?;
    let key =
        params.get("key").and_then(|raw| KeyId::parse(raw).ok()).filter(|id| user_keys.iter().any(|k| k.id == *id));
    let model = params.get("model").and_then(|raw| veil_domain::ModelName::parse(raw).ok());
    let from = day_param(&params, "from");
    let to = day_param(&params, "to");
    let page: u32 = params.get("page").and_then(|p| p.parse().ok()).unwrap_or(0).min(100_000);
    let mut records = state
        .store
        .list_call_records(&CallRecordFilter {
            user_id: Some(who.user.id),
            key_id: key,
            model: model.clone(),
            from: from.map(midnight),
            to: to.and_then(Date::next_day).map(midnight),
            limit: RECORDS_PER_PAGE + 1,
            offset: page * RECORDS_PER_PAGE,
        })
        .await?;
    let has_more = records.len() > RECORDS_PER_PAGE as usize;
    records.truncate(RECORDS_PER_PAGE as usize);
    let key_name = |id: Option<KeyId>| {
        id.and_then(|id| user_keys.iter().find(|k| k.id == id))
            .map_or_else(String::new, |k| k.name.clone().unwrap_or_else(|| k.prefix.clone()))
    };
    let rows = records
        .iter()
        .map(|stored| {
            let r = &stored.record;
            RecordRow {
                time: super::accounts::short_time(r.time),
                request_id: r.request_id.to_string(),
                model: r.model.as_ref().map_or_else(String::new, ToString::to_string),
                key: key_name(r.key_id),
                status: r.status.to_string(),
                error: r.error_code.map_or_else(String::new, |c| c.as_str().to_owned()),
                input_tokens: r.usage.input_tokens.to_string(),
                output_tokens: r.usage.output_tokens.to_string(),
                cost: r.cost.to_decimal_string(),
                latency: format!("{} ms", r.latency_ms),
                policy: r.policy_class.map_or_else(String::new, |c| c.as_str().to_owned()),
            }
        })
        .collect();
    // Filters as a query string, for the pager and the export links.
    let mut filter_query = String::new();
    if let Some(key) = key {
        filter_query.push_str(&format!("&key={key}"));
    }
    if let Some(model) = &model {
        filter_query.push_str(&format!("&model={}", veil_console::oidc::form_encode(model.as_str())));
    }
    if let Some(from) = from {
        filter_query.push_str(&format!("&from={from}"));
    }
    if let Some(to) = to {
        filter_query.push_str(&format!("&to={to}"));
    }
    let page_query = |n: u32| format!("page={n}{filter_query}");
    let page = RecordsPage {
        layout: layout(&who, "Call records", "records"),
        rows,
        key: key.map_or_else(String::new, |k| k.to_string()),
        model: model.as_ref().map_or_else(String::new, ToString::to_string),
        models: state
            .snapshot
            .load()
            .catalogue
            .models_for_group(&who.user.group)
            .into_iter()
            .map(ToString::to_string)
            .collect(),
        from: from.map_or_else(String::new, |d| d.to_string()),
        to: to.map_or_else(String::new, |d| d.to_string()),
        keys: user_keys
            .iter()
            .map(|k| (k.id.to_string(), k.name.clone().unwrap_or_else(|| k.prefix.clone())))
            .collect(),
        previous: (page > 0).then(|| page_query(page - 1)),
        next: has_more.then(|| page_query(page + 1)),
        export_query: filter_query.clone(),
    };
    Ok(render(&page)?.into_response())
}

/// `GET /console/records/export?format=csv|json&…`: the same export as `GET /api/usage/calls`.
pub async fn records_export(
    State(state): State<Arc<AppState>>,
    who: SignedIn,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut params: HashMap<String, String> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    // A whole export by default, as the API's CSV; the page size caps it.
    params.entry("limit".into()).or_insert_with(|| "10000".into());
    // With no `from`, the API covers 30 days; the console's export covers everything kept.
    params.entry("from".into()).or_insert_with(|| "1970-01-01".into());
    let mut response = match crate::reports::calls_for(&state, &who.user, &params).await {
        Ok(response) => response,
        Err(error) => return error.into_response(),
    };
    if params.get("format").map(String::as_str) != Some("csv") {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"veil-calls.json\""));
    }
    response
}

// ---------------------------------------------------------------------------------------
// Bills and redeem

pub async fn bills_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    let bills = state.store.monthly_bills(who.user.id).await?;
    let page = BillsPage {
        layout: layout(&who, "Bills", "bills"),
        currency: state.currency.clone(),
        bills: bills
            .iter()
            .map(|b| BillRow {
                month: b.month.clone(),
                calls: b.calls.to_string(),
                charged: b.charged.to_decimal_string(),
                credited: b.credited.to_decimal_string(),
            })
            .collect(),
    };
    Ok(render(&page)?.into_response())
}

async fn redeem_view(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    flash: Flash,
) -> Result<Response, ConsoleError> {
    let balance = money(state.store.balance(who.user.id).await?, &state.currency);
    let page = RedeemPage { layout: layout(who, "Redeem a code", "redeem"), flash, balance };
    Ok((status, render(&page)?).into_response())
}

pub async fn redeem_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    redeem_view(&state, &who, StatusCode::OK, Flash::default()).await
}

pub async fn redeem(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    match crate::redeem::redeem_for(&state, form.who.user.id, form.field("code")).await {
        Ok(outcome) => {
            let credited = outcome.get("credited").and_then(|v| v.as_str()).unwrap_or_default();
            let notice = format!("{credited} {} was added to your balance.", state.currency);
            redeem_view(&state, &form.who, StatusCode::OK, Flash { notice: Some(notice), error: None }).await
        }
        Err(error) => {
            redeem_view(&state, &form.who, error.status, Flash { notice: None, error: Some(error.message) }).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// Privacy: policies, capture, export, erasure

async fn privacy(state: &AppState, who: &SignedIn, flash: Flash) -> Result<Response, ConsoleError> {
    let snapshot = state.snapshot.load();
    let group = snapshot.group(&who.user.group);
    let models = snapshot
        .catalogue
        .models_for_group(&who.user.group)
        .into_iter()
        .map(|model| {
            let channels: Vec<_> =
                snapshot.catalogue.channels().map(|c| &c.channel).filter(|c| c.serves(model)).collect();
            let join = |values: Vec<String>| {
                let mut values = values;
                values.sort();
                values.dedup();
                values.join(", ")
            };
            ModelPolicyRow {
                model: model.to_string(),
                class: join(channels.iter().map(|c| c.policy.class().as_str().to_owned()).collect()),
                retention: join(channels.iter().map(|c| c.policy.retention.to_string()).collect()),
                training: join(
                    channels.iter().map(|c| if c.policy.training { "yes" } else { "no" }.to_owned()).collect(),
                ),
                region: join(
                    channels.iter().map(|c| c.policy.region.clone().unwrap_or_else(|| "any".into())).collect(),
                ),
            }
        })
        .collect();
    let privacy = &group.privacy;
    let page = PrivacyPage {
        layout: layout(who, "Privacy", "privacy"),
        flash,
        group: group.name.to_string(),
        firewall: privacy.firewall.as_str().to_owned(),
        max_retention: privacy.max_retention_days.map_or_else(|| "any".into(), |d| format!("{d} days")),
        regions: privacy.regions.as_ref().map_or_else(|| "any".into(), |r| r.join(", ")),
        allow_training: if privacy.allow_training { "allowed with a key's consent" } else { "never" }.into(),
        models,
        keys: key_rows(state, who).await?,
    };
    Ok(render(&page)?.into_response())
}

pub async fn privacy_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    privacy(&state, &who, Flash::default()).await
}

pub async fn set_capture(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let hours = match form.field("action") {
        "off" => None,
        _ => match form.field("hours").parse::<u64>() {
            Ok(hours @ 1..=24) => Some(hours),
            _ => {
                let flash = Flash { notice: None, error: Some("Hours must be a whole number from 1 to 24.".into()) };
                return privacy(&state, &form.who, flash).await;
            }
        },
    };
    let flash = match crate::me::capture_for(&state, form.who.user.id, &id, hours).await {
        Ok((_, Some(until))) => Flash {
            notice: Some(format!("Debug capture is on until {}.", super::accounts::short_time(until))),
            error: None,
        },
        Ok((_, None)) => Flash { notice: Some("Debug capture is off.".into()), error: None },
        Err(error) => Flash { notice: None, error: Some(error.message) },
    };
    privacy(&state, &form.who, flash).await
}

/// `GET /console/privacy/export`: everything Veil holds about the user, as a JSON download.
pub async fn export(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    let data = account::export(state.store.as_ref(), &who.user, account::actor_user(who.user.id)).await?;
    let body = serde_json::to_vec_pretty(&data).map_err(|_| ConsoleError::Internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"veil-export.json\""),
        ],
        body,
    )
        .into_response())
}

pub async fn delete_account(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let password = form.form.get("password").map_or("", String::as_str).to_owned();
    let hash = who.user.password_hash.clone().unwrap_or_default();
    let matches =
        tokio::task::spawn_blocking(move || veil_console::password::verify(&password, &hash)).await.unwrap_or(false);
    if !matches || form.field("confirm") != "DELETE" {
        let flash = Flash { notice: None, error: Some("Type DELETE and your password to delete your account.".into()) };
        return privacy(&state, who, flash).await;
    }
    crate::me::erase_account(&state, &who.user).await.map_err(|_| ConsoleError::Internal)?;
    let clear = session::set_cookie(SESSION_COOKIE, "", None, session::secure_cookies(&state, &meta));
    let page = message_page(
        "Account deleted",
        "Your account, keys, sessions and debug captures are gone. Call records remain only as anonymous totals.",
        None,
    );
    Ok(session::with_cookies(page.into_response(), &[clear]))
}

//! Usage reports, bills and the OpenAI legacy billing endpoints: what an account can read
//! about its own spending, as JSON or as a CSV export.
//!
//! - `GET /api/usage` — usage per UTC day and model over a day range, optionally for one
//!   key; totals include the day aggregates the retention purge leaves (DESIGN §3.6).
//! - `GET /api/usage/calls` — the account's own call records (metadata only, the field
//!   names of DESIGN §3.5), paged.
//! - `GET /api/bills` — one bill per calendar month, from the ledger.
//! - `GET /v1/dashboard/billing/subscription` and `/usage` (also without `/v1`) — the
//!   balance endpoints chat front-ends read, in OpenAI's legacy wire format.
//!
//! Promises: a caller reads only their own account; an admin or root may name another
//! with `?user=NAME`, and that read goes to the audit log. A `key` filter must name one of
//! the reported account's keys. Money is an exact decimal string everywhere except on the
//! legacy endpoints, whose wire format has numbers. These are store reads off the request
//! path: nothing here touches the relay's caches or limits.

use crate::account;
use crate::auth::{AccountCaller, Caller};
use crate::error::ApiError;
use crate::openai::handlers::Authenticated;
use crate::state::AppState;
use crate::views::record_json;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime};
use veil_domain::money::NANOS_PER_UNIT;
use veil_domain::{ErrorCode, KeyId, Money, Role, Timestamp, User, UserName};
use veil_store::{CallRecordFilter, MonthlyBill, StoreError, UsageDay};

/// Days a usage report covers when the caller names no start.
const DEFAULT_DAYS: i64 = 30;
/// Call records per page: by default for JSON, and at most (also a CSV export's default,
/// so an export is whole unless it is very large; then `veil-next-offset` says so).
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 10_000;

/// The columns of a usage report, in JSON and CSV alike.
const USAGE_COLUMNS: &[&str] = &["day", "model", "calls", "input_tokens", "cached_tokens", "output_tokens", "cost"];
/// The columns of a call-record export: DESIGN §2's `logs --json` fields, in its order.
const RECORD_COLUMNS: &[&str] = &[
    "request_id",
    "time",
    "user",
    "key_id",
    "group",
    "model",
    "upstream_model",
    "channel",
    "path",
    "stream",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost",
    "multiplier",
    "status",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "client_ip",
    "user_agent",
    "redactions",
    "rule_id",
    "policy_class",
    "estimated",
    "channels_tried",
];

pub(crate) type Params = HashMap<String, String>;
type QueryParams = Result<Query<Params>, QueryRejection>;

// ---------------------------------------------------------------------------------------
// Handlers

/// `GET /api/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&key=KEY_ID&user=NAME&format=json|csv`
pub async fn usage(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let format = Format::from_params(&params)?;
    let days = DayRange::from_params(&params)?;
    let user = subject(&state, &principal, &params).await?;
    let key = key_filter(&state, &user, &params).await?;
    let rows = state.store.usage_by_day(user.id, key, days.start(), days.end()).await.map_err(internal)?;
    audit_read(&state, &principal, &user, "usage").await?;
    let data: Vec<Value> = rows.iter().map(usage_json).collect();
    Ok(match format {
        Format::Json => Json(json!({
            "object": "usage",
            "user": user.name,
            "key_id": key,
            "currency": state.currency,
            "from": days.from.to_string(),
            "to": days.to.to_string(),
            "data": data,
            "total_cost": total_cost(&rows).to_decimal_string(),
        }))
        .into_response(),
        Format::Csv => csv(&format!("veil-usage-{}-{}.csv", days.from, days.to), USAGE_COLUMNS, &data, None),
    })
}

/// `GET /api/usage/calls?from=…&to=…&key=…&model=…&user=…&limit=N&offset=N&format=json|csv`:
/// the account's call records, newest first.
pub async fn calls(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let user = subject(&state, &principal, &params).await?;
    let page = calls_for(&state, &user, &params).await?;
    audit_read(&state, &principal, &user, "calls").await?;
    Ok(page)
}

/// The body of `GET /api/usage/calls` for an account already chosen (and allowed): shared
/// with the console's call-record export, so both answer alike. `params` are the query's.
pub(crate) async fn calls_for(state: &AppState, user: &User, params: &Params) -> Result<Response, ApiError> {
    let format = Format::from_params(params)?;
    let days = DayRange::from_params(params)?;
    let default_limit = match format {
        Format::Json => DEFAULT_PAGE,
        Format::Csv => MAX_PAGE,
    };
    let limit = number(params, "limit", default_limit)?;
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!("`limit` must be from 1 to {MAX_PAGE}.")).with_param("limit"));
    }
    let offset = number(params, "offset", 0)?;
    let key = key_filter(state, user, params).await?;
    // One more than asked for tells whether another page follows.
    let model = match params.get("model").filter(|raw| !raw.is_empty()) {
        None => None,
        Some(raw) => Some(veil_domain::ModelName::parse(raw).map_err(|_| {
            ApiError::invalid_request("`model` must be a model name as the model list shows it.").with_param("model")
        })?),
    };
    let filter = CallRecordFilter {
        user_id: Some(user.id),
        key_id: key,
        model,
        from: Some(days.start()),
        to: Some(days.end()),
        limit: limit + 1,
        offset,
    };
    let mut records = state.store.list_call_records(&filter).await.map_err(internal)?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_offset = has_more.then(|| offset.saturating_add(limit));
    let data: Vec<Value> = records.iter().map(record_json).collect();
    Ok(match format {
        Format::Json => Json(json!({
            "object": "list",
            "user": user.name,
            "currency": state.currency,
            "from": days.from.to_string(),
            "to": days.to.to_string(),
            "data": data,
            "has_more": has_more,
            "next_offset": next_offset,
        }))
        .into_response(),
        Format::Csv => csv(&format!("veil-calls-{}-{}.csv", days.from, days.to), RECORD_COLUMNS, &data, next_offset),
    })
}

/// `GET /api/bills?user=NAME`: one bill per calendar month (UTC), newest first.
pub async fn bills(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let user = subject(&state, &principal, &params).await?;
    let bills = state.store.monthly_bills(user.id).await.map_err(internal)?;
    audit_read(&state, &principal, &user, "bills").await?;
    Ok(Json(json!({
        "object": "list",
        "user": user.name,
        "currency": state.currency,
        "data": bills.iter().map(bill_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/dashboard/billing/subscription`. Front-ends show `hard_limit_usd` minus
/// `total_usage / 100` as what is left, so the limit is what the caller can still spend
/// plus what they spent: a key's quota, or else the account's balance plus every charge
/// it ever paid (which is everything ever credited to it).
pub async fn legacy_subscription(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let limit = match principal.key.quota {
        Some(quota) => quota,
        None => {
            // Balance and charges since the beginning of time, in one snapshot: a
            // settlement landing between two reads would move the limit by its charge.
            let since = all_time().0;
            let totals = state.store.account_totals(principal.user.id, since, since).await.map_err(internal)?;
            Money::from_nanos(totals.balance.nanos().saturating_add(totals.spent_since_day.nanos()))
        }
    };
    let limit = units(limit);
    let access_until = principal.key.expires_at.map_or(0, |at| at.unix_millis().div_euclid(1_000));
    Ok(Json(json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "soft_limit_usd": limit,
        "hard_limit_usd": limit,
        "system_hard_limit_usd": limit,
        "access_until": access_until,
    })))
}

/// `GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD`: charges
/// from the start of `start_date` up to the start of `end_date` (exclusive, as OpenAI's
/// was: front-ends ask up to tomorrow to include today), in hundredths of the currency.
/// Either date may be left out (no bound). A key with a quota reports its own charges,
/// matching the subscription's quota; any other key reports the account's.
pub async fn legacy_usage(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    query: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let params = params(query)?;
    let start = optional_day(&params, "start_date")?;
    let end = optional_day(&params, "end_date")?;
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(ApiError::invalid_request("`start_date` must not be after `end_date`.").with_param("start_date"));
    }
    let from = start.map_or(all_time().0, midnight);
    let to = end.map_or(all_time().1, midnight);
    let key = principal.key.quota.map(|_| principal.key.id);
    let spent = state.store.charges_between(principal.user.id, key, from, to).await.map_err(internal)?;
    Ok(Json(json!({"object": "list", "total_usage": cents(spent)})))
}

// ---------------------------------------------------------------------------------------
// Parameters

fn params(query: QueryParams) -> Result<Params, ApiError> {
    query.map(|Query(params)| params).map_err(|_| ApiError::invalid_request("The query string could not be read."))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl Format {
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        match params.get("format").map(String::as_str) {
            None | Some("json") => Ok(Self::Json),
            Some("csv") => Ok(Self::Csv),
            Some(_) => Err(ApiError::invalid_request("`format` must be json or csv.").with_param("format")),
        }
    }
}

/// UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayRange {
    from: Date,
    to: Date,
}

impl DayRange {
    /// `to` defaults to today (UTC) and `from` to 30 days before `to`.
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        let to = optional_day(params, "to")?.unwrap_or_else(|| OffsetDateTime::now_utc().date());
        let from = match optional_day(params, "from")? {
            Some(from) => from,
            None => to.checked_sub(Duration::days(DEFAULT_DAYS)).unwrap_or(Date::MIN),
        };
        if from > to {
            return Err(ApiError::invalid_request("`from` must not be after `to`.").with_param("from"));
        }
        Ok(Self { from, to })
    }

    fn start(self) -> Timestamp {
        midnight(self.from)
    }

    /// The midnight after the last day.
    fn end(self) -> Timestamp {
        self.to.next_day().map_or(all_time().1, midnight)
    }
}

fn optional_day(params: &Params, name: &'static str) -> Result<Option<Date>, ApiError> {
    let Some(raw) = params.get(name) else { return Ok(None) };
    let format = format_description!("[year]-[month]-[day]");
    // The length check refuses signed and five-digit years the parser would take.
    Date::parse(raw, &format).ok().filter(|_| raw.len() == 10).map(Some).ok_or_else(|| {
        ApiError::invalid_request(format!("`{name}` must be a date such as 2026-11-23.")).with_param(name)
    })
}

fn number(params: &Params, name: &'static str, default: u32) -> Result<u32, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|_| ApiError::invalid_request(format!("`{name}` must be a whole number.")).with_param(name)),
    }
}

fn midnight(day: Date) -> Timestamp {
    Timestamp::from_unix_millis(day.midnight().assume_utc().unix_timestamp().saturating_mul(1_000))
}

fn all_time() -> (Timestamp, Timestamp) {
    (Timestamp::from_unix_millis(i64::MIN), Timestamp::from_unix_millis(i64::MAX))
}

/// The account reported on: the caller's own, or with `?user=NAME` another one, which
/// only an admin or root may read.
async fn subject(state: &AppState, principal: &Caller, params: &Params) -> Result<User, ApiError> {
    let Some(name) = params.get("user") else { return Ok(principal.user.clone()) };
    if name == principal.user.name.as_str() {
        return Ok(principal.user.clone());
    }
    if !matches!(principal.user.role, Role::Admin | Role::Root) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            "Only an admin may read another account's usage.",
        )
        .with_param("user"));
    }
    let no_user = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such user.").with_param("user");
    let name = UserName::parse(name).map_err(|_| no_user())?;
    state.store.user_by_name(&name).await.map_err(internal)?.ok_or_else(no_user)
}

/// The `key` filter: one of the reported account's keys, revoked ones included (their
/// usage is still theirs).
async fn key_filter(state: &AppState, user: &User, params: &Params) -> Result<Option<KeyId>, ApiError> {
    let Some(raw) = params.get("key") else { return Ok(None) };
    let id = KeyId::parse(raw)
        .map_err(|_| ApiError::invalid_request("`key` must be a key id as the key list shows it.").with_param("key"))?;
    let keys = state.store.list_keys(Some(user.id)).await.map_err(internal)?;
    if keys.iter().any(|k| k.id == id) {
        Ok(Some(id))
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such key of this account.").with_param("key"))
    }
}

/// An admin reading someone else's usage is an access to their data: audited, like an
/// export. Reading one's own is not.
async fn audit_read(state: &AppState, principal: &Caller, user: &User, report: &str) -> Result<(), ApiError> {
    if user.id == principal.user.id {
        return Ok(());
    }
    account::audit(
        state.store.as_ref(),
        account::actor_user(principal.user.id),
        "usage.read",
        Some(user.id),
        Some(user.id.to_string()),
        json!({"report": report}),
    )
    .await
    .map(|_| ())
    .map_err(internal)
}

fn internal(error: StoreError) -> ApiError {
    tracing::error!(error = %error, "report failed");
    ApiError::internal()
}

// ---------------------------------------------------------------------------------------
// Views

fn usage_json(row: &UsageDay) -> Value {
    json!({
        "day": row.day,
        "model": row.model,
        "calls": row.calls,
        "input_tokens": row.input_tokens,
        "cached_tokens": row.cached_tokens,
        "output_tokens": row.output_tokens,
        "cost": row.cost.to_decimal_string(),
    })
}

fn bill_json(bill: &MonthlyBill) -> Value {
    json!({
        "month": bill.month,
        "charged": bill.charged.to_decimal_string(),
        "credited": bill.credited.to_decimal_string(),
        "debited": bill.debited.to_decimal_string(),
        "calls": bill.calls,
    })
}

fn total_cost(rows: &[UsageDay]) -> Money {
    Money::from_nanos(rows.iter().fold(0_i64, |sum, row| sum.saturating_add(row.cost.nanos())))
}

/// Currency units as a JSON number, for the legacy wire format only.
fn units(amount: Money) -> f64 {
    amount.nanos() as f64 / NANOS_PER_UNIT as f64
}

/// Hundredths of the currency unit as a JSON number (OpenAI's `total_usage` is in cents).
fn cents(amount: Money) -> f64 {
    amount.nanos() as f64 / (NANOS_PER_UNIT / 100) as f64
}

/// A CSV attachment (RFC 4180: CRLF line ends, fields quoted where needed) with a header
/// row of `columns` and one line per JSON object, so JSON and CSV never disagree on a
/// field. `next_offset` says that the export was cut at its page size.
fn csv(filename: &str, columns: &[&str], objects: &[Value], next_offset: Option<u32>) -> Response {
    let mut body = String::new();
    push_line(&mut body, columns.iter().map(|c| (*c).to_owned()));
    for object in objects {
        push_line(&mut body, columns.iter().map(|c| csv_text(object.get(*c).unwrap_or(&Value::Null))));
    }
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"))], body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(next) = next_offset
        && let Ok(value) = HeaderValue::from_str(&next.to_string())
    {
        headers.insert("veil-next-offset", value);
    }
    response
}

fn push_line(body: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            body.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            body.push('"');
            body.push_str(&field.replace('"', "\"\""));
            body.push('"');
        } else {
            body.push_str(&field);
        }
    }
    body.push_str("\r\n");
}

/// One CSV field. Lists are joined with `;`. Text that a spreadsheet would run as a
/// formula (a client-sent User-Agent such as `=HYPERLINK(…)`) is defused with a leading
/// `'`; numbers, negative ones included, are left as they are.
fn csv_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => defuse(text),
        Value::Array(items) => defuse(&items.iter().map(csv_text).collect::<Vec<_>>().join(";")),
        Value::Object(_) => defuse(&value.to_string()),
    }
}

fn defuse(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && Money::parse_decimal(text).is_err() { format!("'{text}") } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn day_ranges_include_both_ends() {
        let range = DayRange::from_params(&params(&[("from", "2026-11-01"), ("to", "2026-11-30")])).unwrap();
        assert_eq!(range.start(), Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap());
        assert_eq!(range.end(), Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap());
        let default = DayRange::from_params(&params(&[("to", "2026-03-01")])).unwrap();
        assert_eq!(default.from.to_string(), "2026-01-30");
        for bad in ["2026-13-01", "2026-11-31", "26-11-01", "+2026-11-01", "2026-11-1", "today", ""] {
            assert!(DayRange::from_params(&params(&[("from", bad)])).is_err(), "{bad}");
        }
        assert!(DayRange::from_params(&params(&[("from", "2026-11-02"), ("to", "2026-11-01")])).is_err());
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let mut line = String::new();
        push_line(&mut line, ["a,b", "say \"hi\"", "plain", ""].into_iter().map(str::to_owned));
        assert_eq!(line, "\"a,b\",\"say \"\"hi\"\"\",plain,\r\n");
        assert_eq!(csv_text(&json!("=HYPERLINK(\"x\")")), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_text(&json!("-0.5")), "-0.5");
        assert_eq!(csv_text(&json!(null)), "");
        assert_eq!(csv_text(&json!(["a", "b"])), "a;b");
        assert_eq!(csv_text(&json!(12)), "12");
    }

    #[test]
    fn legacy_numbers_are_units_and_cents() {
        assert_eq!(units(Money::parse_decimal("12.5").unwrap()), 12.5);
        assert_eq!(cents(Money::parse_decimal("1.2345").unwrap()), 123.45);
        assert_eq!(cents(Money::ZERO), 0.0);
    }
}

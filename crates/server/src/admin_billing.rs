//! The management API for money, admins only: model prices (`GET /api/models`,
//! `PUT /api/models/{name}`) and account credit (`POST /api/users/{name}/credit`).
//! Every change is audited and reaches the running server's caches before the answer.
//!
//! A model declared in the config file is rewritten from it at the next start; prices set
//! here are for models the file does not declare (or until the file is changed).

use crate::account;
use crate::admin_api::{internal, require_admin};
use crate::error::ApiError;
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::refresh;
use crate::state::AppState;
use crate::transparency::pricing_json;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use veil_domain::{ErrorCode, Model, ModelName, Money, Price, Pricing, UserName};

/// `GET /api/models`: every model with its price, as routing bills it.
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let models = state.store.list_models().await.map_err(internal)?;
    let data: Vec<Value> = models.iter().map(|model| model_json(model, &state.currency)).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `PUT /api/models/{name}` with `{"price": {"input": "0.15", …}}` or `{"free": true}`,
/// and optionally `"max_output_tokens"`.
pub async fn set_price(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let name = ModelName::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("No such model: {e}.")))?;
    let pricing = match (body.get("price"), body.get("free")) {
        (Some(Value::Object(price)), None | Some(Value::Bool(false))) => Pricing::Priced(parse_price(price)?),
        (None, Some(Value::Bool(true))) => Pricing::Free,
        _ => {
            return Err(ApiError::invalid_request(
                "Send either `price` (an object of decimal amounts per million tokens, per image, per second) or `\"free\": true`.",
            ));
        }
    };
    let max_output_tokens = match body.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(value) => {
            Some(value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid_request("`max_output_tokens` must be a positive integer.")
                    .with_param("max_output_tokens")
            })?)
        }
    };
    let model = Model { name, pricing, max_output_tokens, managed: false };
    save_price(&state, account::actor_user(principal.user.id), &model).await.map_err(internal)?;
    Ok(Json(model_json(&model, &state.currency)))
}

/// Stores a model's price, audits it as `actor` and applies it here before returning: the
/// write path of `PUT /api/models/{name}`, shared with the console.
pub(crate) async fn save_price(state: &AppState, actor: String, model: &Model) -> Result<(), veil_store::StoreError> {
    state.store.upsert_model(model).await?;
    let details =
        json!({"price": pricing_json(&model.pricing, &state.currency), "max_output_tokens": model.max_output_tokens});
    account::audit(state.store.as_ref(), actor, "model.price", None, Some(model.name.to_string()), details).await?;
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a price change");
    }
    Ok(())
}

/// `POST /api/users/{name}/credit` with `{"amount": "1.5"}` (negative to debit).
pub async fn credit_user(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    require_admin(&principal)?;
    let no_user = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No such user.");
    let name = UserName::parse(&name).map_err(|_| no_user())?;
    let amount = body
        .get("amount")
        .and_then(decimal_text)
        .and_then(|text| Money::parse_decimal(&text).ok())
        .filter(|amount| *amount != Money::ZERO)
        .ok_or_else(|| {
            ApiError::invalid_request("`amount` must be a non-zero decimal such as \"1.5\".").with_param("amount")
        })?;
    let user = state.store.user_by_name(&name).await.map_err(internal)?.ok_or_else(no_user)?;
    let balance =
        credit_account(&state, account::actor_user(principal.user.id), user.id, amount).await.map_err(internal)?;
    Ok(Json(json!({
        "name": user.name,
        "credited": amount.to_decimal_string(),
        "balance": balance.to_decimal_string(),
    })))
}

/// Credits (or, negative, debits) an account as `actor` (audited by `account::credit`),
/// applies it here and answers the new balance: shared by the JSON API and the console.
pub(crate) async fn credit_account(
    state: &AppState,
    actor: String,
    user: veil_domain::UserId,
    amount: Money,
) -> Result<Money, veil_store::StoreError> {
    account::credit(state.store.as_ref(), user, amount, actor).await?;
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a credit");
    }
    state.store.balance(user).await
}

fn model_json(model: &Model, currency: &str) -> Value {
    json!({
        "name": model.name,
        "price": pricing_json(&model.pricing, currency),
        "max_output_tokens": model.max_output_tokens,
        "managed": model.managed,
    })
}

/// Amounts come as decimal strings (exact) or JSON numbers (read by their digits, never
/// through a float).
fn decimal_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

pub(crate) fn parse_price(fields: &Map<String, Value>) -> Result<Price, ApiError> {
    const FIELDS: [&str; 6] = ["input", "cached_input", "cache_write", "output", "per_image", "per_second"];
    if let Some(unknown) = fields.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ApiError::invalid_request(format!(
            "Unknown price field `{unknown}`; known: {}.",
            FIELDS.join(", ")
        )));
    }
    let amount = |field: &str| -> Result<Option<Money>, ApiError> {
        fields
            .get(field)
            .map(|value| {
                decimal_text(value)
                    .and_then(|text| Money::parse_decimal(&text).ok())
                    .filter(|money| !money.is_negative())
                    .ok_or_else(|| {
                        ApiError::invalid_request(format!(
                            "`price.{field}` must be a non-negative decimal such as \"0.15\"."
                        ))
                    })
            })
            .transpose()
    };
    let input = amount("input")?.unwrap_or(Money::ZERO);
    Ok(Price {
        input,
        cached_input: amount("cached_input")?.unwrap_or(input),
        cache_write: amount("cache_write")?.unwrap_or(input),
        output: amount("output")?.unwrap_or(Money::ZERO),
        per_image: amount("per_image")?.unwrap_or(Money::ZERO),
        per_second: amount("per_second")?.unwrap_or(Money::ZERO),
    })
}

//! The reserve phase of a call: its price, its worst case, the rate limits it counts
//! against, and the hold on its owner's money — all before anything leaves for an
//! upstream. A refusal here costs the client nothing and the upstream never sees the call.
//!
//! What is reserved travels with the call (see `call.rs`), which settles it exactly once
//! on every ending.

use crate::error::ApiError;
use crate::state::{AppState, Principal};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::time::Duration;
use veil_billing::{Hold, HoldRequest, Refusal, SpendCaps};
use veil_domain::{ErrorCode, Group, Model, Multiplier, Price, Pricing, Timestamp};
use veil_limits::{Admission, Demand, Limits, Scope};
use veil_providers::Endpoint;

/// What a call reserved; settled by the call when it ends.
pub struct Reserved {
    pub price: Price,
    pub multiplier: Multiplier,
    /// The local count of the prompt the hold was computed from; bills a call that ended
    /// before the upstream reported usage.
    pub prompt_tokens: u64,
    pub hold: Hold,
    pub admission: Admission,
}

/// The price the call is billed at, or why it may not be made.
pub fn price_of(model: &Model) -> Result<Price, ApiError> {
    match model.pricing {
        Pricing::Unpriced => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::ModelNotPriced,
            format!(
                "The model `{}` has no price yet; the operator must price it or mark it free before it can be used.",
                model.name
            ),
        )
        .with_param("model")),
        pricing => Ok(pricing.billable().unwrap_or_default()),
    }
}

/// Reserves rate-limit room and money for one call.
pub async fn reserve(
    state: &AppState,
    principal: &Principal,
    group: &Group,
    model: &Model,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    request_id: &str,
) -> Result<Reserved, ApiError> {
    let price = price_of(model)?;
    let key_limits = Limits::from(&principal.key.limits);
    let user_limits = Limits::from(&group.limits);
    let billed = price != Price::default() && group.multiplier.millionths() > 0;
    let token_limited = key_limits.tpm.is_some() || user_limits.tpm.is_some();
    // Counting the prompt is the one costly step here; skip it when nothing needs it.
    let prompt_tokens = if billed || token_limited { crate::openai::usage::estimate_prompt(body) } else { 0 };
    let max_output = max_output_tokens(endpoint, body, model);

    let amount = if billed && endpoint.is_media() {
        // Images and audio are priced per image and per second on top of tokens.
        let (images, media_ms) = crate::openai::media::hold_media(endpoint, body);
        let worst = veil_domain::TokenUsage {
            input_tokens: prompt_tokens,
            output_tokens: max_output,
            images,
            media_ms,
            ..veil_domain::TokenUsage::default()
        };
        price.charge(&worst, group.multiplier)
    } else if billed {
        veil_billing::worst_case(&price, group.multiplier, prompt_tokens, max_output)
    } else {
        veil_domain::Money::ZERO
    };
    let tokens = prompt_tokens.saturating_add(max_output);
    let (admission, hold) = admit_and_hold(state, principal, group, tokens, amount, request_id).await?;
    Ok(Reserved { price, multiplier: group.multiplier, prompt_tokens, hold, admission })
}

/// Takes rate-limit room for a call of `tokens` for the key and its owner, then holds
/// `amount` against the owner's balance, the key's quota and both spend caps. Either
/// refusal comes back as the client's error; room taken is given back on refusal (the
/// admission is dropped).
pub async fn admit_and_hold(
    state: &AppState,
    principal: &Principal,
    group: &Group,
    tokens: u64,
    amount: veil_domain::Money,
    request_id: &str,
) -> Result<(veil_limits::Admission, veil_billing::Hold), ApiError> {
    let demands = [
        Demand { scope: Scope::Key(principal.key.id), limits: Limits::from(&principal.key.limits) },
        Demand { scope: Scope::User(principal.user.id), limits: Limits::from(&group.limits) },
    ];
    let admission = state.limiter.admit(&demands, tokens).await.map_err(|refusal| rate_limited(&refusal))?;
    let now = Timestamp::now();
    let hold = state
        .billing
        .hold(HoldRequest {
            user: principal.user.id,
            key: principal.key.id,
            key_quota: principal.key.quota,
            caps: SpendCaps { daily: group.daily_spend, monthly: group.monthly_spend },
            key_caps: SpendCaps { daily: principal.key.daily_spend, monthly: principal.key.monthly_spend },
            amount,
            request_id: request_id.to_owned(),
            now,
        })
        .await
        .map_err(|refusal| unaffordable(&refusal, now))?;
    Ok((admission, hold))
}

/// The most output one call can produce: what the request asks for (times `n`
/// choices), else the model's limit, else a default. Embeddings produce none.
fn max_output_tokens(endpoint: Endpoint, body: &Map<String, Value>, model: &Model) -> u64 {
    if endpoint == Endpoint::Embeddings {
        return 0;
    }
    if let Some(max) = crate::openai::media::max_output_tokens(endpoint, body) {
        return max;
    }
    let requested = ["max_completion_tokens", "max_tokens"].iter().find_map(|field| body.get(*field)?.as_u64());
    let per_choice =
        requested.or(model.max_output_tokens.map(u64::from)).unwrap_or(veil_billing::DEFAULT_MAX_OUTPUT_TOKENS);
    let choices = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128);
    per_choice.saturating_mul(choices)
}

/// `429 rate_limit_exceeded` with the headers OpenAI sends, so SDKs back off correctly.
/// A shared limiter that cannot be reached while failing closed is not the caller's
/// fault: `503 internal_error` "rate limiting is unavailable", with a short retry-after.
pub fn rate_limited(refusal: &veil_limits::Refusal) -> ApiError {
    let what = match refusal.resource {
        veil_limits::Resource::Requests => "requests per minute",
        veil_limits::Resource::Tokens => "tokens per minute",
        veil_limits::Resource::Concurrency => "concurrent requests",
        veil_limits::Resource::Unavailable => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InternalError,
                "Rate limiting is unavailable; please try again shortly.",
            );
            error.retry_after = Some(refusal.retry_after);
            return error;
        }
    };
    let message = if refusal.never_fits {
        format!("Request too large for the {what} limit on this {}. Send a smaller request.", refusal.scope_kind)
    } else {
        format!(
            "Rate limit reached for {what} on this {}. Please try again in {}s.",
            refusal.scope_kind,
            refusal.retry_after.as_secs_f64().ceil()
        )
    };
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimitExceeded, message);
    error.retry_after = Some(refusal.retry_after);
    error.headers = refusal.headers.pairs();
    error
}

pub(crate) fn unaffordable(refusal: &Refusal, now: Timestamp) -> ApiError {
    let until = |at: Timestamp| Duration::from_millis(u64::try_from(at.unix_millis() - now.unix_millis()).unwrap_or(0));
    match refusal {
        Refusal::Balance { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InsufficientQuota,
            "You exceeded your current quota: your balance does not cover this request. Top up or redeem a code.",
        ),
        Refusal::KeyQuota { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InsufficientQuota,
            "You exceeded your current quota: this API key's quota does not cover this request.",
        ),
        Refusal::DailyCap { resets_at } | Refusal::MonthlyCap { resets_at } => {
            let period = if matches!(refusal, Refusal::DailyCap { .. }) { "daily" } else { "monthly" };
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimitExceeded,
                format!("The {period} spend limit of your account or key is reached; it resets at {resets_at}."),
            );
            error.retry_after = Some(until(*resets_at));
            error
        }
        Refusal::Store(error) => {
            tracing::error!(error = %error, "could not load the account's balance");
            ApiError::internal()
        }
        // The shared balances (Redis) cannot be reached: holds fail closed. Counted and
        // logged once per outage by `veil-cluster`.
        Refusal::Unavailable(_) => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InternalError,
                "Balances are unavailable; please try again shortly.",
            );
            error.retry_after = Some(Duration::from_secs(1));
            error
        }
    }
}

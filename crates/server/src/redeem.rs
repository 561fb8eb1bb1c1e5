//! `POST /api/redeem` with `{"code": "…"}`: a signed-in user spends a redemption code on
//! their own balance. Authenticated like `/api/me/…` (an API key or a console session).
//!
//! Promises: a code credits exactly once, however many requests race for it (the store spends
//! it and appends the top-up in one transaction); unknown, spent and expired codes get one and
//! the same answer, so an answer never tells a guesser more than "not this one"; failed
//! attempts are throttled per user ([`GuessThrottle`]); the code itself is never logged,
//! audited or stored, only its keyed hash (store) and display prefix (audit). A credit is
//! visible to this instance's cached balances before the answer goes out.

use crate::account;
use crate::auth::AccountCaller;
use crate::error::ApiError;
use crate::guess_throttle::GuessThrottle;
use crate::openai::body::OpenAiJson;
use crate::refresh;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veil_domain::{ErrorCode, Timestamp};
use veil_secrets::{KeyHasher, RedemptionCode};
use veil_store::Redemption;

/// Failed redemptions one user may make within [`FAILURE_WINDOW`] before being refused.
const FAILURE_LIMIT: usize = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// What redeeming needs beside the store: the installation's code hasher and the throttle.
#[derive(Debug)]
pub struct Redemptions {
    /// `None` when the code-hashing key could not be loaded at start; redemptions then fail
    /// (logged) rather than compare against a wrong hash.
    hasher: Option<KeyHasher>,
    throttle: GuessThrottle,
}

impl Redemptions {
    pub fn new(hasher: Option<KeyHasher>) -> Self {
        Self { hasher, throttle: GuessThrottle::new(FAILURE_LIMIT, FAILURE_WINDOW) }
    }

    /// The installation's code hasher, for making codes (the console's admin page).
    pub(crate) fn hasher(&self) -> Option<&KeyHasher> {
        self.hasher.as_ref()
    }
}

fn not_redeemable() -> ApiError {
    ApiError::invalid_request("This code is not valid or has already been redeemed.").with_param("code")
}

/// `POST /api/redeem`
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    AccountCaller(principal): AccountCaller,
    OpenAiJson(body): OpenAiJson,
) -> Result<Json<Value>, ApiError> {
    let Some(Value::String(presented)) = body.get("code") else {
        return Err(ApiError::invalid_request("`code` must be a string.").with_param("code"));
    };
    redeem_for(&state, principal.user.id, presented).await.map(Json)
}

/// Spends `presented` on `user`'s balance: the body of `POST /api/redeem`, shared with the
/// console's redeem form. Answers `{"credited": …, "balance": …}`.
pub(crate) async fn redeem_for(
    state: &AppState,
    user: veil_domain::UserId,
    presented: &str,
) -> Result<Value, ApiError> {
    let redemptions = &state.redemptions;
    let started = Instant::now();
    if let Err(retry_after) = redemptions.throttle.try_begin(user, started) {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimitExceeded,
            "Too many invalid codes were tried. Please wait before trying again.",
        );
        error.retry_after = Some(retry_after);
        return Err(error);
    }
    // From here the attempt counts as a wrong guess unless forgiven below.
    // Pasted codes often carry a stray space or line break; nothing else is tolerated.
    let presented = presented.trim();
    if !RedemptionCode::looks_like_code(presented) {
        return Err(not_redeemable());
    }
    let Some(hasher) = redemptions.hasher.as_ref() else {
        redemptions.throttle.forgive(user, started);
        tracing::error!("a redemption was refused: the code-hashing key is unavailable");
        return Err(ApiError::internal());
    };
    let outcome = state.store.redeem_code(&hasher.hash(presented), user, Timestamp::now()).await.map_err(|error| {
        redemptions.throttle.forgive(user, started);
        tracing::error!(error = %error, "redemption failed");
        ApiError::internal()
    })?;
    let (amount, prefix) = match outcome {
        Redemption::Credited { amount, prefix, .. } => (amount, prefix),
        Redemption::NotRedeemable => return Err(not_redeemable()),
    };
    redemptions.throttle.forgive(user, started);
    // The money has moved: from here on a failure is logged, never answered as one, or the
    // client would retry and be told the code is spent.
    if let Err(error) = account::audit(
        state.store.as_ref(),
        account::actor_user(user),
        "code.redeem",
        Some(user),
        Some(prefix.clone()),
        json!({"prefix": prefix, "amount": amount.to_decimal_string()}),
    )
    .await
    {
        tracing::error!(error = %error, "a redemption was credited but could not be audited");
    }
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after a redemption; the credit shows within the refresh interval");
    }
    let balance = match state.store.balance(user).await {
        Ok(balance) => Value::String(balance.to_decimal_string()),
        Err(error) => {
            tracing::warn!(error = %error, "could not read the balance after a redemption");
            Value::Null
        }
    };
    Ok(json!({"credited": amount.to_decimal_string(), "balance": balance}))
}

//! Authentication: the bearer key of a request becomes a [`Principal`], or the request
//! is refused in the client's error shape before anything else happens.
//!
//! Only tokens shaped like Veil keys are hashed and looked up; lookups go through a cache
//! (hits never touch the database) whose entries are revision-stamped, so revoked keys,
//! expired keys and disabled accounts stop working within one refresh interval.
//!
//! Risk control (`risk.rs`) takes part twice: a key it suspended is refused with
//! `403 key_suspended` (except for the owner's read-only view of their own data, so they
//! can see why), and every failed authentication — no key, a malformed, unknown, revoked
//! or expired one — counts toward the client address's failed-authentication rule; a
//! blocked address is refused with `429 rate_limit_exceeded` before anything is hashed.

use crate::error::ApiError;
use crate::request_meta::RequestMeta;
use crate::state::{AppState, CachedPrincipal, Principal};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use std::time::Duration;
use veil_domain::{ErrorCode, Timestamp};
use veil_secrets::KeyHasher;

/// Authenticates a relay call (and any endpoint that acts with the key): a suspended key
/// is refused with `403 key_suspended`.
pub async fn authenticate(state: &AppState, parts: &Parts, meta: &RequestMeta) -> Result<Arc<Principal>, ApiError> {
    check(state, presented_key(&parts.headers, parts.uri.query()), meta, Suspended::Refuse).await
}

/// Authenticates the owner's read-only view of their own data (`GET /api/me/export`,
/// `GET /api/me/risk`): a suspended key is accepted there, so its owner can find out why
/// it was suspended. Everything else is checked as for [`authenticate`].
pub async fn authenticate_owner_view(
    state: &AppState,
    headers: &HeaderMap,
    meta: &RequestMeta,
) -> Result<Arc<Principal>, ApiError> {
    check(state, bearer_token(headers), meta, Suspended::Accept).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suspended {
    Refuse,
    Accept,
}

async fn check(
    state: &AppState,
    token: Option<&str>,
    meta: &RequestMeta,
    suspended: Suspended,
) -> Result<Arc<Principal>, ApiError> {
    let now = Timestamp::now();
    // A blocked address is refused before any hashing or lookup: guessing costs nothing.
    if let Some(left) = state.risk.auth_blocked(meta.client_ip, now) {
        return Err(blocked(left));
    }
    // Failures count toward the address's failed-authentication rule; the one that trips
    // a block is answered as blocked already.
    let failed = |error: ApiError| match state.risk.note_auth_failure(meta.client_ip, now) {
        Some(left) => blocked(left),
        None => error,
    };
    let token = token.ok_or_else(|| {
        failed(ApiError::invalid_api_key(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as `x-api-key` (Anthropic clients) or `x-goog-api-key` (Gemini clients).",
        ))
    })?;
    let incorrect = || {
        failed(ApiError::invalid_api_key(format!(
            "Incorrect API key provided: {}****. You can find your API key in the console or ask your operator.",
            KeyHasher::display_prefix(token)
        )))
    };
    if !KeyHasher::looks_like_key(token) {
        return Err(incorrect());
    }
    let hash = state.hasher.hash(token);
    let principal = lookup(state, hash).await?.ok_or_else(incorrect)?;

    if principal.key.revoked_at.is_some() {
        return Err(failed(ApiError::invalid_api_key("This API key has been revoked.")));
    }
    if principal.key.expires_at.is_some_and(|at| now >= at) {
        return Err(failed(ApiError::invalid_api_key("This API key has expired.")));
    }
    if suspended == Suspended::Refuse && principal.key.suspended_at.is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::KeySuspended,
            "This API key has been suspended by risk control; its owner can see why at GET /api/me/risk. Ask your operator to lift the suspension.",
        ));
    }
    if principal.user.disabled {
        return Err(ApiError::invalid_api_key("The account this API key belongs to is disabled."));
    }
    if !principal.key.ip_allow.is_empty() && !principal.key.ip_allow.iter().any(|net| net.contains(&meta.client_ip)) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::IpNotAllowed,
            "This API key may not be used from your network address.",
        ));
    }
    Ok(principal)
}

fn blocked(left: Duration) -> ApiError {
    let mut error = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimitExceeded,
        "Too many failed authentication attempts from your network address; try again later.",
    );
    error.retry_after = Some(left);
    error
}

/// Who acts on their own account through `/api/me/…`, `/api/usage…`, `/api/bills` and
/// `/api/redeem`: authenticated by one of their API keys (as a bearer token or in a client
/// format's own header), or — when no key is presented — by a web console session cookie.
/// A cookie-authenticated request that changes anything (not GET, HEAD or OPTIONS) must
/// also carry the session's CSRF token in `x-csrf-token`, or it is refused with 403.
pub struct Caller {
    pub user: veil_domain::User,
}

/// A [`Caller`] whose key must not be suspended (as [`authenticate`]).
pub struct AccountCaller(pub Caller);

/// A [`Caller`] whose key may be suspended: the owner's read-only view (as
/// [`authenticate_owner_view`]).
pub struct AccountView(pub Caller);

impl FromRequestParts<Arc<AppState>> for AccountCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        account_caller(parts, state, Suspended::Refuse).await.map(AccountCaller)
    }
}

impl FromRequestParts<Arc<AppState>> for AccountView {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        account_caller(parts, state, Suspended::Accept).await.map(AccountView)
    }
}

async fn account_caller(parts: &mut Parts, state: &Arc<AppState>, suspended: Suspended) -> Result<Caller, ApiError> {
    let meta = RequestMeta::from_request_parts(parts, state).await?;
    let key_presented = presented_key(&parts.headers, None).is_some();
    if !key_presented && crate::console::session_cookie_sent(&parts.headers) {
        let signed_in = crate::console::signed_in(state, &parts.headers).await.map_err(|_| ApiError::internal())?;
        let Some(signed_in) = signed_in else {
            return Err(ApiError::invalid_api_key("Your console session has ended; sign in again."));
        };
        if !parts.method.is_safe() {
            let token = header_key(&parts.headers, veil_console::security::CSRF_HEADER).unwrap_or("");
            if !state.console.csrf.verify(&signed_in.session_hash, token) {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    ErrorCode::PermissionDenied,
                    "A request made with a console session needs the session's CSRF token in the x-csrf-token header.",
                ));
            }
        }
        return Ok(Caller { user: signed_in.user });
    }
    let principal = match suspended {
        Suspended::Refuse => {
            let principal = authenticate(state, parts, &meta).await?;
            state.risk.note_call(&principal, meta.client_ip, Timestamp::now());
            principal
        }
        Suspended::Accept => authenticate_owner_view(state, &parts.headers, &meta).await?,
    };
    Ok(Caller { user: principal.user.clone() })
}

/// The key a relay call presents, in each client format's own way: OpenAI's bearer
/// token, Anthropic's `x-api-key`, Gemini's `x-goog-api-key` or `?key=`. The query form
/// exists because Google's REST API accepts it; the access log never records queries.
pub fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    bearer_token(headers)
        .or_else(|| header_key(headers, "x-api-key"))
        .or_else(|| header_key(headers, "x-goog-api-key"))
        .or_else(|| {
            query?.split('&').find_map(|pair| pair.strip_prefix("key=")).map(str::trim).filter(|k| !k.is_empty())
        })
}

fn header_key<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim).filter(|key| !key.is_empty())
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

async fn lookup(state: &AppState, hash: String) -> Result<Option<Arc<Principal>>, ApiError> {
    let current = state.current_revision();
    if let Some(cached) = state.principals.get(&hash).await {
        if cached.revision >= current {
            return Ok(cached.principal);
        }
        state.principals.invalidate(&hash).await;
    }
    let store = Arc::clone(&state.store);
    let key_hash = hash.clone();
    // Concurrent misses for one key share a single database read.
    let entry = state
        .principals
        .try_get_with(hash, async move {
            let key = store.key_by_hash(&key_hash).await?;
            let principal = match key {
                Some(key) => {
                    let capture_until = store.key_capture(key.id).await?;
                    store.user_by_id(key.user_id).await?.map(|user| Arc::new(Principal { key, user, capture_until }))
                }
                None => None,
            };
            Ok::<_, veil_store::StoreError>(CachedPrincipal { revision: current, principal })
        })
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "key lookup failed");
            ApiError::internal()
        })?;
    Ok(entry.principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-veil-abc"));
        assert_eq!(bearer_token(&headers), Some("sk-veil-abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer   sk-veil-abc "));
        assert_eq!(bearer_token(&headers), Some("sk-veil-abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn each_client_format_presents_its_key_its_own_way() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers, Some("alt=sse&key=sk-veil-q")), Some("sk-veil-q"));
        assert_eq!(presented_key(&headers, Some("alt=sse&key=")), None);
        headers.insert("x-goog-api-key", HeaderValue::from_static("sk-veil-g"));
        assert_eq!(presented_key(&headers, Some("key=sk-veil-q")), Some("sk-veil-g"));
        headers.insert("x-api-key", HeaderValue::from_static("sk-veil-a"));
        assert_eq!(presented_key(&headers, None), Some("sk-veil-a"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-veil-b"));
        assert_eq!(presented_key(&headers, None), Some("sk-veil-b"));
    }
}

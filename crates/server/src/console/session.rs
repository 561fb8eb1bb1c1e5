//! Console sessions on the HTTP side: the `veil_session` cookie, the extractors that turn it
//! into a signed-in user, and CSRF checks. Every form POST goes through [`SignedInForm`] or
//! [`PreSessionForm`], which refuse the request (403) unless the form's CSRF token was
//! derived from this browser's session (or, before sign-in, its pre-session cookie), so no
//! handler can forget the check.

use super::ConsoleError;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use veil_console::security::{self, CSRF_FIELD, CsrfKey, PRE_SESSION_COOKIE, SESSION_COOKIE};
use veil_domain::{Timestamp, User};
use veil_store::ConsoleSession;

/// A session ends after this long without use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// A half-finished sign-in (password given, second factor not yet) lasts this long.
pub const SECOND_FACTOR_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Activity is written back at most this often per session.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The console's own state beside [`AppState`]: CSRF key, sign-up rules, throttle.
#[derive(Debug)]
pub struct ConsoleState {
    pub csrf: CsrfKey,
    pub settings: SignupRules,
    pub throttle: super::throttle::SignInThrottle,
    /// The running configuration as the admin settings page shows it (secrets as "set").
    pub operator_settings: Vec<(String, String)>,
    /// `[console.oidc]`: sign-in through an OpenID Connect provider.
    pub oidc: Option<super::oidc::OidcClient>,
}

impl ConsoleState {
    /// `csrf_seed` is secret and the same on every instance of a deployment (derived from
    /// the installation's key), so a form served by one instance posts to any other.
    pub fn new(settings: SignupRules, csrf_seed: &str) -> Self {
        use sha2::{Digest, Sha256};
        let key: [u8; 32] = Sha256::digest(csrf_seed.as_bytes()).into();
        Self {
            csrf: CsrfKey::new(key),
            settings,
            throttle: super::throttle::SignInThrottle::new(
                super::throttle::PER_ACCOUNT,
                super::throttle::PER_ADDRESS,
                super::throttle::WINDOW,
            ),
            operator_settings: Vec::new(),
            oidc: None,
        }
    }

    /// With `[redis]`: failed sign-ins are counted there too, over every instance; `secret`
    /// (the same on every instance) keys the hashes that stand for accounts and addresses.
    pub fn with_shared_throttle(
        mut self,
        conn: Option<veil_cluster::RedisConnection>,
        prefix: &str,
        secret: &str,
    ) -> Self {
        if let Some(conn) = conn {
            let attempts = veil_cluster::SharedSignInAttempts::new(conn, prefix, super::throttle::WINDOW);
            self.throttle = self.throttle.with_shared(attempts, secret);
        }
        self
    }

    /// With OpenID Connect sign-in through `client`.
    pub fn with_oidc(mut self, client: Option<super::oidc::OidcClient>) -> Self {
        self.oidc = client;
        self
    }

    /// With the settings page's view of the configuration the server started with.
    pub fn with_settings_view(mut self, settings: &veil_config::Settings) -> Self {
        self.operator_settings = super::admin::settings_view(settings);
        self
    }
}

/// `[console]`: who may sign up, and into which group.
#[derive(Debug, Clone)]
pub struct SignupRules {
    pub signup: bool,
    pub signup_group: veil_domain::GroupName,
    /// E-mail domains sign-up is limited to; empty: any.
    pub signup_domains: Vec<String>,
}

/// The value of cookie `name` in the request, if sent once or more (the first wins).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Whether cookies must be `Secure`: always, except on plain HTTP from loopback (a
/// developer's own machine), where a browser would otherwise drop them.
pub fn secure_cookies(state: &AppState, meta: &RequestMeta) -> bool {
    state.serves_tls || !meta.client_ip.is_loopback()
}

/// A `Set-Cookie` value with the attributes DESIGN §3.8 requires.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/");
    match max_age {
        Some(age) => cookie.push_str(&format!("; Max-Age={}", age.as_secs())),
        None => cookie.push_str("; Max-Age=0"),
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// Starts a session for `user` and returns the cookie to set. `pending` when the second
/// factor is still to come.
pub async fn start(state: &AppState, meta: &RequestMeta, user: &User, pending: bool) -> Result<String, ConsoleError> {
    let now = Timestamp::now();
    let lifetime = if pending { SECOND_FACTOR_TIMEOUT } else { IDLE_TIMEOUT };
    let new = security::NewSession::generate();
    state
        .store
        .create_console_session(&ConsoleSession {
            token_hash: new.hash,
            user_id: user.id,
            created_at: now,
            expires_at: now.plus_millis(millis(lifetime)),
            last_seen_at: now,
            second_factor_pending: pending,
        })
        .await?;
    // Expired sessions are swept here, off any hot path.
    if let Err(error) = state.store.purge_expired_console_sessions(now).await {
        tracing::warn!(error = %error, "could not purge expired console sessions");
    }
    Ok(set_cookie(SESSION_COOKIE, &new.token, Some(lifetime), secure_cookies(state, meta)))
}

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The session the request's cookie names, if it is live; with its token hash.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<ConsoleSession>, ConsoleError> {
    let Some(hash) = cookie(headers, SESSION_COOKIE).and_then(security::session_hash_checked) else {
        return Ok(None);
    };
    Ok(state.store.console_session(&hash, Timestamp::now()).await?)
}

/// A signed-in user (second factor done), with the CSRF token for the page's forms.
pub struct SignedIn {
    pub user: User,
    pub session_hash: String,
    pub csrf: String,
}

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        signed_in(state, &parts.headers).await?.ok_or(ConsoleError::SignInRequired)
    }
}

/// Whether the request carries a console session cookie at all.
pub fn session_cookie_sent(headers: &HeaderMap) -> bool {
    cookie(headers, SESSION_COOKIE).is_some()
}

/// The signed-in user of a request, if any: used by the console and by the JSON API
/// routes that also accept a console session.
pub async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<SignedIn>, ConsoleError> {
    let Some(session) = current(state, headers).await? else { return Ok(None) };
    if session.second_factor_pending {
        return Ok(None);
    }
    let Some(user) = state.store.user_by_id(session.user_id).await?.filter(|user| !user.disabled) else {
        return Ok(None);
    };
    let now = Timestamp::now();
    if now.unix_millis() - session.last_seen_at.unix_millis() >= TOUCH_EVERY_MS {
        let expires = now.plus_millis(millis(IDLE_TIMEOUT));
        state.store.touch_console_session(&session.token_hash, now, expires, false).await?;
    }
    Ok(Some(SignedIn { csrf: state.console.csrf.token(&session.token_hash), user, session_hash: session.token_hash }))
}

/// A form posted by a signed-in user, its CSRF token checked.
pub struct SignedInForm {
    pub who: SignedIn,
    pub form: HashMap<String, String>,
}

impl SignedInForm {
    pub fn field(&self, name: &str) -> &str {
        self.form.get(name).map_or("", |value| value.trim())
    }
}

impl FromRequest<Arc<AppState>> for SignedInForm {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let who = SignedIn::from_request_parts(&mut parts, state).await?;
        let Form(form) = Form::<HashMap<String, String>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| ConsoleError::BadRequest("The form could not be read.".into()))?;
        let presented = form.get(CSRF_FIELD).map_or("", String::as_str);
        if !state.console.csrf.verify(&who.session_hash, presented) {
            return Err(ConsoleError::CsrfRefused);
        }
        Ok(Self { who, form })
    }
}

/// The binding of pre-sign-in forms: the pre-session cookie, if the browser has one.
pub fn pre_session_binding(headers: &HeaderMap) -> Option<String> {
    cookie(headers, PRE_SESSION_COOKIE).filter(|value| value.len() == 43).map(|value| format!("pre:{value}"))
}

/// The CSRF token for a sign-in or sign-up page, and the pre-session cookie to set if the
/// browser had none.
pub fn pre_session_token(state: &AppState, meta: &RequestMeta, headers: &HeaderMap) -> (String, Option<String>) {
    match pre_session_binding(headers) {
        Some(binding) => (state.console.csrf.token(&binding), None),
        None => {
            let value = security::random_token();
            let token = state.console.csrf.token(&format!("pre:{value}"));
            let cookie =
                set_cookie(PRE_SESSION_COOKIE, &value, Some(Duration::from_secs(86_400)), secure_cookies(state, meta));
            (token, Some(cookie))
        }
    }
}

/// A form posted before sign-in (sign-in, sign-up, second factor), its CSRF token checked
/// against the pre-session cookie.
pub struct PreSessionForm {
    pub meta: RequestMeta,
    pub headers: HeaderMap,
    pub form: HashMap<String, String>,
}

impl PreSessionForm {
    pub fn field(&self, name: &str) -> &str {
        self.form.get(name).map_or("", |value| value.trim())
    }

    /// A password field, untrimmed (spaces may be part of it).
    pub fn secret(&self, name: &str) -> &str {
        self.form.get(name).map_or("", String::as_str)
    }
}

impl FromRequest<Arc<AppState>> for PreSessionForm {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let meta = RequestMeta::from_request_parts(&mut parts, state).await.map_err(|_| ConsoleError::Internal)?;
        let headers = parts.headers.clone();
        let Form(form) = Form::<HashMap<String, String>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| ConsoleError::BadRequest("The form could not be read.".into()))?;
        let binding = pre_session_binding(&headers).ok_or(ConsoleError::CsrfRefused)?;
        if !state.console.csrf.verify(&binding, form.get(CSRF_FIELD).map_or("", String::as_str)) {
            return Err(ConsoleError::CsrfRefused);
        }
        Ok(Self { meta, headers, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; veil_session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("veil_session=later"));
        assert_eq!(cookie(&headers, "veil_session"), Some("abc"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "veil"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_when_asked() {
        let cookie = set_cookie("veil_session", "t", Some(Duration::from_secs(60)), true);
        assert_eq!(cookie, "veil_session=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure");
        assert!(!set_cookie("veil_session", "", None, false).contains("Secure"));
    }
}

//! OpenID Connect sign-in (`[console.oidc]`): `/console/oidc/start` sends the browser to the
//! provider with a fresh state, nonce and PKCE challenge (kept in a signed, short-lived
//! cookie); `/console/oidc/callback` exchanges the code, verifies the ID token
//! (`veil_console::oidc`) and signs the person in.
//!
//! Who the token names: the account linked to its issuer and subject; else, the first time,
//! the account with the same e-mail address if the provider says that address is verified
//! (then linked); else, when `create_accounts` is on and sign-up rules allow the address, a
//! new account. An account with two-factor sign-in still asks for its code. Nothing of the
//! tokens is stored or logged; a link keeps only issuer and subject.

use super::session::{self, SignedIn};
use super::{ConsoleError, accounts};
use crate::account;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use veil_config::OidcSettings;
use veil_console::oidc::{self, Discovery, Flow, Identity, KeySet};
use veil_domain::{NewUser, Role, Timestamp, User, UserName};
use veil_providers::HttpClient;
use veil_providers::identity::{self, IdentityError};

/// How long one exchange with the provider may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long the discovery document and key set are used before being fetched again.
const PROVIDER_TTL: Duration = Duration::from_secs(3600);
/// The key set is fetched again for an unknown key id (the provider rotated its keys) at
/// most this often. Token replies come from the provider itself, over the channel Veil
/// opened, so this only spares the provider a burst of sign-ins racing a rotation.
const KEYS_REFETCH_AFTER: Duration = Duration::from_secs(5);

/// The configured provider, with its discovery document and keys once fetched.
pub struct OidcClient {
    settings: OidcSettings,
    client_secret: Option<String>,
    http: HttpClient,
    provider: Mutex<Option<Provider>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Provider {
    discovery: Discovery,
    keys: KeySet,
    fetched: Instant,
    keys_fetched: Instant,
}

/// Why a sign-in through the provider did not complete; each maps to one page.
#[derive(Debug, thiserror::Error)]
enum OidcFailure {
    #[error("the provider could not be used: {0}")]
    Provider(String),
    #[error("the sign-in flow is missing, stale or from another browser")]
    Flow,
    #[error("the provider refused the sign-in")]
    Refused,
    #[error("the ID token was not accepted: {0}")]
    Token(oidc::OidcError),
    #[error("no account may be used for this identity")]
    NoAccount(&'static str),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

impl From<IdentityError> for OidcFailure {
    fn from(error: IdentityError) -> Self {
        Self::Provider(error.to_string())
    }
}

impl OidcClient {
    /// The client for `settings`; the secret is read now from `client_secret_env`.
    pub fn new(settings: &OidcSettings, http: HttpClient) -> Result<Self, String> {
        let client_secret = match settings.client_secret_env.as_deref() {
            None => None,
            Some(name) => Some(std::env::var(name).map_err(|_| {
                format!("console.oidc.client_secret_env names {name}, which is not set in the environment")
            })?),
        };
        Ok(Self { settings: settings.clone(), client_secret, http, provider: Mutex::new(None) })
    }

    /// What the sign-in page calls the provider.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The discovery document and keys, fetched when missing or older than [`PROVIDER_TTL`].
    async fn provider(&self) -> Result<Provider, OidcFailure> {
        let mut cached = self.provider.lock().await;
        if let Some(provider) = cached.as_ref().filter(|p| p.fetched.elapsed() < PROVIDER_TTL) {
            return Ok(provider.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let body = identity::get_document(&self.http, &url, DEADLINE).await?;
        let discovery =
            Discovery::parse(&body, &self.settings.issuer).map_err(|e| OidcFailure::Provider(e.to_string()))?;
        let keys = self.fetch_keys(&discovery).await?;
        let now = Instant::now();
        let provider = Provider { discovery, keys, fetched: now, keys_fetched: now };
        *cached = Some(provider.clone());
        Ok(provider)
    }

    async fn fetch_keys(&self, discovery: &Discovery) -> Result<KeySet, OidcFailure> {
        let body = identity::get_document(&self.http, &discovery.jwks_uri, DEADLINE).await?;
        KeySet::parse(&body).map_err(|e| OidcFailure::Provider(e.to_string()))
    }

    /// The key set to check a token signed with key `kid`: fetched again when the provider
    /// has rotated to a key not seen yet (at most once a minute).
    async fn keys_for(&self, provider: Provider, kid: Option<&str>) -> Result<KeySet, OidcFailure> {
        let Some(kid) = kid.filter(|kid| !provider.keys.has_kid(kid)) else { return Ok(provider.keys) };
        if provider.keys_fetched.elapsed() < KEYS_REFETCH_AFTER {
            return Ok(provider.keys);
        }
        let keys = self.fetch_keys(&provider.discovery).await?;
        tracing::info!(known = keys.has_kid(kid), "fetched the identity provider's keys again for an unknown key id");
        let mut cached = self.provider.lock().await;
        if let Some(current) = cached.as_mut() {
            current.keys = keys.clone();
            current.keys_fetched = Instant::now();
        }
        Ok(keys)
    }

    /// The callback URL: configured, or this request's own origin.
    fn redirect_uri(&self, state: &AppState, headers: &HeaderMap) -> Result<String, OidcFailure> {
        if let Some(url) = &self.settings.redirect_url {
            return Ok(url.clone());
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
            return Err(OidcFailure::Console(ConsoleError::BadRequest(
                "The request has no usable Host header.".into(),
            )));
        }
        let scheme = if state.serves_tls { "https" } else { "http" };
        Ok(format!("{scheme}://{host}/console/oidc/callback"))
    }

    /// Exchanges the authorisation code for the ID token (RFC 6749 §4.1.3 with PKCE).
    async fn exchange(
        &self,
        provider: &Provider,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, OidcFailure> {
        let mut form = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            oidc::form_encode(code),
            oidc::form_encode(redirect_uri),
            oidc::form_encode(verifier)
        );
        if self.client_secret.is_none() {
            // A public client names itself in the body (RFC 6749 §4.1.3).
            form.push_str(&format!("&client_id={}", oidc::form_encode(&self.settings.client_id)));
        }
        // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
        let client_id = oidc::form_encode(&self.settings.client_id);
        let secret = self.client_secret.as_deref().map(oidc::form_encode);
        let body = identity::post_token_request(
            &self.http,
            &provider.discovery.token_endpoint,
            (&client_id, secret.as_deref()),
            &form,
            DEADLINE,
        )
        .await
        .map_err(|error| match error {
            IdentityError::Status(400 | 401) => OidcFailure::Refused,
            other => other.into(),
        })?;
        #[derive(Deserialize)]
        struct TokenReply {
            id_token: Option<String>,
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| OidcFailure::Provider("the token reply is not JSON of the right shape".into()))?;
        reply.id_token.ok_or_else(|| OidcFailure::Provider("the token reply has no id_token".into()))
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The flow cookie: `SameSite=Lax` (unlike the session cookie) because the provider's
/// redirect back is a cross-site navigation, which must carry it; scoped to the callback.
fn flow_cookie(value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut cookie = format!("{}={value}; HttpOnly; SameSite=Lax; Path=/console/oidc", oidc::FLOW_COOKIE);
    cookie.push_str(&format!("; Max-Age={}", max_age.map_or(0, |age| age.as_secs())));
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

fn client(state: &AppState) -> Result<&OidcClient, ConsoleError> {
    state.console.oidc.as_ref().ok_or(ConsoleError::NotFound)
}

/// `GET /console/oidc/start`: off to the provider.
pub async fn start(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let client = client(&state)?;
    if session::signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/console/").into_response());
    }
    let begun = async {
        let provider = client.provider().await?;
        let redirect_uri = client.redirect_uri(&state, &headers)?;
        let flow = Flow::start(unix_seconds());
        let url = oidc::authorization_url(
            &provider.discovery.authorization_endpoint,
            &client.settings.client_id,
            &redirect_uri,
            &client.settings.scopes,
            &flow,
        );
        Ok::<_, OidcFailure>((url, flow))
    }
    .await;
    match begun {
        Ok((url, flow)) => {
            let secure = session::secure_cookies(&state, &meta);
            let cookie =
                flow_cookie(&flow.seal(&state.console.csrf), Some(Duration::from_secs(oidc::FLOW_SECONDS)), secure);
            Ok(session::with_cookies(Redirect::to(&url).into_response(), &[cookie]))
        }
        Err(failure) => Ok(failure_page(failure)),
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /console/oidc/callback`: the provider sends the browser back here.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ConsoleError> {
    let client = client(&state)?;
    let secure = session::secure_cookies(&state, &meta);
    let clear = flow_cookie("", None, secure);
    let response = match complete(&state, client, &meta, &headers, &query).await {
        Ok((next, cookie)) => session::with_cookies(continue_page(next), &[cookie, clear]),
        Err(failure) => session::with_cookies(failure_page(failure), &[clear]),
    };
    Ok(response)
}

/// The callback's work: the user it signs in, where they go next and their session cookie.
async fn complete(
    state: &AppState,
    client: &OidcClient,
    meta: &RequestMeta,
    headers: &HeaderMap,
    query: &CallbackQuery,
) -> Result<(&'static str, String), OidcFailure> {
    let now = unix_seconds();
    let flow = session::cookie(headers, oidc::FLOW_COOKIE)
        .and_then(|value| Flow::open(value, &state.console.csrf, now))
        .ok_or(OidcFailure::Flow)?;
    if query.state.as_deref() != Some(flow.state.as_str()) {
        return Err(OidcFailure::Flow);
    }
    if query.error.is_some() {
        return Err(OidcFailure::Refused);
    }
    let code = query.code.as_deref().filter(|code| !code.is_empty()).ok_or(OidcFailure::Refused)?;
    let provider = client.provider().await?;
    let redirect_uri = client.redirect_uri(state, headers)?;
    let id_token = client.exchange(&provider, code, &redirect_uri, &flow.verifier).await?;
    let keys = client.keys_for(provider, oidc::token_kid(&id_token).as_deref()).await?;
    let expected = oidc::Expected {
        issuer: &client.settings.issuer,
        client_id: &client.settings.client_id,
        nonce: &flow.nonce,
        now,
    };
    let identity = oidc::verify_id_token(&id_token, &keys, &expected).map_err(OidcFailure::Token)?;
    let user = account_for(state, client, &identity).await?;
    let two_factor = state.store.console_totp(user.id).await.map_err(ConsoleError::from)?.is_some_and(|t| t.enabled);
    let cookie = session::start(state, meta, &user, two_factor).await?;
    if two_factor {
        return Ok(("/console/login/2fa", cookie));
    }
    accounts::tell_signed_in(state, meta, user.id);
    Ok(("/console/", cookie))
}

/// The account an identity signs in to (see the module docs), linking or creating it.
async fn account_for(state: &AppState, client: &OidcClient, identity: &Identity) -> Result<User, OidcFailure> {
    let store = state.store.as_ref();
    let linked = store.console_identity_user(&identity.issuer, &identity.subject).await.map_err(ConsoleError::from)?;
    if let Some(user_id) = linked {
        let user = store.user_by_id(user_id).await.map_err(ConsoleError::from)?;
        return user.filter(|u| !u.disabled).ok_or(OidcFailure::NoAccount("disabled"));
    }
    let email = match (&identity.email, identity.email_verified) {
        (Some(email), true) => email.clone(),
        _ => return Err(OidcFailure::NoAccount("unverified")),
    };
    let user = match store.user_by_email(&email).await.map_err(ConsoleError::from)? {
        Some(user) if user.disabled => return Err(OidcFailure::NoAccount("disabled")),
        Some(user) => user,
        None => create_account(state, client, &email).await?,
    };
    let at = Timestamp::now();
    match store.link_console_identity(&identity.issuer, &identity.subject, user.id, at).await {
        // A parallel callback for the same person linked it first: same outcome.
        Ok(()) | Err(veil_store::StoreError::Conflict(_)) => {}
        Err(error) => return Err(ConsoleError::from(error).into()),
    }
    audit(state, &user, "console.oidc.link", &identity.issuer).await;
    Ok(user)
}

async fn create_account(state: &AppState, client: &OidcClient, email: &str) -> Result<User, OidcFailure> {
    let rules = &state.console.settings;
    if !client.settings.create_accounts || accounts::check_email(email, &rules.signup_domains).is_err() {
        return Err(OidcFailure::NoAccount("not allowed"));
    }
    for name in user_name_candidates(email) {
        let new = NewUser {
            name,
            email: Some(email.to_owned()),
            role: Role::User,
            group: rules.signup_group.clone(),
            password_hash: None,
        };
        match state.store.create_user(new).await {
            Ok(user) => {
                audit(state, &user, "user.signup", &client.settings.issuer).await;
                return Ok(user);
            }
            Err(veil_store::StoreError::Conflict(_)) => continue,
            Err(error) => return Err(ConsoleError::from(error).into()),
        }
    }
    Err(OidcFailure::NoAccount("no free user name"))
}

/// User names to try for a new account: the address's local part made valid, then with a
/// number, then with random suffixes.
fn user_name_candidates(email: &str) -> Vec<UserName> {
    let local = email.split('@').next().unwrap_or_default();
    let mut base: String =
        local.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(40).collect();
    if base.is_empty() {
        base = "user".into();
    }
    let mut names = vec![base.clone()];
    names.extend((2..=9).map(|n| format!("{base}-{n}")));
    names.extend((0..3).map(|_| format!("{base}-{:06x}", rand::random::<u32>() & 0x00ff_ffff)));
    names.iter().filter_map(|name| UserName::parse(name).ok()).collect()
}

async fn audit(state: &AppState, user: &User, action: &str, issuer: &str) {
    let details = json!({ "issuer": issuer });
    if let Err(error) =
        account::audit(state.store.as_ref(), account::actor_user(user.id), action, Some(user.id), None, details).await
    {
        tracing::error!(error = %error, action, "a console sign-in could not be audited");
    }
}

/// The page that moves on to `next` once the session cookie is set. A page rather than a
/// redirect: the browser arrives here from the provider's site, and only a navigation that
/// starts on Veil's own page sends the `SameSite=Strict` session cookie.
fn continue_page(next: &'static str) -> Response {
    let page = veil_console::pages::ContinuePage { next };
    match askama::Template::render(&page) {
        Ok(html) => Html(html).into_response(),
        Err(_) => Redirect::to(next).into_response(),
    }
}

fn failure_page(failure: OidcFailure) -> Response {
    let (status, heading, body) = match failure {
        OidcFailure::Console(error) => return error.into_response(),
        OidcFailure::Provider(reason) => {
            tracing::warn!(reason = %reason, "OpenID Connect sign-in: the provider could not be used");
            (
                StatusCode::BAD_GATEWAY,
                "Sign-in provider unavailable",
                "The sign-in provider could not be reached or answered something unusable. Try again later, or sign in with your password.",
            )
        }
        OidcFailure::Flow => (
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in was started too long ago or in another browser. Start again from the sign-in page.",
        ),
        OidcFailure::Refused => (
            StatusCode::UNAUTHORIZED,
            "Sign-in not completed",
            "The sign-in provider did not confirm who you are. Start again from the sign-in page.",
        ),
        OidcFailure::Token(error) => {
            tracing::warn!(error = %error, "OpenID Connect sign-in: ID token refused");
            (
                StatusCode::UNAUTHORIZED,
                "Sign-in not accepted",
                "The sign-in provider's answer could not be verified. Start again from the sign-in page.",
            )
        }
        OidcFailure::NoAccount(why) => {
            tracing::info!(why, "OpenID Connect sign-in: no account for the identity");
            (
                StatusCode::FORBIDDEN,
                "No account",
                "No account of this relay may be used with this sign-in (a verified e-mail address is needed, and the operator may limit who can join). Ask the operator of this relay.",
            )
        }
    };
    (status, super::message_page(heading, body, None::<&SignedIn>)).into_response()
}

/// `[console.oidc]` as the login page needs it: the provider's name, if configured.
pub fn provider_name(state: &AppState) -> Option<String> {
    state.console.oidc.as_ref().map(|client| client.name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_user_names_come_from_the_address_and_stay_valid() {
        let names: Vec<String> =
            user_name_candidates("Ann.Lee+relay@example.com").iter().map(|n| n.to_string()).collect();
        assert_eq!(names[0], "Ann.Leerelay");
        assert_eq!(names[1], "Ann.Leerelay-2");
        assert_eq!(names.len(), 12);
        assert_eq!(user_name_candidates("+++@example.com")[0].to_string(), "user");
        let long = format!("{}@example.com", "a".repeat(100));
        assert!(user_name_candidates(&long).iter().all(|n| n.to_string().len() <= 64));
    }

    #[test]
    fn the_flow_cookie_is_lax_http_only_and_scoped_to_the_callback() {
        let cookie = flow_cookie("v", Some(Duration::from_secs(600)), true);
        assert_eq!(cookie, "veil_oidc=v; HttpOnly; SameSite=Lax; Path=/console/oidc; Max-Age=600; Secure");
        assert!(flow_cookie("", None, false).ends_with("Max-Age=0"));
    }

    #[test]
    fn a_missing_client_secret_variable_stops_start_up() {
        let settings = OidcSettings {
            issuer: "https://id.example.com".into(),
            client_id: "veil".into(),
            client_secret_env: Some("VEIL_TEST_UNSET_OIDC_SECRET_7F3A".into()),
            name: "SSO".into(),
            redirect_url: None,
            scopes: vec!["openid".into()],
            create_accounts: true,
        };
        let error = OidcClient::new(&settings, HttpClient::new().unwrap()).unwrap_err();
        assert!(error.contains("VEIL_TEST_UNSET_OIDC_SECRET_7F3A"), "{error}");
    }
}

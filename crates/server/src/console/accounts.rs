//! Console accounts: sign-up, sign-in (password, then the second factor if enabled),
//! sign-out, password change and TOTP two-factor enrolment. Passwords are Argon2id, checked
//! off the async runtime; an unknown e-mail address is checked against a dummy hash so it
//! takes as long as a wrong password; failures are throttled per account and per address.
//! Changes to the second factor and the password are audited.

use super::session::{self, PreSessionForm, SignedIn, SignedInForm};
use super::{ConsoleError, layout, render};
use crate::account;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use veil_console::pages::{Figure, Flash, Layout, LoginPage, SecurityPage, SignupPage, TwoFactorPage};
use veil_console::security::SESSION_COOKIE;
use veil_console::{password, totp};
use veil_domain::{NewUser, Role, Timestamp, User, UserId, UserName};

/// The issuer name authenticator apps show next to the account.
const TOTP_ISSUER: &str = "Veil";

fn public_layout(title: &str, csrf: String) -> Layout {
    Layout { title: title.to_owned(), user: None, csrf, active: "", admin: false }
}

fn flash_error(message: impl Into<String>) -> Flash {
    Flash { notice: None, error: Some(message.into()) }
}

fn flash_notice(message: impl Into<String>) -> Flash {
    Flash { notice: Some(message.into()), error: None }
}

/// Checks a password against a stored hash (or the dummy) on the blocking pool.
async fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let (password, hash) = (password.to_owned(), hash.unwrap_or(password::DUMMY_HASH).to_owned());
    tokio::task::spawn_blocking(move || password::verify(&password, &hash)).await.unwrap_or(false)
}

async fn hash_password(password: &str) -> Result<String, ConsoleError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&password)).await.ok().flatten().ok_or(ConsoleError::Internal)
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn totp_aad(user: UserId) -> Vec<u8> {
    format!("console-totp:{user}").into_bytes()
}

async fn audit(state: &AppState, user: UserId, action: &str) {
    if let Err(error) =
        account::audit(state.store.as_ref(), account::actor_user(user), action, Some(user), None, json!({})).await
    {
        tracing::error!(error = %error, action, "a console action could not be audited");
    }
}

// ---------------------------------------------------------------------------------------
// Sign-in

pub async fn login_page(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    // Already signed in: straight to the dashboard.
    if session::signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/console/").into_response());
    }
    Ok(login_form(&state, &meta, &headers, StatusCode::OK, Flash::default(), String::new()))
}

fn login_form(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    status: StatusCode,
    flash: Flash,
    email: String,
) -> Response {
    let (csrf, cookie) = session::pre_session_token(state, meta, headers);
    let page = LoginPage {
        layout: public_layout("Sign in", csrf),
        flash,
        email,
        signup_enabled: state.console.settings.signup,
        oidc_name: super::oidc::provider_name(state),
    };
    let response = (status, render(&page)).into_response();
    session::with_cookies(response, &cookie.into_iter().collect::<Vec<_>>())
}

pub async fn login(State(state): State<Arc<AppState>>, form: PreSessionForm) -> Result<Response, ConsoleError> {
    let email = form.field("email").to_owned();
    let address = form.meta.client_ip.to_string();
    let now = Instant::now();
    state.console.throttle.check(&email, &address, now).await.map_err(ConsoleError::TooManyAttempts)?;
    let user = if email.is_empty() { None } else { state.store.user_by_email(&email).await? };
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let matches = verify_password(form.secret("password"), hash).await && hash.is_some();
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        state.console.throttle.fail(&email, &address, now).await;
        let flash = flash_error("The e-mail address or the password is not right.");
        return Ok(login_form(&state, &form.meta, &form.headers, StatusCode::UNAUTHORIZED, flash, email));
    };
    state.console.throttle.succeed(&email).await;
    let two_factor = state.store.console_totp(user.id).await?.is_some_and(|t| t.enabled);
    let cookie = session::start(&state, &form.meta, &user, two_factor).await?;
    if !two_factor {
        tell_signed_in(&state, &form.meta, user.id);
    }
    let next = if two_factor { "/console/login/2fa" } else { "/console/" };
    Ok(session::with_cookies(Redirect::to(next).into_response(), &[cookie]))
}

/// The half-signed-in session of a second-factor step, and its user.
async fn pending(state: &AppState, headers: &HeaderMap) -> Result<(String, User), ConsoleError> {
    let session = session::current(state, headers).await?.filter(|s| s.second_factor_pending);
    let session = session.ok_or(ConsoleError::SignInRequired)?;
    let user = state.store.user_by_id(session.user_id).await?.filter(|u| !u.disabled);
    Ok((session.token_hash, user.ok_or(ConsoleError::SignInRequired)?))
}

pub async fn second_factor_page(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    pending(&state, &headers).await?;
    Ok(second_factor_form(&state, &meta, &headers, StatusCode::OK, Flash::default()))
}

fn second_factor_form(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    status: StatusCode,
    flash: Flash,
) -> Response {
    let (csrf, cookie) = session::pre_session_token(state, meta, headers);
    let page = TwoFactorPage { layout: public_layout("Two-factor check", csrf), flash };
    session::with_cookies((status, render(&page)).into_response(), &cookie.into_iter().collect::<Vec<_>>())
}

pub async fn second_factor(State(state): State<Arc<AppState>>, form: PreSessionForm) -> Result<Response, ConsoleError> {
    let (pending_hash, user) = pending(&state, &form.headers).await?;
    let account = format!("2fa:{}", user.id);
    let address = form.meta.client_ip.to_string();
    let now = Instant::now();
    state.console.throttle.check(&account, &address, now).await.map_err(ConsoleError::TooManyAttempts)?;
    let code = form.field("code");
    let mut accepted = false;
    if let Some(secret) = open_totp(&state, user.id, true).await?
        && let Some(step) = secret.verify(code, unix_seconds())
    {
        accepted = state.store.accept_console_totp_step(user.id, i64::try_from(step).unwrap_or(i64::MAX)).await?;
    }
    if !accepted && code.len() >= 10 {
        accepted =
            state.store.use_console_recovery_code(user.id, &totp::recovery_code_hash(code), Timestamp::now()).await?;
        if accepted {
            audit(&state, user.id, "console.recovery_code.use").await;
        }
    }
    if !accepted {
        state.console.throttle.fail(&account, &address, now).await;
        let flash = flash_error("That code is not right (or was used already).");
        return Ok(second_factor_form(&state, &form.meta, &form.headers, StatusCode::UNAUTHORIZED, flash));
    }
    state.console.throttle.succeed(&account).await;
    // A fresh token once fully signed in: the half-way one is never promoted.
    state.store.delete_console_session(&pending_hash).await?;
    let cookie = session::start(&state, &form.meta, &user, false).await?;
    tell_signed_in(&state, &form.meta, user.id);
    Ok(session::with_cookies(Redirect::to("/console/").into_response(), &[cookie]))
}

/// Queues the "new sign-in" alert, with the address only as `privacy.ip_logging` allows.
pub(super) fn tell_signed_in(state: &AppState, meta: &RequestMeta, user: UserId) {
    let address = crate::client_ip::for_record(meta.client_ip, state.ip_logging, &state.hasher, Timestamp::now());
    let address = Some(address).filter(|address| !address.is_empty());
    state.notifier.send(crate::notify::Event::SignedIn { user, address });
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    form: SignedInForm,
) -> Result<Response, ConsoleError> {
    state.store.delete_console_session(&form.who.session_hash).await?;
    let clear = session::set_cookie(SESSION_COOKIE, "", None, session::secure_cookies(&state, &meta));
    Ok(session::with_cookies(Redirect::to("/console/login").into_response(), &[clear]))
}

// ---------------------------------------------------------------------------------------
// Sign-up

fn signup_closed() -> Response {
    (
        StatusCode::FORBIDDEN,
        super::message_page("Sign-up is closed", "Ask the operator of this relay for an account.", None),
    )
        .into_response()
}

pub async fn signup_page(State(state): State<Arc<AppState>>, meta: RequestMeta, headers: HeaderMap) -> Response {
    if !state.console.settings.signup {
        return signup_closed();
    }
    signup_form(&state, &meta, &headers, StatusCode::OK, Flash::default(), String::new(), String::new())
}

fn signup_form(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    status: StatusCode,
    flash: Flash,
    name: String,
    email: String,
) -> Response {
    let (csrf, cookie) = session::pre_session_token(state, meta, headers);
    let page = SignupPage {
        layout: public_layout("Sign up", csrf),
        flash,
        email,
        name,
        domains: state.console.settings.signup_domains.clone(),
    };
    session::with_cookies((status, render(&page)).into_response(), &cookie.into_iter().collect::<Vec<_>>())
}

/// Whether an e-mail address is plausible and, if the operator limited sign-up to some
/// domains, at one of them.
pub(super) fn check_email(email: &str, domains: &[String]) -> Result<(), &'static str> {
    let Some((local, domain)) = email.rsplit_once('@') else { return Err("Enter a valid e-mail address.") };
    if local.is_empty() || !domain.contains('.') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err("Enter a valid e-mail address.");
    }
    if !domains.is_empty() && !domains.iter().any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain)) {
        return Err("Sign-up is not open to addresses at this domain.");
    }
    Ok(())
}

pub async fn signup(State(state): State<Arc<AppState>>, form: PreSessionForm) -> Result<Response, ConsoleError> {
    if !state.console.settings.signup {
        return Ok(signup_closed());
    }
    let (name, email) = (form.field("name").to_owned(), form.field("email").to_owned());
    let refuse = |message: &str| {
        signup_form(
            &state,
            &form.meta,
            &form.headers,
            StatusCode::BAD_REQUEST,
            flash_error(message),
            name.clone(),
            email.clone(),
        )
    };
    let Ok(user_name) = UserName::parse(&name) else {
        return Ok(refuse("Choose a user name of letters, digits, dots, dashes and underscores."));
    };
    if let Err(message) = check_email(&email, &state.console.settings.signup_domains) {
        return Ok(refuse(message));
    }
    if let Err(message) = password::check_new(form.secret("password")) {
        return Ok(refuse(message));
    }
    if state.store.user_by_email(&email).await?.is_some() || state.store.user_by_name(&user_name).await?.is_some() {
        return Ok(refuse("That user name or e-mail address is taken."));
    }
    let password_hash = hash_password(form.secret("password")).await?;
    let user = match state
        .store
        .create_user(NewUser {
            name: user_name,
            email: Some(email.clone()),
            role: Role::User,
            group: state.console.settings.signup_group.clone(),
            password_hash: Some(password_hash),
        })
        .await
    {
        Ok(user) => user,
        Err(veil_store::StoreError::Conflict(_)) => return Ok(refuse("That user name or e-mail address is taken.")),
        Err(error) => return Err(error.into()),
    };
    audit(&state, user.id, "user.signup").await;
    let cookie = session::start(&state, &form.meta, &user, false).await?;
    Ok(session::with_cookies(Redirect::to("/console/").into_response(), &[cookie]))
}

// ---------------------------------------------------------------------------------------
// Security: password and second factor

/// The account's TOTP secret, opened; `enabled` says which state is wanted.
async fn open_totp(state: &AppState, user: UserId, enabled: bool) -> Result<Option<totp::TotpSecret>, ConsoleError> {
    let Some(stored) = state.store.console_totp(user).await?.filter(|t| t.enabled == enabled) else {
        return Ok(None);
    };
    let sealer = state.credential_sealer.as_ref().ok_or(ConsoleError::Internal)?;
    let bytes = sealer.open(&totp_aad(user), &stored.nonce, &stored.ciphertext).map_err(|_| {
        tracing::error!("a TOTP secret does not open");
        ConsoleError::Internal
    })?;
    Ok(Some(totp::TotpSecret::from_bytes(bytes)))
}

async fn security(
    state: &AppState,
    who: &SignedIn,
    flash: Flash,
    recovery_codes: Vec<String>,
) -> Result<Response, ConsoleError> {
    let stored = state.store.console_totp(who.user.id).await?;
    let totp_enabled = stored.as_ref().is_some_and(|t| t.enabled);
    let enrolling = if totp_enabled { None } else { open_totp(state, who.user.id, false).await? };
    let account_label = who.user.email.clone().unwrap_or_else(|| who.user.name.to_string());
    let sessions = state
        .store
        .list_console_sessions(who.user.id)
        .await?
        .iter()
        .filter(|s| !s.second_factor_pending)
        .map(|s| Figure {
            label: if s.token_hash == who.session_hash { "This browser".into() } else { "Another browser".into() },
            value: format!("signed in {}, last seen {}", short_time(s.created_at), short_time(s.last_seen_at)),
        })
        .collect();
    let linked = state
        .store
        .console_identities(who.user.id)
        .await?
        .into_iter()
        .map(|link| Figure { label: link.issuer, value: format!("linked {}", short_time(link.created_at)) })
        .collect();
    let page = SecurityPage {
        layout: layout(who, "Security", "security"),
        flash,
        totp_enabled,
        enrol_uri: enrolling.as_ref().map(|s| s.uri(TOTP_ISSUER, &account_label)),
        enrol_secret: enrolling.map(|s| s.base32()),
        recovery_codes,
        sessions,
        has_password: who.user.password_hash.is_some(),
        linked,
    };
    Ok(render(&page)?.into_response())
}

pub fn short_time(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    text.get(..16).map_or(text.clone(), |t| t.replace('T', " "))
}

pub async fn security_page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    security(&state, &who, Flash::default(), Vec::new()).await
}

pub async fn change_password(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let current = form.form.get("current").map_or("", String::as_str);
    let new = form.form.get("new").map_or("", String::as_str);
    // An account made by OpenID Connect sign-in has no password to confirm: its first one
    // is set by the signed-in owner alone.
    let first = who.user.password_hash.is_none();
    if !first && !verify_password(current, who.user.password_hash.as_deref()).await {
        return security(&state, who, flash_error("The current password is not right."), Vec::new()).await;
    }
    if let Err(message) = password::check_new(new) {
        return security(&state, who, flash_error(message), Vec::new()).await;
    }
    let hash = hash_password(new).await?;
    state.store.set_password_hash(who.user.id, &hash).await?;
    // Other browsers signed in with the old password are signed out.
    state.store.delete_console_sessions(who.user.id, Some(&who.session_hash)).await?;
    audit(&state, who.user.id, "console.password.change").await;
    state.notifier.send(crate::notify::Event::PasswordChanged { user: who.user.id });
    let notice =
        if first { "Your password was set." } else { "Your password was changed; other sessions were signed out." };
    security(&state, who, flash_notice(notice), Vec::new()).await
}

pub async fn enrol_totp(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let secret = totp::TotpSecret::generate();
    let sealer = state.credential_sealer.as_ref().ok_or(ConsoleError::Internal)?;
    let (nonce, ciphertext) = sealer.seal(&totp_aad(who.user.id), secret.as_bytes()).ok_or(ConsoleError::Internal)?;
    if !state.store.begin_console_totp(who.user.id, &nonce, &ciphertext, Timestamp::now()).await? {
        return security(&state, who, flash_error("Two-factor sign-in is on already."), Vec::new()).await;
    }
    security(&state, who, Flash::default(), Vec::new()).await
}

pub async fn confirm_totp(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let Some(secret) = open_totp(&state, who.user.id, false).await? else {
        return security(&state, who, flash_error("Start the set-up first."), Vec::new()).await;
    };
    let Some(step) = secret.verify(form.field("code"), unix_seconds()) else {
        return security(
            &state,
            who,
            flash_error("That code is not right; check the time on your device."),
            Vec::new(),
        )
        .await;
    };
    let codes = totp::recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_code_hash(c)).collect();
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    if !state.store.enable_console_totp(who.user.id, step, &hashes, Timestamp::now()).await? {
        return security(&state, who, flash_error("Start the set-up first."), Vec::new()).await;
    }
    audit(&state, who.user.id, "console.2fa.enable").await;
    state.notifier.send(crate::notify::Event::TwoFactorChanged { user: who.user.id, enabled: true });
    security(&state, who, flash_notice("Two-factor sign-in is on."), codes).await
}

pub async fn disable_totp(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let confirmed = match who.user.password_hash.as_deref() {
        Some(hash) => verify_password(form.form.get("password").map_or("", String::as_str), Some(hash)).await,
        // Without a password (OpenID Connect sign-in only), a current code confirms it.
        None => match open_totp(&state, who.user.id, true).await? {
            Some(secret) => match secret.verify(form.field("code"), unix_seconds()) {
                Some(step) => {
                    state.store.accept_console_totp_step(who.user.id, i64::try_from(step).unwrap_or(i64::MAX)).await?
                }
                None => false,
            },
            None => false,
        },
    };
    if !confirmed {
        let message =
            if who.user.password_hash.is_some() { "The password is not right." } else { "That code is not right." };
        return security(&state, who, flash_error(message), Vec::new()).await;
    }
    if state.store.clear_console_totp(who.user.id).await? {
        state.notifier.send(crate::notify::Event::TwoFactorChanged { user: who.user.id, enabled: false });
    }
    audit(&state, who.user.id, "console.2fa.disable").await;
    security(&state, who, flash_notice("Two-factor sign-in is off."), Vec::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_up_addresses_are_checked_against_the_allowed_domains() {
        assert!(check_email("ann@example.com", &[]).is_ok());
        assert!(check_email("ann@Example.COM", &["example.com".into()]).is_ok());
        assert!(check_email("ann@other.org", &["example.com".into()]).is_err());
        assert!(check_email("ann@evil.example.com.org", &["example.com".into()]).is_err());
        assert!(check_email("no-at-sign", &[]).is_err());
        assert!(check_email("@example.com", &[]).is_err());
        assert!(check_email("a b@example.com", &[]).is_err());
    }
}

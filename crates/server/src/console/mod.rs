//! The web console's HTTP side (`/console/…`): thin handlers over the same functions the
//! JSON API uses, pages rendered by `veil-console`. Promises: every response carries a
//! strict Content-Security-Policy (no scripts at all), `X-Frame-Options: DENY`, no referrer
//! and, for pages, `Cache-Control: no-store`; every form POST is CSRF-checked (see
//! `session.rs`); no page shows request or response content.

mod accounts;
mod admin;
mod keys;
mod notifications;
mod oidc;
mod pages;
mod session;
mod throttle;

pub use oidc::OidcClient;
pub use session::{ConsoleState, SignupRules};
pub(crate) use session::{session_cookie_sent, signed_in};

use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;
use veil_console::pages::{Layout, MessagePage};

/// What the console allows a page to load: its own stylesheet and nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::dashboard))
        .route("/console/login", get(accounts::login_page).post(accounts::login))
        .route("/console/login/2fa", get(accounts::second_factor_page).post(accounts::second_factor))
        .route("/console/signup", get(accounts::signup_page).post(accounts::signup))
        .route("/console/oidc/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/logout", post(accounts::logout))
        .route("/console/security", get(accounts::security_page))
        .route("/console/security/password", post(accounts::change_password))
        .route("/console/security/2fa/enrol", post(accounts::enrol_totp))
        .route("/console/security/2fa/confirm", post(accounts::confirm_totp))
        .route("/console/security/2fa/disable", post(accounts::disable_totp))
        .route("/console/keys", get(pages::keys_page).post(pages::create_key))
        .route("/console/keys/{id}/revoke", post(pages::revoke_key))
        .route("/console/records", get(pages::records_page))
        .route("/console/records/export", get(pages::records_export))
        .route("/console/bills", get(pages::bills_page))
        .route("/console/redeem", get(pages::redeem_page).post(pages::redeem))
        .route("/console/privacy", get(pages::privacy_page))
        .route("/console/privacy/capture/{id}", post(pages::set_capture))
        .route("/console/privacy/export", get(pages::export))
        .route("/console/privacy/delete", post(pages::delete_account))
        .route("/console/notifications", get(notifications::page).post(notifications::save))
        .merge(admin::routes())
        .route("/console/assets/{*path}", get(asset))
        // Unknown console paths get the console's 404 page (and its headers).
        .route("/console/{*rest}", get(|| async { ConsoleError::NotFound }))
        .layer(middleware::from_fn(security_headers))
}

/// Adds the console's security headers to every response under `/console/`.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(path): Path<String>, headers: axum::http::HeaderMap) -> Response {
    let Some(asset) = veil_console::assets::get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = [(header::CACHE_CONTROL, "no-cache".to_owned()), (header::ETAG, asset.etag.clone())];
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(asset.etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, asset.mime)], asset.bytes.into_owned()).into_response()
}

/// Why a console request did not get its page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("sign-in required")]
    SignInRequired,
    #[error("CSRF token refused")]
    CsrfRefused,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    /// A signed-in user without the role the page needs.
    #[error("forbidden")]
    Forbidden,
    #[error("too many attempts")]
    TooManyAttempts(Duration),
    #[error("internal error")]
    Internal,
}

impl From<veil_store::StoreError> for ConsoleError {
    fn from(error: veil_store::StoreError) -> Self {
        tracing::error!(error = %error, "console store failure");
        Self::Internal
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(error: askama::Error) -> Self {
        tracing::error!(error = %error, "console page failed to render");
        Self::Internal
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, heading, body) = match &self {
            Self::SignInRequired => return Redirect::to("/console/login").into_response(),
            Self::CsrfRefused => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not accepted (its security token is missing or stale). Go back, reload the page and try again.".to_owned(),
            ),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "Not accepted", message.clone()),
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is nothing here.".to_owned()),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Admins only",
                "This page is for the installation's administrators.".to_owned(),
            ),
            Self::TooManyAttempts(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!("Too many failed sign-in attempts. Try again in {} minutes.", wait.as_secs().div_ceil(60)),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The console could not complete this request. Try again later.".to_owned(),
            ),
        };
        let mut response = (status, message_page(heading, &body, None)).into_response();
        if let Self::TooManyAttempts(wait) = self
            && let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A simple page with a heading and a sentence (errors, confirmations).
pub fn message_page(heading: &str, body: &str, user: Option<&session::SignedIn>) -> Html<String> {
    let page = MessagePage {
        layout: Layout {
            title: heading.to_owned(),
            user: user.map(|who| who.user.name.to_string()),
            csrf: user.map(|who| who.csrf.clone()).unwrap_or_default(),
            active: "",
            admin: user.is_some_and(|who| admin::is_admin(&who.user)),
        },
        heading: heading.to_owned(),
        body: body.to_owned(),
    };
    Html(askama::Template::render(&page).unwrap_or_else(|_| heading.to_owned()))
}

/// Renders a page template, or the error page if that fails.
pub fn render(page: &impl askama::Template) -> Result<Html<String>, ConsoleError> {
    Ok(Html(page.render()?))
}

/// The layout of a signed-in page.
pub fn layout(who: &session::SignedIn, title: &str, active: &'static str) -> Layout {
    Layout {
        title: title.to_owned(),
        user: Some(who.user.name.to_string()),
        csrf: who.csrf.clone(),
        active,
        admin: admin::is_admin(&who.user),
    }
}

//! A small OpenID Connect provider for tests, on `localhost` (a different site from Veil on
//! `127.0.0.1`, so browsers apply their cross-site cookie rules as in production):
//! discovery, an authorisation endpoint that signs the configured person in at once and
//! redirects back with a code, a token endpoint that checks the client, the code, the
//! redirect URI and the PKCE verifier as a real provider does, and the key set. ID tokens
//! are RS256 under a key generated per provider. [`Misbehaviour`] makes it answer wrongly in
//! one chosen way, for the refusal tests.

// Test fixture: its server task lives as long as the provider, stopped on drop.
#![allow(clippy::disallowed_methods)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Person {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

impl Person {
    pub fn new(subject: &str, email: &str) -> Self {
        Self { subject: subject.into(), email: email.into(), email_verified: true, name: "Test Person".into() }
    }
}

/// One way to answer wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    None,
    /// The user declines at the provider: back with `error=access_denied`.
    Deny,
    /// The ID token names another client.
    WrongAudience,
    /// The ID token names another issuer.
    WrongIssuer,
    /// The ID token expired an hour ago.
    Expired,
    /// The ID token carries another nonce (a replayed token).
    WrongNonce,
    /// The ID token is signed by a key not in the key set (same key id).
    ForeignKey,
    /// The ID token says `alg: none`, unsigned.
    Unsigned,
}

/// A token request as the provider received it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub form: HashMap<String, String>,
    /// The client id and secret from HTTP Basic authentication, if sent.
    pub basic: Option<(String, String)>,
}

struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    person: Person,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    key: RsaKeyPair,
    kid: String,
    person: Person,
    misbehaviour: Misbehaviour,
    grants: HashMap<String, Grant>,
    /// With `ask`: grants waiting for the person to press "Continue" on the provider's page.
    asked: HashMap<String, (Grant, String)>,
    ask: bool,
    token_requests: Vec<TokenRequest>,
    authorize_requests: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct OidcProvider {
    pub addr: SocketAddr,
    inner: Shared,
    stop: CancellationToken,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn random_text() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl OidcProvider {
    /// A provider for `client_id` (confidential when `client_secret` is given) that signs
    /// in `person`.
    pub async fn start(client_id: &str, client_secret: Option<&str>, person: Person) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            issuer: format!("http://localhost:{}", addr.port()),
            client_id: client_id.into(),
            client_secret: client_secret.map(str::to_owned),
            key: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            kid: random_text(),
            person,
            misbehaviour: Misbehaviour::None,
            grants: HashMap::new(),
            asked: HashMap::new(),
            ask: false,
            token_requests: Vec::new(),
            authorize_requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/authorize/approve", post(approve))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&inner));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await }).await.ok();
        });
        Self { addr, inner, stop }
    }

    /// `http://localhost:<port>`, for `[console.oidc] issuer`.
    pub fn issuer(&self) -> String {
        self.inner.lock().unwrap().issuer.clone()
    }

    pub fn set_person(&self, person: Person) {
        self.inner.lock().unwrap().person = person;
    }

    /// Shows a page with a "Continue" button (`#approve`) instead of redirecting back at
    /// once, as a real provider's sign-in form does: the way back then starts on the
    /// provider's own page, which is what browsers' cross-site cookie rules look at.
    pub fn ask_before_redirecting(&self) {
        self.inner.lock().unwrap().ask = true;
    }

    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        self.inner.lock().unwrap().misbehaviour = misbehaviour;
    }

    /// Replaces the signing key (and its key id), as a provider rotating keys does.
    pub fn rotate_key(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        inner.kid = random_text();
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.inner.lock().unwrap().token_requests.clone()
    }

    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().authorize_requests.clone()
    }
}

async fn discovery(State(inner): State<Shared>) -> Json<Value> {
    let issuer = inner.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
    }))
}

async fn jwks(State(inner): State<Shared>) -> Json<Value> {
    let inner = inner.lock().unwrap();
    let public = inner.key.public_key();
    Json(json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": inner.kid,
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    }]}))
}

fn bad_request(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
}

async fn authorize(State(inner): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.authorize_requests.push(query.clone());
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != inner.client_id
        || field("response_type") != "code"
        || field("code_challenge_method") != "S256"
        || field("code_challenge").is_empty()
        || !field("scope").split(' ').any(|scope| scope == "openid")
        || field("redirect_uri").is_empty()
    {
        return bad_request("invalid_request");
    }
    let state = crate::oidc::encode(field("state"));
    let redirect_uri = field("redirect_uri").to_owned();
    if inner.misbehaviour == Misbehaviour::Deny {
        return Redirect::to(&format!("{redirect_uri}?error=access_denied&state={state}")).into_response();
    }
    let code = random_text();
    let grant = Grant {
        redirect_uri: redirect_uri.clone(),
        challenge: field("code_challenge").to_owned(),
        nonce: field("nonce").to_owned(),
        person: inner.person.clone(),
    };
    let back = format!("{redirect_uri}?code={code}&state={state}");
    if inner.ask {
        inner.asked.insert(code.clone(), (grant, back));
        let page = format!(
            "<!doctype html><html><head><title>Test provider</title></head><body><h1>Test provider</h1>\
             <form method=\"post\" action=\"/authorize/approve\"><input type=\"hidden\" name=\"code\" value=\"{code}\">\
             <button id=\"approve\" type=\"submit\">Continue</button></form></body></html>"
        );
        return axum::response::Html(page).into_response();
    }
    inner.grants.insert(code, grant);
    Redirect::to(&back).into_response()
}

async fn approve(State(inner): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap();
    let code = form.get("code").cloned().unwrap_or_default();
    let Some((grant, back)) = inner.asked.remove(&code) else { return bad_request("invalid_request") };
    inner.grants.insert(code, grant);
    Redirect::to(&back).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(value).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token(State(inner): State<Shared>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap();
    let basic = basic_credentials(&headers);
    inner.token_requests.push(TokenRequest { form: form.clone(), basic: basic.clone() });
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let client_ok = match &inner.client_secret {
        Some(secret) => basic.as_ref().is_some_and(|(id, s)| *id == inner.client_id && s == secret),
        None => field("client_id") == inner.client_id,
    };
    if !client_ok {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    if field("grant_type") != "authorization_code" {
        return bad_request("unsupported_grant_type");
    }
    // A code works once.
    let Some(grant) = inner.grants.remove(field("code")) else { return bad_request("invalid_grant") };
    let challenge = URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, field("code_verifier").as_bytes()).as_ref());
    if grant.redirect_uri != field("redirect_uri") || grant.challenge != challenge {
        return bad_request("invalid_grant");
    }
    let id_token = id_token(&inner, &grant);
    Json(json!({"access_token": random_text(), "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}))
        .into_response()
}

fn id_token(inner: &Inner, grant: &Grant) -> String {
    let now = unix_seconds();
    let misbehaviour = inner.misbehaviour;
    let mut claims = json!({
        "iss": inner.issuer,
        "sub": grant.person.subject,
        "aud": inner.client_id,
        "exp": now + 300,
        "iat": now,
        "nonce": grant.nonce,
        "email": grant.person.email,
        "email_verified": grant.person.email_verified,
        "name": grant.person.name,
    });
    match misbehaviour {
        Misbehaviour::WrongAudience => claims["aud"] = json!("someone-else"),
        Misbehaviour::WrongIssuer => claims["iss"] = json!("http://localhost:1"),
        Misbehaviour::Expired => {
            claims["exp"] = json!(now - 3600);
            claims["iat"] = json!(now - 7200);
        }
        Misbehaviour::WrongNonce => claims["nonce"] = json!("a-nonce-from-another-sign-in"),
        _ => {}
    }
    let alg = if misbehaviour == Misbehaviour::Unsigned { "none" } else { "RS256" };
    let header = json!({"alg": alg, "typ": "JWT", "kid": inner.kid});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    if misbehaviour == Misbehaviour::Unsigned {
        return format!("{input}.");
    }
    let foreign;
    let key = if misbehaviour == Misbehaviour::ForeignKey {
        foreign = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        &foreign
    } else {
        &inner.key
    };
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Percent-encoding for a query or form value (RFC 3986 unreserved characters kept).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! OpenID Connect sign-in against the test provider (`veil_testkit::oidc`) over real HTTP:
//! the round trip with state, nonce and PKCE; accounts created, linked and found again;
//! every way an answer can be wrong refused without a session; confidential clients
//! authenticating with their secret; the provider rotating its keys.

use crate::support::{Console, Page, config};
use reqwest::StatusCode;
use veil_testkit::TestApp;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::oidc::{Misbehaviour, OidcProvider, Person};
use veil_testkit::spawn_app;

const CLIENT_ID: &str = "veil-console";

fn oidc_config(upstream: &MockUpstream, provider: &OidcProvider, extra: &str) -> String {
    config(
        upstream,
        &format!(
            "[console]\nsignup = false\n{extra}\n[console.oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nname = \"Example SSO\"\n",
            provider.issuer()
        ),
    )
}

/// The whole round trip as a browser makes it: start, the provider's redirect (followed by
/// hand, as the browser would), the callback. Returns the callback's page.
async fn round_trip(console: &mut Console) -> Page {
    let start = console.get("/console/oidc/start").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let flow_cookie = start.set_cookies().into_iter().find(|c| c.starts_with("veil_oidc=")).expect("flow cookie");
    assert!(flow_cookie.contains("HttpOnly") && flow_cookie.contains("SameSite=Lax"), "{flow_cookie}");
    assert!(flow_cookie.contains("Path=/console/oidc"), "{flow_cookie}");
    let authorize = start.location().unwrap().to_owned();
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let back = plain.get(&authorize).send().await.unwrap();
    assert!(back.status().is_redirection(), "the provider answered {}", back.status());
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let path = callback.split_once("/console/").map(|(_, rest)| format!("/console/{rest}")).unwrap();
    console.get(&path).await
}

fn signed_in(page: &Page) -> bool {
    page.set_cookies().iter().any(|c| c.starts_with("veil_session=") && !c.starts_with("veil_session=;"))
}

async fn start(extra: &str, person: Person) -> (MockUpstream, OidcProvider, TestApp) {
    let upstream = MockUpstream::start().await;
    let provider = OidcProvider::start(CLIENT_ID, None, person).await;
    let app = spawn_app(&oidc_config(&upstream, &provider, extra)).await;
    (upstream, provider, app)
}

#[tokio::test]
async fn a_first_sign_in_creates_the_account_and_later_ones_find_it_again() {
    let (_upstream, provider, app) = start("", Person::new("sub-olga", "olga@example.com")).await;
    let mut console = Console::new(&app);
    let login = console.get("/console/login").await;
    assert!(login.body.contains(r#"href="/console/oidc/start""#), "{}", login.body);
    assert!(login.body.contains("Sign in with Example SSO"));

    let page = round_trip(&mut console).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(signed_in(&page), "a session cookie is set");
    assert!(page.body.contains(r#"content="0;url=/console/""#), "moves on from Veil's own page: {}", page.body);
    let dashboard = console.get("/console/").await;
    assert_eq!(dashboard.status, StatusCode::OK);
    assert!(dashboard.body.contains("<h1>Dashboard</h1>"));

    // The request carried state, nonce and an S256 challenge; the token request the verifier.
    let asked = &provider.authorize_requests()[0];
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(asked["scope"].split(' ').any(|s| s == "openid"));
    assert!(asked["redirect_uri"].ends_with("/console/oidc/callback"));
    let token_request = &provider.token_requests()[0];
    assert_eq!(token_request.form["client_id"], CLIENT_ID, "a public client names itself");
    assert!(token_request.basic.is_none());
    assert_eq!(token_request.form["code_verifier"].len(), 43);

    let user = app.store.user_by_email("olga@example.com").await.unwrap().expect("account created");
    assert_eq!(user.name.as_str(), "olga");
    assert!(user.password_hash.is_none(), "no password until the owner sets one");
    assert_eq!(user.group.as_str(), "default");
    let links = app.store.console_identities(user.id).await.unwrap();
    assert_eq!((links[0].issuer.as_str(), links[0].subject.as_str()), (provider.issuer().as_str(), "sub-olga"));

    // Again, even after the address changed at the provider: the subject decides.
    provider.set_person(Person::new("sub-olga", "olga.new@example.com"));
    let mut again = Console::new(&app);
    assert!(signed_in(&round_trip(&mut again).await));
    assert_eq!(app.store.list_users().await.unwrap().len(), 1, "no second account");

    // The owner can set a first password without a current one, then sign in with it.
    let security = console.get("/console/security").await;
    assert!(security.body.contains("Set a password"), "{}", security.body);
    let csrf = security.csrf();
    let set = console.post("/console/security/password", &[("csrf", &csrf), ("new", "a brand new password")]).await;
    assert!(set.body.contains("Your password was set."), "{}", set.body);
    let mut by_password = Console::new(&app);
    let login = by_password.sign_in("olga@example.com", "a brand new password").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);

    // The link is in the owner's export, and the sign-in in the audit log.
    let export = console.get("/console/privacy/export").await;
    assert!(export.body.contains("sub-olga") && export.body.contains("linked_identities"), "{}", export.body);
    let audit = app.store.list_audit(Some(user.id), 50).await.unwrap();
    assert!(audit.iter().any(|entry| entry.action == "console.oidc.link"));
    assert!(audit.iter().any(|entry| entry.action == "user.signup"));
}

#[tokio::test]
async fn an_existing_account_with_the_verified_address_is_linked_not_duplicated() {
    let (_upstream, provider, app) = start("", Person::new("sub-ann", "Ann@Example.com")).await;
    let ann = app
        .store
        .create_user(veil_domain::NewUser {
            name: "ann".parse().unwrap(),
            email: Some("ann@example.com".into()),
            role: veil_domain::Role::User,
            group: "default".parse().unwrap(),
            password_hash: None,
        })
        .await
        .unwrap();
    let mut console = Console::new(&app);
    assert!(signed_in(&round_trip(&mut console).await));
    assert_eq!(app.store.console_identity_user(&provider.issuer(), "sub-ann").await.unwrap(), Some(ann.id));
    assert_eq!(app.store.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_wrong_answer_from_the_provider_never_signs_anyone_in() {
    let (_upstream, provider, app) = start("", Person::new("sub-eve", "eve@example.com")).await;
    for (misbehaviour, status) in [
        (Misbehaviour::Deny, StatusCode::UNAUTHORIZED),
        (Misbehaviour::WrongAudience, StatusCode::UNAUTHORIZED),
        (Misbehaviour::WrongIssuer, StatusCode::UNAUTHORIZED),
        (Misbehaviour::Expired, StatusCode::UNAUTHORIZED),
        (Misbehaviour::WrongNonce, StatusCode::UNAUTHORIZED),
        (Misbehaviour::ForeignKey, StatusCode::UNAUTHORIZED),
        (Misbehaviour::Unsigned, StatusCode::UNAUTHORIZED),
    ] {
        provider.misbehave(misbehaviour);
        let mut console = Console::new(&app);
        let page = round_trip(&mut console).await;
        assert_eq!(page.status, status, "{misbehaviour:?}: {}", page.body);
        assert!(!signed_in(&page), "{misbehaviour:?} must not start a session");
        assert_eq!(console.get("/console/").await.status, StatusCode::SEE_OTHER, "{misbehaviour:?}");
    }
    assert!(app.store.list_users().await.unwrap().is_empty(), "no account was created");
}

#[tokio::test]
async fn the_callback_needs_this_browsers_flow_and_an_unused_code() {
    let (_upstream, provider, app) = start("", Person::new("sub-eve", "eve@example.com")).await;
    // A callback link sent to a victim (login CSRF): no flow cookie in their browser.
    let mut attacker = Console::new(&app);
    let start = attacker.get("/console/oidc/start").await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let back = plain.get(start.location().unwrap()).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let path = format!("/console/{}", callback.split_once("/console/").unwrap().1);
    let mut victim = Console::new(&app);
    let page = victim.get(&path).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(!signed_in(&page));

    // The right browser with a state that does not match its flow.
    let tampered = path.replace("state=", "state=x");
    let page = attacker.get(&tampered).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // The flow cookie is cleared by any callback, so the untampered link no longer works either.
    let page = attacker.get(&path).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    // A code is used once: a second exchange is refused by the provider.
    let mut first = Console::new(&app);
    let start = first.get("/console/oidc/start").await;
    let back = plain.get(start.location().unwrap()).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let path = format!("/console/{}", callback.split_once("/console/").unwrap().1);
    let cookies = first.cookies.clone();
    assert!(signed_in(&first.get(&path).await));
    let mut replay = Console::new(&app);
    replay.cookies = cookies;
    replay.cookies.remove("veil_session");
    let page = replay.get(&path).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(!signed_in(&page));
    assert_eq!(provider.token_requests().len(), 2);
}

#[tokio::test]
async fn accounts_are_created_only_as_the_operator_allows() {
    // Unverified address: nothing is created or linked.
    let mut person = Person::new("sub-u", "u@example.com");
    person.email_verified = false;
    let (_upstream, provider, app) = start("signup_domains = [\"example.com\"]\n", person).await;
    let page = round_trip(&mut Console::new(&app)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    // A domain outside signup_domains.
    provider.set_person(Person::new("sub-o", "o@elsewhere.org"));
    let page = round_trip(&mut Console::new(&app)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(app.store.list_users().await.unwrap().is_empty());
    // At an allowed domain it works (sign-up by form being closed does not matter).
    provider.set_person(Person::new("sub-a", "a@example.com"));
    assert!(signed_in(&round_trip(&mut Console::new(&app)).await));

    // create_accounts = false: only existing accounts.
    let upstream = MockUpstream::start().await;
    let closed = OidcProvider::start(CLIENT_ID, None, Person::new("sub-n", "new@example.com")).await;
    let text = oidc_config(&upstream, &closed, "").replace("name = \"Example SSO\"", "create_accounts = false");
    let app = spawn_app(&text).await;
    let page = round_trip(&mut Console::new(&app)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(app.store.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_factor_is_still_asked_for_and_a_disabled_account_stays_out() {
    let (_upstream, _provider, app) = start("", Person::new("sub-d", "d@example.com")).await;
    let mut console = Console::new(&app);
    assert!(signed_in(&round_trip(&mut console).await));
    let user = app.store.user_by_email("d@example.com").await.unwrap().unwrap();
    // Turn on two-factor sign-in through the console.
    let csrf = console.get("/console/security").await.csrf();
    let enrolled = console.post("/console/security/2fa/enrol", &[("csrf", &csrf)]).await;
    let secret = crate::support::between(&enrolled.body, r#"id="totp-secret">"#, "<").to_owned();
    let secret = veil_console::totp::TotpSecret::from_base32(&secret).unwrap();
    let code = secret.code_at(crate::support::now_seconds());
    let csrf = enrolled.csrf();
    let confirmed = console.post("/console/security/2fa/confirm", &[("csrf", &csrf), ("code", &code)]).await;
    assert!(confirmed.body.contains("Two-factor sign-in is on."), "{}", confirmed.body);

    let mut next = Console::new(&app);
    let page = round_trip(&mut next).await;
    assert!(page.body.contains(r#"content="0;url=/console/login/2fa""#), "{}", page.body);
    assert_eq!(next.get("/console/").await.status, StatusCode::SEE_OTHER, "not signed in before the code");
    assert_eq!(next.get("/console/login/2fa").await.status, StatusCode::OK);

    app.store
        .update_user(user.id, &veil_store::UserChange { disabled: Some(true), ..Default::default() })
        .await
        .unwrap();
    let page = round_trip(&mut Console::new(&app)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!signed_in(&page));
}

#[tokio::test]
async fn a_confidential_client_authenticates_and_rotated_keys_are_fetched_again() {
    // Tests cannot set environment variables (unsafe code is forbidden), so the secret is
    // one cargo sets for every test process.
    let secret = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME for tests");
    let upstream = MockUpstream::start().await;
    let provider = OidcProvider::start(CLIENT_ID, Some(&secret), Person::new("sub-c", "c@example.com")).await;
    let text = oidc_config(&upstream, &provider, "")
        .replace("client_id = ", "client_secret_env = \"CARGO_PKG_NAME\"\nclient_id = ");
    let app = spawn_app(&text).await;
    assert!(signed_in(&round_trip(&mut Console::new(&app)).await));
    let request = &provider.token_requests()[0];
    assert_eq!(request.basic, Some((CLIENT_ID.to_owned(), secret.clone())), "HTTP Basic client authentication");
    assert!(!request.form.contains_key("client_secret"), "the secret is not in the body");

    // The provider rotates its signing key: Veil fetches the key set again (at most every
    // few seconds) and the next sign-in works.
    provider.rotate_key();
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    assert!(signed_in(&round_trip(&mut Console::new(&app)).await), "a rotated key is picked up");
}

#[tokio::test]
async fn an_unreachable_provider_gets_a_clear_page_and_no_oidc_routes_without_config() {
    let upstream = MockUpstream::start().await;
    let provider = OidcProvider::start(CLIENT_ID, None, Person::new("s", "s@example.com")).await;
    let text = oidc_config(&upstream, &provider, "");
    drop(provider);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let app = spawn_app(&text).await;
    let page = Console::new(&app).get("/console/oidc/start").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("Sign-in provider unavailable"));

    let plain = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&plain);
    assert_eq!(console.get("/console/oidc/start").await.status, StatusCode::NOT_FOUND);
    assert!(!console.get("/console/login").await.body.contains("/console/oidc/start"));
}

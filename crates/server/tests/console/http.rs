//! The console over plain HTTP: what a browser cannot easily show — headers, cookie
//! attributes, CSRF refusals, throttling, sign-up rules — and the canary: no page ever
//! shows a prompt (or answer) relayed for the user.

use crate::support::{Console, between, config, now_seconds, relay_chat};
use reqwest::StatusCode;
use veil_console::totp::TotpSecret;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::spawn_app;

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn every_console_response_carries_the_security_headers() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    for path in ["/console/login", "/console/signup", "/console/", "/console/assets/console.css", "/console/nope"] {
        let page = console.get(path).await;
        let csp = page.headers.get("content-security-policy").unwrap_or_else(|| panic!("no CSP on {path}"));
        let csp = csp.to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("script-src"), "no scripts are allowed: {csp}");
        assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY", "{path}");
        assert_eq!(page.headers.get("referrer-policy").unwrap(), "no-referrer", "{path}");
    }
    let login = console.get("/console/login").await;
    assert_eq!(login.headers.get("cache-control").unwrap(), "no-store");
    let css = console.get("/console/assets/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/css"));
    assert!(css.headers.get("etag").is_some());
    // Signed out, a page sends the browser to sign in.
    let mut fresh = Console::new(&app);
    let page = fresh.get("/console/keys").await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, Some("/console/login")));
}

#[tokio::test]
async fn session_cookies_are_http_only_strict_and_rotate_on_sign_in() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    let csrf = console.get("/console/signup").await.csrf();
    let page = console
        .post(
            "/console/signup",
            &[("csrf", &csrf), ("name", "ann"), ("email", "ann@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let cookie = page.set_cookies().into_iter().find(|c| c.starts_with("veil_session=")).expect("a session cookie");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    // Plain HTTP to loopback is the one case without `Secure` (DESIGN §3.8).
    assert!(!cookie.contains("Secure"), "{cookie}");
    let first = console.cookies["veil_session"].clone();
    // The store holds no token, only its hash.
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    let sessions = app.store.list_console_sessions(user.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].token_hash, first);

    let logout_csrf = console.get("/console/").await.csrf();
    let out = console.post("/console/logout", &[("csrf", &logout_csrf)]).await;
    assert_eq!(out.location(), Some("/console/login"));
    assert!(!console.cookies.contains_key("veil_session"));
    assert!(app.store.list_console_sessions(user.id).await.unwrap().is_empty(), "signing out ends the session");
    let again = console.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(again.location(), Some("/console/"));
    assert_ne!(console.cookies["veil_session"], first, "a new token per sign-in");
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    // Before sign-in: the token must match the pre-session cookie.
    let mut stranger = Console::new(&app);
    stranger.get("/console/signup").await;
    let page = stranger
        .post(
            "/console/signup",
            &[("csrf", "forged"), ("name", "eve"), ("email", "eve@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(app.store.user_by_email("eve@example.com").await.unwrap().is_none());

    let mut ann = Console::new(&app);
    ann.sign_up("ann", "ann@example.com", PASSWORD).await;
    let mut bob = Console::new(&app);
    let bobs_token = bob.sign_up("bob", "bob@example.com", PASSWORD).await.csrf();
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    // No token, a forged one, and another session's token: all refused, nothing created.
    for token in [None, Some("forged"), Some(bobs_token.as_str())] {
        let mut fields = vec![("name", "sneaky")];
        if let Some(token) = token {
            fields.push(("csrf", token));
        }
        let page = ann.post("/console/keys", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "token {token:?}");
    }
    assert!(app.store.list_keys(Some(user.id)).await.unwrap().is_empty());
    // The right token works.
    let csrf = ann.get("/console/keys").await.csrf();
    let page = ann.post("/console/keys", &[("csrf", &csrf), ("name", "mine")]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(app.store.list_keys(Some(user.id)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_per_account() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    Console::new(&app).sign_up("ann", "ann@example.com", PASSWORD).await;
    let mut guesser = Console::new(&app);
    for attempt in 0..5 {
        let page = guesser.sign_in("ann@example.com", &format!("wrong-{attempt}")).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(page.body.contains("not right"));
    }
    // Now even the right password is refused for a while, with a clear message.
    let page = guesser.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.headers.get("retry-after").is_some());
    assert!(page.body.contains("Too many failed sign-in attempts"), "{}", page.body);
    // Unknown addresses answer like wrong passwords (and count too).
    let page = Console::new(&app).sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

/// With `[redis]`, guesses spread over several instances add up: three failures on one
/// instance and two on another lock the account on both.
#[tokio::test]
async fn failed_sign_ins_add_up_across_instances_sharing_redis() {
    let Some(url) = veil_testkit::redis::test_redis_url().await else { return };
    let Some(database) = veil_testkit::postgres::TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    // One installation: one database and one master key (so the same keyed hashes in Redis).
    let shared = format!(
        "[database]\nurl = \"{}\"\n[redis]\nurl = \"{url}\"\nkey_prefix = \"{}\"\n",
        database.url,
        veil_testkit::redis::unique_prefix()
    );
    let one = spawn_app(&config(&upstream, &shared)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(one.data_dir.path().join("master.key"), dir.path().join("master.key")).unwrap();
    let two = veil_testkit::spawn_app_in(&config(&upstream, &shared), dir).await;
    for (attempt, app) in [&one, &one, &one, &two, &two].into_iter().enumerate() {
        let page = Console::new(app).sign_in("carol@example.com", &format!("wrong-{attempt}")).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    for app in [&one, &two] {
        let page = Console::new(app).sign_in("carol@example.com", "another guess").await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "locked on every instance");
    }
    // Other accounts are not locked (the per-address limit is higher).
    let page = Console::new(&one).sign_in("dave@example.com", "a guess").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_up_can_be_closed() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "[console]\nsignup = false")).await;
    let mut console = Console::new(&app);
    assert_eq!(console.get("/console/signup").await.status, StatusCode::FORBIDDEN);
    let csrf = console.get("/console/login").await.csrf();
    assert!(!console.get("/console/login").await.body.contains("/console/signup"), "no sign-up link");
    let page = console
        .post(
            "/console/signup",
            &[("csrf", &csrf), ("name", "ann"), ("email", "ann@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(app.store.user_by_email("ann@example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn sign_up_can_be_limited_to_domains_and_lands_in_the_configured_group() {
    let upstream = MockUpstream::start().await;
    let extra =
        "[console]\nsignup_group = \"team\"\nsignup_domains = [\"example.com\"]\n\n[[group]]\nname = \"team\"\n";
    let app = spawn_app(&config(&upstream, extra)).await;
    let mut console = Console::new(&app);
    let csrf = console.get("/console/signup").await.csrf();
    let page = console
        .post(
            "/console/signup",
            &[("csrf", &csrf), ("name", "eve"), ("email", "eve@other.org"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("not open to addresses at this domain"), "{}", page.body);
    assert!(app.store.user_by_email("eve@other.org").await.unwrap().is_none());
    console.sign_up("ann", "ann@Example.com", PASSWORD).await;
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!(user.group.as_str(), "team");
    assert!(user.password_hash.unwrap().starts_with("$argon2id$"));
}

#[tokio::test]
async fn two_factor_sign_in_needs_a_fresh_code_or_an_unused_recovery_code() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    console.sign_up("ann", "ann@example.com", PASSWORD).await;
    let csrf = console.get("/console/security").await.csrf();
    let page = console.post("/console/security/2fa/enrol", &[("csrf", &csrf)]).await;
    let secret = TotpSecret::from_base32(between(&page.body, r#"id="totp-secret">"#, "<")).unwrap();
    let page = console.post("/console/security/2fa/confirm", &[("csrf", &csrf), ("code", "000000")]).await;
    assert!(page.body.contains("not right"));
    let code = secret.code_at(now_seconds());
    let page = console.post("/console/security/2fa/confirm", &[("csrf", &csrf), ("code", &code)]).await;
    assert!(page.body.contains("Two-factor sign-in is <strong>on</strong>"), "{}", page.body);
    let codes: Vec<String> = between(&page.body, r#"<ul class="codes" id="recovery-codes">"#, "</ul>")
        .split("<li>")
        .filter_map(|li| li.split("</li>").next())
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 10);

    // A password alone now only reaches the second step.
    let mut other = Console::new(&app);
    let page = other.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(page.location(), Some("/console/login/2fa"));
    assert_eq!(other.get("/console/").await.location(), Some("/console/login"), "half signed in opens nothing");
    let csrf = other.get("/console/login/2fa").await.csrf();
    // The code that confirmed enrolment is spent; a recovery code works once.
    let page = other.post("/console/login/2fa", &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = other.post("/console/login/2fa", &[("csrf", &csrf), ("code", &codes[0].to_uppercase())]).await;
    assert_eq!(page.location(), Some("/console/"));
    assert_eq!(other.get("/console/").await.status, StatusCode::OK);

    let mut third = Console::new(&app);
    third.sign_in("ann@example.com", PASSWORD).await;
    let csrf = third.get("/console/login/2fa").await.csrf();
    let page = third.post("/console/login/2fa", &[("csrf", &csrf), ("code", &codes[0])]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "recovery codes are single use");
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    let actions: Vec<String> =
        app.store.list_audit(Some(user.id), 100).await.unwrap().into_iter().map(|a| a.action).collect();
    assert!(actions.contains(&"console.2fa.enable".to_owned()), "{actions:?}");
    assert!(actions.contains(&"console.recovery_code.use".to_owned()), "{actions:?}");
}

/// Sends a prompt through the relay with a key made in the console, then reads every
/// console page and download: neither the prompt nor the answer is anywhere.
#[tokio::test]
async fn no_console_page_ever_shows_relayed_content() {
    const PROMPT: &str = "CANARY-PROMPT-7f3a9c";
    const ANSWER: &str = "CANARY-ANSWER-51be02";
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::chat(ANSWER));
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    console.sign_up("ann", "ann@example.com", PASSWORD).await;
    let secret = console.create_key("canary").await;
    let (status, body) = relay_chat(&app, &secret, PROMPT).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(ANSWER), "the relay answered");
    // The record is written in batches: wait until it shows in the call records page.
    let mut records = String::new();
    for _ in 0..50 {
        records = console.get("/console/records").await.body;
        if !records.contains("No call records match.") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(records.contains("gpt-4o-mini"), "the call shows up:\n{records}");
    // The model filter: the call is listed under its model, not under another one.
    let mini = console.get("/console/records?model=gpt-4o-mini").await.body;
    assert!(!mini.contains("No call records match."), "{mini}");
    assert!(mini.contains(r#"<option value="gpt-4o-mini" selected>"#), "the filter shows as chosen");
    assert!(
        ["format=csv&#38;model=gpt-4o-mini", "format=csv&amp;model=gpt-4o-mini"].iter().any(|link| mini.contains(link)),
        "exports keep the filter: {mini}"
    );
    let other = console.get("/console/records?model=gpt-4o").await.body;
    assert!(other.contains("No call records match."), "{other}");
    let csv = console.get("/console/records/export?format=csv&model=gpt-4o").await.body;
    assert!(!csv.contains("gpt-4o-mini"), "the export is filtered too: {csv}");
    for path in [
        "/console/",
        "/console/keys",
        "/console/records",
        "/console/records/export?format=csv",
        "/console/records/export?format=json",
        "/console/bills",
        "/console/redeem",
        "/console/privacy",
        "/console/privacy/export",
        "/console/security",
        "/console/notifications",
        "/console/records?model=gpt-4o-mini",
    ] {
        let page = console.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains(PROMPT) && !page.body.contains(ANSWER), "{path} shows relayed content");
    }
}

/// `/api/me/…`, `/api/usage` and `/api/redeem` accept a console session instead of a key;
/// a request that changes something must then carry the session's CSRF token.
#[tokio::test]
async fn the_json_api_accepts_a_console_session_with_csrf_for_changes() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    let csrf = console.sign_up("ann", "ann@example.com", PASSWORD).await.csrf();
    let cookie = format!("veil_session={}", console.cookies["veil_session"]);
    let http = reqwest::Client::new();
    let export = http.get(app.url("/api/me/export")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(export.status(), 200);
    let export: serde_json::Value = export.json().await.unwrap();
    assert_eq!(export["account"]["name"], "ann");
    assert_eq!(export["console_sessions"].as_array().map(Vec::len), Some(1), "session metadata is exported");
    assert!(!export.to_string().contains(&console.cookies["veil_session"]), "never the token");
    let usage = http.get(app.url("/api/usage")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(usage.status(), 200);

    // A change without the CSRF header is refused; with it, it goes through.
    let redeem =
        || http.post(app.url("/api/redeem")).header("cookie", &cookie).json(&serde_json::json!({"code": "nope"}));
    assert_eq!(redeem().send().await.unwrap().status(), 403);
    assert_eq!(redeem().header("x-csrf-token", "forged").send().await.unwrap().status(), 403);
    assert_eq!(
        redeem().header("x-csrf-token", &csrf).send().await.unwrap().status(),
        400,
        "checked, then refused as a bad code"
    );
    let erase = http.delete(app.url("/api/me")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(erase.status(), 403);
    assert!(app.store.user_by_email("ann@example.com").await.unwrap().is_some());

    // An ended session is no credential.
    let stale = http
        .get(app.url("/api/me/export"))
        .header("cookie", "veil_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
}

#[tokio::test]
async fn password_change_signs_out_other_browsers_and_two_factor_needs_the_password_to_turn_off() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut first = Console::new(&app);
    first.sign_up("ann", "ann@example.com", PASSWORD).await;
    let mut second = Console::new(&app);
    assert_eq!(second.sign_in("ann@example.com", PASSWORD).await.location(), Some("/console/"));

    let csrf = first.get("/console/security").await.csrf();
    let page = first
        .post("/console/security/password", &[("csrf", &csrf), ("current", "wrong"), ("new", "another password")])
        .await;
    assert!(page.body.contains("current password is not right"), "{}", page.body);
    let page = first
        .post("/console/security/password", &[("csrf", &csrf), ("current", PASSWORD), ("new", "another password")])
        .await;
    assert!(page.body.contains("Your password was changed"), "{}", page.body);
    assert_eq!(first.get("/console/").await.status, StatusCode::OK, "this browser stays signed in");
    assert_eq!(second.get("/console/").await.location(), Some("/console/login"), "the other one is signed out");
    assert_eq!(Console::new(&app).sign_in("ann@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(Console::new(&app).sign_in("ann@example.com", "another password").await.location(), Some("/console/"));

    let page = first.post("/console/security/2fa/enrol", &[("csrf", &csrf)]).await;
    let secret = TotpSecret::from_base32(between(&page.body, r#"id="totp-secret">"#, "<")).unwrap();
    let code = secret.code_at(now_seconds());
    first.post("/console/security/2fa/confirm", &[("csrf", &csrf), ("code", &code)]).await;
    let page = first.post("/console/security/2fa/disable", &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert!(page.body.contains("password is not right"));
    let page = first.post("/console/security/2fa/disable", &[("csrf", &csrf), ("password", "another password")]).await;
    assert!(page.body.contains("Two-factor sign-in is off."), "{}", page.body);
    assert_eq!(Console::new(&app).sign_in("ann@example.com", "another password").await.location(), Some("/console/"));
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    let actions: Vec<String> =
        app.store.list_audit(Some(user.id), 100).await.unwrap().into_iter().map(|a| a.action).collect();
    for action in ["console.password.change", "console.2fa.enable", "console.2fa.disable"] {
        assert!(actions.iter().any(|a| a == action), "{action} audited: {actions:?}");
    }
}

#[tokio::test]
async fn keys_are_revoked_and_debug_capture_toggled_from_the_console() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "")).await;
    let mut console = Console::new(&app);
    let csrf = console.sign_up("ann", "ann@example.com", PASSWORD).await.csrf();
    let page = console
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("name", "k1"),
                ("expires", "30d"),
                ("quota", "2.50"),
                ("ip_allow", "10.0.0.0/8, 127.0.0.1"),
                ("allow_training", "on"),
                ("firewall", "pii"),
            ],
        )
        .await;
    assert!(page.body.contains("Key k1 created."), "{}", page.body);
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    let key = app.store.list_keys(Some(user.id)).await.unwrap().remove(0);
    assert_eq!(key.quota.map(|q| q.to_decimal_string()).as_deref(), Some("2.5"));
    assert!(key.allow_training && key.expires_at.is_some());
    assert_eq!(key.ip_allow.len(), 2);
    assert!(page.body.contains("quota 2.5, 2 networks") && page.body.contains("consented"), "{}", page.body);
    let page = console.post("/console/keys", &[("csrf", &csrf), ("quota", "lots")]).await;
    assert!(page.body.contains("The quota must be an amount"), "{}", page.body);

    let capture = format!("/console/privacy/capture/{}", key.id);
    let page = console.post(&capture, &[("csrf", &csrf), ("hours", "25"), ("action", "on")]).await;
    assert!(page.body.contains("from 1 to 24"));
    let page = console.post(&capture, &[("csrf", &csrf), ("hours", "2"), ("action", "on")]).await;
    assert!(page.body.contains("Debug capture is on until"), "{}", page.body);
    assert!(app.store.key_capture(key.id).await.unwrap().is_some());
    console.post(&capture, &[("csrf", &csrf), ("action", "off")]).await;
    assert!(app.store.key_capture(key.id).await.unwrap().is_none());

    let page = console.post(&format!("/console/keys/{}/revoke", key.id), &[("csrf", &csrf)]).await;
    assert!(page.body.contains("The key was revoked."));
    assert!(app.store.list_keys(Some(user.id)).await.unwrap()[0].revoked_at.is_some());
    // Another user's key (or a revoked one) is not found.
    let again = console.post(&format!("/console/keys/{}/revoke", key.id), &[("csrf", &csrf)]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

//! The console in headless Chromium (Debian's `chromium` and `chromium-driver`), driven over
//! WebDriver by fantoccini on plain HTTP: sign-up, two-factor enrolment and sign-in, key
//! creation, a relayed call showing up in the dashboard chart and the call records, export,
//! and account deletion. Screenshots of the main pages, wide and at a phone's width, go to
//! `artifacts/console/` at the repository root. Without chromedriver the test is skipped,
//! unless `VEIL_REQUIRE_SERVICES=1`.

use crate::support::{config, now_seconds};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use veil_console::totp::TotpSecret;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::oidc::{OidcProvider, Person};
use veil_testkit::spawn_app;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PASSWORD: &str = "correct horse battery";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[allow(clippy::print_stderr)] // a skipped test says why
async fn start_driver() -> Option<Driver> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var("VEIL_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "chromium and chromium-driver are required (apt-get install -y chromium chromium-driver)"
        );
        eprintln!("skipped: chromium or chromedriver is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success()) {
            return Some(Driver { child, url });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900"
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url).await.unwrap()
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

/// Full-page screenshots: the window is grown to the page's height first.
async fn full_screenshot(client: &Client, name: &str, width: u32) {
    let height = client.execute("return document.documentElement.scrollHeight", vec![]).await.unwrap();
    let height = height.as_u64().unwrap_or(900).clamp(600, 4_000) as u32;
    client.set_window_size(width, height + 140).await.unwrap();
    screenshot(client, name).await;
}

async fn fill(client: &Client, css: &str, text: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

/// The text of the first element matching `css`, waiting for it (a click's navigation may
/// still be under way: a stale element is looked up again).
async fn text(client: &Client, css: &str) -> String {
    for _ in 0..100 {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {css} on {}", client.current_url().await.unwrap());
}

/// Waits until the page's `h1` reads `expected` (after a form's submission).
async fn heading(client: &Client, expected: &str) {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = text(client, "h1").await;
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected the page {expected:?}, still on {seen:?} at {}", client.current_url().await.unwrap());
}

#[tokio::test]
async fn a_user_signs_up_secures_the_account_calls_and_leaves() {
    let Some(driver) = start_driver().await else { return };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::chat("Hello from upstream"));
    let app = spawn_app(&config(&upstream, "")).await;
    let client = browser(&driver).await;
    let result = journey(&client, &app).await;
    client.close().await.unwrap();
    result.unwrap();
}

async fn journey(client: &Client, app: &veil_testkit::TestApp) -> Result<(), String> {
    // The public pages share the console's stylesheet.
    for (name, url) in [("home", "/"), ("models", "/models"), ("privacy-statement", "/privacy")] {
        client.goto(&app.url(url)).await.unwrap();
        full_screenshot(client, &format!("public-{name}"), 1280).await;
    }
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&app.url("/models")).await.unwrap();
    full_screenshot(client, "public-models-phone", 390).await;
    client.set_window_size(1280, 900).await.unwrap();

    // Sign-up.
    client.goto(&app.url("/console/signup")).await.unwrap();
    screenshot(client, "signup").await;
    fill(client, "#name", "ann").await;
    fill(client, "#email", "ann@example.com").await;
    fill(client, "#password", PASSWORD).await;
    click(client, "form[action='/console/signup'] button[type=submit]").await;
    heading(client, "Dashboard").await;

    // Two-factor enrolment: the secret is read off the page, the code computed here.
    client.goto(&app.url("/console/security")).await.unwrap();
    click(client, "form[action='/console/security/2fa/enrol'] button").await;
    let secret = TotpSecret::from_base32(&text(client, "#totp-secret").await).unwrap();
    fill(client, "#totp-code", &secret.code_at(now_seconds())).await;
    click(client, "form[action='/console/security/2fa/confirm'] button").await;
    let codes = text(client, "#recovery-codes").await;
    assert_eq!(codes.lines().count(), 10, "{codes}");
    full_screenshot(client, "security", 1280).await;

    // Sign out, and back in with the second factor (the next step's code: the one that
    // confirmed enrolment is spent).
    click(client, "form[action='/console/logout'] button").await;
    heading(client, "Sign in").await;
    screenshot(client, "login").await;
    fill(client, "#email", "ann@example.com").await;
    fill(client, "#password", PASSWORD).await;
    click(client, "form[action='/console/login'] button").await;
    heading(client, "Two-factor check").await;
    screenshot(client, "two-factor").await;
    fill(client, "#code", &secret.code_at(now_seconds() + 30)).await;
    click(client, "form[action='/console/login/2fa'] button").await;
    heading(client, "Dashboard").await;

    // A key with some options; its secret is shown once.
    client.goto(&app.url("/console/keys")).await.unwrap();
    fill(client, "#key-name", "laptop").await;
    fill(client, "#key-models", "gpt-4o-mini").await;
    fill(client, "#key-rpm", "60").await;
    click(client, "form[action='/console/keys'] button[type=submit]").await;
    let key = text(client, "#new-secret").await;
    assert!(key.starts_with("sk-veil-"), "{key}");
    full_screenshot(client, "keys", 1280).await;
    let stored = app.store.list_keys(None).await.unwrap();
    assert_eq!(stored[0].limits.rpm, Some(60));

    // A relayed call.
    let response = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // It shows up in the dashboard's chart (today's point: 1 call) and by-model table.
    client.set_window_size(1280, 900).await.unwrap();
    let mut found = false;
    for _ in 0..50 {
        client.goto(&app.url("/console/")).await.unwrap();
        if text(client, "#by-model").await.contains("gpt-4o-mini") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the call reached the dashboard");
    let chart = client.source().await.unwrap();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(chart.contains(&format!("<title>{}: 1</title>", &today[5..])), "today's point shows one call");
    full_screenshot(client, "dashboard", 1280).await;

    client.goto(&app.url("/console/records")).await.unwrap();
    let records = text(client, "#records").await;
    assert!(records.contains("gpt-4o-mini") && records.contains("200"), "{records}");
    full_screenshot(client, "records", 1280).await;
    for page in ["bills", "redeem", "privacy", "notifications"] {
        client.goto(&app.url(&format!("/console/{page}"))).await.unwrap();
        full_screenshot(client, page, 1280).await;
    }
    // The same pages at a phone's width.
    for (page, url) in [
        ("dashboard", "/console/"),
        ("keys", "/console/keys"),
        ("records", "/console/records"),
        ("privacy", "/console/privacy"),
    ] {
        client.set_window_size(390, 844).await.unwrap();
        client.goto(&app.url(url)).await.unwrap();
        full_screenshot(client, &format!("{page}-phone"), 390).await;
    }
    client.set_window_size(1280, 900).await.unwrap();

    // Export: the page links the download; it is fetched with the browser's session.
    client.goto(&app.url("/console/privacy")).await.unwrap();
    let href = client.find(Locator::Css("#export-link")).await.unwrap().attr("href").await.unwrap().unwrap();
    let session = client.get_named_cookie("veil_session").await.unwrap();
    let export: Value = reqwest::Client::new()
        .get(app.url(&href))
        .header("cookie", format!("veil_session={}", session.value()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["account"]["name"], "ann");
    assert_eq!(export["call_records"].as_array().map(Vec::len), Some(1));
    assert_eq!(export["two_factor_enabled"], true);
    assert!(!export.to_string().contains(&key), "never the key's secret");

    // Deleting the account: password and confirmation.
    fill(client, "#delete-password", PASSWORD).await;
    fill(client, "#delete-confirm", "DELETE").await;
    click(client, "form[action='/console/privacy/delete'] button").await;
    heading(client, "Account deleted").await;
    screenshot(client, "deleted").await;
    assert!(app.store.user_by_email("ann@example.com").await.unwrap().is_none());
    let after = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "the key died with the account");
    client.goto(&app.url("/console/")).await.unwrap();
    heading(client, "Sign in").await; // the session died too
    Ok(())
}

/// OpenID Connect sign-in in a real browser: the provider on `localhost` is another site
/// than Veil on `127.0.0.1`, and the way back starts on the provider's page (its "Continue"
/// button), so this checks the cookies survive the cross-site round trip (the flow cookie is
/// `SameSite=Lax`; the `Strict` session cookie is sent from Veil's own continue page).
#[tokio::test]
async fn a_user_signs_in_through_the_organisations_provider() {
    let Some(driver) = start_driver().await else { return };
    let upstream = MockUpstream::start().await;
    let provider = OidcProvider::start("veil-console", None, Person::new("sub-olga", "olga@example.com")).await;
    provider.ask_before_redirecting();
    let extra = format!(
        "[console.oidc]\nissuer = \"{}\"\nclient_id = \"veil-console\"\nname = \"Example SSO\"\n",
        provider.issuer()
    );
    let app = spawn_app(&config(&upstream, &extra)).await;
    let client = browser(&driver).await;
    let result = async {
        client.goto(&app.url("/console/login")).await.map_err(|e| e.to_string())?;
        heading(&client, "Sign in").await;
        full_screenshot(&client, "login-with-sso", 1280).await;
        click(&client, "a[href='/console/oidc/start']").await;
        heading(&client, "Test provider").await;
        click(&client, "#approve").await;
        heading(&client, "Dashboard").await;
        let url = client.current_url().await.map_err(|e| e.to_string())?;
        if url.as_str() != app.url("/console/") {
            return Err(format!("ended on {url}"));
        }
        Ok::<(), String>(())
    }
    .await;
    client.close().await.unwrap();
    result.unwrap();
    assert_eq!(provider.authorize_requests().len(), 1);
    let user = app.store.user_by_email("olga@example.com").await.unwrap().expect("the account was created");
    assert_eq!(app.store.console_identities(user.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_admin_creates_a_channel_and_reviews_every_admin_page() {
    let Some(driver) = start_driver().await else { return };
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "[[group]]\nname = \"team\"\nmultiplier = \"1.2\"\n")).await;
    let client = browser(&driver).await;
    let result = admin_journey(&client, &app, &upstream).await;
    client.close().await.unwrap();
    result.unwrap();
}

async fn admin_journey(client: &Client, app: &veil_testkit::TestApp, upstream: &MockUpstream) -> Result<(), String> {
    client.goto(&app.url("/console/signup")).await.unwrap();
    fill(client, "#name", "ada").await;
    fill(client, "#email", "ada@example.com").await;
    fill(client, "#password", PASSWORD).await;
    click(client, "form[action='/console/signup'] button[type=submit]").await;
    heading(client, "Dashboard").await;
    assert!(!client.source().await.unwrap().contains("/console/admin/"), "no admin nav before the role");
    let ada = app.store.user_by_email("ada@example.com").await.unwrap().unwrap();
    let root = veil_store::UserChange { role: Some(veil_domain::Role::Root), ..Default::default() };
    app.store.update_user(ada.id, &root).await.unwrap();

    // The nav now leads to the admin pages; a channel is made through the form.
    client.goto(&app.url("/console/")).await.unwrap();
    click(client, "header nav a[href='/console/admin/']").await;
    heading(client, "Channels").await;
    click(client, "a[href='/console/admin/channels/new']").await;
    heading(client, "New channel").await;
    fill(client, "#ch-name", "backup").await;
    fill(client, "#ch-base", &upstream.base_url()).await;
    fill(client, "#ch-key", "sk-upstream-browser-secret").await;
    fill(client, "#ch-models", "gpt-4o-mini").await;
    fill(client, "#ch-priority", "3").await;
    fill(client, "#ch-retention", "none").await;
    fill(client, "#ch-region", "EU").await;
    admin_screenshot(client, "admin-channel-new", 1280).await;
    click(client, "form[action='/console/admin/channels/new'] button[type=submit]").await;
    heading(client, "Channels").await;
    let table = text(client, "#channels").await;
    assert!(table.contains("backup") && table.contains("gpt-4o-mini"), "{table}");
    assert!(!client.source().await.unwrap().contains("sk-upstream-browser-secret"), "credentials are write-only");
    assert!(text(client, "p.notice").await.contains("Channel backup created."));
    admin_screenshot(client, "admin-channels", 1280).await;

    // Something on every page before its screenshot: a price, codes, a credit.
    client.goto(&app.url("/console/admin/models")).await.unwrap();
    fill(client, "form[action='/console/admin/models/gpt-4o-mini'] input[name=input]", "0.15").await;
    fill(client, "form[action='/console/admin/models/gpt-4o-mini'] input[name=output]", "0.60").await;
    click(client, "form[action='/console/admin/models/gpt-4o-mini'] input[name=free]").await;
    click(client, "form[action='/console/admin/models/gpt-4o-mini'] button").await;
    assert!(text(client, "p.notice").await.contains("Price of gpt-4o-mini saved."));
    admin_screenshot(client, "admin-models", 1280).await;
    client.goto(&app.url("/console/admin/codes")).await.unwrap();
    fill(client, "#code-amount", "5").await;
    fill(client, "#code-count", "2").await;
    click(client, "form[action='/console/admin/codes'] button").await;
    assert_eq!(text(client, "#new-codes").await.lines().count(), 2);
    admin_screenshot(client, "admin-codes", 1280).await;
    client.goto(&app.url("/console/admin/users")).await.unwrap();
    fill(client, "form[action='/console/admin/users/ada/credit'] input[name=amount]", "20").await;
    click(client, "form[action='/console/admin/users/ada/credit'] button").await;
    assert!(text(client, "p.notice").await.contains("balance 20.00"));
    admin_screenshot(client, "admin-users", 1280).await;
    for (name, url) in [
        ("admin-channel-edit", "/console/admin/channels/backup"),
        ("admin-channel-managed", "/console/admin/channels/primary"),
        ("admin-groups", "/console/admin/groups"),
        ("admin-group-edit", "/console/admin/groups/new"),
        ("admin-audit", "/console/admin/audit"),
        ("admin-settings", "/console/admin/settings"),
    ] {
        client.goto(&app.url(url)).await.unwrap();
        admin_screenshot(client, name, 1280).await;
    }
    assert!(text(client, "h1").await == "Settings");
    client.goto(&app.url("/console/admin/audit")).await.unwrap();
    assert!(text(client, "#chain").await.contains("Chain intact"));
    for (name, url) in [
        ("admin-channels-phone", "/console/admin/"),
        ("admin-users-phone", "/console/admin/users"),
        ("admin-models-phone", "/console/admin/models"),
    ] {
        client.set_window_size(390, 844).await.unwrap();
        client.goto(&app.url(url)).await.unwrap();
        admin_screenshot(client, name, 390).await;
    }
    Ok(())
}

/// A full-page screenshot measured from a window of the usual height (a taller window
/// left by the previous screenshot would pad a short page).
async fn admin_screenshot(client: &Client, name: &str, width: u32) {
    client.set_window_size(width, 844).await.unwrap();
    full_screenshot(client, name, width).await;
}

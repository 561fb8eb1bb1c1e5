//! The admin pages over plain HTTP: every page and action refused to a `user` (403), CSRF
//! on every form, and each form's happy path and a validation error, with the audit log
//! and the store checked behind the page. Secrets (channel credentials, redemption codes
//! after their one showing) never come back in a page.

use crate::support::{Console, Page, between, config};
use reqwest::StatusCode;
use veil_domain::Role;
use veil_store::UserChange;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::{TestApp, spawn_app};

const PASSWORD: &str = "correct horse battery";

/// Every admin page.
const PAGES: [&str; 11] = [
    "/console/admin/",
    "/console/admin/channels/new",
    "/console/admin/channels/primary",
    "/console/admin/models",
    "/console/admin/groups",
    "/console/admin/groups/new",
    "/console/admin/groups/default",
    "/console/admin/users",
    "/console/admin/codes",
    "/console/admin/audit",
    "/console/admin/settings",
];

/// Every admin action.
const ACTIONS: [&str; 14] = [
    "/console/admin/channels/new",
    "/console/admin/channels/primary",
    "/console/admin/channels/primary/enable",
    "/console/admin/channels/primary/disable",
    "/console/admin/channels/primary/test",
    "/console/admin/channels/primary/delete",
    "/console/admin/models/gpt-4o-mini",
    "/console/admin/groups/save",
    "/console/admin/users/ann/credit",
    "/console/admin/users/ann/role",
    "/console/admin/users/ann/group",
    "/console/admin/users/ann/disable",
    "/console/admin/users/ann/enable",
    "/console/admin/codes",
];

/// Signs `name` up and gives the account `role`; returns its console.
async fn member(app: &TestApp, name: &str, role: Role) -> Console {
    let mut console = Console::new(app);
    let email = format!("{name}@example.com");
    console.sign_up(name, &email, PASSWORD).await;
    let user = app.store.user_by_email(&email).await.unwrap().unwrap();
    let change = UserChange { role: Some(role), ..UserChange::default() };
    assert!(app.store.update_user(user.id, &change).await.unwrap());
    console
}

async fn admin_app(extra: &str) -> (MockUpstream, TestApp) {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, extra)).await;
    (upstream, app)
}

async fn post_form(console: &mut Console, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
    let csrf = console.get(page).await.csrf();
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    console.post(action, &all).await
}

async fn audit_actions(app: &TestApp) -> Vec<String> {
    app.store.list_audit(None, 1000).await.unwrap().into_iter().map(|entry| entry.action).collect()
}

#[tokio::test]
async fn users_are_refused_every_admin_page_and_action() {
    let (_upstream, app) = admin_app("").await;
    let mut ann = member(&app, "ann", Role::User).await;
    let dashboard = ann.get("/console/").await;
    assert!(!dashboard.body.contains("/console/admin/"), "no admin nav for a user");
    for path in PAGES {
        let page = ann.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Admins only"), "{path}: {}", page.body);
    }
    let csrf = ann.get("/console/keys").await.csrf();
    for path in ACTIONS {
        let fields = [
            ("csrf", csrf.as_str()),
            ("name", "sneaky"),
            ("type", "openai"),
            ("amount", "100"),
            ("role", "root"),
            ("group", "default"),
            ("input", "1"),
        ];
        let page = ann.post(path, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!(user.role, Role::User);
    assert_eq!(app.store.balance(user.id).await.unwrap(), veil_domain::Money::ZERO);
    let actions = audit_actions(&app).await;
    assert!(
        !actions.iter().any(|a| a == "channel.create" || a == "channel.disable" || a == "user.role"),
        "{actions:?}"
    );

    let mut root = member(&app, "root", Role::Root).await;
    let dashboard = root.get("/console/").await;
    assert!(dashboard.body.contains(r#"<a href="/console/admin/""#), "admins see the admin nav");
    for path in PAGES {
        let page = root.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    }
}

#[tokio::test]
async fn admin_forms_without_the_right_csrf_token_are_refused() {
    let (_upstream, app) = admin_app("").await;
    member(&app, "ann", Role::User).await;
    let mut root = member(&app, "root", Role::Root).await;
    for token in [None, Some("forged")] {
        let mut fields = vec![("amount", "5")];
        if let Some(token) = token {
            fields.push(("csrf", token));
        }
        let page = root.post("/console/admin/users/ann/credit", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(page.body.contains("Form expired"));
        let page = root.post("/console/admin/channels/primary/disable", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    let ann = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!(app.store.balance(ann.id).await.unwrap(), veil_domain::Money::ZERO);
    assert!(!audit_actions(&app).await.contains(&"channel.disable".to_owned()));
}

#[tokio::test]
async fn admins_create_edit_disable_and_delete_channels_with_write_only_credentials() {
    let (upstream, app) = admin_app("").await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    let secret = "sk-upstream-very-secret-123";
    let base = upstream.base_url();
    let fields = [
        ("name", "backup"),
        ("type", "openai"),
        ("base_url", base.as_str()),
        ("api_key", secret),
        ("models", "gpt-4o-mini, other-model"),
        ("model_mapping", "other-model=gpt-4o"),
        ("priority", "5"),
        ("weight", "3"),
        ("retention", "none"),
        ("region", "EU"),
        ("tls_verify", "on"),
        ("enabled", "on"),
    ];
    let page = post_form(&mut admin, "/console/admin/channels/new", "/console/admin/channels/new", &fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Channel backup created."), "{}", page.body);
    let row = between(&page.body, "<th scope=\"row\">backup</th>", "</tr>");
    assert!(row.contains("gpt-4o-mini, other-model") && row.contains("5 / 3") && row.contains(">set<"), "{row}");
    assert!(!page.body.contains(secret), "the credential is never shown");
    let channel = app.store.list_channels().await.unwrap().into_iter().find(|c| c.name.as_str() == "backup").unwrap();
    assert_eq!((channel.priority, channel.weight, channel.managed), (5, 3, false));
    assert_eq!(app.store.channel_credentials().await.unwrap().len(), 1);
    // The edit form shows every field but the credential, which it only says is set.
    let edit = admin.get("/console/admin/channels/backup").await;
    assert!(edit.body.contains("currently set") && !edit.body.contains(secret), "{}", edit.body);
    assert!(edit.body.contains("other-model=gpt-4o"), "{:?}", channel.model_mapping);

    // Validation is the config file's: an unknown type names its field, nothing is stored.
    let bad = [("name", "broken"), ("type", "telepathy"), ("base_url", base.as_str()), ("models", "gpt-4o-mini")];
    let page = post_form(&mut admin, "/console/admin/channels/new", "/console/admin/channels/new", &bad).await;
    assert!(page.body.contains("Not saved: type"), "{}", page.body);
    assert!(page.body.contains(r#"value="broken""#), "the form keeps what was typed");
    assert!(!app.store.list_channels().await.unwrap().iter().any(|c| c.name.as_str() == "broken"));

    // Edited without a new key: the stored one stays.
    let edited = [
        ("type", "openai"),
        ("base_url", base.as_str()),
        ("models", "gpt-4o-mini"),
        ("priority", "7"),
        ("tls_verify", "on"),
        ("enabled", "on"),
    ];
    let page = post_form(&mut admin, "/console/admin/channels/backup", "/console/admin/channels/backup", &edited).await;
    assert!(page.body.contains("Channel backup saved."), "{}", page.body);
    let channel = app.store.list_channels().await.unwrap().into_iter().find(|c| c.name.as_str() == "backup").unwrap();
    assert_eq!(channel.priority, 7);
    assert_eq!(app.store.channel_credentials().await.unwrap().len(), 1);

    // Disable, enable, test, delete.
    let page = post_form(&mut admin, "/console/admin/", "/console/admin/channels/backup/disable", &[]).await;
    assert!(page.body.contains("Channel backup disabled."), "{}", page.body);
    assert!(between(&page.body, "<th scope=\"row\">backup</th>", "</tr>").contains("disabled (admin)"));
    let page = post_form(&mut admin, "/console/admin/", "/console/admin/channels/backup/enable", &[]).await;
    assert!(page.body.contains("Channel backup enabled."), "{}", page.body);
    let page = post_form(&mut admin, "/console/admin/", "/console/admin/channels/primary/test", &[]).await;
    assert!(
        page.body.contains("Channel primary answered in") || page.body.contains("failed its test"),
        "{}",
        page.body
    );
    let page = post_form(&mut admin, "/console/admin/", "/console/admin/channels/backup/delete", &[]).await;
    assert!(page.body.contains("Channel backup deleted."), "{}", page.body);
    assert!(!app.store.list_channels().await.unwrap().iter().any(|c| c.name.as_str() == "backup"));

    // The config file's channel is read-only.
    let page = admin.get("/console/admin/channels/primary").await;
    assert!(page.body.contains("declared in the config file"), "{}", page.body);
    let page = post_form(&mut admin, "/console/admin/", "/console/admin/channels/primary", &edited).await;
    assert!(page.body.contains("declared in the config file"), "{}", page.body);

    let actions = audit_actions(&app).await;
    for action in ["channel.create", "channel.update", "channel.disable", "channel.enable", "channel.delete"] {
        assert!(actions.contains(&action.to_owned()), "{action} audited: {actions:?}");
    }
}

#[tokio::test]
async fn admins_set_prices() {
    let (_upstream, app) = admin_app("").await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    let fields = [("input", "0.15"), ("output", "0.6"), ("max_output_tokens", "4096")];
    let page = post_form(&mut admin, "/console/admin/models", "/console/admin/models/gpt-4o-mini", &fields).await;
    assert!(page.body.contains("Price of gpt-4o-mini saved."), "{}", page.body);
    assert!(page.body.contains("0.15 in / 0.15 cached / 0.60 out"), "{}", page.body);
    let model = app.store.list_models().await.unwrap().into_iter().find(|m| m.name.as_str() == "gpt-4o-mini").unwrap();
    assert_eq!(model.max_output_tokens, Some(4096));
    assert!(audit_actions(&app).await.contains(&"model.price".to_owned()));

    let page =
        post_form(&mut admin, "/console/admin/models", "/console/admin/models/gpt-4o-mini", &[("input", "-1")]).await;
    assert!(page.body.contains("must be a non-negative decimal"), "{}", page.body);
    assert!(page.body.contains("0.15 in /"), "the old price stays: {}", page.body);
}

#[tokio::test]
async fn admins_edit_groups_but_not_those_of_the_config_file() {
    let (_upstream, app) = admin_app("[[group]]\nname = \"filed\"\n").await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    let fields = [
        ("name", "team"),
        ("multiplier", "1.5"),
        ("firewall", "pii"),
        ("max_retention_days", "0"),
        ("regions", "EU, CH"),
        ("rpm", "60"),
        ("daily_spend", "10"),
        ("deny_keywords", "secret\nconfidential"),
    ];
    let page = post_form(&mut admin, "/console/admin/groups/new", "/console/admin/groups/save", &fields).await;
    assert!(page.body.contains("Group team saved."), "{}", page.body);
    let row = between(&page.body, "<th scope=\"row\">team</th>", "</tr>");
    assert!(row.contains("1.5") && row.contains("firewall pii") && row.contains("EU, CH"), "{row}");
    assert!(row.contains("10.00") && row.contains(">2<"), "{row}");
    let team = app.store.list_groups().await.unwrap().into_iter().find(|g| g.name.as_str() == "team").unwrap();
    assert_eq!(team.limits.rpm, Some(60));
    assert!(audit_actions(&app).await.contains(&"group.create".to_owned()));

    let bad = [("name", "team"), ("firewall", "pii"), ("deny_patterns", "(unclosed")];
    let page = post_form(&mut admin, "/console/admin/groups/team", "/console/admin/groups/save", &bad).await;
    assert!(page.body.contains("not a valid regular expression"), "{}", page.body);
    let team = app.store.list_groups().await.unwrap().into_iter().find(|g| g.name.as_str() == "team").unwrap();
    assert!(team.deny_patterns.is_empty());

    let page = admin.get("/console/admin/groups/filed").await;
    assert!(page.body.contains("declared in the config file"), "{}", page.body);
    let filed = [("name", "filed"), ("firewall", "off"), ("multiplier", "9")];
    let page = post_form(&mut admin, "/console/admin/groups", "/console/admin/groups/save", &filed).await;
    assert!(page.body.contains("change it there"), "{}", page.body);
    let stored = app.store.list_groups().await.unwrap().into_iter().find(|g| g.name.as_str() == "filed").unwrap();
    assert_eq!(stored.multiplier.to_decimal_string(), "1.0");
}

#[tokio::test]
async fn admins_credit_regroup_promote_and_disable_users() {
    let (_upstream, app) = admin_app("[[group]]\nname = \"team\"\n").await;
    let mut ann = member(&app, "ann", Role::User).await;
    let key = ann.create_key("mine").await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    let users = "/console/admin/users";

    let page = post_form(&mut admin, users, "/console/admin/users/ann/credit", &[("amount", "12.5")]).await;
    assert!(page.body.contains("Credited 12.50 USD to ann; balance 12.50 USD."), "{}", page.body);
    let page = post_form(&mut admin, users, "/console/admin/users/ann/credit", &[("amount", "lots")]).await;
    assert!(page.body.contains("must be a non-zero decimal"), "{}", page.body);

    let page = post_form(&mut admin, users, "/console/admin/users/ann/group", &[("group", "team")]).await;
    assert!(page.body.contains("ann is now in group team."), "{}", page.body);
    let page = post_form(&mut admin, users, "/console/admin/users/ann/group", &[("group", "nowhere")]).await;
    assert!(page.body.contains("No such group."), "{}", page.body);

    // Only root makes admins.
    let page = post_form(&mut admin, users, "/console/admin/users/ann/role", &[("role", "admin")]).await;
    assert!(page.body.contains("Only root may"), "{}", page.body);
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!((user.role, user.group.as_str()), (Role::User, "team"));
    let mut root = member(&app, "root", Role::Root).await;
    let page = post_form(&mut root, users, "/console/admin/users/ann/role", &[("role", "admin")]).await;
    assert!(page.body.contains("ann is now admin."), "{}", page.body);
    let page = post_form(&mut admin, users, "/console/admin/users/ann/disable", &[]).await;
    assert!(page.body.contains("Only root may"), "an admin cannot disable another admin: {}", page.body);
    post_form(&mut root, users, "/console/admin/users/ann/role", &[("role", "user")]).await;

    // Disabled: the key and the console session stop working at once.
    let client = reqwest::Client::new();
    let models = format!("{}/v1/models", app.address);
    assert_eq!(client.get(&models).bearer_auth(&key).send().await.unwrap().status(), StatusCode::OK);
    let page = post_form(&mut admin, users, "/console/admin/users/ann/disable", &[]).await;
    assert!(page.body.contains("ann is disabled."), "{}", page.body);
    assert_eq!(client.get(&models).bearer_auth(&key).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let page = ann.get("/console/").await;
    assert_eq!(page.location(), Some("/console/login"));
    let page = post_form(&mut admin, users, "/console/admin/users/ann/enable", &[]).await;
    assert!(page.body.contains("ann is enabled again."), "{}", page.body);
    assert_eq!(client.get(&models).bearer_auth(&key).send().await.unwrap().status(), StatusCode::OK);
    let page = post_form(&mut admin, users, "/console/admin/users/ada/disable", &[]).await;
    assert!(page.body.contains("cannot disable your own account"), "{}", page.body);

    let actions = audit_actions(&app).await;
    for action in ["user.credit", "user.group", "user.role", "user.disable", "user.enable"] {
        assert!(actions.contains(&action.to_owned()), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn admins_make_codes_that_are_shown_once() {
    let (_upstream, app) = admin_app("").await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    let page =
        post_form(&mut admin, "/console/admin/codes", "/console/admin/codes", &[("amount", "5"), ("count", "3")]).await;
    assert!(page.body.contains("3 code(s) worth 5.00 USD each created."), "{}", page.body);
    let codes: Vec<String> = between(&page.body, r#"<ul class="codes" id="new-codes">"#, "</ul>")
        .split("<li>")
        .filter_map(|li| li.split("</li>").next())
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 3);
    let list = admin.get("/console/admin/codes").await;
    for code in &codes {
        assert!(!list.body.contains(code.as_str()), "a code is shown only once");
    }
    assert_eq!(list.body.matches(">active<").count(), 3, "{}", list.body);
    assert!(audit_actions(&app).await.contains(&"code.create".to_owned()));
    // A code made here is one users can redeem.
    let mut ann = member(&app, "ann", Role::User).await;
    let page = post_form(&mut ann, "/console/redeem", "/console/redeem", &[("code", &codes[0])]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!(app.store.balance(user.id).await.unwrap(), veil_domain::Money::parse_decimal("5").unwrap());

    let page =
        post_form(&mut admin, "/console/admin/codes", "/console/admin/codes", &[("amount", "5"), ("count", "0")]).await;
    assert!(page.body.contains("Make from 1 to 1000 codes."), "{}", page.body);
    assert_eq!(app.store.list_redemption_codes(100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn the_audit_page_shows_the_chain_status_and_settings_hide_secrets() {
    let extra = "[notifications]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nwebhook_secret = \"hook-secret-xyz\"\n";
    let (_upstream, app) = admin_app(extra).await;
    let mut admin = member(&app, "ada", Role::Admin).await;
    post_form(&mut admin, "/console/admin/", "/console/admin/channels/primary/disable", &[]).await;
    let page = admin.get("/console/admin/audit").await;
    assert!(page.body.contains("Chain intact"), "{}", page.body);
    assert!(between(&page.body, "<tbody>", "</tbody>").contains("channel.disable"), "{}", page.body);
    let page = admin.get("/console/admin/settings").await;
    assert!(page.body.contains("SQLite") || page.body.contains("PostgreSQL"), "{}", page.body);
    assert!(page.body.contains("Notifications: webhook secret</th><td>set"), "{}", page.body);
    assert!(!page.body.contains("hook-secret-xyz") && !page.body.contains("9/hook"), "{}", page.body);
}

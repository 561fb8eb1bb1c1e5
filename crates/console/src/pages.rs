//! The console's pages: one struct per page, rendered by an askama template compiled into
//! the binary. Fields are display-ready strings (formatting happens in the handler), and
//! askama escapes every value unless a template marks it `safe` — only the server-drawn
//! chart SVG and table are. No page type has a field for request or response content.

use askama::Template;

pub use askama::Error as RenderError;

/// What every page's frame needs: title, who is signed in, the CSRF token for its forms,
/// and which navigation entry is current.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    /// The signed-in user's name; `None` on sign-in and sign-up pages.
    pub user: Option<String>,
    pub csrf: String,
    pub active: &'static str,
    /// Whether the signed-in user is an admin or root (shows the admin navigation).
    pub admin: bool,
}

impl Layout {
    pub fn is(&self, entry: &str) -> bool {
        self.active == entry
    }
}

/// Top-of-page feedback after a form: a notice or an error.
#[derive(Debug, Clone, Default)]
pub struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub flash: Flash,
    pub email: String,
    pub signup_enabled: bool,
    /// With `[console.oidc]`: the provider's name for the "Sign in with …" link.
    pub oidc_name: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignupPage {
    pub layout: Layout,
    pub flash: Flash,
    pub email: String,
    pub name: String,
    /// E-mail domains sign-up is limited to; empty: any.
    pub domains: Vec<String>,
}

#[derive(Template)]
#[template(path = "two_factor.html")]
pub struct TwoFactorPage {
    pub layout: Layout,
    pub flash: Flash,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub heading: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct ModelUsageRow {
    pub model: String,
    pub calls: String,
    pub input_tokens: String,
    pub output_tokens: String,
    pub cost: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub layout: Layout,
    pub figures: Vec<Figure>,
    pub limits: Vec<Figure>,
    /// Server-drawn SVG (see `chart`) and its data table.
    pub spend_chart: String,
    pub spend_table: String,
    pub calls_chart: String,
    pub calls_table: String,
    pub by_model: Vec<ModelUsageRow>,
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub models: String,
    pub expires: String,
    /// Quota, caps and rate limits, summarised ("none" when unrestricted).
    pub limits: String,
    /// Whether the key carries consent to channels that may train on data.
    pub training: String,
    pub capture_until: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    pub layout: Layout,
    pub flash: Flash,
    pub keys: Vec<KeyRow>,
    /// The secret of a key just created: shown on this one response, never again.
    pub created_secret: Option<String>,
    pub models: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RecordRow {
    pub time: String,
    pub request_id: String,
    pub model: String,
    pub key: String,
    pub status: String,
    pub error: String,
    pub input_tokens: String,
    pub output_tokens: String,
    pub cost: String,
    pub latency: String,
    pub policy: String,
}

#[derive(Template)]
#[template(path = "records.html")]
pub struct RecordsPage {
    pub layout: Layout,
    pub rows: Vec<RecordRow>,
    pub key: String,
    /// The model filter, and the models the user's group can call (the filter's choices).
    pub model: String,
    pub models: Vec<String>,
    pub from: String,
    pub to: String,
    pub keys: Vec<(String, String)>,
    /// Query strings (already encoded) for the previous/next page and the exports.
    pub previous: Option<String>,
    pub next: Option<String>,
    pub export_query: String,
}

#[derive(Debug, Clone)]
pub struct BillRow {
    pub month: String,
    pub calls: String,
    pub charged: String,
    pub credited: String,
}

#[derive(Template)]
#[template(path = "bills.html")]
pub struct BillsPage {
    pub layout: Layout,
    pub bills: Vec<BillRow>,
    pub currency: String,
}

#[derive(Template)]
#[template(path = "redeem.html")]
pub struct RedeemPage {
    pub layout: Layout,
    pub flash: Flash,
    pub balance: String,
}

#[derive(Debug, Clone)]
pub struct ModelPolicyRow {
    pub model: String,
    pub class: String,
    pub retention: String,
    pub training: String,
    pub region: String,
}

#[derive(Template)]
#[template(path = "privacy.html")]
pub struct PrivacyPage {
    pub layout: Layout,
    pub flash: Flash,
    pub group: String,
    pub firewall: String,
    pub max_retention: String,
    pub regions: String,
    pub allow_training: String,
    pub models: Vec<ModelPolicyRow>,
    pub keys: Vec<KeyRow>,
}

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub layout: Layout,
    pub flash: Flash,
    pub totp_enabled: bool,
    /// During enrolment: the new secret as base32 and as an `otpauth://` URI.
    pub enrol_secret: Option<String>,
    pub enrol_uri: Option<String>,
    /// Recovery codes just issued: shown on this one response, never again.
    pub recovery_codes: Vec<String>,
    pub sessions: Vec<Figure>,
    /// False for an account made by OpenID Connect sign-in that never set a password: the
    /// password form sets a first one, and turning two-factor off asks for a code instead.
    pub has_password: bool,
    /// Sign-in providers linked to the account (issuer, and since when).
    pub linked: Vec<Figure>,
}

/// After OpenID Connect sign-in: moves on to `next` from Veil's own page (see the server's
/// `console/oidc.rs` for why this is a page and not a redirect).
#[derive(Template)]
#[template(path = "continue.html")]
pub struct ContinuePage {
    pub next: &'static str,
}

/// `/console/notifications`: which categories the user receives, and the balance alert.
#[derive(Template)]
#[template(path = "notifications.html")]
pub struct NotificationsPage {
    pub layout: Layout,
    pub flash: Flash,
    pub security: bool,
    pub spending: bool,
    pub key_expiry: bool,
    /// Shown to admins only.
    pub channel_health: bool,
    /// The threshold as a decimal, empty for none.
    pub balance_alert: String,
    pub currency: String,
    /// False when the operator configured no SMTP server: the page says mail is off.
    pub mail_enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_values_and_carry_the_csrf_token_in_forms() {
        let page = LoginPage {
            layout: Layout { title: "Sign in".into(), user: None, csrf: "tok123".into(), active: "", admin: false },
            flash: Flash { notice: None, error: Some("<script>x</script>".into()) },
            email: "a\"b@example.com".into(),
            signup_enabled: true,
            oidc_name: Some("Corp <SSO>".into()),
        };
        let html = page.render().unwrap_or_default();
        assert!(html.contains(r#"name="csrf" value="tok123""#), "{html}");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("a\"b@"));
        assert!(html.contains("/console/signup"));
        assert!(html.contains(r#"href="/console/oidc/start""#), "{html}");
        assert!(!html.contains("Corp <SSO>"), "the provider name is escaped too");
    }

    #[test]
    fn dashboard_snapshot() {
        let series = crate::chart::Series {
            title: "Calls per day".into(),
            description: "Calls per UTC day over the last 2 days.".into(),
            points: vec![("12-04".into(), 0.0), ("12-05".into(), 2.0)],
            decimals: 0,
        };
        let page = DashboardPage {
            layout: Layout {
                title: "Dashboard".into(),
                user: Some("ann".into()),
                csrf: "tok".into(),
                active: "dashboard",
                admin: false,
            },
            figures: vec![Figure { label: "Balance".into(), value: "1.5 USD".into() }],
            limits: vec![Figure { label: "Requests per minute".into(), value: "no limit".into() }],
            spend_chart: crate::chart::svg(&series, crate::chart::ChartKind::Bars, "spend-chart"),
            spend_table: crate::chart::table(&series),
            calls_chart: crate::chart::svg(&series, crate::chart::ChartKind::Line, "calls-chart"),
            calls_table: crate::chart::table(&series),
            by_model: vec![ModelUsageRow {
                model: "gpt-4o-mini".into(),
                calls: "2".into(),
                input_tokens: "20".into(),
                output_tokens: "6".into(),
                cost: "0.0 USD".into(),
            }],
        };
        insta::assert_snapshot!(page.render().unwrap_or_default());
    }

    #[test]
    fn navigation_marks_the_current_page_and_offers_sign_out() {
        let page = MessagePage {
            layout: Layout {
                title: "T".into(),
                user: Some("ann".into()),
                csrf: "c".into(),
                active: "keys",
                admin: false,
            },
            heading: "H".into(),
            body: "B".into(),
        };
        let html = page.render().unwrap_or_default();
        assert!(html.contains(r#"<a href="/console/keys" aria-current="page">"#), "{html}");
        assert!(html.contains(r#"action="/console/logout""#));
    }
}

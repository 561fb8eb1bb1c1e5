//! A tiny cookie-keeping console client over reqwest (no redirects followed, forms
//! url-encoded by hand), and the config the console tests run with.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use veil_testkit::TestApp;
use veil_testkit::mock_upstream::MockUpstream;

/// One free OpenAI-compatible channel in front of `upstream`, plus `extra` TOML.
pub fn config(upstream: &MockUpstream, extra: &str) -> String {
    format!(
        r#"{extra}

[[channel]]
name = "primary"
type = "openai"
base_url = "{}"
models = ["gpt-4o-mini"]
retention = "none"
region = "EU"

[[model]]
name = "gpt-4o-mini"
free = true
"#,
        upstream.base_url()
    )
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no CSRF field in:\n{}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

pub struct Console {
    base: String,
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Console {
    pub fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: app.address.clone(), client, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        for cookie in headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page { status, headers, body: response.text().await.unwrap() }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// Signs up through the form and returns the signed-in client's dashboard.
    pub async fn sign_up(&mut self, name: &str, email: &str, password: &str) -> Page {
        let csrf = self.get("/console/signup").await.csrf();
        let page = self
            .post("/console/signup", &[("csrf", &csrf), ("name", name), ("email", email), ("password", password)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        self.get("/console/").await
    }

    /// Creates a key named `name` on the keys page; its secret, shown once.
    pub async fn create_key(&mut self, name: &str) -> String {
        let csrf = self.get("/console/keys").await.csrf();
        let page = self.post("/console/keys", &[("csrf", &csrf), ("name", name)]).await;
        between(&page.body, r#"id="new-secret">"#, "<").to_owned()
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/console/login").await.csrf();
        self.post("/console/login", &[("csrf", &csrf), ("email", email), ("password", password)]).await
    }
}

/// Percent-encoding for a form or query value.
pub use veil_testkit::oidc::encode;

pub fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The text between `start` and the next `end` in `html`.
pub fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("{start} not in:\n{html}")) + start.len();
    &html[from..from + html[from..].find(end).unwrap()]
}

/// One chat completion through the relay with `secret` (the model the tests' channel serves);
/// the status and the body.
pub async fn relay_chat(app: &TestApp, secret: &str, prompt: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

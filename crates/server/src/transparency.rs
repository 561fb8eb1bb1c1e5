//! The public transparency surface: every model's data policy and price, and Veil's own
//! logging policy, rendered from the same snapshot routing enforces — so what is
//! published cannot drift from what is done. JSON at `/api/privacy/models`, HTML at
//! `/models`, `/privacy` and `/`, styled by the console's stylesheet. No authentication: this
//! is what an operator promises.

use crate::state::{AppState, Snapshot};
use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde_json::{Value, json};
use std::fmt::Write;
use std::sync::Arc;
use veil_console::chart::escape;
use veil_domain::{Channel, ChannelKind, IpLogging, Model, ModelName, Pricing};

/// Call-record fields, in DESIGN §3.5 order: what Veil keeps per call.
const RECORDED_FIELDS: &[&str] = &[
    "request id",
    "time",
    "user",
    "key",
    "group",
    "model asked",
    "upstream model",
    "channel",
    "request path",
    "stream flag",
    "input/cached/output tokens",
    "cost",
    "multiplier",
    "status code",
    "error code",
    "latency",
    "time to first token",
    "client IP (per the IP policy)",
    "User-Agent",
    "redaction counts",
    "interception rule id",
    "data-policy class of the channel used",
];

/// One channel's data policy, as published.
pub fn policy_json(channel: &Channel) -> Value {
    let policy = &channel.policy;
    json!({
        "channel": channel.name,
        "class": policy.class().as_str(),
        "retention": policy.retention.to_string(),
        "retention_days": policy.retention.days(),
        "training": policy.training,
        "region": policy.region,
        "human_review": policy.human_review,
        "operator": policy.operator,
        "test_provider": channel.kind == ChannelKind::Echo,
    })
}

fn serving<'a>(snapshot: &'a Snapshot, model: &'a ModelName) -> impl Iterator<Item = &'a Channel> + 'a {
    snapshot.catalogue.channels().map(|c| &c.channel).filter(move |c| c.serves(model))
}

/// A model's price as the public pages and the management API show it.
pub fn pricing_json(pricing: &Pricing, currency: &str) -> Value {
    match pricing {
        Pricing::Priced(price) => json!({
            "billing": "priced",
            "currency": currency,
            "per": "1M tokens",
            "input": price.input.to_decimal_string(),
            "cached_input": price.cached_input.to_decimal_string(),
            "cache_write": price.cache_write.to_decimal_string(),
            "output": price.output.to_decimal_string(),
            "per_image": price.per_image.to_decimal_string(),
            "per_second": price.per_second.to_decimal_string(),
        }),
        Pricing::Free => json!({"billing": "free", "currency": currency}),
        Pricing::Unpriced => json!({"billing": "unpriced", "currency": currency}),
    }
}

fn price_cell(pricing: &Pricing) -> String {
    match pricing {
        Pricing::Priced(price) => format!("{} / {} / {}", price.input, price.cached_input, price.output),
        Pricing::Free => "free".to_owned(),
        Pricing::Unpriced => "not available (unpriced)".to_owned(),
    }
}

fn model_json(snapshot: &Snapshot, model: &Model, currency: &str) -> Value {
    json!({
        "name": model.name,
        "price": pricing_json(&model.pricing, currency),
        "data_policies": serving(snapshot, &model.name).map(policy_json).collect::<Vec<_>>(),
    })
}

fn ip_policy(mode: IpLogging) -> &'static str {
    match mode {
        IpLogging::Full => "full: the client IP address is stored as received",
        IpLogging::Truncated => "truncated: IPv4 with the last octet zeroed, IPv6 cut to its /48",
        IpLogging::Hashed => "hashed: a keyed hash that changes every month, never the address",
        IpLogging::Off => "off: no client address is stored",
    }
}

fn logging_json(state: &AppState) -> Value {
    json!({
        "content_stored": false,
        "content": "Prompts, messages, tool arguments, images, audio and outputs are never written to disk, to logs or to traces; they exist in memory while a call is relayed.",
        "call_records": RECORDED_FIELDS,
        "call_record_retention_days": state.log_retention_days,
        "ip_logging": ip_policy(state.ip_logging),
    })
}

fn published_models(snapshot: &Snapshot) -> Vec<&Model> {
    let mut models: Vec<&Model> =
        snapshot.catalogue.models().filter(|m| serving(snapshot, &m.name).next().is_some()).collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// `GET /api/privacy/models`
pub async fn models_json(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snapshot = state.snapshot.load();
    let models: Vec<Value> =
        published_models(&snapshot).into_iter().map(|m| model_json(&snapshot, m, &state.currency)).collect();
    Json(json!({ "models": models, "logging": logging_json(&state) }))
}

/// `GET /models`
pub async fn models_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let snapshot = state.snapshot.load();
    let mut rows = String::new();
    for model in published_models(&snapshot) {
        for channel in serving(&snapshot, &model.name) {
            let policy = &channel.policy;
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(model.name.as_str()),
                escape(policy.class().as_str()),
                if channel.kind == ChannelKind::Echo { " (test provider)" } else { "" },
                escape(&policy.retention.to_string()),
                if policy.training { "yes" } else { "no" },
                escape(policy.region.as_deref().unwrap_or("unspecified")),
                if policy.human_review { "yes" } else { "no" },
                escape(&policy.operator),
                escape(&price_cell(&model.pricing)),
            );
        }
    }
    Html(page(
        "Models and their data policies",
        &format!(
            "<p>Every model this relay serves, with what the provider behind it does with your data. Calls are only routed to providers whose policy your account accepts.</p>\
             <div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Model</th><th scope=\"col\">Class</th><th scope=\"col\">Retention</th><th scope=\"col\">Trains on data</th><th scope=\"col\">Region</th><th scope=\"col\">Human review</th><th scope=\"col\">Operator</th><th scope=\"col\">Price per 1M tokens ({}) input / cached / output</th></tr></thead><tbody>{rows}</tbody></table></div>\
             <p>Machine-readable: <a href=\"/api/privacy/models\">/api/privacy/models</a>.</p>",
            escape(&state.currency)
        ),
    ))
}

/// `GET /privacy`
pub async fn privacy_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let fields: String = RECORDED_FIELDS.iter().map(|f| format!("<li>{}</li>", escape(f))).collect();
    Html(page(
        "What this relay keeps",
        &format!(
            "<p><strong>No content is stored.</strong> Prompts, messages, tool arguments, images, audio and outputs are never written to disk, to logs or to traces. They exist in memory while a call is relayed.</p>\
             <h2>Per call, for billing, risk control and troubleshooting</h2><ul>{fields}</ul>\
             <p>Call records are deleted after <strong>{} days</strong>; daily totals without any identifier are kept for accounting.</p>\
             <p>Client IP addresses: {}.</p>\
             <p>Where each model's provider keeps data: <a href=\"/models\">the model list</a>.</p>",
            state.log_retention_days,
            escape(ip_policy(state.ip_logging)),
        ),
    ))
}

/// `GET /`
pub async fn home_page() -> Html<String> {
    Html(page(
        "Veil",
        "<p>This is a privacy-first AI API relay: one OpenAI-compatible endpoint in front of many model providers. \
         It stores no prompt or output, routes each call only to providers whose data policy you accept, and strips \
         identifying data before a call leaves.</p>\
         <ul><li><a href=\"/models\">Models and their data policies</a></li><li><a href=\"/privacy\">What this relay keeps</a></li></ul>\
         <p>API base URL: <code>/v1</code> (use it with any OpenAI SDK and a key from your operator).</p>",
    ))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">Veil</a><nav aria-label=\"Public\">\
         <a href=\"/models\">Models</a> <a href=\"/privacy\">Privacy</a> <a href=\"/console/\">Console</a></nav></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_text_is_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}

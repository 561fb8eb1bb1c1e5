//! `GET /api/openapi.json`: the OpenAPI 3.1 document of Veil's HTTP surface (DESIGN §2).
//!
//! One table lists every route with its method, who may call it and what it does; the
//! document is built from it. A black-box test walks the table against the running router,
//! so a documented route that does not exist (or answers another method) fails the build.

use axum::Json;
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential.
    Public,
    /// Any user's API key as `Authorization: Bearer`.
    Key,
    /// An admin or root account's API key.
    Admin,
    /// Only the URL's own signature (`expires`, `sig`): 403 without it.
    SignedUrl,
}

pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

const fn op(method: &'static str, path: &'static str, access: Access, summary: &'static str) -> Operation {
    Operation { method, path, access, summary }
}

/// Every route the router serves, in the router's order.
pub const OPERATIONS: &[Operation] = &[
    op("post", "/v1/chat/completions", Access::Key, "OpenAI Chat Completions, streaming included"),
    op("post", "/v1/completions", Access::Key, "OpenAI legacy Completions"),
    op("post", "/v1/embeddings", Access::Key, "OpenAI Embeddings"),
    op("get", "/v1/models", Access::Key, "Models the key may use"),
    op("get", "/v1/models/{id}", Access::Key, "One model the key may use"),
    op("get", "/api/me/export", Access::Key, "Everything Veil holds about the caller"),
    op("get", "/api/me/risk", Access::Key, "The caller's keys' suspension state and risk decisions"),
    op("delete", "/api/me", Access::Key, "Erase the caller's account"),
    op("put", "/api/me/keys/{id}/capture", Access::Key, "Turn debug capture on for 1-24 hours: {\"hours\": N}"),
    op("delete", "/api/me/keys/{id}/capture", Access::Key, "Turn debug capture off"),
    op("get", "/api/me/captures", Access::Key, "The caller's debug captures, decrypted for them"),
    op("post", "/api/redeem", Access::Key, "Redeem a code on the caller's balance: {\"code\": \"...\"}"),
    op("get", "/v1/media/{id}", Access::SignedUrl, "Generated media at the signed, expiring URL Veil returned"),
    op("get", "/api/usage", Access::Key, "Usage by UTC day and model (from, to, key, format=json|csv, user)"),
    op("get", "/api/usage/calls", Access::Key, "The caller's call records (metadata only), JSON or CSV"),
    op("get", "/api/bills", Access::Key, "Bills per calendar month"),
    op("get", "/v1/dashboard/billing/subscription", Access::Key, "OpenAI legacy balance: limits"),
    op("get", "/v1/dashboard/billing/usage", Access::Key, "OpenAI legacy balance: usage in cents"),
    op("get", "/api/channels", Access::Admin, "Every channel with its state, error rate, latency and cool-down"),
    op(
        "post",
        "/api/channels",
        Access::Admin,
        "Create a channel: the keys of a [[channel]] table, optional \"api_key\"",
    ),
    op("get", "/api/channels/{name}", Access::Admin, "One channel with its state, error rate, latency and cool-down"),
    op(
        "put",
        "/api/channels/{name}",
        Access::Admin,
        "Replace a channel made through the API (409 for one the config file declares)",
    ),
    op("delete", "/api/channels/{name}", Access::Admin, "Delete a channel made through the API, with its credential"),
    op(
        "post",
        "/api/channels/{name}/enable",
        Access::Admin,
        "Lift a channel's disabling (rejected credential or admin)",
    ),
    op("post", "/api/channels/{name}/disable", Access::Admin, "Take a channel out of routing until enabled"),
    op(
        "post",
        "/api/channels/{name}/test",
        Access::Admin,
        "Probe a channel now: {\"ok\", \"latency_ms\"} or the error",
    ),
    op("put", "/api/channels/{name}/credential", Access::Admin, "Store a channel credential, sealed: {\"api_key\"}"),
    op("delete", "/api/channels/{name}/credential", Access::Admin, "Remove a stored channel credential"),
    op("get", "/api/models", Access::Admin, "Every model with its price"),
    op("put", "/api/models/{name}", Access::Admin, "Price a model ({\"price\": {...}}) or mark it free"),
    op("post", "/api/users/{name}/credit", Access::Admin, "Credit (or debit) an account: {\"amount\": \"1.5\"}"),
    op("get", "/api/privacy/models", Access::Public, "Every model's price and data policies"),
    op("get", "/api/openapi.json", Access::Public, "This document"),
    op("get", "/healthz", Access::Public, "Liveness"),
    op("get", "/readyz", Access::Public, "Readiness: the store answers"),
    op("get", "/metrics", Access::Public, "Prometheus metrics: metadata only (no content, user, key or address)"),
];

/// `GET /api/openapi.json`
pub async fn document() -> Json<Value> {
    Json(build())
}

fn build() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for operation in OPERATIONS {
        let mut item = json!({
            "summary": operation.summary,
            "responses": {
                "200": {"description": "Success"},
                "default": {"description": "An error in the client format's own shape, with a stable `code`"},
            },
        });
        match operation.access {
            Access::Public => item["security"] = json!([]),
            Access::Key => {}
            Access::Admin => item["description"] = json!("Admin or root accounts only (403 permission_denied)."),
            Access::SignedUrl => {
                item["security"] = json!([]);
                item["description"] = json!(
                    "The URL's signature is the only credential: 403 permission_denied for a bad one, \
                     410 media_expired once expired or purged."
                );
            }
        }
        let parameters: Vec<Value> = path_parameters(operation.path)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            item["parameters"] = Value::Array(parameters);
        }
        if let Value::Object(methods) =
            paths.entry(operation.path.to_owned()).or_insert_with(|| Value::Object(Map::new()))
        {
            methods.insert(operation.method.to_owned(), item);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Veil",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A privacy-first AI API relay. Client endpoints speak the vendors' own wire formats; \
                money is shown as exact decimal strings.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "A Veil key, sk-veil-..."}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    })
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_operation_with_its_path_parameters() {
        let document = build();
        assert_eq!(document["openapi"], "3.1.0");
        for operation in OPERATIONS {
            let item = &document["paths"][operation.path][operation.method];
            assert!(item.is_object(), "{} {} missing", operation.method, operation.path);
            assert_eq!(item["security"] == json!([]), matches!(operation.access, Access::Public | Access::SignedUrl));
        }
        let capture = &document["paths"]["/api/me/keys/{id}/capture"]["put"]["parameters"][0];
        assert_eq!(capture["name"], "id");
    }
}

//! The file's shape, exactly as operators write it (DESIGN §2). Every struct denies
//! unknown fields; `serde_path_to_error` turns serde's message into one with the key's
//! full path.

use crate::ConfigError;
use crate::decimal::DecimalText;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub database: RawDatabase,
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub privacy: RawPrivacy,
    #[serde(default)]
    pub billing: RawBilling,
    #[serde(default)]
    pub console: RawConsole,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub channel: Vec<RawChannel>,
    #[serde(default)]
    pub model: Vec<RawModel>,
    #[serde(default)]
    pub risk: RawRisk,
    #[serde(default)]
    pub videos: crate::videos::RawVideos,
    #[serde(default)]
    pub routing: crate::routing::RawRouting,
    #[serde(default)]
    pub notifications: crate::routing::RawNotifications,
    #[serde(default)]
    pub telemetry: crate::telemetry::RawTelemetry,
}

impl RawConfig {
    pub fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(keyed_error)
    }
}

impl RawChannel {
    /// One `[[channel]]` table from any serde format (the management API sends JSON),
    /// as strictly as the file: an error's key is the field's path inside the table.
    pub fn from_deserializer<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(input).map_err(keyed_error)
    }
}

/// Serde's error with the key it is about: its path, or an unknown field's own name.
fn keyed_error<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> ConfigError {
    let path = error.path().to_string();
    let message = error.inner().to_string();
    // The path includes an unknown field's name, except at the top level; a missing
    // field's name never.
    let key = match unknown_field(&message).or_else(|| missing_field(&message)) {
        Some(field) if path == "." => field.to_owned(),
        _ => path,
    };
    ConfigError::Invalid { key, message: message.split(" at line").next().unwrap_or(&message).to_owned() }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Where Veil keeps its files (the SQLite database by default, `master.key`).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: String,
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long SIGTERM waits for in-flight calls before giving up on them.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: String,
    /// How long after SIGTERM new connections are still accepted while `/readyz`
    /// answers 503, so a load balancer polling it stops sending first.
    #[serde(default = "defaults::shutdown_delay")]
    pub shutdown_delay: String,
    /// How often a server looks for changes made by `veil admin` or another instance.
    #[serde(default = "defaults::refresh_interval")]
    pub refresh_interval: String,
    /// After this long without a byte on a relayed stream, an SSE comment is sent so
    /// proxies and clients do not give up on it; "0s" turns it off.
    #[serde(default = "defaults::stream_keepalive")]
    pub stream_keepalive: String,
    /// HTTP clients (so HTTP/2 connections) per upstream origin that calls are spread over.
    #[serde(default = "defaults::upstream_connections")]
    pub upstream_connections: u32,
    /// PEM files (certificate chain, private key): serve HTTPS. Both or neither.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            data_dir: defaults::data_dir(),
            max_body_bytes: defaults::max_body_bytes(),
            shutdown_grace: defaults::shutdown_grace(),
            shutdown_delay: defaults::shutdown_delay(),
            refresh_interval: defaults::refresh_interval(),
            stream_keepalive: defaults::stream_keepalive(),
            upstream_connections: defaults::upstream_connections(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// `sqlite://…` or `postgres://…`; default: `sqlite://<data_dir>/veil.db`.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: String,
    /// Instances sharing a Redis and this prefix share rate limits; default `veil`.
    pub key_prefix: Option<String>,
    /// `closed` (default): refuse calls while Redis is unreachable; `open`: admit them.
    pub limits_on_failure: Option<String>,
    /// How long a dead instance keeps the background-job lease; default `30s`.
    pub job_lease_ttl: Option<String>,
    /// How long a hold on a balance lasts unclosed (a dead instance's holds); default `1h`.
    pub hold_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    #[serde(default = "defaults::log_retention_days")]
    pub log_retention_days: u32,
    #[serde(default = "defaults::ip_logging")]
    pub ip_logging: String,
    #[serde(default = "defaults::media_ttl")]
    pub media_ttl: String,
    /// Undocumented: how often the retention, capture and media purge runs (default 10m);
    /// tests shorten it.
    pub purge_interval: Option<String>,
}

impl Default for RawPrivacy {
    fn default() -> Self {
        Self {
            log_retention_days: defaults::log_retention_days(),
            ip_logging: defaults::ip_logging(),
            media_ttl: defaults::media_ttl(),
            purge_interval: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    #[serde(default = "defaults::currency")]
    pub currency: String,
    #[serde(default = "defaults::durability")]
    pub durability: String,
}

impl Default for RawBilling {
    fn default() -> Self {
        Self { currency: defaults::currency(), durability: defaults::durability() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    #[serde(default = "defaults::yes")]
    pub signup: bool,
    #[serde(default = "defaults::group")]
    pub signup_group: String,
    #[serde(default)]
    pub signup_domains: Vec<String>,
    /// `[console.oidc]`: OpenID Connect sign-in, off unless present.
    #[serde(default)]
    pub oidc: Option<crate::console::RawOidc>,
}

impl Default for RawConsole {
    fn default() -> Self {
        Self { signup: true, signup_group: defaults::group(), signup_domains: Vec::new(), oidc: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A tracing filter such as `info` or `veil=debug,info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "defaults::log_format")]
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { level: defaults::log_level(), format: defaults::log_format() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: String,
    pub multiplier: Option<DecimalText>,
    pub firewall: Option<String>,
    pub max_retention_days: Option<u32>,
    #[serde(default)]
    pub allow_training: bool,
    pub regions: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub daily_spend: Option<DecimalText>,
    pub monthly_spend: Option<DecimalText>,
    #[serde(default)]
    pub deny_keywords: Vec<String>,
    #[serde(default)]
    pub deny_patterns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub model_mapping: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    pub weight: Option<u32>,
    pub groups: Option<Vec<String>>,
    pub retention: Option<String>,
    pub training: Option<bool>,
    pub region: Option<String>,
    #[serde(default)]
    pub human_review: bool,
    pub operator: Option<String>,
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    pub connect_timeout: Option<String>,
    pub first_byte_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub total_timeout: Option<String>,
    /// Caps on what Veil sends this upstream.
    pub rpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// `false` skips upstream certificate verification (own endpoints only).
    pub tls_verify: Option<bool>,
    /// Scheduled health probes, e.g. "60s"; omit for none.
    pub probe_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub price: Option<RawPrice>,
    /// Served without charge. A model with neither a price nor `free = true` is refused.
    #[serde(default)]
    pub free: bool,
    pub max_output_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: Option<DecimalText>,
    pub cached_input: Option<DecimalText>,
    pub cache_write: Option<DecimalText>,
    pub output: Option<DecimalText>,
    pub per_image: Option<DecimalText>,
    pub per_second: Option<DecimalText>,
}

/// `[risk]`: per-key anomaly rules and the failed-authentication rule. Every field is
/// optional; what is left out keeps its default (see `settings::RiskSettings`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRisk {
    pub spend_spike: Option<RawSpendSpike>,
    pub networks: Option<RawWindowRule>,
    pub auth_failures: Option<RawWindowRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpendSpike {
    pub factor: Option<DecimalText>,
    pub min_spend: Option<DecimalText>,
    pub action: Option<String>,
}

/// A rule counting events in a sliding window: more than `max` triggers `action`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindowRule {
    pub max: Option<u32>,
    pub window: Option<String>,
    pub action: Option<String>,
}

mod defaults {
    pub fn listen() -> String {
        "127.0.0.1:8787".into()
    }
    pub fn data_dir() -> String {
        "veil-data".into()
    }
    pub fn max_body_bytes() -> u64 {
        32 * 1024 * 1024
    }
    pub fn shutdown_grace() -> String {
        "30s".into()
    }
    pub fn shutdown_delay() -> String {
        "0s".into()
    }
    pub fn refresh_interval() -> String {
        "500ms".into()
    }
    pub fn stream_keepalive() -> String {
        "15s".into()
    }
    pub fn upstream_connections() -> u32 {
        4
    }
    pub fn log_retention_days() -> u32 {
        90
    }
    pub fn ip_logging() -> String {
        "truncated".into()
    }
    pub fn media_ttl() -> String {
        "1h".into()
    }
    pub fn currency() -> String {
        "USD".into()
    }
    pub fn durability() -> String {
        "batched".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn group() -> String {
        "default".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> String {
        "text".into()
    }
}

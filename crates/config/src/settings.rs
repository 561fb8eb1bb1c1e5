//! Validated settings: the raw file turned into domain types, every error naming the key
//! it is about. Whatever reaches [`Settings`] is usable as is.

use crate::ConfigError;
use crate::decimal::DecimalText;
use crate::duration::parse_duration;
use crate::raw::{RawChannel, RawConfig, RawGroup, RawModel, RawPrice};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use veil_domain::{
    Channel, ChannelKind, ChannelLimits, ChannelName, DataPolicy, FirewallMode, Group, GroupName, IpLogging, KeyLimits,
    Model, ModelName, Money, Multiplier, Price, Pricing, PrivacyRequirement, Retention, Timeouts,
};

/// The name of the channel and model Veil serves when the config declares no channel.
pub const ECHO_NAME: &str = "echo";
pub const ECHO_MODEL: &str = "veil-echo";
/// More clients per upstream than this only multiplies idle connections.
const MAX_UPSTREAM_CONNECTIONS: u32 = 64;
/// Probing more often than this would only add load to the upstream.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingDurability {
    /// Records and ledger entries are written in batches (≤ 100 ms window).
    Batched,
    /// Each call's records are durable before its response completes.
    Strict,
}

/// `[server] tls_cert` and `tls_key`: the PEM files Veil serves HTTPS with. They are
/// read by the server (and again whenever they change), not here.
/// `[redis] limits_on_failure`: what a call gets while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitsOnFailure {
    /// Refuse (503): no limit is exceeded during an outage.
    #[default]
    Closed,
    /// Admit without rate limits until Redis is back.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub signup: bool,
    pub signup_group: GroupName,
    pub signup_domains: Vec<String>,
    /// `[console.oidc]`: sign-in through an OpenID Connect provider.
    pub oidc: Option<crate::OidcSettings>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long connections are still accepted with `/readyz` at 503.
    pub shutdown_delay: Duration,
    pub refresh_interval: Duration,
    /// Silence on a relayed stream after which a keep-alive comment goes to the client;
    /// zero: never.
    pub stream_keepalive: Duration,
    /// How many HTTP clients each upstream transport spreads its calls over.
    pub upstream_connections: usize,
    /// Serve HTTPS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: Option<String>,
    /// `[redis] key_prefix`: instances sharing it (and the Redis) share rate limits.
    pub redis_key_prefix: String,
    pub limits_on_failure: LimitsOnFailure,
    /// `[redis] job_lease_ttl` (default 30 s): how soon another instance takes over the
    /// background jobs after their runner dies.
    pub job_lease_ttl: Duration,
    /// `[redis] hold_ttl` (default 1 h): how long a hold on a balance in Redis lasts if the
    /// instance that placed it dies before closing it; longer than any call should take.
    pub hold_ttl: Duration,
    pub log_retention_days: u32,
    /// `[privacy] purge_interval` (undocumented, default 10 minutes): the purge job's beat.
    pub purge_interval: Duration,
    pub ip_logging: IpLogging,
    pub media_ttl: Duration,
    pub currency: String,
    pub durability: BillingDurability,
    pub console: ConsoleSettings,
    pub log_filter: String,
    pub log_json: bool,
    pub groups: Vec<Group>,
    pub channels: Vec<Channel>,
    pub models: Vec<Model>,
    /// True when the config declared no channel and the built-in echo test provider
    /// was added so a newcomer can try Veil without a provider account.
    pub builtin_echo: bool,
    /// `[risk]`: anomaly rules (see `risk.rs`).
    pub risk: crate::risk::RiskSettings,
    /// `[videos]`: polling and timeout of asynchronous video jobs.
    pub videos: crate::VideoSettings,
    /// `[routing]`: channel health (error-rate window, cool-downs) and failover.
    pub routing: crate::RoutingSettings,
    /// `[notifications]`: the admins' webhook.
    pub notifications: crate::NotificationSettings,
    /// `[telemetry]`: OpenTelemetry trace export.
    pub telemetry: crate::TelemetrySettings,
}

impl Settings {
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen = raw
            .server
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::invalid("server.listen", "must be an address such as \"127.0.0.1:8787\""))?;
        let duration = |key: &str, value: &str| parse_duration(value).map_err(|m| ConfigError::invalid(key, m));
        let data_dir = PathBuf::from(&raw.server.data_dir);
        let database_url = raw
            .database
            .url
            .unwrap_or_else(|| format!("sqlite://{}/veil.db", raw.server.data_dir.trim_end_matches('/')));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid("database.url", "must start with sqlite:// or postgres://"));
        }
        let ip_logging = match raw.privacy.ip_logging.as_str() {
            "full" => IpLogging::Full,
            "truncated" => IpLogging::Truncated,
            "hashed" => IpLogging::Hashed,
            "off" => IpLogging::Off,
            _ => return Err(ConfigError::invalid("privacy.ip_logging", "must be full, truncated, hashed or off")),
        };
        let durability = match raw.billing.durability.as_str() {
            "batched" => BillingDurability::Batched,
            "strict" => BillingDurability::Strict,
            _ => return Err(ConfigError::invalid("billing.durability", "must be batched or strict")),
        };
        let log_json = match raw.log.format.as_str() {
            "text" => false,
            "json" => true,
            _ => return Err(ConfigError::invalid("log.format", "must be text or json")),
        };
        let signup_group = GroupName::parse(&raw.console.signup_group)
            .map_err(|e| ConfigError::invalid("console.signup_group", e.to_string()))?;
        let oidc = crate::console::validate(raw.console.oidc.as_ref())?;

        let groups = validate_groups(&raw.group)?;
        let risk = crate::risk::validate(&raw.risk)?;
        let videos = crate::videos::validate(&raw.videos)?;
        let routing = crate::routing::validate(&raw.routing)?;
        let notifications = crate::routing::validate_notifications(&raw.notifications)?;
        let telemetry = crate::telemetry::validate(&raw.telemetry)?;
        let (channels, builtin_echo) = if raw.channel.is_empty() {
            (vec![echo_channel()?], true)
        } else {
            (validate_channels(&raw.channel)?, false)
        };
        let models = validate_models(&raw.model, &channels)?;

        Ok(Self {
            listen,
            data_dir,
            max_body_bytes: usize::try_from(raw.server.max_body_bytes).unwrap_or(usize::MAX),
            shutdown_grace: duration("server.shutdown_grace", &raw.server.shutdown_grace)?,
            shutdown_delay: duration("server.shutdown_delay", &raw.server.shutdown_delay)?,
            refresh_interval: duration("server.refresh_interval", &raw.server.refresh_interval)?,
            stream_keepalive: duration("server.stream_keepalive", &raw.server.stream_keepalive)?,
            upstream_connections: match raw.server.upstream_connections {
                count @ 1..=MAX_UPSTREAM_CONNECTIONS => count as usize,
                _ => return Err(ConfigError::invalid("server.upstream_connections", "must be from 1 to 64")),
            },
            tls: match (raw.server.tls_cert, raw.server.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::invalid("server.tls_key", "is needed with server.tls_cert"));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::invalid("server.tls_cert", "is needed with server.tls_key"));
                }
            },
            database_url,
            database_max_connections: raw.database.max_connections.unwrap_or(8).max(1),
            redis_key_prefix: match raw.redis.as_ref().and_then(|r| r.key_prefix.clone()) {
                None => "veil".to_owned(),
                Some(prefix) if !prefix.is_empty() && !prefix.contains(['{', '}']) => prefix,
                Some(_) => return Err(ConfigError::invalid("redis.key_prefix", "must be non-empty, without braces")),
            },
            job_lease_ttl: match raw.redis.as_ref().and_then(|r| r.job_lease_ttl.as_deref()) {
                None => Duration::from_secs(30),
                Some(value) => match duration("redis.job_lease_ttl", value)? {
                    ttl if ttl >= Duration::from_millis(300) => ttl,
                    _ => return Err(ConfigError::invalid("redis.job_lease_ttl", "must be at least 300ms")),
                },
            },
            hold_ttl: match raw.redis.as_ref().and_then(|r| r.hold_ttl.as_deref()) {
                None => Duration::from_secs(3600),
                Some(value) => match duration("redis.hold_ttl", value)? {
                    ttl if ttl >= Duration::from_secs(1) => ttl,
                    _ => return Err(ConfigError::invalid("redis.hold_ttl", "must be at least 1s")),
                },
            },
            limits_on_failure: match raw.redis.as_ref().and_then(|r| r.limits_on_failure.as_deref()) {
                None | Some("closed") => LimitsOnFailure::Closed,
                Some("open") => LimitsOnFailure::Open,
                Some(_) => return Err(ConfigError::invalid("redis.limits_on_failure", "must be closed or open")),
            },
            redis_url: raw.redis.map(|r| r.url),
            log_retention_days: raw.privacy.log_retention_days,
            purge_interval: match raw.privacy.purge_interval.as_deref() {
                Some(value) => duration("privacy.purge_interval", value)?,
                None => Duration::from_secs(600),
            },
            ip_logging,
            media_ttl: duration("privacy.media_ttl", &raw.privacy.media_ttl)?,
            currency: raw.billing.currency,
            durability,
            console: ConsoleSettings {
                signup: raw.console.signup,
                signup_group,
                signup_domains: raw.console.signup_domains,
                oidc,
            },
            log_filter: raw.log.level,
            log_json,
            groups,
            channels,
            models,
            builtin_echo,
            risk,
            videos,
            routing,
            notifications,
            telemetry,
        })
    }
}

fn price(at: &impl Fn(&str) -> String, p: &RawPrice) -> Result<Price, ConfigError> {
    let field = |name: &str, value: &Option<DecimalText>| money(&at(&format!("price.{name}")), value);
    let input = field("input", &p.input)?.unwrap_or(Money::ZERO);
    let price = Price {
        input,
        // Without a cache price, cached tokens cost what uncached ones do: never less than
        // the operator said.
        cached_input: field("cached_input", &p.cached_input)?.unwrap_or(input),
        cache_write: field("cache_write", &p.cache_write)?.unwrap_or(input),
        output: field("output", &p.output)?.unwrap_or(Money::ZERO),
        per_image: field("per_image", &p.per_image)?.unwrap_or(Money::ZERO),
        per_second: field("per_second", &p.per_second)?.unwrap_or(Money::ZERO),
    };
    if price.has_negative() {
        return Err(ConfigError::invalid(at("price"), "prices cannot be negative"));
    }
    Ok(price)
}

fn money(key: &str, value: &Option<DecimalText>) -> Result<Option<Money>, ConfigError> {
    value.as_ref().map(|d| Money::parse_decimal(&d.0).map_err(|e| ConfigError::invalid(key, e.to_string()))).transpose()
}

fn names<T>(
    key: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, veil_domain::NameError>,
) -> Result<Vec<T>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse(v).map_err(|e| ConfigError::invalid(format!("{key}[{i}]"), e.to_string())))
        .collect()
}

fn validate_groups(raw: &[RawGroup]) -> Result<Vec<Group>, ConfigError> {
    let mut seen = HashSet::new();
    let mut groups = Vec::with_capacity(raw.len());
    for (i, g) in raw.iter().enumerate() {
        let at = |field: &str| format!("group[{i}].{field}");
        let name = GroupName::parse(&g.name).map_err(|e| ConfigError::invalid(at("name"), e.to_string()))?;
        if !seen.insert(name.clone()) {
            return Err(ConfigError::invalid(at("name"), format!("group '{name}' is declared twice")));
        }
        let multiplier = match &g.multiplier {
            Some(m) => {
                Multiplier::parse_decimal(&m.0).map_err(|e| ConfigError::invalid(at("multiplier"), e.to_string()))?
            }
            None => Multiplier::ONE,
        };
        let firewall = match &g.firewall {
            Some(f) => FirewallMode::parse(f)
                .ok_or_else(|| ConfigError::invalid(at("firewall"), "must be off, identity or pii"))?,
            None => FirewallMode::default(),
        };
        for (j, pattern) in g.deny_patterns.iter().enumerate() {
            if let Err(error) = regex::Regex::new(pattern) {
                return Err(ConfigError::invalid(
                    at(&format!("deny_patterns[{j}]")),
                    format!("invalid regex: {error}"),
                ));
            }
        }
        groups.push(Group {
            name,
            multiplier,
            privacy: PrivacyRequirement {
                max_retention_days: g.max_retention_days,
                allow_training: g.allow_training,
                regions: g.regions.clone(),
                firewall,
            },
            limits: KeyLimits { rpm: g.rpm, tpm: g.tpm, max_concurrent: g.max_concurrent },
            daily_spend: money(&at("daily_spend"), &g.daily_spend)?,
            monthly_spend: money(&at("monthly_spend"), &g.monthly_spend)?,
            deny_keywords: g.deny_keywords.clone(),
            deny_patterns: g.deny_patterns.clone(),
            managed: true,
        });
    }
    Ok(groups)
}

fn validate_channels(raw: &[RawChannel]) -> Result<Vec<Channel>, ConfigError> {
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            let channel = validate_channel(&format!("channel[{i}]."), c)?;
            if !seen.insert(channel.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("channel[{i}].name"),
                    format!("channel '{}' is declared twice", channel.name),
                ));
            }
            Ok(channel)
        })
        .collect()
}

/// One channel, as the file declares it and as the management API creates it: same
/// checks, same defaults. Error keys are `{prefix}{field}`.
pub(crate) fn validate_channel(prefix: &str, c: &RawChannel) -> Result<Channel, ConfigError> {
    let at = |field: &str| format!("{prefix}{field}");
    let name = ChannelName::parse(&c.name).map_err(|e| ConfigError::invalid(at("name"), e.to_string()))?;
    let kind = ChannelKind::parse(&c.kind).ok_or_else(|| {
        ConfigError::invalid(
            at("type"),
            format!("unknown channel type '{}' (openai, azure, anthropic, gemini, bedrock or echo)", c.kind),
        )
    })?;
    let base_url = match (&c.base_url, kind) {
        (Some(url), _) => {
            let url = url.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(at("base_url"), "must start with http:// or https://"));
            }
            url.to_owned()
        }
        (None, ChannelKind::Echo) => String::new(),
        (None, _) => return Err(ConfigError::invalid(at("base_url"), "is required for this channel type")),
    };
    if let Some(env) = &c.api_key_env
        && (env.is_empty() || !env.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
    {
        return Err(ConfigError::invalid(at("api_key_env"), "must be the name of an environment variable"));
    }
    if c.models.is_empty() {
        return Err(ConfigError::invalid(at("models"), "must list at least one model"));
    }
    let models = names(&at("models"), &c.models, ModelName::parse)?;
    let mut model_mapping = BTreeMap::new();
    for (public, upstream) in &c.model_mapping {
        let key = format!("{}.{public}", at("model_mapping"));
        let public = ModelName::parse(public).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
        if !models.contains(&public) {
            return Err(ConfigError::invalid(&key, format!("maps '{public}', which is not in this channel's models")));
        }
        let upstream = ModelName::parse(upstream).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
        model_mapping.insert(public, upstream);
    }
    let groups = c.groups.as_ref().map(|g| names(&at("groups"), g, GroupName::parse)).transpose()?;
    let retention = match &c.retention {
        Some(r) => Retention::parse(r).map_err(|m| ConfigError::invalid(at("retention"), m))?,
        None if kind == ChannelKind::Echo => Retention::None,
        // Providers keep abuse-monitoring copies unless the operator says otherwise.
        None => Retention::Days(30),
    };
    let operator = c.operator.clone().unwrap_or_else(|| match kind {
        ChannelKind::Echo => "self".to_owned(),
        other => other.as_str().to_owned(),
    });
    let defaults = Timeouts::default();
    let timeout = |field: &str, value: &Option<String>, default: Duration| match value {
        Some(v) => parse_duration(v).map_err(|m| ConfigError::invalid(at(field), m)),
        None => Ok(default),
    };
    let weight = c.weight.unwrap_or(1);
    if weight == 0 {
        return Err(ConfigError::invalid(at("weight"), "must be at least 1 (disable a channel with enabled = false)"));
    }
    // Turning verification off is for the operator's own endpoint on a private network;
    // for anyone else's API it would hand the credential and the prompts to whoever sits
    // on the path.
    let tls_verify = c.tls_verify.unwrap_or(true);
    if !tls_verify && operator != "self" {
        return Err(ConfigError::invalid(
            at("tls_verify"),
            "may be false only for the operator's own endpoints (operator = \"self\")",
        ));
    }
    let probe_interval = match &c.probe_interval {
        None => None,
        Some(text) => match parse_duration(text) {
            Ok(interval) if interval >= MIN_PROBE_INTERVAL => Some(interval),
            Ok(_) => return Err(ConfigError::invalid(at("probe_interval"), "must be at least 5s")),
            Err(message) => return Err(ConfigError::invalid(at("probe_interval"), message)),
        },
    };
    Ok(Channel {
        name,
        kind,
        base_url,
        api_key_env: c.api_key_env.clone(),
        models,
        model_mapping,
        priority: c.priority,
        weight,
        groups,
        policy: DataPolicy {
            retention,
            training: c.training.unwrap_or(false),
            region: c.region.clone(),
            human_review: c.human_review,
            operator,
        },
        timeouts: Timeouts {
            connect: timeout("connect_timeout", &c.connect_timeout, defaults.connect)?,
            first_byte: timeout("first_byte_timeout", &c.first_byte_timeout, defaults.first_byte)?,
            idle: timeout("idle_timeout", &c.idle_timeout, defaults.idle)?,
            total: timeout("total_timeout", &c.total_timeout, defaults.total)?,
        },
        limits: ChannelLimits { rpm: c.rpm, max_concurrent: c.max_concurrent },
        tls_verify,
        probe_interval,
        enabled: c.enabled,
        managed: true,
    })
}

fn echo_channel() -> Result<Channel, ConfigError> {
    let model = ModelName::parse(ECHO_MODEL).map_err(|e| ConfigError::invalid("channel", e.to_string()))?;
    let name = ChannelName::parse(ECHO_NAME).map_err(|e| ConfigError::invalid("channel", e.to_string()))?;
    Ok(Channel {
        name,
        kind: ChannelKind::Echo,
        base_url: String::new(),
        api_key_env: None,
        models: vec![model],
        model_mapping: BTreeMap::new(),
        priority: 0,
        weight: 1,
        groups: None,
        policy: DataPolicy {
            retention: Retention::None,
            training: false,
            region: None,
            human_review: false,
            operator: "self".into(),
        },
        timeouts: Timeouts::default(),
        limits: ChannelLimits::default(),
        tls_verify: true,
        probe_interval: None,
        enabled: true,
        managed: true,
    })
}

/// Declared models with their prices, plus every model a channel serves that has no
/// `[[model]]` entry: those are unpriced, and calls to them are refused until the operator
/// prices them or marks them free. The built-in echo model is free.
fn validate_models(raw: &[RawModel], channels: &[Channel]) -> Result<Vec<Model>, ConfigError> {
    let mut models: Vec<Model> = Vec::new();
    let mut seen = HashSet::new();
    for (i, m) in raw.iter().enumerate() {
        let at = |field: &str| format!("model[{i}].{field}");
        let name = ModelName::parse(&m.name).map_err(|e| ConfigError::invalid(at("name"), e.to_string()))?;
        if !seen.insert(name.clone()) {
            return Err(ConfigError::invalid(at("name"), format!("model '{name}' is declared twice")));
        }
        let pricing = match (&m.price, m.free) {
            (Some(_), true) => {
                return Err(ConfigError::invalid(at("free"), "a model is either priced or free, not both"));
            }
            (Some(p), false) => Pricing::Priced(price(&at, p)?),
            (None, true) => Pricing::Free,
            (None, false) => Pricing::Unpriced,
        };
        if m.max_output_tokens == Some(0) {
            return Err(ConfigError::invalid(at("max_output_tokens"), "must be at least 1"));
        }
        models.push(Model { name, pricing, max_output_tokens: m.max_output_tokens, managed: true });
    }
    for channel in channels {
        for served in &channel.models {
            if seen.insert(served.clone()) {
                let pricing = if channel.kind == ChannelKind::Echo { Pricing::Free } else { Pricing::Unpriced };
                models.push(Model { name: served.clone(), pricing, max_output_tokens: None, managed: true });
            }
        }
    }
    Ok(models)
}

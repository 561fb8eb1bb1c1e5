//! `[routing]` (channel health and failover) and `[notifications]` (where admins are told
//! about channel trouble), validated. Every field is optional.
//!
//! ```toml
//! [routing]
//! error_rate_threshold = 0.5  # a channel failing at least this share of its calls cools down
//! min_calls = 5               # … once it made at least this many calls within `window`
//! window = "60s"              # the sliding window the error rate is measured over
//! cooldown = "30s"            # the first cool-down; each failed half-open trial doubles it
//! max_cooldown = "10m"        # up to this (also caps a 429's retry-after)
//! max_attempts = 3            # channels (or retries of one) tried for one call
//! max_retry_wait = "2s"       # the longest retry-after Veil waits out itself before retrying
//!
//! [notifications]
//! webhook_url = "https://ops.example.com/hooks/veil"   # JSON events about channels
//! webhook_secret = "…"        # optional: HMAC-SHA256 of the body in `veil-signature: sha256=<hex>`
//! ```

use crate::ConfigError;
use crate::duration::parse_duration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub error_rate_threshold: Option<f64>,
    pub min_calls: Option<u32>,
    pub window: Option<String>,
    pub cooldown: Option<String>,
    pub max_cooldown: Option<String>,
    pub max_attempts: Option<u32>,
    pub max_retry_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
    pub smtp_password_env: Option<String>,
    /// PEM file of extra certificate authorities to trust for the SMTP server (a private CA).
    pub smtp_ca_file: Option<String>,
    pub check_interval: Option<String>,
}

/// How channel health is judged and how a call fails over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingSettings {
    /// Share of failed calls (0–1] within `window` that cools a channel down.
    pub error_rate_threshold: f64,
    /// Calls within `window` before the error rate counts at all.
    pub min_calls: u32,
    pub window: Duration,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Upstream attempts for one call, retries of one channel included (at least 1).
    pub max_attempts: u32,
    /// The longest `retry-after` Veil waits out before retrying the same channel; a
    /// longer one is passed on to the client.
    pub max_retry_wait: Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            error_rate_threshold: 0.5,
            min_calls: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
            max_attempts: 3,
            max_retry_wait: Duration::from_secs(2),
        }
    }
}

/// Where notifications go: the operators' webhook, users' e-mail; nothing is sent without either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSettings {
    pub webhook_url: Option<String>,
    /// Signs each body (HMAC-SHA256) so the receiver can tell it came from Veil.
    pub webhook_secret: Option<String>,
    /// Where users' e-mail goes; nothing is mailed without it.
    pub smtp: Option<SmtpSettings>,
    /// How often the leader looks for keys about to expire, keys near their quota and low balances.
    pub check_interval: Duration,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self { webhook_url: None, webhook_secret: None, smtp: None, check_interval: Duration::from_secs(300) }
    }
}

/// How the SMTP connection is protected, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plain, for a relay on this host or network.
    Plain,
    /// `smtps://`: TLS from the first byte (port 465).
    Tls,
    /// `smtp+starttls://`: plain, then STARTTLS before anything else is sent (port 587);
    /// a server that does not offer it gets nothing.
    StartTls,
}

/// `[notifications] smtp_url`, `smtp_from`, `smtp_password_env`, `smtp_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    /// The user of `smtp://user@host`; its password comes from `password_env`.
    pub username: Option<String>,
    /// The environment variable that holds the SMTP password (never the password itself).
    pub password_env: Option<String>,
    /// The envelope and `From:` address.
    pub from: String,
    /// Extra certificate authorities (PEM) trusted beside the web PKI roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// More attempts than this only multiply the load on upstreams that are failing.
const MAX_ATTEMPTS: u32 = 10;

pub(crate) fn validate(raw: &RawRouting) -> Result<RoutingSettings, ConfigError> {
    let defaults = RoutingSettings::default();
    let duration = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Ok(duration) if !duration.is_zero() => Ok(duration),
            Ok(_) => Err(ConfigError::invalid(key, "must be longer than zero")),
            Err(message) => Err(ConfigError::invalid(key, message)),
        },
    };
    let error_rate_threshold = raw.error_rate_threshold.unwrap_or(defaults.error_rate_threshold);
    if !(error_rate_threshold > 0.0 && error_rate_threshold <= 1.0) {
        return Err(ConfigError::invalid("routing.error_rate_threshold", "must be above 0 and at most 1"));
    }
    let min_calls = raw.min_calls.unwrap_or(defaults.min_calls);
    if min_calls == 0 {
        return Err(ConfigError::invalid("routing.min_calls", "must be at least 1"));
    }
    let window = duration("routing.window", &raw.window, defaults.window)?;
    let cooldown = duration("routing.cooldown", &raw.cooldown, defaults.cooldown)?;
    let max_cooldown = duration("routing.max_cooldown", &raw.max_cooldown, defaults.max_cooldown)?;
    if max_cooldown < cooldown {
        return Err(ConfigError::invalid("routing.max_cooldown", "must not be shorter than routing.cooldown"));
    }
    let max_attempts = raw.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(ConfigError::invalid("routing.max_attempts", format!("must be between 1 and {MAX_ATTEMPTS}")));
    }
    let max_retry_wait = match &raw.max_retry_wait {
        None => defaults.max_retry_wait,
        // Zero is allowed: never wait, always pass retry-after on.
        Some(text) => parse_duration(text).map_err(|m| ConfigError::invalid("routing.max_retry_wait", m))?,
    };
    Ok(RoutingSettings {
        error_rate_threshold,
        min_calls,
        window,
        cooldown,
        max_cooldown,
        max_attempts,
        max_retry_wait,
    })
}

pub(crate) fn validate_notifications(raw: &RawNotifications) -> Result<NotificationSettings, ConfigError> {
    let webhook_url = match raw.webhook_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => Some(url.to_owned()),
        Some(_) => return Err(ConfigError::invalid("notifications.webhook_url", "must be an http(s):// URL")),
    };
    let webhook_secret = raw.webhook_secret.clone().filter(|secret| !secret.is_empty());
    if webhook_secret.is_some() && webhook_url.is_none() {
        return Err(ConfigError::invalid("notifications.webhook_secret", "needs notifications.webhook_url"));
    }
    let smtp = validate_smtp(raw)?;
    let check_interval = match raw.check_interval.as_deref() {
        None => NotificationSettings::default().check_interval,
        Some(text) => match parse_duration(text) {
            Ok(every) if !every.is_zero() => every,
            _ => return Err(ConfigError::invalid("notifications.check_interval", "must be a duration above 0")),
        },
    };
    Ok(NotificationSettings { webhook_url, webhook_secret, smtp, check_interval })
}

fn validate_smtp(raw: &RawNotifications) -> Result<Option<SmtpSettings>, ConfigError> {
    let url = raw.smtp_url.as_deref().map(str::trim).filter(|url| !url.is_empty());
    let Some(url) = url else {
        if raw.smtp_from.is_some() {
            return Err(ConfigError::invalid("notifications.smtp_from", "needs notifications.smtp_url"));
        }
        if raw.smtp_password_env.is_some() {
            return Err(ConfigError::invalid("notifications.smtp_password_env", "needs notifications.smtp_url"));
        }
        if raw.smtp_ca_file.is_some() {
            return Err(ConfigError::invalid("notifications.smtp_ca_file", "needs notifications.smtp_url"));
        }
        return Ok(None);
    };
    let bad_url = || {
        ConfigError::invalid(
            "notifications.smtp_url",
            "must be smtp://[user@]host[:port], smtps://… (TLS) or smtp+starttls://… (STARTTLS)",
        )
    };
    let (security, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
        (SmtpSecurity::Tls, rest)
    } else if let Some(rest) = url.strip_prefix("smtp+starttls://") {
        (SmtpSecurity::StartTls, rest)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        (SmtpSecurity::Plain, rest)
    } else {
        return Err(bad_url());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (username, authority) = match rest.rsplit_once('@') {
        Some((user, _)) if user.contains(':') => {
            return Err(ConfigError::invalid(
                "notifications.smtp_url",
                "must not hold a password: name its environment variable in smtp_password_env",
            ));
        }
        Some((user, authority)) if !user.is_empty() => (Some(user.to_owned()), authority),
        Some(_) => return Err(bad_url()),
        None => (None, rest),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(bad_url)?),
        None => (
            authority,
            match security {
                SmtpSecurity::Plain => 25,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::StartTls => 587,
            },
        ),
    };
    let host_is_valid = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && !host.contains('/');
    if !host_is_valid {
        return Err(bad_url());
    }
    let from = raw.smtp_from.as_deref().map(str::trim).unwrap_or_default();
    if !is_plain_address(from) {
        return Err(ConfigError::invalid("notifications.smtp_from", "must be an e-mail address (name@host)"));
    }
    let password_env = match raw.smtp_password_env.as_deref() {
        None => None,
        Some(name) if is_env_name(name) => Some(name.to_owned()),
        Some(_) => {
            return Err(ConfigError::invalid(
                "notifications.smtp_password_env",
                "must be the name of an environment variable",
            ));
        }
    };
    if password_env.is_some() && username.is_none() {
        return Err(ConfigError::invalid(
            "notifications.smtp_password_env",
            "needs a user in smtp_url (smtp://user@host)",
        ));
    }
    let ca_file = raw.smtp_ca_file.as_deref().map(str::trim).filter(|path| !path.is_empty());
    if ca_file.is_some() && security == SmtpSecurity::Plain {
        return Err(ConfigError::invalid("notifications.smtp_ca_file", "needs an smtps:// or smtp+starttls:// URL"));
    }
    Ok(Some(SmtpSettings {
        security,
        host: host.to_owned(),
        port,
        username,
        password_env,
        from: from.to_owned(),
        ca_file: ca_file.map(std::path::PathBuf::from),
    }))
}

/// An address fit for `MAIL FROM:<…>` and a `From:` header: one `@`, no spaces or brackets.
fn is_plain_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && address.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | '"' | '(' | ')'))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

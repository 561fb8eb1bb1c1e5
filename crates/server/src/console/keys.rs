//! The options of an API key as `veil admin key create` takes them, given as text (a form's
//! fields), parsed at the edge into a `NewApiKey` for `account::create_key`.

use std::collections::HashMap;
use veil_domain::{FirewallMode, KeyLimits, KeyPrivacy, ModelName, Money, NewApiKey, Timestamp, User};

/// Parses a key's options from form fields; `Err` is a sentence naming the bad field.
pub fn parse_options(user: &User, form: &HashMap<String, String>) -> Result<NewApiKey, String> {
    let field = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let list = |name: &str| {
        field(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>())
    };
    let money = |name: &str, label: &str| {
        field(name)
            .map(Money::parse_decimal)
            .transpose()
            .map_err(|_| format!("{label} must be an amount such as 5 or 1.50."))
    };
    let count = |name: &str, label: &str| {
        field(name).map(str::parse::<u32>).transpose().map_err(|_| format!("{label} must be a whole number."))
    };
    let name = field("name").map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err("The name may have at most 100 characters.".into());
    }
    let models = list("models")
        .map(|names| names.iter().map(|m| ModelName::parse(m)).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|_| "Models must be model names, comma-separated.".to_owned())?;
    let expires_at = field("expires").map(parse_expiry).transpose()?;
    let ip_allow = list("ip_allow")
        .unwrap_or_default()
        .iter()
        .map(|raw| raw.parse::<ipnet::IpNet>().or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "Allowed networks must be addresses or CIDR networks, comma-separated.".to_owned())?;
    let firewall = field("firewall")
        .map(|raw| FirewallMode::parse(raw).ok_or_else(|| "The firewall must be identity or pii.".to_owned()))
        .transpose()?;
    let secret_free = NewApiKey {
        user_id: user.id,
        name,
        prefix: String::new(),
        hash: String::new(),
        models,
        expires_at,
        quota: money("quota", "The quota")?,
        limits: KeyLimits {
            rpm: count("rpm", "Requests per minute")?,
            tpm: count("tpm", "Tokens per minute")?,
            max_concurrent: count("max_concurrent", "Concurrent calls")?,
        },
        daily_spend: money("daily_spend", "The daily cap")?,
        monthly_spend: money("monthly_spend", "The monthly cap")?,
        ip_allow,
        allow_training: field("allow_training").is_some(),
        privacy: KeyPrivacy {
            max_retention_days: count("max_retention_days", "Retention days")?,
            regions: list("regions"),
            firewall,
        },
    };
    Ok(secret_free)
}

/// `30d`, `12h` (a lifetime from now) or an RFC 3339 instant, as the CLI's `--expires`.
fn parse_expiry(raw: &str) -> Result<Timestamp, String> {
    if let Ok(at) = Timestamp::parse_rfc3339(raw) {
        return Ok(at);
    }
    let lifetime = veil_config::parse_duration(raw).map_err(|_| "Expiry must be like 30d, 12h or an RFC 3339 time.")?;
    Ok(Timestamp::now().plus_millis(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)))
}

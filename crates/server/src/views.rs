//! JSON views of stored data, shared by `veil admin --json`, the account export and the
//! management API, so one record has one shape everywhere. Money is an exact decimal
//! string; times are RFC 3339; call records use the field names of DESIGN §3.5. Nothing
//! here can show a secret: keys are shown by prefix, never by hash or secret.

use serde_json::{Value, json};
use veil_domain::{ApiKey, Channel, Money, Timestamp, User};
use veil_store::StoredCallRecord;

pub fn user_json(user: &User, balance: Money) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "role": user.role.as_str(),
        "group": user.group,
        "balance": balance.to_decimal_string(),
        "disabled": user.disabled,
        "created_at": user.created_at.to_rfc3339(),
    })
}

pub fn key_json(key: &ApiKey, user: &str) -> Value {
    json!({
        "id": key.id,
        "user": user,
        "name": key.name,
        "prefix": key.prefix,
        "models": key.models,
        "expires_at": key.expires_at.map(Timestamp::to_rfc3339),
        "quota": key.quota.map(Money::to_decimal_string),
        "daily_spend": key.daily_spend.map(Money::to_decimal_string),
        "monthly_spend": key.monthly_spend.map(Money::to_decimal_string),
        "rpm": key.limits.rpm,
        "tpm": key.limits.tpm,
        "max_concurrent": key.limits.max_concurrent,
        "ip_allow": key.ip_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "allow_training": key.allow_training,
        "privacy": key.privacy,
        "revoked_at": key.revoked_at.map(Timestamp::to_rfc3339),
        "suspended_at": key.suspended_at.map(Timestamp::to_rfc3339),
        "created_at": key.created_at.to_rfc3339(),
    })
}

pub fn channel_json(c: &Channel) -> Value {
    json!({
        "name": c.name,
        "type": c.kind.as_str(),
        "test_provider": c.kind == veil_domain::ChannelKind::Echo,
        "base_url": c.base_url,
        "api_key_env": c.api_key_env,
        "models": c.models,
        "model_mapping": c.model_mapping,
        "priority": c.priority,
        "weight": c.weight,
        "groups": c.groups,
        "class": c.policy.class().as_str(),
        "retention": c.policy.retention.to_string(),
        "training": c.policy.training,
        "region": c.policy.region,
        "human_review": c.policy.human_review,
        "operator": c.policy.operator,
        "connect_timeout": duration_text(c.timeouts.connect),
        "first_byte_timeout": duration_text(c.timeouts.first_byte),
        "idle_timeout": duration_text(c.timeouts.idle),
        "total_timeout": duration_text(c.timeouts.total),
        "rpm": c.limits.rpm,
        "max_concurrent": c.limits.max_concurrent,
        "tls_verify": c.tls_verify,
        "probe_interval": c.probe_interval.map(duration_text),
        "enabled": c.enabled,
        "managed": c.managed,
    })
}

/// A duration as the config file writes it (`500ms`, `30s`, `5m`, `1h`, `7d`): the
/// largest unit that shows it exactly.
fn duration_text(duration: std::time::Duration) -> String {
    if duration.subsec_millis() != 0 || duration.as_secs() == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let seconds = duration.as_secs();
    match [(86_400, "d"), (3_600, "h"), (60, "m")].into_iter().find(|(unit, _)| seconds.is_multiple_of(*unit)) {
        Some((unit, suffix)) => format!("{}{suffix}", seconds / unit),
        None => format!("{seconds}s"),
    }
}

/// A call record with the field names of DESIGN §3.5.
pub fn record_json(stored: &StoredCallRecord) -> Value {
    let r = &stored.record;
    json!({
        "request_id": r.request_id,
        "time": r.time.to_rfc3339(),
        "user": stored.user_name,
        "key_id": r.key_id,
        "group": r.group,
        "model": r.model,
        "upstream_model": r.upstream_model,
        "channel": r.channel,
        "path": r.path,
        "stream": r.stream,
        "input_tokens": r.usage.input_tokens,
        "cached_tokens": r.usage.cached_tokens,
        "cache_write_tokens": r.usage.cache_write_tokens,
        "output_tokens": r.usage.output_tokens,
        "reasoning_tokens": r.usage.reasoning_tokens,
        "images": r.usage.images,
        "media_ms": r.usage.media_ms,
        "cost": r.cost.to_decimal_string(),
        "multiplier": r.multiplier.to_decimal_string(),
        "status": r.status,
        "error_code": r.error_code.map(|c| c.as_str()),
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "client_ip": r.client_ip,
        "user_agent": r.user_agent,
        "redactions": r.redactions,
        "rule_id": r.rule_id,
        "policy_class": r.policy_class.map(|c| c.as_str()),
        "estimated": r.estimated,
        "channels_tried": r.channels_tried,
    })
}

#[cfg(test)]
mod tests {
    use super::duration_text;
    use std::time::Duration;

    #[test]
    fn durations_read_as_the_config_writes_them() {
        assert_eq!(duration_text(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(duration_text(Duration::ZERO), "0ms");
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(300)), "5m");
        assert_eq!(duration_text(Duration::from_secs(7_200)), "2h");
        assert_eq!(duration_text(Duration::from_secs(172_800)), "2d");
    }
}

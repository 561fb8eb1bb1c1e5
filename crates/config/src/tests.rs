use super::*;
use veil_domain::{ChannelKind, FirewallMode, IpLogging, Pricing, Retention};

const DESIGN_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8787"

[database]
url = "sqlite://veil-data/veil.db"

[privacy]
log_retention_days = 90
ip_logging = "truncated"
media_ttl = "1h"

[billing]
currency = "USD"
durability = "batched"

[console]
signup = true
signup_group = "default"
signup_domains = []

[[group]]
name = "default"
multiplier = 1.0
firewall = "identity"
max_retention_days = 30
allow_training = false
regions = ["US", "EU"]
rpm = 600
deny_keywords = ["forbidden phrase"]
deny_patterns = ['\bDROP\s+TABLE\b']

[[group]]
name = "free"
multiplier = 0.0
firewall = "pii"
allow_training = true

[[channel]]
name = "openai-main"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
models = ["gpt-4o-mini", "text-embedding-3-small"]
model_mapping = { "gpt-4o-mini" = "gpt-4o-mini-2024-07-18" }
priority = 10
weight = 1
groups = ["default"]
retention = "30d"
training = false
region = "US"
human_review = false
operator = "openai"
first_byte_timeout = "30s"

[[model]]
name = "gpt-4o-mini"
price = { input = 0.15, cached_input = 0.075, output = 0.60 }
"#;

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!("veil-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.toml", text.len() ^ env.len() << 20 ^ text.as_ptr() as usize));
    std::fs::write(&path, text).unwrap();
    let result = load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    std::fs::remove_file(&path).ok();
    result
}

fn invalid_key(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn the_design_example_is_valid() {
    let s = load_text(DESIGN_EXAMPLE, &[]).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(s.ip_logging, IpLogging::Truncated);
    assert_eq!(s.groups.len(), 2);
    assert_eq!(s.groups[1].privacy.firewall, FirewallMode::Pii);
    assert_eq!(s.groups[1].multiplier.millionths(), 0);
    let channel = &s.channels[0];
    assert_eq!(channel.kind, ChannelKind::Openai);
    assert_eq!(channel.policy.retention, Retention::Days(30));
    assert_eq!(channel.timeouts.first_byte, std::time::Duration::from_secs(30));
    assert!(!s.builtin_echo);
    let mini = s.models.iter().find(|m| m.name.as_str() == "gpt-4o-mini").unwrap();
    let Pricing::Priced(price) = mini.pricing else { panic!("gpt-4o-mini is priced") };
    assert_eq!(price.input.nanos(), 150_000_000);
    assert_eq!(price.cached_input.nanos(), 75_000_000);
    assert_eq!(price.output.nanos(), 600_000_000);
    // Without a cache-write price, writes cost what input does.
    assert_eq!(price.cache_write.nanos(), 150_000_000);
    // Served but unpriced models exist, and are refused until priced or marked free.
    let embedding = s.models.iter().find(|m| m.name.as_str() == "text-embedding-3-small").unwrap();
    assert_eq!(embedding.pricing, Pricing::Unpriced);
}

#[test]
fn models_are_priced_free_or_unpriced_with_every_price_component() {
    let text = r#"
[[channel]]
name = "main"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["a", "b", "c"]
rpm = 100
max_concurrent = 4

[[model]]
name = "a"
price = { input = 3, cached_input = 0.3, cache_write = 3.75, output = 15, per_image = 0.04, per_second = 0.006 }
max_output_tokens = 8192

[[model]]
name = "b"
free = true
"#;
    let s = load_text(text, &[]).unwrap();
    assert_eq!(s.channels[0].limits, veil_domain::ChannelLimits { rpm: Some(100), max_concurrent: Some(4) });
    let model = |name: &str| s.models.iter().find(|m| m.name.as_str() == name).unwrap().clone();
    let Pricing::Priced(a) = model("a").pricing else { panic!("a is priced") };
    assert_eq!(a.cache_write.nanos(), 3_750_000_000);
    assert_eq!(a.per_image.nanos(), 40_000_000);
    assert_eq!(a.per_second.nanos(), 6_000_000);
    assert_eq!(model("a").max_output_tokens, Some(8192));
    assert_eq!(model("b").pricing, Pricing::Free);
    assert_eq!(model("c").pricing, Pricing::Unpriced);

    let both = text.replace("name = \"b\"\nfree = true", "name = \"b\"\nfree = true\nprice = { input = 1 }");
    assert_eq!(invalid_key(load_text(&both, &[])), "model[1].free");
    let negative = text.replace("per_image = 0.04", "per_image = -0.04");
    assert_eq!(invalid_key(load_text(&negative, &[])), "model[0].price");
}

#[test]
fn no_config_serves_the_echo_test_provider_on_the_default_address() {
    let s = load(None, Vec::new()).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(s.database_url, "sqlite://veil-data/veil.db");
    assert!(s.builtin_echo);
    assert_eq!(s.channels[0].kind, ChannelKind::Echo);
    assert_eq!(s.models[0].name.as_str(), "veil-echo");
}

#[test]
fn unknown_keys_are_named_by_their_path() {
    assert_eq!(invalid_key(load_text("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", &[])), "server.lisen");
    assert_eq!(invalid_key(load_text("colour = 1\n", &[])), "colour");
    let bad_channel = "[[channel]]\nname = \"a\"\ntype = \"echo\"\nmodels = [\"m\"]\nbase_ulr = \"x\"\n";
    assert_eq!(invalid_key(load_text(bad_channel, &[])), "channel[0].base_ulr");
    let bad_price = "[[model]]\nname = \"m\"\nprice = { input = 1, outptu = 2 }\n";
    assert_eq!(invalid_key(load_text(bad_price, &[])), "model[0].price.outptu");
}

#[test]
fn wrong_values_are_named_by_their_path() {
    assert_eq!(invalid_key(load_text("[server]\nlisten = \"nowhere\"\n", &[])), "server.listen");
    assert_eq!(
        invalid_key(load_text("[privacy]\nlog_retention_days = \"ninety\"\n", &[])),
        "privacy.log_retention_days"
    );
    let bad_type = "[[channel]]\nname = \"a\"\ntype = \"telepathy\"\nmodels = [\"m\"]\n";
    assert_eq!(invalid_key(load_text(bad_type, &[])), "channel[0].type");
    let no_url = "[[channel]]\nname = \"a\"\ntype = \"openai\"\nmodels = [\"m\"]\n";
    assert_eq!(invalid_key(load_text(no_url, &[])), "channel[0].base_url");
    let bad_mapping =
        "[[channel]]\nname = \"a\"\ntype = \"echo\"\nmodels = [\"m\"]\nmodel_mapping = { other = \"x\" }\n";
    assert_eq!(invalid_key(load_text(bad_mapping, &[])), "channel[0].model_mapping.other");
    let bad_regex = "[[group]]\nname = \"g\"\ndeny_patterns = [\"ok\", \"(unclosed\"]\n";
    assert_eq!(invalid_key(load_text(bad_regex, &[])), "group[0].deny_patterns[1]");
    let too_precise = "[[model]]\nname = \"m\"\nprice = { input = \"0.0000000001\" }\n";
    assert_eq!(invalid_key(load_text(too_precise, &[])), "model[0].price.input");
}

#[test]
fn tls_verification_may_be_turned_off_only_for_own_endpoints_and_probes_are_bounded() {
    let channel = |extra: &str| {
        format!(
            "[[channel]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"https://10.0.0.5/v1\"\nmodels = [\"m\"]\n{extra}"
        )
    };
    assert_eq!(invalid_key(load_text(&channel("tls_verify = false\n"), &[])), "channel[0].tls_verify");
    let own = load_text(&channel("tls_verify = false\noperator = \"self\"\nprobe_interval = \"30s\"\n"), &[]).unwrap();
    let own = own.channels.iter().find(|c| c.name.as_str() == "a").unwrap();
    assert!(!own.tls_verify);
    assert_eq!(own.probe_interval, Some(std::time::Duration::from_secs(30)));
    let default = load_text(&channel(""), &[]).unwrap();
    let default = default.channels.iter().find(|c| c.name.as_str() == "a").unwrap();
    assert!(default.tls_verify);
    assert_eq!(default.probe_interval, None);
    assert_eq!(invalid_key(load_text(&channel("probe_interval = \"1s\"\n"), &[])), "channel[0].probe_interval");
    assert_eq!(invalid_key(load_text(&channel("probe_interval = \"often\"\n"), &[])), "channel[0].probe_interval");
}

#[test]
fn environment_overrides_the_file() {
    let s = load_text(
        DESIGN_EXAMPLE,
        &[
            ("VEIL_SERVER__LISTEN", "0.0.0.0:9000"),
            ("VEIL_PRIVACY__LOG_RETENTION_DAYS", "7"),
            ("VEIL_CHANNEL__0__PRIORITY", "3"),
            ("VEIL_MASTER_KEY", "not a config key"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(s.log_retention_days, 7);
    assert_eq!(s.channels[0].priority, 3);
}

#[test]
fn environment_can_declare_a_channel_and_rejects_typos() {
    let s = load(
        None,
        [
            ("VEIL_CHANNEL__0__NAME", "local"),
            ("VEIL_CHANNEL__0__TYPE", "openai"),
            ("VEIL_CHANNEL__0__BASE_URL", "http://127.0.0.1:8000/v1"),
            ("VEIL_CHANNEL__0__MODELS", "[\"llama\"]"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    assert_eq!(s.channels[0].base_url, "http://127.0.0.1:8000/v1");
    assert!(!s.builtin_echo);
    let typo = load(None, [("VEIL_SERVR__LISTEN".to_owned(), "x".to_owned())]);
    assert!(matches!(typo, Err(ConfigError::Env { .. })), "{typo:?}");
    let unknown = load(None, [("VEIL_SERVER__LISEN".to_owned(), "x".to_owned())]);
    assert_eq!(invalid_key(unknown), "server.lisen");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(std::time::Duration::from_secs(120)));
    assert_eq!(parse_duration("1d"), Ok(std::time::Duration::from_secs(86_400)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn risk_rules_default_and_override_field_by_field() {
    use crate::{BlockAction, RiskAction};
    use std::time::Duration;
    let s = load(None, Vec::new()).unwrap();
    assert_eq!(s.risk, RiskSettings::default());
    assert_eq!(s.risk.spend_spike.action, RiskAction::Warn);
    assert_eq!(s.risk.spend_spike.factor.millionths(), 10_000_000);
    assert_eq!(s.risk.spend_spike.min_spend.nanos(), 1_000_000_000);
    assert_eq!((s.risk.networks.max, s.risk.networks.window), (5, Duration::from_secs(86_400)));
    assert_eq!(s.risk.networks.action, RiskAction::Warn);
    assert_eq!((s.risk.auth_failures.max, s.risk.auth_failures.window), (20, Duration::from_secs(60)));
    assert_eq!(s.risk.auth_failures.action, BlockAction::Block);

    let text = r#"
[risk]
spend_spike = { factor = 2.5, min_spend = "0.25", action = "suspend" }
networks = { max = 2, action = "off" }
auth_failures = { window = "10m", action = "warn" }
"#;
    let s = load_text(text, &[]).unwrap();
    assert_eq!(s.risk.spend_spike.factor.millionths(), 2_500_000);
    assert_eq!(s.risk.spend_spike.min_spend.nanos(), 250_000_000);
    assert_eq!(s.risk.spend_spike.action, RiskAction::Suspend);
    // Fields left out keep their defaults.
    assert_eq!((s.risk.networks.max, s.risk.networks.window), (2, Duration::from_secs(86_400)));
    assert_eq!(s.risk.networks.action, RiskAction::Off);
    assert_eq!((s.risk.auth_failures.max, s.risk.auth_failures.window), (20, Duration::from_secs(600)));
    assert_eq!(s.risk.auth_failures.action, BlockAction::Warn);

    let s = load(None, [("VEIL_RISK__NETWORKS__ACTION".to_owned(), "suspend".to_owned())]).unwrap();
    assert_eq!(s.risk.networks.action, RiskAction::Suspend);
}

#[test]
fn risk_errors_are_named_by_their_path() {
    let cases = [
        ("[risk]\nspend_spyke = { factor = 2 }\n", "risk.spend_spyke"),
        ("[risk]\nnetworks = { max = 2, windo = \"1h\" }\n", "risk.networks.windo"),
        ("[risk]\nspend_spike = { action = \"block\" }\n", "risk.spend_spike.action"),
        ("[risk]\nspend_spike = { factor = 0.5 }\n", "risk.spend_spike.factor"),
        ("[risk]\nspend_spike = { factor = \"ten\" }\n", "risk.spend_spike.factor"),
        ("[risk]\nspend_spike = { min_spend = -1 }\n", "risk.spend_spike.min_spend"),
        ("[risk]\nspend_spike = { min_spend = 0 }\n", "risk.spend_spike.min_spend"),
        ("[risk]\nnetworks = { max = 0 }\n", "risk.networks.max"),
        ("[risk]\nnetworks = { max = 1001 }\n", "risk.networks.max"),
        ("[risk]\nnetworks = { window = \"soon\" }\n", "risk.networks.window"),
        ("[risk]\nnetworks = { action = \"block\" }\n", "risk.networks.action"),
        ("[risk]\nauth_failures = { action = \"suspend\" }\n", "risk.auth_failures.action"),
        ("[risk]\nauth_failures = { window = \"0s\" }\n", "risk.auth_failures.window"),
        ("[risk]\nauth_failures = { max = -3 }\n", "risk.auth_failures.max"),
    ];
    for (text, key) in cases {
        assert_eq!(invalid_key(load_text(text, &[])), key, "{text}");
    }
}

#[test]
fn routing_and_notifications_have_defaults_and_are_validated() {
    let defaults = load_text("", &[]).unwrap();
    assert_eq!(defaults.routing, crate::RoutingSettings::default());
    assert_eq!(defaults.routing.max_attempts, 3);
    assert_eq!(defaults.notifications.webhook_url, None);
    let set = load_text(
        "[routing]\nerror_rate_threshold = 0.25\nmin_calls = 2\nwindow = \"10s\"\ncooldown = \"200ms\"\nmax_cooldown = \"1s\"\nmax_attempts = 4\nmax_retry_wait = \"0s\"\n\n[notifications]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nwebhook_secret = \"s3cret\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(set.routing.error_rate_threshold, 0.25);
    assert_eq!(set.routing.cooldown, std::time::Duration::from_millis(200));
    assert_eq!(set.routing.max_retry_wait, std::time::Duration::ZERO);
    assert_eq!(set.notifications.webhook_secret.as_deref(), Some("s3cret"));
    assert_eq!(set.notifications.smtp, None);
    assert_eq!(set.notifications.check_interval, std::time::Duration::from_secs(300));
    let mail = load_text(
        "[notifications]\nsmtp_url = \"smtps://veil@mail.example:2465\"\nsmtp_from = \"veil@example.org\"\nsmtp_password_env = \"VEIL_SMTP_PASSWORD\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        mail.notifications.smtp,
        Some(crate::SmtpSettings {
            security: crate::SmtpSecurity::Tls,
            host: "mail.example".into(),
            port: 2465,
            username: Some("veil".into()),
            password_env: Some("VEIL_SMTP_PASSWORD".into()),
            from: "veil@example.org".into(),
            ca_file: None,
        })
    );
    let plain = load_text("[notifications]\nsmtp_url = \"smtp://127.0.0.1\"\nsmtp_from = \"v@x\"\n", &[]).unwrap();
    let plain = plain.notifications.smtp.unwrap();
    assert_eq!((plain.security, plain.port, plain.username), (crate::SmtpSecurity::Plain, 25, None));
    let starttls = load_text(
        "[notifications]\nsmtp_url = \"smtp+starttls://mail.example\"\nsmtp_from = \"v@x\"\nsmtp_ca_file = \"ca.pem\"\n",
        &[],
    )
    .unwrap()
    .notifications
    .smtp
    .unwrap();
    assert_eq!((starttls.security, starttls.port), (crate::SmtpSecurity::StartTls, 587));
    assert_eq!(starttls.ca_file, Some(std::path::PathBuf::from("ca.pem")));
    assert_eq!(
        invalid_key(load_text(
            "[notifications]\nsmtp_url = \"smtp://mail.example\"\nsmtp_from = \"v@x\"\nsmtp_ca_file = \"ca.pem\"\n",
            &[]
        )),
        "notifications.smtp_ca_file",
        "a CA file means nothing without TLS"
    );
    for (text, key) in [
        ("[routing]\nerror_rate_threshold = 1.5\n", "routing.error_rate_threshold"),
        ("[routing]\nmin_calls = 0\n", "routing.min_calls"),
        ("[routing]\ncooldown = \"5m\"\nmax_cooldown = \"1m\"\n", "routing.max_cooldown"),
        ("[routing]\nmax_attempts = 0\n", "routing.max_attempts"),
        ("[routing]\nwindow = \"0s\"\n", "routing.window"),
        ("[routing]\nretries = 2\n", "routing.retries"),
        ("[notifications]\nwebhook_url = \"ftp://x\"\n", "notifications.webhook_url"),
        ("[notifications]\nwebhook_secret = \"s\"\n", "notifications.webhook_secret"),
        ("[notifications]\nsmtp_url = \"http://mail\"\nsmtp_from = \"a@b\"\n", "notifications.smtp_url"),
        ("[notifications]\nsmtp_url = \"smtp://u:pw@mail\"\nsmtp_from = \"a@b\"\n", "notifications.smtp_url"),
        ("[notifications]\nsmtp_url = \"smtp://mail:99999\"\nsmtp_from = \"a@b\"\n", "notifications.smtp_url"),
        ("[notifications]\nsmtp_url = \"smtp://mail\"\n", "notifications.smtp_from"),
        ("[notifications]\nsmtp_url = \"smtp://mail\"\nsmtp_from = \"not an address\"\n", "notifications.smtp_from"),
        ("[notifications]\nsmtp_from = \"a@b\"\n", "notifications.smtp_from"),
        (
            "[notifications]\nsmtp_url = \"smtp://u@mail\"\nsmtp_from = \"a@b\"\nsmtp_password_env = \"1-x\"\n",
            "notifications.smtp_password_env",
        ),
        (
            "[notifications]\nsmtp_url = \"smtp://mail\"\nsmtp_from = \"a@b\"\nsmtp_password_env = \"PW\"\n",
            "notifications.smtp_password_env",
        ),
        ("[notifications]\nsmtp_host = \"mail\"\n", "notifications.smtp_host"),
        ("[notifications]\ncheck_interval = \"0s\"\n", "notifications.check_interval"),
    ] {
        assert_eq!(invalid_key(load_text(text, &[])), key, "{text}");
    }
}

#[test]
fn operations_settings_have_defaults_and_are_validated() {
    let defaults = load_text("", &[]).unwrap();
    assert_eq!(defaults.stream_keepalive, std::time::Duration::from_secs(15));
    assert_eq!(defaults.upstream_connections, 4);
    assert_eq!(defaults.shutdown_delay, std::time::Duration::ZERO);
    assert_eq!(defaults.tls, None);
    let set = load_text(
        "[server]\nstream_keepalive = \"0s\"\nupstream_connections = 8\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        &[("VEIL_SERVER__SHUTDOWN_DELAY", "5s")],
    )
    .unwrap();
    assert_eq!(set.stream_keepalive, std::time::Duration::ZERO);
    assert_eq!(set.upstream_connections, 8);
    assert_eq!(set.shutdown_delay, std::time::Duration::from_secs(5));
    assert_eq!(set.tls, Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
    for (text, key) in [
        ("[server]\nupstream_connections = 0\n", "server.upstream_connections"),
        ("[server]\nupstream_connections = 65\n", "server.upstream_connections"),
        ("[server]\nstream_keepalive = \"soon\"\n", "server.stream_keepalive"),
        ("[server]\ntls_cert = \"c.pem\"\n", "server.tls_key"),
        ("[server]\ntls_key = \"k.pem\"\n", "server.tls_cert"),
    ] {
        assert_eq!(invalid_key(load_text(text, &[])), key, "{text}");
    }
}

fn one_channel(text: &str) -> Result<veil_domain::Channel, ConfigError> {
    channel_from(text.parse::<toml::Table>().map(toml::Value::Table).unwrap())
}

fn channel_error_key(result: Result<veil_domain::Channel, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn one_channel_gets_the_files_checks_and_defaults_and_is_not_managed() {
    let channel =
        one_channel("name = \"api\"\ntype = \"openai\"\nbase_url = \"https://x.test/v1/\"\nmodels = [\"m\"]\n")
            .unwrap();
    let from_file = load_text(
        "[[channel]]\nname = \"api\"\ntype = \"openai\"\nbase_url = \"https://x.test/v1/\"\nmodels = [\"m\"]\n",
        &[],
    )
    .unwrap()
    .channels
    .remove(0);
    assert!(!channel.managed && from_file.managed);
    assert_eq!(veil_domain::Channel { managed: true, ..channel }, from_file);

    let base = "name = \"api\"\ntype = \"openai\"\nbase_url = \"https://x.test\"\nmodels = [\"m\"]\n";
    assert_eq!(channel_error_key(one_channel(&format!("{base}colour = \"red\"\n"))), "colour");
    assert_eq!(channel_error_key(one_channel(&format!("{base}weight = \"heavy\"\n"))), "weight");
    assert_eq!(channel_error_key(one_channel(&format!("{base}weight = 0\n"))), "weight");
    assert_eq!(channel_error_key(one_channel(&format!("{base}tls_verify = false\n"))), "tls_verify");
    assert_eq!(channel_error_key(one_channel(&format!("{base}model_mapping = {{ x = \"y\" }}\n"))), "model_mapping.x");
    assert_eq!(
        channel_error_key(one_channel("name = \"api\"\ntype = \"openai\"\nbase_url = \"ftp://x\"\nmodels = [\"m\"]\n")),
        "base_url"
    );
}

#[test]
fn a_channel_missing_a_required_field_names_it() {
    assert_eq!(channel_error_key(one_channel("name = \"api\"\nbase_url = \"https://x.test\"\n")), "type");
}

#[test]
fn redis_settings_default_to_closed_with_the_veil_prefix_and_reject_bad_values() {
    let s = load_text("[redis]\nurl = \"redis://127.0.0.1:6379\"\n", &[]).unwrap();
    assert_eq!(s.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert_eq!((s.redis_key_prefix.as_str(), s.limits_on_failure), ("veil", LimitsOnFailure::Closed));
    let s = load_text(
        "[redis]\nurl = \"redis://r\"\nkey_prefix = \"blue\"\n",
        &[("VEIL_REDIS__LIMITS_ON_FAILURE", "open")],
    )
    .unwrap();
    assert_eq!((s.redis_key_prefix.as_str(), s.limits_on_failure), ("blue", LimitsOnFailure::Open));
    let bad = load_text("[redis]\nurl = \"redis://r\"\nlimits_on_failure = \"maybe\"\n", &[]);
    assert_eq!(invalid_key(bad), "redis.limits_on_failure");
    let bad = load_text("[redis]\nurl = \"redis://r\"\nkey_prefix = \"{x}\"\n", &[]);
    assert_eq!(invalid_key(bad), "redis.key_prefix");
}

#[test]
fn console_oidc_is_off_by_default_and_validated_with_key_paths() {
    assert_eq!(load_text("", &[]).unwrap().console.oidc, None);
    let oidc = load_text(
        "[console.oidc]\nissuer = \"https://id.example.com/\"\nclient_id = \"veil\"\nclient_secret_env = \"OIDC_SECRET\"\n",
        &[("VEIL_CONSOLE__OIDC__NAME", "Example SSO")],
    )
    .unwrap()
    .console
    .oidc
    .unwrap();
    assert_eq!(oidc.issuer, "https://id.example.com", "a trailing slash is dropped");
    assert_eq!(oidc.name, "Example SSO");
    assert_eq!(oidc.scopes, ["openid", "email", "profile"]);
    assert_eq!(oidc.client_secret_env.as_deref(), Some("OIDC_SECRET"));
    assert!(oidc.create_accounts);
    for (text, key) in [
        ("[console.oidc]\nclient_id = \"veil\"\n", "console.oidc.issuer"),
        ("[console.oidc]\nissuer = \"http://id.example.com\"\nclient_id = \"v\"\n", "console.oidc.issuer"),
        ("[console.oidc]\nissuer = \"https://id.example.com\"\n", "console.oidc.client_id"),
        (
            "[console.oidc]\nissuer = \"https://i.example\"\nclient_id = \"v\"\nscopes = [\"email\"]\n",
            "console.oidc.scopes",
        ),
        (
            "[console.oidc]\nissuer = \"https://i.example\"\nclient_id = \"v\"\nredirect_url = \"https://r.example/x\"\n",
            "console.oidc.redirect_url",
        ),
    ] {
        assert_eq!(invalid_key(load_text(text, &[])), key, "{text}");
    }
    let unknown = load_text("[console.oidc]\nissuer = \"https://i.example\"\nclient_id = \"v\"\nsecret = \"x\"\n", &[]);
    assert!(format!("{:?}", unknown.unwrap_err()).contains("console.oidc"), "unknown keys are named by path");
}

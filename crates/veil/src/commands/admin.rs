//! `veil admin …`: scriptable operations on the store, with no server running. Running
//! servers notice every change within their refresh interval (the store's revision
//! counter moves with each write).

use crate::cli::{AdminCommand, AuditCommand, ChannelCommand, KeyCommand, KeyCreate, UserCommand};
use crate::output;
use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use veil_config::{Settings, parse_duration};
use veil_domain::{
    ApiKey, Channel, FirewallMode, GroupName, KeyId, KeyLimits, KeyPrivacy, ModelName, Money, NewApiKey, NewUser, Role,
    Timestamp, User, UserName,
};
use veil_secrets::{MASTER_KEY_ENV, MasterKey};
use veil_server::account;
use veil_server::channels::status_json;
use veil_server::views::{key_json, record_json, user_json};
use veil_store::{CallRecordFilter, Store};

pub async fn run(settings: &Settings, command: AdminCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = veil_server::open_store(settings).await.context("cannot open the store")?;
    let result = dispatch(settings, &store, command, as_json).await;
    // Running instances hear of the change now rather than at their next poll.
    veil_server::announce_store_changes(settings, store.as_ref()).await;
    result
}

async fn dispatch(
    settings: &Settings,
    store: &std::sync::Arc<dyn Store>,
    command: AdminCommand,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = std::sync::Arc::clone(store);
    match command {
        AdminCommand::User { command } => user(store.as_ref(), command, as_json).await,
        AdminCommand::Key { command } => key(settings, store, command, as_json).await,
        AdminCommand::Channel { command } => channel(store.as_ref(), command, as_json).await,
        AdminCommand::Code { command } => super::code::run(settings, store.as_ref(), command, as_json).await,
        AdminCommand::Logs { user, key, limit } => logs(store.as_ref(), user, key, limit, as_json).await,
        AdminCommand::Purge { before } => purge(settings, store.as_ref(), before, as_json).await,
        AdminCommand::ExportUser { name } => {
            let user = find_user(store.as_ref(), &name).await?;
            output::json(&account::export(store.as_ref(), &user, account::actor_cli()).await?);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::EraseUser { name } => {
            let user = find_user(store.as_ref(), &name).await?;
            let report = account::erase(store.as_ref(), &user, account::actor_cli()).await?;
            if as_json {
                output::json(&json!({"erased": name, "keys_deleted": report.keys_deleted,
                    "records_anonymised": report.records_anonymised}));
            } else {
                output::line(&format!(
                    "erased {name}: {} key(s) deleted, {} call record(s) folded into anonymous aggregates",
                    report.keys_deleted, report.records_anonymised
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Audit { command } => audit_command(store.as_ref(), command, as_json).await,
        AdminCommand::RotateMasterKey { finish } => super::rotate::run(settings, store.as_ref(), finish, as_json).await,
    }
}

async fn find_user(store: &dyn Store, name: &str) -> anyhow::Result<User> {
    let name = UserName::parse(name)?;
    store.user_by_name(&name).await?.ok_or_else(|| anyhow!("no user named '{name}'"))
}

async fn user(store: &dyn Store, command: UserCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add { name, email, password_stdin, group, role, credit } => {
            let name = UserName::parse(&name)?;
            let group = GroupName::parse(&group)?;
            let role = Role::parse(&role).ok_or_else(|| anyhow!("--role must be user, admin or root"))?;
            let credit = credit.map(|c| Money::parse_decimal(&c)).transpose()?;
            let password_hash = if password_stdin { Some(hash_password(read_password()?).await?) } else { None };
            let user = store
                .create_user(NewUser { name, email, role, group, password_hash })
                .await
                .map_err(|e| anyhow!("{e}"))?;
            account::audit(
                store,
                account::actor_cli(),
                "user.create",
                Some(user.id),
                Some(user.id.to_string()),
                json!({"role": user.role.as_str(), "group": user.group}),
            )
            .await?;
            if let Some(amount) = credit.filter(|a| *a != Money::ZERO) {
                account::credit(store, user.id, amount, account::actor_cli()).await?;
            }
            let balance = store.balance(user.id).await?;
            if as_json {
                output::json(&user_json(&user, balance));
            } else {
                output::line(&format!(
                    "created user {} ({}, group {}, balance {balance})",
                    user.name, user.role, user.group
                ));
            }
        }
        UserCommand::List => {
            let users = store.list_users().await?;
            if as_json {
                output::json(&Value::Array(users.iter().map(|u| user_json(&u.user, u.balance)).collect()));
            } else {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.user.name.to_string(),
                            u.user.role.to_string(),
                            u.user.group.to_string(),
                            u.balance.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["NAME", "ROLE", "GROUP", "BALANCE"], &rows);
            }
        }
        UserCommand::Credit { name, amount } => {
            let user = find_user(store, &name).await?;
            let amount = Money::parse_decimal(&amount)?;
            if amount == Money::ZERO {
                bail!("the amount must not be zero");
            }
            account::credit(store, user.id, amount, account::actor_cli()).await?;
            let balance = store.balance(user.id).await?;
            if as_json {
                output::json(
                    &json!({"name": user.name, "credited": amount.to_decimal_string(), "balance": balance.to_decimal_string()}),
                );
            } else {
                output::line(&format!("credited {amount} to {}; balance {balance}", user.name));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a console password from standard input; the console's own rules apply.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if let Err(reason) = veil_console::password::check_new(&password) {
        bail!("{}", reason.trim_end_matches('.').to_lowercase());
    }
    Ok(password)
}

/// The console's Argon2id hash, computed off the runtime like the console does.
async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || veil_console::password::hash(&password))
        .await
        .context("password hashing was interrupted")?
        .ok_or_else(|| anyhow!("cannot hash the password"))
}

async fn key(
    settings: &Settings,
    store: Arc<dyn Store>,
    command: KeyCommand,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Create(create) => create_key(settings, store.as_ref(), *create, as_json).await?,
        KeyCommand::List { user } => {
            let owner = match user {
                Some(name) => Some(find_user(store.as_ref(), &name).await?),
                None => None,
            };
            let keys = store.list_keys(owner.as_ref().map(|u| u.id)).await?;
            let users = store.list_users().await?;
            let name_of = |key: &ApiKey| {
                users.iter().find(|u| u.user.id == key.user_id).map(|u| u.user.name.to_string()).unwrap_or_default()
            };
            if as_json {
                output::json(&Value::Array(keys.iter().map(|k| key_json(k, &name_of(k))).collect()));
            } else {
                let now = Timestamp::now();
                let rows = keys
                    .iter()
                    .map(|k| {
                        let status = if k.revoked_at.is_some() {
                            "revoked"
                        } else if !k.is_usable_at(now) {
                            "expired"
                        } else if k.suspended_at.is_some() {
                            "suspended"
                        } else {
                            "active"
                        };
                        vec![
                            k.id.to_string(),
                            name_of(k),
                            k.name.clone().unwrap_or_default(),
                            format!("{}…", k.prefix),
                            status.to_owned(),
                            k.expires_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["ID", "USER", "NAME", "PREFIX", "STATUS", "EXPIRES"], &rows);
            }
        }
        KeyCommand::Revoke { id } => {
            let id = KeyId::parse(&id)?;
            if !store.revoke_key(id, Timestamp::now()).await? {
                bail!("no key with id {id}");
            }
            let owner = store.list_keys(None).await?.into_iter().find(|k| k.id == id).map(|k| k.user_id);
            account::audit(store.as_ref(), account::actor_cli(), "key.revoke", owner, Some(id.to_string()), json!({}))
                .await?;
            if as_json {
                output::json(&json!({"id": id, "revoked": true}));
            } else {
                output::line(&format!("revoked key {id}"));
            }
        }
        KeyCommand::Suspend { id } => set_suspended(store.as_ref(), &id, true, as_json).await?,
        KeyCommand::Unsuspend { id } => set_suspended(store.as_ref(), &id, false, as_json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Suspends a key (or lifts its suspension) by hand, audited as `key.suspend` or
/// `key.unsuspend` with actor `cli`, the same actions risk control's decisions use.
async fn set_suspended(store: &dyn Store, id: &str, suspend: bool, as_json: bool) -> anyhow::Result<()> {
    let id = KeyId::parse(id)?;
    let at = suspend.then(Timestamp::now);
    if !store.set_key_suspended(id, at).await? {
        bail!("no key with id {id}");
    }
    let key = store.list_keys(None).await?.into_iter().find(|k| k.id == id);
    let action = if suspend { "key.suspend" } else { "key.unsuspend" };
    account::audit(
        store,
        account::actor_cli(),
        action,
        key.as_ref().map(|k| k.user_id),
        Some(id.to_string()),
        json!({}),
    )
    .await?;
    let suspended_at = key.and_then(|k| k.suspended_at);
    if as_json {
        output::json(&json!({
            "id": id,
            "suspended": suspended_at.is_some(),
            "suspended_at": suspended_at.map(Timestamp::to_rfc3339),
        }));
    } else if suspend {
        output::line(&format!("suspended key {id}"));
    } else {
        output::line(&format!("lifted the suspension of key {id}"));
    }
    Ok(())
}

async fn create_key(settings: &Settings, store: &dyn Store, create: KeyCreate, as_json: bool) -> anyhow::Result<()> {
    let user = find_user(store, &create.user).await?;
    let models = create
        .models
        .map(|names| names.iter().map(|m| ModelName::parse(m.trim())).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    let expires_at = create.expires.as_deref().map(parse_expiry).transpose()?;
    let amount = |raw: &Option<String>| raw.as_deref().map(Money::parse_decimal).transpose();
    let (quota, daily_spend, monthly_spend) =
        (amount(&create.quota)?, amount(&create.daily_spend)?, amount(&create.monthly_spend)?);
    let ip_allow = create
        .ip_allow
        .unwrap_or_default()
        .iter()
        .map(|raw| parse_network(raw.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let firewall = create
        .firewall
        .as_deref()
        .map(|raw| FirewallMode::parse(raw).ok_or_else(|| anyhow!("--firewall must be off, identity or pii")))
        .transpose()?;
    let privacy = KeyPrivacy { max_retention_days: create.max_retention_days, regions: create.regions, firewall };
    let master = MasterKey::load_or_create(std::env::var(MASTER_KEY_ENV).ok().as_deref(), &settings.data_dir)?;
    let hasher = veil_secrets::key_hasher(store, &master).await?;
    let options = NewApiKey {
        user_id: user.id,
        name: create.name,
        // Filled in by `create_key` with the fresh secret's.
        prefix: String::new(),
        hash: String::new(),
        models,
        expires_at,
        quota,
        limits: KeyLimits { rpm: create.rpm, tpm: create.tpm, max_concurrent: create.max_concurrent },
        daily_spend,
        monthly_spend,
        ip_allow,
        allow_training: create.allow_training,
        privacy,
    };
    let (key, secret) = account::create_key(store, &hasher, options, account::actor_cli()).await?;
    if as_json {
        let mut value = key_json(&key, user.name.as_str());
        if let Some(object) = value.as_object_mut() {
            object.insert("secret".into(), json!(secret.expose()));
        }
        output::json(&value);
    } else {
        output::line(secret.expose());
        output::note(&format!("Key {} for {} created. The secret above is shown only once.", key.id, user.name));
    }
    Ok(())
}

pub(super) fn parse_expiry(raw: &str) -> anyhow::Result<Timestamp> {
    if let Ok(at) = Timestamp::parse_rfc3339(raw) {
        return Ok(at);
    }
    let lifetime = parse_duration(raw).map_err(|e| anyhow!("--expires: {e}"))?;
    Ok(Timestamp::now().plus_millis(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)))
}

fn parse_network(raw: &str) -> anyhow::Result<ipnet::IpNet> {
    if let Ok(net) = raw.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    raw.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| anyhow!("--ip-allow: '{raw}' is not an address or CIDR network"))
}

async fn channel(store: &dyn Store, command: ChannelCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    let channels = store.list_channels().await?;
    match command {
        ChannelCommand::List => {
            let states = store.channel_states().await?;
            let state_of = |c: &Channel| states.iter().find(|s| s.channel == c.name);
            let statuses: Vec<Value> = channels.iter().map(|c| status_json(c, state_of(c), None)).collect();
            if as_json {
                output::json(&Value::Array(statuses));
            } else {
                let rows = channels
                    .iter()
                    .zip(&statuses)
                    .map(|(c, status)| {
                        vec![
                            c.name.to_string(),
                            if c.kind == veil_domain::ChannelKind::Echo {
                                "echo (test provider)".into()
                            } else {
                                c.kind.to_string()
                            },
                            c.models.iter().map(ModelName::as_str).collect::<Vec<_>>().join(","),
                            c.priority.to_string(),
                            c.weight.to_string(),
                            c.policy.class().to_string(),
                            c.policy.retention.to_string(),
                            state_cell(status),
                            match status["calls"].as_u64() {
                                Some(calls) if calls > 0 => {
                                    format!("{:.1}%", status["error_rate"].as_f64().unwrap_or(0.0) * 100.0)
                                }
                                _ => "-".into(),
                            },
                            status["latency_p50_ms"].as_u64().map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(
                    &[
                        "NAME",
                        "TYPE",
                        "MODELS",
                        "PRIORITY",
                        "WEIGHT",
                        "CLASS",
                        "RETENTION",
                        "STATE",
                        "ERROR RATE",
                        "P50",
                    ],
                    &rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ChannelCommand::Test { name } => {
            let channel = channels
                .into_iter()
                .find(|c| c.name.as_str() == name)
                .ok_or_else(|| anyhow!("no channel named '{name}'"))?;
            let http = veil_providers::HttpClient::new().map_err(|e| anyhow!("{e}"))?;
            let provider = veil_providers::provider_for(&channel, &http);
            let outcome = veil_server::probe::probe(provider.as_ref(), &channel).await;
            let ok = outcome.is_ok();
            if as_json {
                output::json(&match &outcome {
                    Ok(probe) => json!({"channel": channel.name, "ok": true, "model": probe.model,
                        "latency_ms": u64::try_from(probe.latency.as_millis()).unwrap_or(u64::MAX)}),
                    Err(error) => json!({"channel": channel.name, "ok": false, "error": error.describe()}),
                });
            } else {
                match &outcome {
                    Ok(probe) => output::line(&format!(
                        "{}: ok, {} answered in {} ms",
                        channel.name,
                        probe.model,
                        probe.latency.as_millis()
                    )),
                    Err(error) => output::line(&format!("{}: failed: {}", channel.name, error.describe())),
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        ChannelCommand::Enable { name } => {
            let channel = find_channel(&channels, &name)?;
            let changed = store.enable_channel(&channel).await?;
            if changed {
                account::audit(store, account::actor_cli(), "channel.enable", None, Some(name.clone()), json!({}))
                    .await?;
            }
            report_switch(store, &channels, &channel, changed, "enabled", as_json).await
        }
        ChannelCommand::Disable { name } => {
            let channel = find_channel(&channels, &name)?;
            let changed = store.disable_channel(&channel, veil_store::DisabledReason::Admin, Timestamp::now()).await?;
            if changed {
                account::audit(
                    store,
                    account::actor_cli(),
                    "channel.disable",
                    None,
                    Some(name.clone()),
                    json!({"reason": veil_store::DisabledReason::Admin.as_str()}),
                )
                .await?;
            }
            report_switch(store, &channels, &channel, changed, "disabled", as_json).await
        }
    }
}

/// The STATE cell: the state, with why a channel is disabled.
fn state_cell(status: &Value) -> String {
    let state = status["state"].as_str().unwrap_or("healthy");
    match (state, status["disabled_reason"].as_str(), status["enabled"].as_bool()) {
        ("disabled", Some(reason), _) => format!("disabled ({reason})"),
        ("disabled", None, Some(false)) => "disabled (config)".into(),
        _ => state.to_owned(),
    }
}

fn find_channel(channels: &[Channel], name: &str) -> anyhow::Result<veil_domain::ChannelName> {
    channels
        .iter()
        .find(|c| c.name.as_str() == name)
        .map(|c| c.name.clone())
        .ok_or_else(|| anyhow!("no channel named '{name}'"))
}

/// Prints the channel's state after an enable or disable.
async fn report_switch(
    store: &dyn Store,
    channels: &[Channel],
    name: &veil_domain::ChannelName,
    changed: bool,
    done: &str,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let states = store.channel_states().await?;
    let channel = channels.iter().find(|c| &c.name == name).ok_or_else(|| anyhow!("no channel named '{name}'"))?;
    let status = status_json(channel, states.iter().find(|s| &s.channel == name), None);
    if as_json {
        output::json(&status);
    } else if changed {
        output::line(&format!("{done} {name} (running servers follow within their refresh interval)"));
    } else {
        output::line(&format!("{name} was already {done}; state: {}", state_cell(&status)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(
    store: &dyn Store,
    user: Option<String>,
    key: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let user_id = match user {
        Some(name) => Some(find_user(store, &name).await?.id),
        None => None,
    };
    let key_id = key.map(|raw| KeyId::parse(&raw).map_err(|_| anyhow!("--key must be a key id"))).transpose()?;
    let records = store.list_call_records(&CallRecordFilter { user_id, key_id, limit, ..Default::default() }).await?;
    if as_json {
        output::json(&Value::Array(records.iter().map(record_json).collect()));
    } else {
        let rows = records
            .iter()
            .map(|s| {
                let r = &s.record;
                vec![
                    r.time.to_rfc3339(),
                    s.user_name.as_ref().map(ToString::to_string).unwrap_or_default(),
                    r.model.as_ref().map(ToString::to_string).unwrap_or_default(),
                    r.channel.as_ref().map(ToString::to_string).unwrap_or_default(),
                    r.status.to_string(),
                    r.error_code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                    format!("{}/{}", r.usage.input_tokens, r.usage.output_tokens),
                    r.cost.to_string(),
                    format!("x{}", r.multiplier),
                    format!("{} ms", r.latency_ms),
                ]
            })
            .collect::<Vec<_>>();
        output::table(
            &["TIME", "USER", "MODEL", "CHANNEL", "STATUS", "ERROR", "TOKENS IN/OUT", "COST", "MULTIPLIER", "LATENCY"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(
    settings: &Settings,
    store: &dyn Store,
    before: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let cutoff = match before {
        Some(raw) => Timestamp::parse_rfc3339(&raw).map_err(|_| anyhow!("--before must be an RFC 3339 time"))?,
        None => account::retention_cutoff(settings.log_retention_days),
    };
    let purged = account::purge(store, cutoff).await?;
    // Generated media goes once its own expiry has passed, whatever the cutoff.
    let media = store.purge_expired_media(Timestamp::now()).await?;
    if as_json {
        output::json(&json!({"purged_call_records": purged, "before": cutoff.to_rfc3339(), "purged_media": media}));
    } else {
        output::line(&format!("purged {purged} call record(s) older than {cutoff}"));
        output::line(&format!("purged {media} expired generated media item(s)"));
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_command(store: &dyn Store, command: AuditCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify => {
            let verification = store.verify_audit().await?;
            let intact = verification.first_broken.is_none();
            if as_json {
                output::json(&json!({"entries": verification.entries, "intact": intact,
                    "first_broken": verification.first_broken}));
            } else if let Some(seq) = verification.first_broken {
                output::line(&format!("audit log BROKEN at entry {seq} ({} entries checked)", verification.entries));
            } else {
                output::line(&format!("audit log intact: {} entries", verification.entries));
            }
            Ok(if intact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::List { limit } => {
            let entries = store.list_audit(None, limit).await?;
            if as_json {
                output::json(&Value::Array(
                    entries
                        .iter()
                        .map(|a| {
                            json!({"seq": a.seq, "time": a.time.to_rfc3339(), "actor": a.actor, "action": a.action,
                            "subject_user": a.subject_user, "target": a.target, "details": a.details, "hash": a.hash})
                        })
                        .collect(),
                ));
            } else {
                let rows = entries
                    .iter()
                    .map(|a| {
                        vec![
                            a.seq.to_string(),
                            a.time.to_rfc3339(),
                            a.actor.clone(),
                            a.action.clone(),
                            a.target.clone().unwrap_or_default(),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `veil admin code …`: redemption codes. `create` makes a batch of codes worth one amount
//! each and prints them once: the store keeps only their keyed hashes (under the installation's
//! `redemption-code-hash` key, the same one the server derives) and display prefixes, so a lost
//! code cannot be shown again. Each batch is one audit entry (count, amount, expiry; never a
//! code). `list` shows prefixes, amounts and who redeemed what.

use crate::cli::CodeCommand;
use crate::output;
use anyhow::bail;
use serde_json::{Value, json};
use std::process::ExitCode;
use veil_config::Settings;
use veil_domain::{Money, Timestamp};
use veil_secrets::{MASTER_KEY_ENV, MasterKey, RedemptionCode};
use veil_server::account;
use veil_store::{NewRedemptionCode, Store, StoredRedemptionCode};

/// The most codes one `create` makes: a batch is one transaction and one screenful of
/// secrets an operator has to hand out safely.
const MAX_COUNT: u32 = 10_000;

pub async fn run(
    settings: &Settings,
    store: &dyn Store,
    command: CodeCommand,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        CodeCommand::Create { amount, count, expires } => {
            create(settings, store, &amount, count, expires, as_json).await
        }
        CodeCommand::List { limit } => list(store, limit, as_json).await,
    }
}

async fn create(
    settings: &Settings,
    store: &dyn Store,
    amount: &str,
    count: u32,
    expires: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let amount = Money::parse_decimal(amount)?;
    if amount <= Money::ZERO {
        bail!("the amount must be positive");
    }
    if !(1..=MAX_COUNT).contains(&count) {
        bail!("--count must be from 1 to {MAX_COUNT}");
    }
    let now = Timestamp::now();
    let expires_at = expires.as_deref().map(super::admin::parse_expiry).transpose()?;
    if expires_at.is_some_and(|at| at <= now) {
        bail!("--expires must lie in the future");
    }
    let master = MasterKey::load_or_create(std::env::var(MASTER_KEY_ENV).ok().as_deref(), &settings.data_dir)?;
    let hasher = veil_secrets::code_hasher(store, &master).await?;
    let codes: Vec<RedemptionCode> = (0..count).map(|_| RedemptionCode::generate()).collect();
    let rows: Vec<NewRedemptionCode> = codes
        .iter()
        .map(|code| NewRedemptionCode {
            hash: hasher.hash(code.expose()),
            prefix: code.prefix(),
            amount,
            created_at: now,
            expires_at,
        })
        .collect();
    store.create_redemption_codes(&rows).await?;
    // Audited before anything is printed: if the audit fails, nobody ever sees these codes,
    // so no unaudited credit can be handed out.
    account::audit(
        store,
        account::actor_cli(),
        "code.create",
        None,
        None,
        json!({
            "count": count,
            "amount": amount.to_decimal_string(),
            "expires_at": expires_at.map(Timestamp::to_rfc3339),
        }),
    )
    .await?;
    if as_json {
        output::json(&json!({
            "amount": amount.to_decimal_string(),
            "count": count,
            "codes": codes.iter().map(RedemptionCode::expose).collect::<Vec<_>>(),
            "expires_at": expires_at.map(Timestamp::to_rfc3339),
        }));
    } else {
        for code in &codes {
            output::line(code.expose());
        }
        let expiry = expires_at.map_or_else(|| "never expire".to_owned(), |at| format!("expire at {at}"));
        output::note(&format!("{count} code(s) worth {amount} each created; they {expiry}. They are shown only once."));
    }
    Ok(ExitCode::SUCCESS)
}

fn status(code: &StoredRedemptionCode, now: Timestamp) -> &'static str {
    if code.redeemed_at.is_some() {
        "redeemed"
    } else if code.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

async fn list(store: &dyn Store, limit: u32, as_json: bool) -> anyhow::Result<ExitCode> {
    let codes = store.list_redemption_codes(limit).await?;
    let now = Timestamp::now();
    if as_json {
        output::json(&Value::Array(
            codes
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "prefix": c.prefix,
                        "amount": c.amount.to_decimal_string(),
                        "status": status(c, now),
                        "created_at": c.created_at.to_rfc3339(),
                        "expires_at": c.expires_at.map(Timestamp::to_rfc3339),
                        "redeemed_at": c.redeemed_at.map(Timestamp::to_rfc3339),
                        "redeemed_by": c.redeemed_by_name,
                    })
                })
                .collect(),
        ));
    } else {
        let rows = codes
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    format!("{}…", c.prefix),
                    c.amount.to_string(),
                    status(c, now).to_owned(),
                    c.created_at.to_rfc3339(),
                    c.expires_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
                    c.redeemed_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
                    c.redeemed_by_name.as_ref().map(ToString::to_string).unwrap_or_default(),
                ]
            })
            .collect::<Vec<_>>();
        output::table(&["ID", "PREFIX", "AMOUNT", "STATUS", "CREATED", "EXPIRES", "REDEEMED", "BY"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

//! What Veil holds about one account, and the operations on it that privacy law and
//! DESIGN §3.6–3.9 require: a complete machine-readable export, erasure that leaves only
//! anonymous aggregates, the retention purge, and the audit trail of every such action.
//! Shared by `veil admin` and the HTTP API so both behave identically.

use crate::views::{key_json, record_json, user_json};
use serde_json::{Value, json};
use veil_domain::{LedgerEntry, LedgerKind, Money, Timestamp, User, UserId};
use veil_store::{AuditEntry, CallRecordFilter, ErasureReport, NewAuditEntry, Store, StoreError};

/// Upper bound on rows of one kind in an export (the store's listing limit).
const EXPORT_LIMIT: u32 = 1_000_000;
/// Rows per purge transaction: small enough not to block writers for long.
const PURGE_BATCH: u32 = 1_000;

/// Who performed an action, as the audit log names them.
pub fn actor_cli() -> String {
    "cli".to_owned()
}

pub fn actor_user(user: UserId) -> String {
    format!("user:{user}")
}

/// Adds credit to an account (or, with a negative amount, removes it) as a ledger row —
/// a top-up or an adjustment — and audits it. The row is stamped with the revision it
/// bumps, so running servers apply it to their cached balance at their next refresh.
pub async fn credit(store: &dyn Store, user: UserId, amount: Money, actor: String) -> Result<(), StoreError> {
    store
        .append_ledger(&LedgerEntry {
            user_id: user,
            key_id: None,
            kind: if amount.is_negative() { LedgerKind::Adjustment } else { LedgerKind::Topup },
            amount,
            time: Timestamp::now(),
            request_id: None,
            note: Some("credit by admin".into()),
        })
        .await?;
    audit(
        store,
        actor,
        "user.credit",
        Some(user),
        Some(user.to_string()),
        json!({"amount": amount.to_decimal_string()}),
    )
    .await?;
    Ok(())
}

/// Stores a new API key for `options.user_id` with a fresh secret (kept only as its keyed
/// hash), audits it — consent to training channels is recorded with the key it was given
/// for — and returns the key and the secret, for the caller to show once. Shared by
/// `veil admin key create` and the console.
pub async fn create_key(
    store: &dyn Store,
    hasher: &veil_secrets::KeyHasher,
    mut options: veil_domain::NewApiKey,
    actor: String,
) -> Result<(veil_domain::ApiKey, veil_secrets::ApiKeySecret), StoreError> {
    let secret = veil_secrets::ApiKeySecret::generate();
    options.prefix = secret.prefix();
    options.hash = hasher.hash(secret.expose());
    let key = store.create_key(options).await?;
    let details = json!({
        "allow_training": key.allow_training,
        "models": key.models,
        "expires_at": key.expires_at.map(Timestamp::to_rfc3339),
    });
    audit(store, actor, "key.create", Some(key.user_id), Some(key.id.to_string()), details).await?;
    Ok((key, secret))
}

/// Appends one entry to the hash-chained audit log. Only ids and metadata go in:
/// entries outlive erasure, so names and e-mail addresses must not.
pub async fn audit(
    store: &dyn Store,
    actor: String,
    action: &str,
    subject_user: Option<UserId>,
    target: Option<String>,
    details: Value,
) -> Result<AuditEntry, StoreError> {
    store
        .append_audit(
            &NewAuditEntry { actor, action: action.to_owned(), subject_user, target, details },
            Timestamp::now(),
        )
        .await
}

/// Everything Veil holds about `user`: the account, keys (metadata, never secrets),
/// call records, daily usage, ledger, console sessions (metadata) and audit entries about
/// them. The export itself is audited.
pub async fn export(store: &dyn Store, user: &User, actor: String) -> Result<Value, StoreError> {
    audit(store, actor, "user.export", Some(user.id), Some(user.id.to_string()), json!({})).await?;
    let balance = store.balance(user.id).await?;
    let keys = store.list_keys(Some(user.id)).await?;
    let records = store
        .list_call_records(&CallRecordFilter { user_id: Some(user.id), limit: EXPORT_LIMIT, ..Default::default() })
        .await?;
    let usage = store.daily_usage(Some(user.id)).await?;
    let ledger = store.list_ledger(user.id).await?;
    let audit_entries = store.list_audit(Some(user.id), EXPORT_LIMIT).await?;
    let sessions = store.list_console_sessions(user.id).await?;
    let two_factor = store.console_totp(user.id).await?.is_some_and(|totp| totp.enabled);
    let identities = store.console_identities(user.id).await?;
    let notifications = store.notification_preferences(user.id).await?;
    Ok(json!({
        "exported_at": Timestamp::now().to_rfc3339(),
        "account": user_json(user, balance),
        "keys": keys.iter().map(|k| key_json(k, user.name.as_str())).collect::<Vec<_>>(),
        "call_records": records.iter().map(record_json).collect::<Vec<_>>(),
        "daily_usage": usage.iter().map(|d| json!({
            "day": d.day,
            "model": d.model,
            "calls": d.calls,
            "input_tokens": d.input_tokens,
            "cached_tokens": d.cached_tokens,
            "output_tokens": d.output_tokens,
            "cost": d.cost.to_decimal_string(),
        })).collect::<Vec<_>>(),
        "ledger": ledger.iter().map(|e| json!({
            "time": e.time.to_rfc3339(),
            "kind": e.kind.as_str(),
            "amount": e.amount.to_decimal_string(),
            "request_id": e.request_id,
            "note": e.note,
        })).collect::<Vec<_>>(),
        // Session metadata only: the tokens are not stored, their hashes are not exported.
        "console_sessions": sessions.iter().map(|s| json!({
            "created_at": s.created_at.to_rfc3339(),
            "last_seen_at": s.last_seen_at.to_rfc3339(),
            "expires_at": s.expires_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
        "two_factor_enabled": two_factor,
        "linked_identities": identities.iter().map(|link| json!({
            "issuer": link.issuer,
            "subject": link.subject,
            "linked_at": link.created_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
        "notification_preferences": {
            "security": notifications.security,
            "spending": notifications.spending,
            "key_expiry": notifications.key_expiry,
            "channel_health": notifications.channel_health,
            "balance_alert": notifications.balance_alert.map(veil_domain::Money::to_decimal_string),
        },
        "audit": audit_entries.iter().map(|a| json!({
            "seq": a.seq,
            "time": a.time.to_rfc3339(),
            "actor": a.actor,
            "action": a.action,
            "target": a.target,
            "details": a.details,
            "hash": a.hash,
        })).collect::<Vec<_>>(),
    }))
}

/// Erases the account: keys, and the account itself, are deleted; call records survive
/// only as anonymous aggregates; the ledger keeps its sums without the account. Keys stop
/// working at once on this instance and within a refresh interval on others.
pub async fn erase(store: &dyn Store, user: &User, actor: String) -> Result<ErasureReport, StoreError> {
    let report = store.erase_user(user.id).await?;
    audit(
        store,
        actor,
        "user.erase",
        Some(user.id),
        Some(user.id.to_string()),
        json!({"keys_deleted": report.keys_deleted, "records_anonymised": report.records_anonymised}),
    )
    .await?;
    Ok(report)
}

/// The default purge cutoff: `retention_days` before now.
pub fn retention_cutoff(retention_days: u32) -> Timestamp {
    Timestamp::now().plus_millis(-i64::from(retention_days) * 86_400_000)
}

/// Folds call records older than `before` into daily aggregates and deletes them.
pub async fn purge(store: &dyn Store, before: Timestamp) -> Result<u64, StoreError> {
    store.purge_call_records(before, PURGE_BATCH).await
}

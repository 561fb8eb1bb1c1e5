//! Scheduled background jobs, owned by the application's task tracker and stopped by
//! its cancellation token: the retention purge (DESIGN §3.6), the debug-capture purge and the
//! generated-media purge (§3.1 exception (b)). Each is safe to run from several instances
//! at once — the store counts each record exactly once, and deleting expired rows twice
//! deletes them once — but with `[redis] url` only the holder of the `jobs` lease runs
//! them (see `veil_cluster::Leadership`), so a cluster purges once per beat, and another
//! instance takes over when the holder dies. Each round run is audited (`retention.purge`,
//! actor `system`, counts only), which also makes "once per beat" observable.
//!
//! The notification sweep (issue 9) runs on the same lease: each key is reminded 7 days and
//! 1 day before it expires and warned at 80 % of its quota, once each — the store records a
//! notice before it is sent, so a second run or a second instance finds it claimed — and a
//! user whose balance fell below their alert is told once until it is back above it.

use crate::account;
use crate::notify::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_domain::Timestamp;
use veil_store::{KeyNotice, Store, StoreError};

const FIRST_PURGE_AFTER: Duration = Duration::from_secs(30);

/// The purge job's inputs. Captures and generated media are purged on the same beat
/// (`[privacy] purge_interval`, 10 minutes); they also stop being readable the moment they
/// expire, so the beat only bounds how long sealed bytes linger.
pub struct PurgeJob {
    pub store: Arc<dyn Store>,
    pub retention_days: u32,
    pub every: Duration,
    /// With Redis: run only while this instance holds the jobs lease.
    pub leadership: Option<Arc<veil_cluster::Leadership>>,
}

pub async fn retention_purge(job: PurgeJob, stop: CancellationToken) {
    let PurgeJob { store, retention_days, every, leadership } = job;
    let mut wait = FIRST_PURGE_AFTER.min(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = every;
        if leadership.as_ref().is_some_and(|lease| !lease.is_leader()) {
            continue;
        }
        let mut records = 0;
        let cutoff = account::retention_cutoff(retention_days);
        // The purge runs in short transactions; stopping between them is safe.
        tokio::select! {
            () = stop.cancelled() => return,
            purged = account::purge(store.as_ref(), cutoff) => match purged {
                Ok(0) => {}
                Ok(purged) => {
                    records = purged;
                    tracing::info!(records, retention_days, "purged call records past retention");
                }
                Err(error) => tracing::warn!(error = %error, "retention purge failed; will retry"),
            },
        }
        let mut captures = 0;
        match store.purge_expired_captures(veil_domain::Timestamp::now()).await {
            Ok(0) => {}
            Ok(purged) => {
                captures = purged;
                tracing::info!(captures, "purged expired debug captures");
            }
            Err(error) => tracing::warn!(error = %error, "debug capture purge failed; will retry"),
        }
        let mut media = 0;
        match store.purge_expired_media(veil_domain::Timestamp::now()).await {
            Ok(0) => {}
            Ok(purged) => {
                media = purged;
                tracing::info!(media, "purged expired generated media");
            }
            Err(error) => tracing::warn!(error = %error, "generated media purge failed; will retry"),
        }
        let details = serde_json::json!({"records": records, "captures": captures, "media": media});
        if let Err(error) =
            account::audit(store.as_ref(), "system".to_owned(), "retention.purge", None, None, details).await
        {
            tracing::warn!(error = %error, "could not audit the purge round");
        }
    }
}

/// The notification sweep's inputs.
pub struct NotificationSweep {
    pub store: Arc<dyn Store>,
    pub notifier: crate::notify::Notifier,
    pub every: Duration,
    pub leadership: Option<Arc<veil_cluster::Leadership>>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Key expiry reminders, latest first: the one whose mark the key has passed is sent.
const EXPIRY_NOTICES: [(u32, KeyNotice); 2] = [(1, KeyNotice::ExpiresTomorrow), (7, KeyNotice::ExpiresInAWeek)];
/// A key is told when it has used this share of its quota (in percent).
const QUOTA_WARNING_PERCENT: i64 = 80;

/// Every `[notifications] check_interval`, on the leader: key expiry reminders, keys near
/// their quota, balances below their owner's alert.
pub async fn notification_sweep(job: NotificationSweep, stop: CancellationToken) {
    let NotificationSweep { store, notifier, every, leadership } = job;
    let mut wait = FIRST_PURGE_AFTER.min(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = every;
        if leadership.as_ref().is_some_and(|lease| !lease.is_leader()) {
            continue;
        }
        let now = Timestamp::now();
        match remind_about_keys(store.as_ref(), &notifier, now).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(notices = sent, "queued key notices"),
            Err(error) => tracing::warn!(error = %error, "key notices failed; will retry"),
        }
        match alert_low_balances(store.as_ref(), &notifier).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(alerts = sent, "queued balance alerts"),
            Err(error) => tracing::warn!(error = %error, "balance alerts failed; will retry"),
        }
    }
}

/// Queues, once per key and mark, a reminder for each live key that expires within 7 days
/// (or 1 day), and a warning for each that used 80 % of its quota; returns how many.
pub async fn remind_about_keys(
    store: &dyn Store,
    notifier: &crate::notify::Notifier,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut sent = 0;
    for key in store.list_keys(None).await? {
        if key.revoked_at.is_some() {
            continue;
        }
        if let Some(expires_at) = key.expires_at {
            let left = expires_at.unix_millis() - now.unix_millis();
            let due = EXPIRY_NOTICES.into_iter().find(|(days, _)| left <= i64::from(*days) * DAY_MS);
            if left > 0
                && let Some((days_before, notice)) = due
                && store.claim_key_notice(key.id, notice, now).await?
            {
                notifier.send(Event::KeyExpiring { user: key.user_id, key: key.id, expires_at, days_before });
                sent += 1;
            }
        }
        if let Some(quota) = key.quota.filter(|quota| quota.nanos() > 0) {
            let used = store.key_totals(key.id, now, now).await?.spent;
            let nearly =
                i128::from(used.nanos()) * 100 >= i128::from(quota.nanos()) * i128::from(QUOTA_WARNING_PERCENT);
            if nearly && store.claim_key_notice(key.id, KeyNotice::QuotaNearlyUsed, now).await? {
                notifier.send(Event::KeyQuotaNearlyUsed { user: key.user_id, key: key.id, used, quota });
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// Queues a "balance low" alert for each user whose balance fell below their threshold,
/// once until it is back above it; returns how many.
pub async fn alert_low_balances(store: &dyn Store, notifier: &crate::notify::Notifier) -> Result<u64, StoreError> {
    let mut sent = 0;
    for alert in store.balance_alerts().await? {
        let balance = store.balance(alert.user).await?;
        let low = balance < alert.threshold;
        if low && !alert.sent && store.mark_balance_alert(alert.user, true).await? {
            notifier.send(Event::BalanceLow { user: alert.user, balance, threshold: alert.threshold });
            sent += 1;
        } else if !low && alert.sent {
            store.mark_balance_alert(alert.user, false).await?;
        }
    }
    Ok(sent)
}

//! Follows the store's revision counter. When it moves, the snapshot of channels, models
//! and groups is rebuilt and swapped in, credits written by other processes reach the
//! cached balances, and cached keys become stale (they carry the revision they were read
//! at). One cheap query per interval, whatever the traffic.
//!
//! With `[redis] url` the poll is only the backstop: every refresh that finds a newer
//! revision announces it to the other instances (local writes call `refresh_once` right
//! after writing, so they are announced at once), and every announcement heard triggers a
//! refresh here, so a change on one instance is seen by all within a round trip.

use crate::state::{AppState, Snapshot};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often idle rate-limit state is dropped, so memory follows the active keys.
const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub async fn follow_store(state: Arc<AppState>, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if pruned.elapsed() >= LIMITER_PRUNE_INTERVAL {
            state.limiter.prune();
            pruned = tokio::time::Instant::now();
        }
        if let Err(error) = refresh_once(&state).await {
            state.store_healthy.store(false, Ordering::Release);
            tracing::warn!(error = %error, "could not check the store for changes");
        }
    }
}

pub async fn refresh_once(state: &AppState) -> Result<(), veil_store::StoreError> {
    let revision = state.store.revision().await?;
    state.store_healthy.store(true, Ordering::Release);
    if revision == state.current_revision() {
        return Ok(());
    }
    let snapshot = Snapshot::load(state.store.as_ref(), &state.http, state.credential_sealer.as_ref()).await?;
    state.health.follow(&snapshot.catalogue);
    state.snapshot.store(Arc::new(snapshot));
    // Credits (top-ups, redemptions, adjustments) bump the revision too.
    state.billing.apply_credits().await?;
    state.revision.fetch_max(revision, Ordering::AcqRel);
    tracing::debug!(revision, "store changes applied");
    if let Some(changes) = &state.changes {
        changes.announce(revision).await;
    }
    Ok(())
}

/// Refreshes whenever another instance announces a change (and after each reconnection of
/// the feed, since announcements made meanwhile are lost), until `stop`.
pub async fn follow_announcements(
    state: Arc<AppState>,
    changes: Arc<veil_cluster::ChangeFeed>,
    stop: CancellationToken,
) {
    let on_change = |_revision: Option<i64>| {
        let state = Arc::clone(&state);
        async move {
            if let Err(error) = refresh_once(&state).await {
                tracing::warn!(error = %error, "could not refresh after a change announced by another instance");
            }
        }
    };
    changes.follow(on_change, stop).await;
}

/// For `veil admin`: announces the store's current revision to running instances when
/// `[redis] url` is configured, so CLI changes reach them without waiting for a poll.
pub async fn announce_store_changes(settings: &veil_config::Settings, store: &dyn veil_store::Store) {
    let Some(url) = settings.redis_url.as_deref() else { return };
    let announced = async {
        let changes = veil_cluster::ChangeFeed::connect(url, &settings.redis_key_prefix).await?;
        let revision = store.revision().await?;
        changes.announce(revision).await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    if let Err(error) = announced.await {
        tracing::warn!(error = %error, "could not announce the change to running instances; they will see it at their next poll");
    }
}

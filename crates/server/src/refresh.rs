//! Follows the store's revision counter. When it moves, the snapshot of channels, models
//! and groups is rebuilt and swapped in, credits written by other processes reach the
//! cached balances, and cached keys become stale (they carry the revision they were read
//! at). One cheap query per interval, whatever the traffic.

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
    Ok(())
}

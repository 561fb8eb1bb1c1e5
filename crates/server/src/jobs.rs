//! Scheduled background jobs, owned by the application's task tracker and stopped by
//! its cancellation token: the retention purge (DESIGN §3.6), the debug-capture purge and the
//! generated-media purge (§3.1 exception (b)). Each is safe to run from several instances
//! at once — the store counts each record exactly once, and deleting expired rows twice
//! deletes them once — so no leader election is needed.

use crate::account;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_store::Store;

const FIRST_PURGE_AFTER: Duration = Duration::from_secs(30);
/// Captures and generated media are purged on the same beat; they also stop being readable
/// the moment they expire, so this only bounds how long sealed bytes linger.
const PURGE_EVERY: Duration = Duration::from_secs(600);

pub async fn retention_purge(store: Arc<dyn Store>, retention_days: u32, stop: CancellationToken) {
    let mut wait = FIRST_PURGE_AFTER;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = PURGE_EVERY;
        let cutoff = account::retention_cutoff(retention_days);
        // The purge runs in short transactions; stopping between them is safe.
        tokio::select! {
            () = stop.cancelled() => return,
            purged = account::purge(store.as_ref(), cutoff) => match purged {
                Ok(0) => {}
                Ok(records) => tracing::info!(records, retention_days, "purged call records past retention"),
                Err(error) => tracing::warn!(error = %error, "retention purge failed; will retry"),
            },
        }
        match store.purge_expired_captures(veil_domain::Timestamp::now()).await {
            Ok(0) => {}
            Ok(captures) => tracing::info!(captures, "purged expired debug captures"),
            Err(error) => tracing::warn!(error = %error, "debug capture purge failed; will retry"),
        }
        match store.purge_expired_media(veil_domain::Timestamp::now()).await {
            Ok(0) => {}
            Ok(media) => tracing::info!(media, "purged expired generated media"),
            Err(error) => tracing::warn!(error = %error, "generated media purge failed; will retry"),
        }
    }
}

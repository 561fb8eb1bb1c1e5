//! Scheduled background jobs, owned by the application's task tracker and stopped by
//! its cancellation token: the retention purge (DESIGN §3.6), the debug-capture purge and the
//! generated-media purge (§3.1 exception (b)). Each is safe to run from several instances
//! at once — the store counts each record exactly once, and deleting expired rows twice
//! deletes them once — but with `[redis] url` only the holder of the `jobs` lease runs
//! them (see `veil_cluster::Leadership`), so a cluster purges once per beat, and another
//! instance takes over when the holder dies. Each round run is audited (`retention.purge`,
//! actor `system`, counts only), which also makes "once per beat" observable.

use crate::account;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_store::Store;

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

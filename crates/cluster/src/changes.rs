//! Change announcements between instances: the cache-coherence half of the cluster.
//!
//! Every instance caches keys, users, channels, models and prices, stamped with the store
//! revision they were read at. When an instance changes the store it publishes the new
//! revision on the Redis pub/sub channel `{key_prefix}:changes`; every instance listens
//! there on a dedicated connection and refreshes at once, so a change reaches all of them
//! within a round trip rather than a poll interval.
//!
//! Promises:
//! - The payload is the revision number only: no identifier, no content.
//! - A revision is announced at most once per instance, and never re-announced after it was
//!   heard from another instance, so announcements do not echo around the cluster.
//! - The listener reconnects with backoff (100 ms doubling to 5 s) and, after each
//!   (re)connection, asks for one refresh, because announcements sent while it was away
//!   are lost; the store-revision poll remains the backstop for anything missed.
//! - Announcing never fails a caller: a lost announcement only delays the others until
//!   their next poll.

use crate::RedisConnection;
use crate::subscriber::{self, Interruption};
use crate::{COMMAND_TIMEOUT, ClusterError};
use redis::AsyncCommands;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio_util::sync::CancellationToken;

/// Publishes this instance's store changes and follows everyone else's.
pub struct ChangeFeed {
    client: redis::Client,
    publisher: RedisConnection,
    channel: String,
    /// The newest revision announced by, or heard from, any instance.
    known: AtomicI64,
}

impl ChangeFeed {
    /// Connects the publishing side; the listening side connects in [`follow`](Self::follow).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, ClusterError> {
        let publisher = crate::connect(url).await?;
        let client = redis::Client::open(crate::pubsub_url(url)?).map_err(|e| ClusterError::Url(e.to_string()))?;
        Ok(Self { client, publisher, channel: channel_name(key_prefix), known: AtomicI64::new(0) })
    }

    /// Tells the other instances that the store is at `revision`, unless it is already known.
    pub async fn announce(&self, revision: i64) {
        if self.known.fetch_max(revision, Ordering::AcqRel) >= revision {
            return;
        }
        let mut conn = self.publisher.clone();
        let published = tokio::time::timeout(COMMAND_TIMEOUT, conn.publish::<_, _, i64>(&self.channel, revision)).await;
        match published {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "could not announce a store change; others will poll"),
            Err(_) => tracing::warn!("announcing a store change timed out; others will poll"),
        }
    }

    /// Listens for announcements until `stop`, calling `on_change` with each announced
    /// revision (already marked known), and with `None` after every (re)connection.
    pub async fn follow<F, Fut>(&self, on_change: F, stop: CancellationToken)
    where
        F: Fn(Option<i64>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let on_message = |message: redis::Msg| {
            let revision = message.get_payload::<i64>().ok();
            if let Some(revision) = revision {
                self.known.fetch_max(revision, Ordering::AcqRel);
            } else {
                tracing::warn!("ignored a malformed store-change announcement");
            }
            let handled = revision.map(|revision| on_change(Some(revision)));
            async move {
                if let Some(handled) = handled {
                    handled.await;
                }
            }
        };
        let on_interruption = |interruption| match interruption {
            Interruption::Lost => tracing::warn!("lost the store-change feed; reconnecting"),
            Interruption::Refused(error) => {
                tracing::warn!(error = %error, "cannot subscribe to store changes; retrying");
            }
        };
        subscriber::follow(&self.client, &self.channel, || on_change(None), on_message, on_interruption, stop).await;
    }
}

/// `{key_prefix}:changes`.
pub fn channel_name(key_prefix: &str) -> String {
    format!("{key_prefix}:changes")
}

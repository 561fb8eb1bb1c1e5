//! A pub/sub subscription that outlives Redis outages, shared by the change feed and the
//! channel-health news: subscribe, hand every message on, and after a lost connection or a
//! failed subscription try again with backoff (100 ms doubling to 5 s) until stopped.
//!
//! Messages published while the subscriber was away are lost — pub/sub keeps nothing — so
//! the caller's `on_subscribed` runs after every (re)subscription to catch up from state
//! that is kept (a store revision, cool-down keys).

use futures_util::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// Why the subscription is being tried again.
pub(crate) enum Interruption {
    /// The connection carrying it ended.
    Lost,
    /// Subscribing failed.
    Refused(redis::RedisError),
}

/// Follows `channel` through `client` until `stop`: `on_subscribed` after each
/// (re)subscription, `on_message` with each message, `on_interruption` before each retry.
pub(crate) async fn follow<S, SF, M, MF>(
    client: &redis::Client,
    channel: &str,
    on_subscribed: S,
    on_message: M,
    on_interruption: impl Fn(Interruption),
    stop: CancellationToken,
) where
    S: Fn() -> SF,
    SF: Future<Output = ()>,
    M: Fn(redis::Msg) -> MF,
    MF: Future<Output = ()>,
{
    let mut retry = FIRST_RETRY;
    loop {
        let subscribed = tokio::select! {
            () = stop.cancelled() => return,
            subscribed = subscribe(client, channel) => subscribed,
        };
        match subscribed {
            Ok(pubsub) => {
                retry = FIRST_RETRY;
                on_subscribed().await;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    on_message(message).await;
                }
                on_interruption(Interruption::Lost);
            }
            Err(error) => on_interruption(Interruption::Refused(error)),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

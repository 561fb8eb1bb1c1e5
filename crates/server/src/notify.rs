//! Telling operators what happened to their channels, by webhook.
//!
//! [`Notifier::send`] never blocks a call: it drops the event into a bounded queue (and
//! drops the event itself, with a warning, if the queue is full). The [`NotifyWorker`],
//! owned by the app's task tracker, delivers each event as one JSON POST to
//! `[notifications] webhook_url`, retrying a few times with backoff; with a
//! `webhook_secret` the body is signed (`veil-signature: sha256=<hex HMAC-SHA256>`), so
//! the receiver can check it came from Veil. On shutdown what is still queued gets one
//! quick attempt each, within a short grace.
//!
//! Events carry metadata only: channel names, reasons, statuses, times. Who is told is a
//! [`Audience`]; today only the operators' webhook exists, and per-user notifications
//! (issue 9) add their own audience and delivery without changing the callers.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_config::NotificationSettings;
use veil_domain::{ChannelName, Timestamp};
use veil_providers::HttpClient;
use veil_providers::webhook::{self, WebhookError};

/// Events waiting for delivery; more are dropped (operators still have the logs and the
/// audit log).
const QUEUE: usize = 256;
/// Deliveries per event: the first try and this many retries in all.
const ATTEMPTS: u32 = 4;
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long one POST may take.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the events still queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
pub const SIGNATURE_HEADER: &str = "veil-signature";

/// Something operators want to know.
// Every event is about a channel today; per-user events (issue 9) will join them.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The channel was disabled: its credential was rejected, or an admin did it.
    ChannelDisabled { channel: ChannelName, reason: &'static str, upstream_status: Option<u16> },
    /// The channel's error rate tripped it (or a half-open trial failed).
    ChannelCoolingDown { channel: ChannelName, until: Timestamp, error_rate: f64 },
    /// The channel is healthy again (a trial or a probe succeeded, or an admin enabled it).
    ChannelRecovered { channel: ChannelName },
}

/// Who an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Operators,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChannelDisabled { .. } => "channel.disabled",
            Self::ChannelCoolingDown { .. } => "channel.cooling_down",
            Self::ChannelRecovered { .. } => "channel.recovered",
        }
    }

    pub fn audience(&self) -> Audience {
        Audience::Operators
    }

    /// The webhook body.
    pub fn to_json(&self, time: Timestamp) -> Value {
        let mut body = match self {
            Self::ChannelDisabled { channel, reason, upstream_status } => {
                let mut body = json!({"channel": channel, "reason": reason});
                if let Some(status) = upstream_status {
                    body["upstream_status"] = json!(status);
                }
                body
            }
            Self::ChannelCoolingDown { channel, until, error_rate } => {
                json!({"channel": channel, "until": until.to_rfc3339(), "error_rate": error_rate})
            }
            Self::ChannelRecovered { channel } => json!({"channel": channel}),
        };
        body["event"] = json!(self.name());
        body["time"] = json!(time.to_rfc3339());
        body
    }
}

/// The sending side, kept in the app state. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    /// `None` when no webhook is configured: events go nowhere.
    queue: Option<mpsc::Sender<(Event, Timestamp)>>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { queue: None }
    }

    /// Queues `event` for delivery; never waits.
    pub fn send(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        let name = event.name();
        if queue.try_send((event, Timestamp::now())).is_err() {
            tracing::warn!(event = name, "the notification queue is full; an event was dropped");
        }
    }
}

/// Delivers queued events; run it on the app's task tracker.
pub struct NotifyWorker {
    queue: mpsc::Receiver<(Event, Timestamp)>,
    http: HttpClient,
    url: String,
    secret: Option<String>,
}

/// A notifier and, when a webhook is configured, the worker that delivers for it.
pub fn channel(settings: &NotificationSettings, http: HttpClient) -> (Notifier, Option<NotifyWorker>) {
    let Some(url) = settings.webhook_url.clone() else { return (Notifier::disabled(), None) };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let worker = NotifyWorker { queue: receiver, http, url, secret: settings.webhook_secret.clone() };
    (Notifier { queue: Some(sender) }, Some(worker))
}

/// `sha256=<hex>` of the body under the webhook secret.
pub fn signature(secret: &str, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

impl NotifyWorker {
    /// Delivers events until `stop`; then gives what is still queued — and what the
    /// other workers send while they drain — one attempt each, until every sender is
    /// gone or a short grace has passed.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = self.queue.recv() => match next {
                    Some((event, time)) => {
                        tokio::select! {
                            () = stop.cancelled() => {
                                // Shutting down mid-retry: one last try below.
                                self.try_once(&event, time).await;
                                break;
                            }
                            () = self.deliver(&event, time) => {}
                        }
                    }
                    None => return,
                },
            }
        }
        let drain = async {
            while let Some((event, time)) = self.queue.recv().await {
                self.try_once(&event, time).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("notifications still queued at shutdown were dropped");
        }
    }

    async fn try_once(&self, event: &Event, time: Timestamp) {
        if let Err(error) = self.deliver_once(event, time).await {
            tracing::warn!(event = event.name(), error = %error, "webhook delivery failed at shutdown");
        }
    }

    async fn deliver(&self, event: &Event, time: Timestamp) {
        let mut wait = FIRST_RETRY_AFTER;
        for attempt in 1..=ATTEMPTS {
            match self.deliver_once(event, time).await {
                Ok(()) => return,
                Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                    tracing::debug!(event = event.name(), attempt, error = %error, "webhook delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(error) => {
                    tracing::warn!(event = event.name(), attempts = attempt, error = %error, "webhook delivery failed");
                    return;
                }
            }
        }
    }

    async fn deliver_once(&self, event: &Event, time: Timestamp) -> Result<(), WebhookError> {
        let body = event.to_json(time).to_string().into_bytes();
        let mut headers = Vec::new();
        if let Some(signed) = self.secret.as_deref().and_then(|secret| signature(secret, &body)) {
            headers.push((SIGNATURE_HEADER, signed));
        }
        webhook::post_json(&self.http, &self.url, &headers, body, DELIVERY_DEADLINE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_with_their_name_and_time() {
        let channel = ChannelName::parse("openai-main").unwrap();
        let time = Timestamp::from_unix_millis(1_700_000_000_000);
        let disabled = Event::ChannelDisabled {
            channel: channel.clone(),
            reason: "credential_rejected",
            upstream_status: Some(401),
        };
        assert_eq!(
            disabled.to_json(time),
            json!({"event": "channel.disabled", "channel": "openai-main", "reason": "credential_rejected",
                "upstream_status": 401, "time": time.to_rfc3339()})
        );
        let admin = Event::ChannelDisabled { channel: channel.clone(), reason: "admin", upstream_status: None };
        assert!(admin.to_json(time).get("upstream_status").is_none());
        let cooling = Event::ChannelCoolingDown { channel: channel.clone(), until: time, error_rate: 0.75 };
        assert_eq!(cooling.to_json(time)["event"], "channel.cooling_down");
        assert_eq!(cooling.to_json(time)["error_rate"], 0.75);
        assert_eq!(Event::ChannelRecovered { channel }.to_json(time)["event"], "channel.recovered");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let signed = signature("Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(signed, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

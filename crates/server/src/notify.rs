//! Telling operators and users what happened: one event, dispatched to the operators'
//! webhook and, for the users it concerns, by e-mail.
//!
//! [`Notifier::send`] never blocks a call: it drops the event into a bounded queue (and
//! drops the event itself, with a warning, if the queue is full). The [`NotifyWorker`],
//! owned by the app's task tracker, delivers each event as one JSON POST to
//! `[notifications] webhook_url` (with a `webhook_secret` the body is signed,
//! `veil-signature: sha256=<hex HMAC-SHA256>`) and, with `smtp_url`, as a short plain-text
//! mail to each recipient who chose the event's [`Category`] (`/console/notifications`);
//! each delivery is retried a few times with backoff. On shutdown what is still queued gets
//! one quick attempt each, within a short grace.
//!
//! Events carry metadata only: ids, channel names, reasons, times, amounts. The webhook gets
//! ids and never an e-mail address; the worker looks addresses up when it mails. No call
//! content is ever in an event.

pub mod smtp;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_config::NotificationSettings;
use veil_domain::{ChannelName, KeyId, Money, Role, Timestamp, UserId};
use veil_providers::HttpClient;
use veil_providers::webhook::{self, WebhookError};
use veil_store::{NotificationPreferences, Store};

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

/// Something operators or users want to know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The channel was disabled: its credential was rejected, or an admin did it.
    ChannelDisabled {
        channel: ChannelName,
        reason: &'static str,
        upstream_status: Option<u16>,
    },
    /// The channel's error rate tripped it (or a half-open trial failed).
    ChannelCoolingDown {
        channel: ChannelName,
        until: Timestamp,
        error_rate: f64,
    },
    /// The channel is healthy again (a trial or a probe succeeded, or an admin enabled it).
    ChannelRecovered {
        channel: ChannelName,
    },
    /// Someone signed in to the user's console account. `address` is the client address as
    /// `privacy.ip_logging` allows it (truncated, hashed, or `None` when off); mailed only.
    SignedIn {
        user: UserId,
        address: Option<String>,
    },
    /// Two-factor sign-in was turned on or off.
    TwoFactorChanged {
        user: UserId,
        enabled: bool,
    },
    PasswordChanged {
        user: UserId,
    },
    /// The risk monitor suspended one of the user's keys.
    KeySuspended {
        user: UserId,
        key: KeyId,
    },
    /// The balance fell below the user's `balance_alert`.
    BalanceLow {
        user: UserId,
        balance: Money,
        threshold: Money,
    },
    /// A key has used 80 % of its quota.
    KeyQuotaNearlyUsed {
        user: UserId,
        key: KeyId,
        used: Money,
        quota: Money,
    },
    /// A key expires in `days_before` days (7, then 1).
    KeyExpiring {
        user: UserId,
        key: KeyId,
        expires_at: Timestamp,
        days_before: u32,
    },
}

/// What a user chooses to receive (`/console/notifications`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Security,
    Spending,
    KeyExpiry,
    /// Channel health, for admins.
    ChannelHealth,
}

impl Category {
    pub fn wanted(self, preferences: &NotificationPreferences) -> bool {
        match self {
            Self::Security => preferences.security,
            Self::Spending => preferences.spending,
            Self::KeyExpiry => preferences.key_expiry,
            Self::ChannelHealth => preferences.channel_health,
        }
    }
}

/// Who is mailed about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The webhook only.
    Operators,
    /// The webhook, and every admin who chose channel health.
    Admins,
    /// The webhook, and this user if they chose the event's category.
    User(UserId),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChannelDisabled { .. } => "channel.disabled",
            Self::ChannelCoolingDown { .. } => "channel.cooling_down",
            Self::ChannelRecovered { .. } => "channel.recovered",
            Self::SignedIn { .. } => "security.sign_in",
            Self::TwoFactorChanged { enabled: true, .. } => "security.two_factor_enabled",
            Self::TwoFactorChanged { enabled: false, .. } => "security.two_factor_disabled",
            Self::PasswordChanged { .. } => "security.password_changed",
            Self::KeySuspended { .. } => "security.key_suspended",
            Self::BalanceLow { .. } => "spending.balance_low",
            Self::KeyQuotaNearlyUsed { .. } => "spending.key_quota",
            Self::KeyExpiring { .. } => "key.expiring",
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Self::ChannelDisabled { .. } | Self::ChannelCoolingDown { .. } | Self::ChannelRecovered { .. } => {
                Category::ChannelHealth
            }
            Self::SignedIn { .. }
            | Self::TwoFactorChanged { .. }
            | Self::PasswordChanged { .. }
            | Self::KeySuspended { .. } => Category::Security,
            Self::BalanceLow { .. } | Self::KeyQuotaNearlyUsed { .. } => Category::Spending,
            Self::KeyExpiring { .. } => Category::KeyExpiry,
        }
    }

    pub fn audience(&self) -> Audience {
        match self {
            Self::ChannelDisabled { .. } => Audience::Admins,
            Self::ChannelCoolingDown { .. } | Self::ChannelRecovered { .. } => Audience::Operators,
            Self::SignedIn { user, .. }
            | Self::TwoFactorChanged { user, .. }
            | Self::PasswordChanged { user }
            | Self::KeySuspended { user, .. }
            | Self::BalanceLow { user, .. }
            | Self::KeyQuotaNearlyUsed { user, .. }
            | Self::KeyExpiring { user, .. } => Audience::User(*user),
        }
    }

    /// The webhook body: ids, never addresses.
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
            Self::SignedIn { user, .. } | Self::TwoFactorChanged { user, .. } | Self::PasswordChanged { user } => {
                json!({"user": user})
            }
            Self::KeySuspended { user, key } => json!({"user": user, "key": key}),
            Self::BalanceLow { user, balance, threshold } => {
                json!({"user": user, "balance": balance.to_string(), "threshold": threshold.to_string()})
            }
            Self::KeyQuotaNearlyUsed { user, key, used, quota } => {
                json!({"user": user, "key": key, "used": used.to_string(), "quota": quota.to_string()})
            }
            Self::KeyExpiring { user, key, expires_at, days_before } => {
                json!({"user": user, "key": key, "expires_at": expires_at.to_rfc3339(), "days_before": days_before})
            }
        };
        body["event"] = json!(self.name());
        body["time"] = json!(time.to_rfc3339());
        body
    }

    /// The mail's subject and body (plain text; metadata only).
    pub fn to_mail(&self, time: Timestamp) -> (String, String) {
        let when = time.to_rfc3339();
        let footer = "\n\nChoose which notifications you receive at /console/notifications.\n-- Veil";
        let (subject, text) = match self {
            Self::ChannelDisabled { channel, reason, upstream_status } => (
                format!("Channel {channel} was disabled"),
                format!(
                    "The channel {channel} was disabled at {when} (reason: {reason}{}).",
                    upstream_status.map(|status| format!(", upstream status {status}")).unwrap_or_default()
                ),
            ),
            Self::ChannelCoolingDown { channel, until, .. } => (
                format!("Channel {channel} is cooling down"),
                format!("The channel {channel} is cooling down until {}.", until.to_rfc3339()),
            ),
            Self::ChannelRecovered { channel } => {
                (format!("Channel {channel} recovered"), format!("The channel {channel} is healthy again."))
            }
            Self::SignedIn { address, .. } => (
                "New sign-in to your Veil account".to_owned(),
                format!(
                    "Someone signed in to your Veil account at {when} from {}.\n\nIf this was not you, change your \
                     password and turn on two-factor sign-in.",
                    address.as_deref().filter(|address| !address.is_empty()).unwrap_or("an address not recorded")
                ),
            ),
            Self::TwoFactorChanged { enabled, .. } => {
                let state = if *enabled { "turned on" } else { "turned off" };
                (
                    format!("Two-factor sign-in was {state}"),
                    format!("Two-factor sign-in for your Veil account was {state} at {when}."),
                )
            }
            Self::PasswordChanged { .. } => (
                "Your Veil password was changed".to_owned(),
                format!("The password of your Veil account was changed at {when}."),
            ),
            Self::KeySuspended { key, .. } => (
                "One of your API keys was suspended".to_owned(),
                format!("Your API key {key} was suspended by the risk monitor at {when}."),
            ),
            Self::BalanceLow { balance, threshold, .. } => (
                "Your Veil balance is low".to_owned(),
                format!("Your balance is {balance}, below the {threshold} you chose to be warned at."),
            ),
            Self::KeyQuotaNearlyUsed { key, used, quota, .. } => (
                "An API key has nearly used its quota".to_owned(),
                format!("Your API key {key} has used {used} of its {quota} quota."),
            ),
            Self::KeyExpiring { key, expires_at, days_before, .. } => (
                format!("An API key expires within {days_before} day{}", if *days_before == 1 { "" } else { "s" }),
                format!("Your API key {key} expires at {}.", expires_at.to_rfc3339()),
            ),
        };
        (subject, format!("{text}{footer}"))
    }
}

/// The sending side, kept in the app state. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    /// `None` when neither a webhook nor SMTP is configured: events go nowhere.
    queue: Option<mpsc::Sender<(Event, Timestamp)>>,
    /// Whether an SMTP server is configured (users' choices matter only then).
    mails: bool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { queue: None, mails: false }
    }

    /// Whether events are also e-mailed.
    pub fn mails(&self) -> bool {
        self.mails
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

struct WebhookTarget {
    http: HttpClient,
    url: String,
    secret: Option<String>,
}

/// Delivers queued events; run it on the app's task tracker.
pub struct NotifyWorker {
    queue: mpsc::Receiver<(Event, Timestamp)>,
    webhook: Option<WebhookTarget>,
    mailer: Option<smtp::Mailer>,
}

/// A notifier and, when a webhook or SMTP is configured, the worker that delivers for it.
pub fn channel(settings: &NotificationSettings, http: HttpClient) -> (Notifier, Option<NotifyWorker>) {
    let webhook =
        settings.webhook_url.clone().map(|url| WebhookTarget { http, url, secret: settings.webhook_secret.clone() });
    let mailer = settings.smtp.clone().map(smtp::Mailer::new);
    if webhook.is_none() && mailer.is_none() {
        return (Notifier::disabled(), None);
    }
    let (sender, receiver) = mpsc::channel(QUEUE);
    let mails = mailer.is_some();
    (Notifier { queue: Some(sender), mails }, Some(NotifyWorker { queue: receiver, webhook, mailer }))
}

/// `sha256=<hex>` of the body under the webhook secret.
pub fn signature(secret: &str, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// Whether a failed delivery is worth another try.
trait Retryable: std::fmt::Display {
    fn retryable(&self) -> bool;
}

impl Retryable for WebhookError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

impl Retryable for smtp::SmtpError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `ATTEMPTS` ran out; `once` gives it one try.
async fn with_retries<E: Retryable, F: Future<Output = Result<(), E>>>(
    what: &'static str,
    event: &'static str,
    once: bool,
    mut attempt: impl FnMut() -> F,
) {
    let mut wait = FIRST_RETRY_AFTER;
    let attempts = if once { 1 } else { ATTEMPTS };
    for tried in 1..=attempts {
        match attempt().await {
            Ok(()) => return,
            Err(error) if error.retryable() && tried < attempts => {
                tracing::debug!(event, attempt = tried, error = %error, "{what} delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                tracing::warn!(event, attempts = tried, error = %error, "{what} delivery failed");
                return;
            }
        }
    }
}

impl NotifyWorker {
    /// Delivers events until `stop`; then gives what is still queued — and what the
    /// other workers send while they drain — one attempt each, until every sender is
    /// gone or a short grace has passed. `store` finds the recipients' addresses and choices.
    pub async fn run(mut self, store: Arc<dyn Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = self.queue.recv() => match next {
                    Some((event, time)) => {
                        tokio::select! {
                            () = stop.cancelled() => {
                                // Shutting down mid-retry: one last try below.
                                self.dispatch(store.as_ref(), &event, time, true).await;
                                break;
                            }
                            () = self.dispatch(store.as_ref(), &event, time, false) => {}
                        }
                    }
                    None => return,
                },
            }
        }
        let drain = async {
            while let Some((event, time)) = self.queue.recv().await {
                self.dispatch(store.as_ref(), &event, time, true).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("notifications still queued at shutdown were dropped");
        }
    }

    /// The webhook, then each recipient's mail.
    async fn dispatch(&self, store: &dyn Store, event: &Event, time: Timestamp, once: bool) {
        if let Some(target) = &self.webhook {
            with_retries("webhook", event.name(), once, || deliver_webhook(target, event, time)).await;
        }
        let Some(mailer) = &self.mailer else { return };
        let (subject, body) = event.to_mail(time);
        for to in recipients(store, event).await {
            let mail = smtp::Mail { to, subject: subject.clone(), body: body.clone() };
            with_retries("mail", event.name(), once, || mailer.send(&mail)).await;
        }
    }
}

async fn deliver_webhook(target: &WebhookTarget, event: &Event, time: Timestamp) -> Result<(), WebhookError> {
    let body = event.to_json(time).to_string().into_bytes();
    let mut headers = Vec::new();
    if let Some(signed) = target.secret.as_deref().and_then(|secret| signature(secret, &body)) {
        headers.push((SIGNATURE_HEADER, signed));
    }
    webhook::post_json(&target.http, &target.url, &headers, body, DELIVERY_DEADLINE).await
}

/// The addresses to mail about `event`: its user, or the admins, who have an address, are
/// not disabled and chose its category.
async fn recipients(store: &dyn Store, event: &Event) -> Vec<String> {
    let category = event.category();
    let candidates: Vec<veil_domain::User> = match event.audience() {
        Audience::Operators => return Vec::new(),
        Audience::User(user) => match store.user_by_id(user).await {
            Ok(found) => found.into_iter().collect(),
            Err(error) => {
                tracing::warn!(error = %error, "could not look up a notification's recipient");
                return Vec::new();
            }
        },
        Audience::Admins => match store.list_users().await {
            Ok(users) => users
                .into_iter()
                .map(|summary| summary.user)
                .filter(|user| matches!(user.role, Role::Admin | Role::Root))
                .collect(),
            Err(error) => {
                tracing::warn!(error = %error, "could not list the admins to notify");
                return Vec::new();
            }
        },
    };
    let mut addresses = Vec::new();
    for user in candidates {
        let Some(email) = user.email.clone().filter(|email| !email.is_empty()) else { continue };
        if user.disabled {
            continue;
        }
        match store.notification_preferences(user.id).await {
            Ok(preferences) if category.wanted(&preferences) => addresses.push(email),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "could not read notification preferences"),
        }
    }
    addresses
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
    fn user_events_name_ids_for_the_webhook_and_go_to_their_user() {
        let user = UserId::generate();
        let time = Timestamp::from_unix_millis(1_700_000_000_000);
        let signed_in = Event::SignedIn { user, address: Some("203.0.113.0".into()) };
        let body = signed_in.to_json(time);
        assert_eq!(body, json!({"event": "security.sign_in", "user": user.to_string(), "time": time.to_rfc3339()}));
        assert_eq!(signed_in.audience(), Audience::User(user));
        assert_eq!(signed_in.category(), Category::Security);
        let (subject, text) = signed_in.to_mail(time);
        assert_eq!(subject, "New sign-in to your Veil account");
        assert!(text.contains("from 203.0.113.0.") && text.contains(&time.to_rfc3339()), "{text}");
        let (_, unrecorded) = Event::SignedIn { user, address: None }.to_mail(time);
        assert!(unrecorded.contains("an address not recorded"), "{unrecorded}");
        let off = Event::TwoFactorChanged { user, enabled: false };
        assert_eq!(off.name(), "security.two_factor_disabled");
        let channel = ChannelName::parse("main").unwrap();
        let disabled = Event::ChannelDisabled { channel, reason: "admin", upstream_status: None };
        assert_eq!((disabled.audience(), disabled.category()), (Audience::Admins, Category::ChannelHealth));
        let chosen = NotificationPreferences { security: false, ..NotificationPreferences::default() };
        assert!(!Category::Security.wanted(&chosen) && Category::Spending.wanted(&chosen));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let signed = signature("Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(signed, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

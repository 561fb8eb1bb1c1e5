//! Shared application state and the cached view of the store the request path reads.
//!
//! Steady state does no synchronous database read: channels, models and groups live in
//! an immutable [`Snapshot`] swapped atomically, and API keys are cached by hash. Both
//! follow the store's revision counter (see `refresh.rs`), so changes made by
//! `veil admin` or another instance are seen within one refresh interval.

use crate::records::RecordSink;
use crate::screening::Screen;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use veil_domain::{ApiKey, ChannelName, Group, GroupName, IpLogging, User};
use veil_providers::{HttpClient, Provider, provider_with};
use veil_routing::Catalogue;
use veil_secrets::KeyHasher;
use veil_secrets::Sealer;
use veil_store::{Store, StoreError};
use zeroize::Zeroizing;

/// What a sealed channel credential is bound to: it opens only for its own channel.
pub fn credential_aad(channel: &ChannelName) -> Vec<u8> {
    format!("channel-credential:{channel}").into_bytes()
}

pub type ProviderCatalogue = Catalogue<Arc<dyn Provider>>;

/// What routing and policy read on every call.
pub struct Snapshot {
    pub catalogue: ProviderCatalogue,
    pub groups: HashMap<GroupName, Arc<Group>>,
    /// Each group's compiled content-screening rules.
    pub screens: HashMap<GroupName, Screen>,
}

impl Snapshot {
    /// `credentials` opens channel credentials stored through the management API.
    pub async fn load(store: &dyn Store, http: &HttpClient, credentials: Option<&Sealer>) -> Result<Self, StoreError> {
        let mut channels = store.list_channels().await?;
        // A channel disabled in `channel_states` (its credential was rejected, or an admin
        // disabled it) is left out of routing like one the config disables.
        let disabled: std::collections::HashSet<ChannelName> = store
            .channel_states()
            .await?
            .into_iter()
            .filter(|state| state.disabled_reason.is_some())
            .map(|state| state.channel)
            .collect();
        for channel in &mut channels {
            if disabled.contains(&channel.name) {
                channel.enabled = false;
            }
        }
        let models = store.list_models().await?;
        let groups = store.list_groups().await?;
        let mut stored: HashMap<ChannelName, Option<Zeroizing<String>>> = HashMap::new();
        for sealed in store.channel_credentials().await? {
            let opened = credentials
                .and_then(|sealer| {
                    sealer.open(&credential_aad(&sealed.channel), &sealed.nonce, &sealed.ciphertext).ok()
                })
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(Zeroizing::new);
            if opened.is_none() {
                tracing::error!(
                    channel = sealed.channel.as_str(),
                    "a stored channel credential does not open; the channel will fail its calls"
                );
            }
            stored.insert(sealed.channel, opened);
        }
        let with_providers = channels
            .into_iter()
            .map(|channel| {
                let credential = stored.get(&channel.name).map(|c| c.as_ref().map(|s| s.as_str()));
                let provider = provider_with(&channel, http, credential);
                (channel, provider)
            })
            .collect();
        Ok(Self {
            catalogue: Catalogue::new(with_providers, models),
            screens: groups.iter().map(|g| (g.name.clone(), Screen::for_group(g))).collect(),
            groups: groups.into_iter().map(|g| (g.name.clone(), Arc::new(g))).collect(),
        })
    }

    /// The user's group, or the built-in default if it vanished from the store.
    pub fn group(&self, name: &GroupName) -> Arc<Group> {
        self.groups.get(name).cloned().unwrap_or_else(|| Arc::new(Group::builtin_default()))
    }

    pub fn screen(&self, group: &GroupName) -> &Screen {
        self.screens.get(group).unwrap_or(&Screen::Open)
    }
}

/// An authenticated caller: the key presented and the account it belongs to.
#[derive(Debug)]
pub struct Principal {
    pub key: ApiKey,
    pub user: User,
    /// Until when the key's owner turned debug capture on, if they did.
    pub capture_until: Option<veil_domain::Timestamp>,
}

/// A cache entry: the principal for a key hash (or its absence), stamped with the store
/// revision current when it was read. An entry older than the newest revision seen is
/// read again, so a revocation can never be hidden by a lookup that raced it.
#[derive(Clone)]
pub struct CachedPrincipal {
    pub revision: i64,
    pub principal: Option<Arc<Principal>>,
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub http: HttpClient,
    pub hasher: KeyHasher,
    pub snapshot: ArcSwap<Snapshot>,
    pub principals: moka::future::Cache<String, CachedPrincipal>,
    /// The newest store revision this process has seen.
    pub revision: AtomicI64,
    /// Whether the last look at the store succeeded (drives `/readyz`).
    pub store_healthy: AtomicBool,
    /// Set when shutdown starts: `/readyz` answers 503 while in-flight calls finish.
    pub draining: AtomicBool,
    /// Risk control: anomaly rules noted on the request path (see `risk.rs`).
    pub risk: crate::risk::RiskMonitor,
    pub records: RecordSink,
    /// Balances, holds and spend of the accounts in use (see `veil-billing`).
    pub billing: Arc<veil_billing::Billing>,
    /// Requests, tokens and concurrency per key, user and channel: in memory, or shared
    /// through Redis when `[redis] url` is set (see `app::build_limiter`).
    pub limiter: Arc<dyn veil_limits::Limiter>,
    pub captures: crate::capture::CaptureSink,
    /// Redemption codes: the installation's code hasher and the per-user guess throttle.
    pub redemptions: crate::redeem::Redemptions,
    /// Opens debug captures for their owner; `None` if the capture key is unavailable.
    pub sealer: Option<veil_secrets::Sealer>,
    /// Seals and opens channel credentials stored through the management API.
    pub credential_sealer: Option<veil_secrets::Sealer>,
    /// Generated media kept sealed for a while and served at signed URLs.
    pub media: crate::media::MediaVault,
    /// Asynchronous video jobs: the poller's settings and wake-up (see `videos.rs`).
    pub videos: crate::videos::VideoJobs,
    /// The PII detector, built once; `None` if it failed to build, in which case every
    /// call that needs it fails closed.
    pub pii: Option<Arc<veil_privacy::Detector>>,
    pub max_body_bytes: usize,
    /// Silence on a relayed stream after which a keep-alive comment is sent; zero: never.
    pub stream_keepalive: Duration,
    /// Whether clients reach Veil over HTTPS (session cookies are then `Secure`).
    pub serves_tls: bool,
    pub ip_logging: IpLogging,
    /// What the public privacy statement reports; read from the running configuration.
    pub log_retention_days: u32,
    pub currency: String,
    /// `[routing]`: failover rules (health thresholds live in the board).
    pub routing: veil_config::RoutingSettings,
    /// Each channel's health on this instance (see `health.rs`).
    pub health: crate::health::HealthBoard,
    /// Operator notifications (webhook; see `notify.rs`).
    pub notifier: crate::notify::Notifier,
    /// With `[redis] url`: announces this instance's store changes to the others and
    /// hears theirs (see `refresh.rs`).
    pub changes: Option<Arc<veil_cluster::ChangeFeed>>,
    /// The web console's CSRF key, sign-up rules and sign-in throttle.
    pub console: crate::console::ConsoleState,
}

impl AppState {
    pub fn principal_cache() -> moka::future::Cache<String, CachedPrincipal> {
        moka::future::Cache::builder()
            .max_capacity(100_000)
            // A backstop only: the revision stamp is what keeps entries fresh.
            .time_to_live(Duration::from_secs(300))
            .build()
    }

    pub fn current_revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }
}

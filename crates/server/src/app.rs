//! Building and running the application: the composition root for everything the
//! server needs. `Application::build` does all fallible start-up work (store,
//! migrations, config seeding, secrets, listener) and returns a value whose port is
//! known, so tests can bind port 0; `run_until_stopped` serves until the shutdown
//! future resolves, then drains calls, stops background work and flushes call records.

use crate::records::{self, RecordWriter};
use crate::state::{AppState, Snapshot};
use crate::{capture, jobs, listener, refresh, router, seed};
use arc_swap::ArcSwap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veil_config::{BillingDurability, Settings};
use veil_providers::HttpClient;
use veil_secrets::{MasterKey, SecretsError};
use veil_store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot listen on {address}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot create the upstream HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `[redis] url` is set but Redis cannot be reached at start (in either failure mode:
    /// a misconfigured URL should not pass for an outage).
    #[error("cannot use Redis for rate limits")]
    Redis(#[from] veil_cluster::ClusterError),
    #[error("OpenID Connect sign-in is misconfigured: {0}")]
    Oidc(String),
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    writer: RecordWriter,
    capture_writer: capture::CaptureWriter,
    risk_worker: crate::risk::RiskWorker,
    /// Channel health, notifications and probes (see `health.rs`).
    health_workers: crate::health::Workers,
    refresh_interval: Duration,
    shutdown_grace: Duration,
    shutdown_delay: Duration,
    has_users: bool,
    /// Set when `[server] tls_cert`/`tls_key` are: the listener serves HTTPS with them.
    certificates: Option<Arc<crate::tls::Certificates>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    reload: crate::reload::ReloadHandle,
    /// Applies the shared limiter's reconciles and lease releases (with `[redis]`).
    limiter_worker: Option<veil_cluster::LimiterWorker>,
    /// Applies the shared wallets' settles and releases (with `[redis]`).
    wallet_worker: Option<veil_cluster::WalletWorker>,
    /// With `[redis]`: the lease that makes this instance the one running background jobs.
    job_leadership: Option<Arc<veil_cluster::Leadership>>,
    purge_interval: Duration,
    /// `[notifications] check_interval`.
    check_interval: Duration,
}

impl Application {
    /// `master_key_env` is the value of `VEIL_MASTER_KEY`, if set.
    pub async fn build(settings: &Settings, master_key_env: Option<&str>) -> Result<Self, StartupError> {
        // Before anything can record: the recorder is process-wide and installed once.
        crate::metrics::install();
        // A configured certificate that does not load stops start-up, before anything else.
        let certificates = settings.tls.as_ref().map(crate::tls::Certificates::load).transpose()?.map(Arc::new);
        let acceptor = certificates.as_ref().map(crate::tls::Certificates::acceptor).transpose()?;
        let store = open_store(settings).await?;
        let (limiter, limiter_worker) = build_limiter(settings).await?;
        let changes = match settings.redis_url.as_deref() {
            Some(url) => Some(Arc::new(veil_cluster::ChangeFeed::connect(url, &settings.redis_key_prefix).await?)),
            None => None,
        };
        let job_leadership = match settings.redis_url.as_deref() {
            Some(url) => Some(Arc::new(veil_cluster::Leadership::new(
                veil_cluster::connect(url).await?,
                &settings.redis_key_prefix,
                "jobs",
                settings.job_lease_ttl,
            ))),
            None => None,
        };
        let master = MasterKey::load_or_create(master_key_env, &settings.data_dir)?;
        let hasher = veil_secrets::key_hasher(store.as_ref(), &master).await?;
        let code_hasher = veil_secrets::code_hasher(store.as_ref(), &master)
            .await
            .inspect_err(|error| tracing::error!(error = %error, "the redemption-code key is unavailable; redemptions will fail"))
            .ok();
        let http = HttpClient::with_connections(settings.upstream_connections)
            .map_err(|e| StartupError::Http(e.to_string()))?;

        // Read the revision before the snapshot, so a change racing start-up is seen
        // again by the first refresh rather than missed.
        let revision = store.revision().await?;
        let (billing, wallet_worker) = build_billing(settings, &store, revision).await?;
        let credential_sealer =
            veil_secrets::installation_key(store.as_ref(), &master, veil_secrets::CREDENTIAL_PURPOSE)
                .await
                .ok()
                .and_then(|key| veil_secrets::Sealer::new(&key));
        let snapshot = Snapshot::load(store.as_ref(), &http, credential_sealer.as_ref()).await?;
        let oidc = settings
            .console
            .oidc
            .as_ref()
            .map(|oidc| crate::console::OidcClient::new(oidc, http.clone()))
            .transpose()
            .map_err(StartupError::Oidc)?;
        let throttle_redis = match settings.redis_url.as_deref() {
            Some(url) => Some(veil_cluster::connect(url).await?),
            None => None,
        };
        let has_users = !store.list_users().await?.is_empty();

        let window = match settings.durability {
            BillingDurability::Batched => Duration::from_millis(100),
            BillingDurability::Strict => Duration::ZERO,
        };
        let (sink, writer) = records::channel(Arc::clone(&store), window);
        let sealer = veil_secrets::installation_key(store.as_ref(), &master, veil_secrets::CAPTURE_PURPOSE)
            .await
            .ok()
            .and_then(|key| veil_secrets::Sealer::new(&key));
        if sealer.is_none() {
            tracing::error!("the debug-capture key is unavailable: captures will be discarded");
        }
        let (captures, capture_writer) = capture::channel(Arc::clone(&store), sealer.clone());
        let (risk, risk_worker) = crate::risk::monitor(settings.risk);
        let (health, notifier, health_workers) = crate::health::start(settings, http.clone()).await?;
        health.follow(&snapshot.catalogue);

        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartupError::Bind { address: settings.listen, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| StartupError::Bind { address: settings.listen, source })?;

        let reload = crate::reload::ReloadHandle::new(Arc::clone(&store), certificates.clone(), settings.clone());
        let state = Arc::new(AppState {
            store: Arc::clone(&store),
            http,
            // Keyed by the installation's hashing key: the same on every instance, secret.
            console: crate::console::ConsoleState::new(
                crate::console::SignupRules {
                    signup: settings.console.signup,
                    signup_group: settings.console.signup_group.clone(),
                    signup_domains: settings.console.signup_domains.clone(),
                },
                &hasher.hash_label("console-csrf", "v1"),
            )
            .with_settings_view(settings)
            .with_oidc(oidc)
            .with_shared_throttle(
                throttle_redis,
                &settings.redis_key_prefix,
                &hasher.hash_label("console-sign-in-throttle", "v1"),
            ),
            hasher,
            snapshot: ArcSwap::from_pointee(snapshot),
            principals: AppState::principal_cache(),
            revision: AtomicI64::new(revision),
            store_healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            risk,
            records: sink,
            billing,
            limiter,
            captures,
            redemptions: crate::redeem::Redemptions::new(code_hasher),
            sealer,
            credential_sealer,
            videos: crate::videos::VideoJobs::new(settings.videos),
            media: crate::media::MediaVault::load(Arc::clone(&store), &master, settings.media_ttl).await,
            pii: match veil_privacy::Detector::new() {
                Ok(detector) => Some(Arc::new(detector)),
                Err(error) => {
                    tracing::error!(error = %error, "the PII detector failed to build; calls needing it will fail");
                    None
                }
            },
            max_body_bytes: settings.max_body_bytes,
            stream_keepalive: settings.stream_keepalive,
            serves_tls: certificates.is_some(),
            ip_logging: settings.ip_logging,
            log_retention_days: settings.log_retention_days,
            currency: settings.currency.clone(),
            routing: settings.routing,
            health,
            notifier,
            changes,
        });
        Ok(Self {
            listener,
            local_addr,
            state,
            writer,
            capture_writer,
            risk_worker,
            health_workers,
            refresh_interval: settings.refresh_interval,
            shutdown_grace: settings.shutdown_grace,
            shutdown_delay: settings.shutdown_delay,
            has_users,
            certificates,
            acceptor,
            reload,
            limiter_worker,
            wallet_worker,
            job_leadership,
            purge_interval: settings.purge_interval,
            check_interval: settings.notifications.check_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Whether the listener serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        self.certificates.is_some()
    }

    /// Reloads the configuration while the server runs (see `reload.rs`).
    pub fn reload_handle(&self) -> crate::reload::ReloadHandle {
        self.reload.clone()
    }

    /// `https://ADDRESS` or `http://ADDRESS`.
    pub fn url(&self) -> String {
        let scheme = if self.serves_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Whether any account exists yet (to tell a newcomer how to create the first).
    pub fn has_users(&self) -> bool {
        self.has_users
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let background = TaskTracker::new();
        let stop_background = CancellationToken::new();
        let writer = background.spawn(self.writer.run());
        let capture_writer = background.spawn(self.capture_writer.run());
        // Holds the state until cancelled (after the last call), then drains its queue.
        background.spawn(self.risk_worker.run(Arc::clone(&self.state), stop_background.clone()));
        background.spawn(refresh::follow_store(
            Arc::clone(&self.state),
            self.refresh_interval,
            stop_background.clone(),
        ));
        if let Some(changes) = &self.state.changes {
            background.spawn(refresh::follow_announcements(
                Arc::clone(&self.state),
                Arc::clone(changes),
                stop_background.clone(),
            ));
        }
        // Restart survival: the poller resumes every unfinished video job from the store.
        background.spawn(crate::videos::poll_jobs(
            Arc::clone(&self.state),
            self.job_leadership.clone(),
            stop_background.clone(),
        ));
        self.health_workers.spawn(&background, &self.state, self.job_leadership.clone(), &stop_background);
        background.spawn(crate::metrics::upkeep(stop_background.clone()));
        if let Some(worker) = self.limiter_worker {
            background.spawn(worker.run(stop_background.clone()));
        }
        if let Some(worker) = self.wallet_worker {
            // Runs on after the stop until the last hold is closed (the state is dropped).
            background.spawn(worker.run(stop_background.clone()));
        }
        if let Some(leadership) = &self.job_leadership {
            let leadership = Arc::clone(leadership);
            let stop = stop_background.clone();
            // Released on stop, so another instance takes over at its next beat.
            background.spawn(async move { leadership.run(stop).await });
        }
        let purge = jobs::PurgeJob {
            store: Arc::clone(&self.state.store),
            retention_days: self.state.log_retention_days,
            every: self.purge_interval,
            leadership: self.job_leadership.clone(),
        };
        background.spawn(jobs::retention_purge(purge, stop_background.clone()));
        let sweep = jobs::NotificationSweep {
            store: Arc::clone(&self.state.store),
            notifier: self.state.notifier.clone(),
            every: self.check_interval,
            leadership: self.job_leadership.clone(),
        };
        background.spawn(jobs::notification_sweep(sweep, stop_background.clone()));

        if let Some(certificates) = &self.certificates {
            background.spawn(crate::tls::watch(
                Arc::clone(certificates),
                crate::tls::WATCH_INTERVAL,
                stop_background.clone(),
            ));
        }
        let router = router::build(Arc::clone(&self.state));
        // Readiness goes first: a load balancer polling `/readyz` sees 503 (for
        // `shutdown_delay` while connections are still accepted), then the listener
        // stops accepting and drains.
        let draining = Arc::clone(&self.state);
        let delay = self.shutdown_delay;
        let shutdown = async move {
            shutdown.await;
            draining.draining.store(true, Ordering::Release);
            drop(draining);
            tracing::info!(delay_ms = delay.as_millis(), "shutting down: /readyz answers 503");
            tokio::time::sleep(delay).await;
        };
        listener::serve(self.listener, router, self.acceptor, shutdown, self.shutdown_grace).await;

        stop_background.cancel();
        // The record writer stops once the last sink is gone: the router's and the
        // state's. Every call has finished (or been cut off) by now.
        drop(self.state);
        if writer.await.is_err() {
            tracing::error!("the call record writer failed");
        }
        if capture_writer.await.is_err() {
            tracing::error!("the debug capture writer failed");
        }
        background.close();
        background.wait().await;
        tracing::info!("stopped");
    }
}

/// The shared (Redis) limiter when `[redis] url` is set, with the worker that applies its
/// reconciles and releases; else the in-memory one.
async fn build_limiter(
    settings: &Settings,
) -> Result<(Arc<dyn veil_limits::Limiter>, Option<veil_cluster::LimiterWorker>), StartupError> {
    let Some(url) = settings.redis_url.as_deref() else {
        return Ok((Arc::new(veil_limits::InMemoryLimiter::new()), None));
    };
    veil_cluster::describe_metrics();
    let conn = veil_cluster::connect(url).await?;
    let options = veil_cluster::RedisLimiterOptions {
        key_prefix: settings.redis_key_prefix.clone(),
        on_failure: match settings.limits_on_failure {
            veil_config::LimitsOnFailure::Closed => veil_cluster::FailurePolicy::Closed,
            veil_config::LimitsOnFailure::Open => veil_cluster::FailurePolicy::Open,
        },
        ..veil_cluster::RedisLimiterOptions::default()
    };
    let (limiter, worker) = veil_cluster::RedisLimiter::new(conn, options);
    Ok((Arc::new(limiter), Some(worker)))
}

/// Balances, holds and spend shared through Redis when `[redis] url` is set (so parallel
/// calls on several instances never overspend), with the worker that closes holds; else
/// kept in this process.
async fn build_billing(
    settings: &Settings,
    store: &Arc<dyn Store>,
    revision: i64,
) -> Result<(Arc<veil_billing::Billing>, Option<veil_cluster::WalletWorker>), StartupError> {
    let Some(url) = settings.redis_url.as_deref() else {
        return Ok((Arc::new(veil_billing::Billing::new(Arc::clone(store), revision)), None));
    };
    let conn = veil_cluster::connect(url).await?;
    let options = veil_cluster::RedisWalletsOptions {
        key_prefix: settings.redis_key_prefix.clone(),
        hold_ttl: settings.hold_ttl,
        ..veil_cluster::RedisWalletsOptions::default()
    };
    let (wallets, worker) = veil_cluster::RedisWallets::new(conn, Arc::clone(store), revision, options);
    Ok((Arc::new(veil_billing::Billing::with_wallets(Arc::new(wallets))), Some(worker)))
}

/// Opens the store, applies migrations and the config file's declarations. Shared by
/// `veil serve` and `veil admin`, so either can be run first on a fresh install.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let store = veil_store::connect(&settings.database_url, settings.database_max_connections).await?;
    store.migrate().await?;
    seed::apply_config(store.as_ref(), settings).await?;
    Ok(store)
}

//! Configuration reload without a restart (`veil serve` does it on SIGHUP).
//!
//! [`ReloadHandle::reload`] reads the config file again the way start-up does (file, then
//! `VEIL_…` overrides, then validation) and:
//!
//! - applies its `[[group]]`, `[[channel]]` and `[[model]]` declarations to the store as
//!   start-up does (`seed::apply_config`). That bumps the store revision, so the refresh
//!   loop swaps in a new catalogue within one refresh interval — on this instance and on
//!   every other one sharing the store;
//! - reads the TLS certificate files again;
//! - reports settings that only a restart applies (listen address, data directory,
//!   database, TLS file paths, …) as ignored when they changed.
//!
//! A file that does not load changes nothing: the error names the key path and the
//! running configuration stays as it was. Reloads are serialized.

use crate::tls::Certificates;
use std::path::Path;
use std::sync::Arc;
use veil_config::{ConfigError, Settings};
use veil_store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration was not reloaded: {0}")]
    Config(#[from] ConfigError),
    #[error("the configuration could not be applied to the store")]
    Store(#[from] StoreError),
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Whether a new TLS certificate went into service.
    pub new_certificate: bool,
    /// Config keys whose new value waits for a restart.
    pub ignored: Vec<&'static str>,
}

/// Reloads the running server's configuration; cheap to clone.
///
/// It holds the store and the certificates, not the application state: a handle kept
/// after shutdown must not keep the record writer waiting for the state to go.
#[derive(Clone)]
pub struct ReloadHandle {
    store: Arc<dyn Store>,
    certificates: Option<Arc<Certificates>>,
    /// The settings the server started with, for the restart-only keys.
    started: Arc<Settings>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl ReloadHandle {
    pub(crate) fn new(store: Arc<dyn Store>, certificates: Option<Arc<Certificates>>, started: Settings) -> Self {
        Self { store, certificates, started: Arc::new(started), serial: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// Reloads from `path` (the file `veil serve --config` got, if any) and the process
    /// environment, and logs the outcome.
    pub async fn reload(&self, path: Option<&Path>) -> Result<ReloadReport, ReloadError> {
        let loaded = veil_config::load_from_process(path);
        self.apply_logged(loaded).await
    }

    /// Like [`ReloadHandle::reload`] with explicit overrides instead of the process
    /// environment (tests).
    pub async fn reload_with_env(
        &self,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ReloadReport, ReloadError> {
        self.apply_logged(veil_config::load(path, env)).await
    }

    async fn apply_logged(&self, loaded: Result<Settings, ConfigError>) -> Result<ReloadReport, ReloadError> {
        let outcome = match loaded {
            Ok(settings) => self.apply(&settings).await,
            Err(error) => Err(ReloadError::Config(error)),
        };
        match &outcome {
            Ok(report) => {
                for key in &report.ignored {
                    tracing::warn!(key, "changed in the configuration file; takes effect after a restart");
                }
                tracing::info!(new_certificate = report.new_certificate, "configuration reloaded");
            }
            // `ConfigError` names the key path and the problem, never a secret value.
            Err(ReloadError::Config(error)) => {
                tracing::error!(error = %error, "the configuration was not reloaded; the running one stays")
            }
            Err(ReloadError::Store(error)) => {
                tracing::error!(error = %error, "the configuration could not be applied to the store")
            }
        }
        outcome
    }

    async fn apply(&self, settings: &Settings) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.serial.lock().await;
        let ignored = restart_only_changes(&self.started, settings);
        crate::seed::apply_config(self.store.as_ref(), settings).await?;
        let new_certificate = match &self.certificates {
            // A certificate that does not load keeps the old one in service; the rest of
            // the reload stands.
            Some(certificates) => certificates.reload().unwrap_or_else(|error| {
                tracing::error!(error = %error, "the TLS certificate does not load; the old one stays in service");
                false
            }),
            None => false,
        };
        Ok(ReloadReport { new_certificate, ignored })
    }
}

/// The keys of `[server]`, `[database]` and the like whose new value a running server
/// cannot take.
fn restart_only_changes(started: &Settings, now: &Settings) -> Vec<&'static str> {
    let checks = [
        ("server.listen", started.listen != now.listen),
        ("server.data_dir", started.data_dir != now.data_dir),
        ("database.url", started.database_url != now.database_url),
        ("database.max_connections", started.database_max_connections != now.database_max_connections),
        ("redis.url", started.redis_url != now.redis_url),
        ("redis.key_prefix", started.redis_key_prefix != now.redis_key_prefix),
        ("redis.limits_on_failure", started.limits_on_failure != now.limits_on_failure),
        ("server.tls_cert", started.tls.as_ref().map(|t| &t.cert) != now.tls.as_ref().map(|t| &t.cert)),
        ("server.tls_key", started.tls.as_ref().map(|t| &t.key) != now.tls.as_ref().map(|t| &t.key)),
        ("server.max_body_bytes", started.max_body_bytes != now.max_body_bytes),
        ("server.shutdown_grace", started.shutdown_grace != now.shutdown_grace),
        ("server.refresh_interval", started.refresh_interval != now.refresh_interval),
        ("server.stream_keepalive", started.stream_keepalive != now.stream_keepalive),
        ("server.upstream_connections", started.upstream_connections != now.upstream_connections),
        ("billing.durability", started.durability != now.durability),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| key).collect()
}

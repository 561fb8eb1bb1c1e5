//! `spawn_app`: the real application, built through the production builder, listening
//! on 127.0.0.1:0 with its own temporary data directory and SQLite store.

use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use veil_config::Settings;
use veil_domain::{ApiKey, GroupName, KeyLimits, NewApiKey, NewUser, Role, Timestamp, User, UserName};
use veil_secrets::{ApiKeySecret, KeyHasher, MasterKey};
use veil_server::Application;
use veil_store::Store;

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub data_dir: TempDir,
    hasher: KeyHasher,
    reload: veil_server::ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Options for a test key; the defaults are an unrestricted key.
#[derive(Default, Clone)]
pub struct KeyOptions {
    pub models: Option<Vec<&'static str>>,
    pub expires_at: Option<Timestamp>,
    pub ip_allow: Vec<ipnet::IpNet>,
    pub allow_training: bool,
    pub privacy: veil_domain::KeyPrivacy,
    pub quota: Option<veil_domain::Money>,
    pub limits: KeyLimits,
    pub daily_spend: Option<veil_domain::Money>,
    pub monthly_spend: Option<veil_domain::Money>,
}

/// Starts Veil with `config` (TOML). `server.listen`, `server.data_dir` and, unless the
/// config names one, `database.url` are set to test values.
pub async fn spawn_app(config: &str) -> TestApp {
    spawn_app_in(config, tempfile::tempdir().expect("temporary directory")).await
}

/// Like [`spawn_app`], on an existing data directory — e.g. the one [`TestApp::stop`]
/// returned — so a test can restart the application on the same store and master key.
pub async fn spawn_app_in(config: &str, data_dir: TempDir) -> TestApp {
    let mut table: toml::Table = config.parse().expect("test config is TOML");
    let server = table.entry("server").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let server = server.as_table_mut().expect("[server] is a table");
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert("data_dir".into(), data_dir.path().display().to_string().into());
    server.entry("refresh_interval").or_insert_with(|| "100ms".into());
    server.entry("shutdown_grace").or_insert_with(|| "5s".into());
    let path = data_dir.path().join("veil.toml");
    std::fs::write(&path, toml::to_string(&table).expect("config renders")).expect("config written");
    let settings = veil_config::load(Some(&path), Vec::new()).expect("test config is valid");

    let app = Application::build(&settings, None).await.expect("application builds");
    let address = app.url();
    let reload = app.reload_handle();
    let store = veil_server::open_store(&settings).await.expect("store opens");
    let master = MasterKey::load_or_create(None, &settings.data_dir).expect("master key");
    let hasher = veil_secrets::key_hasher(store.as_ref(), &master).await.expect("key hasher");

    let (stop, stopped) = oneshot::channel::<()>();
    #[allow(clippy::disallowed_methods)] // the test owns this task and joins it in `stop`
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp { address, store, settings, data_dir, hasher, reload, stop: Some(stop), server: Some(server) }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The config file the app was started with (`veil.toml` in its data directory).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join("veil.toml")
    }

    /// Reloads the configuration from [`TestApp::config_path`], as SIGHUP does (no
    /// `VEIL_…` overrides, as at start).
    pub async fn reload(&self) -> Result<veil_server::ReloadReport, veil_server::ReloadError> {
        self.reload.reload_with_env(Some(&self.config_path()), Vec::new()).await
    }

    pub async fn create_user(&self, name: &str, group: &str) -> User {
        self.store
            .create_user(NewUser {
                name: UserName::parse(name).expect("user name"),
                email: None,
                role: Role::User,
                group: GroupName::parse(group).expect("group name"),
                password_hash: None,
            })
            .await
            .expect("user created")
    }

    /// Creates a key for `user` and returns its secret with the stored record.
    pub async fn create_key(&self, user: &User, options: KeyOptions) -> (String, ApiKey) {
        let secret = ApiKeySecret::generate();
        let models = options
            .models
            .map(|names| names.into_iter().map(|n| veil_domain::ModelName::parse(n).expect("model name")).collect());
        let key = self
            .store
            .create_key(NewApiKey {
                user_id: user.id,
                name: Some("test".into()),
                prefix: secret.prefix(),
                hash: self.hasher.hash(secret.expose()),
                models,
                expires_at: options.expires_at,
                quota: options.quota,
                limits: options.limits,
                daily_spend: options.daily_spend,
                monthly_spend: options.monthly_spend,
                ip_allow: options.ip_allow,
                allow_training: options.allow_training,
                privacy: options.privacy,
            })
            .await
            .expect("key created");
        (secret.expose().to_owned(), key)
    }

    /// A user in the default group with one unrestricted key: the common case.
    pub async fn user_with_key(&self, name: &str) -> (User, String) {
        let user = self.create_user(name, "default").await;
        let (secret, _) = self.create_key(&user, KeyOptions::default()).await;
        (user, secret)
    }

    /// Credits `amount` (a decimal such as `"1.5"`) to `user`, as `veil admin user credit`
    /// does: a running server sees it at its next refresh.
    pub async fn credit(&self, user: &User, amount: &str) {
        self.store
            .append_ledger(&veil_domain::LedgerEntry {
                user_id: user.id,
                key_id: None,
                kind: veil_domain::LedgerKind::Topup,
                amount: veil_domain::Money::parse_decimal(amount).expect("decimal amount"),
                time: Timestamp::now(),
                request_id: None,
                note: Some("test credit".into()),
            })
            .await
            .expect("credit written");
    }

    /// Graceful shutdown, as on SIGTERM: returns once calls drained and records flushed.
    /// The returned guard keeps the data directory (and so an SQLite store) until dropped,
    /// for tests that read what the server left behind.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task finished cleanly");
        }
        let placeholder = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut self.data_dir, placeholder)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

//! HTTPS serving: the certificate Veil presents, and keeping it current without a
//! restart.
//!
//! [`Certificates`] holds the certificate chain and key read from `[server] tls_cert` and
//! `tls_key` behind an `ArcSwap`, and is the rustls certificate resolver, so every new
//! handshake takes whatever is current while established connections keep the one they
//! were made with. The files are read again when their contents change ([`watch`] polls
//! them, no inotify needed) and on demand (SIGHUP, through the reload handle). A
//! replacement that does not load — unreadable, not PEM, a key that does not match the
//! certificate, or a pair caught half-written — leaves the old certificate in service
//! and is logged once, naming the file.
//!
//! TLS itself is rustls with the aws-lc-rs provider (as the upstream client uses),
//! TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use veil_config::TlsFiles;

/// How often the certificate files are checked for a replacement.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.{key}: cannot read {path}: {source}")]
    Read { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("server.{key}: {path}: {message}")]
    Invalid { key: &'static str, path: PathBuf, message: String },
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

/// The contents a certificate was loaded from, to notice a replacement.
type Fingerprint = [u8; 32];

/// The certificate in service and the files it comes from (see the module docs).
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The contents last tried, loaded or not: a broken file is reported once, not at
    /// every poll.
    last_seen: Mutex<Fingerprint>,
}

impl Certificates {
    /// Reads the files; fails (naming the file) if they do not make a usable certificate.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair = PemPair::read(files)?;
        let key = certified_key(files, &pair, &provider)?;
        Ok(Self {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            last_seen: Mutex::new(pair.fingerprint()),
        })
    }

    /// The certificate chain now presented to new connections (leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Reads the files again and, if they changed and load, serves them from the next
    /// handshake on. `Ok(true)`: a new certificate is in service.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.reload_inner(true)
    }

    /// Like [`Certificates::reload`], reporting a broken replacement only the first time
    /// it is seen (for the poller).
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.reload_inner(false)
    }

    fn reload_inner(&self, report_known_failure: bool) -> Result<bool, TlsError> {
        let pair = PemPair::read(&self.files)?;
        let fingerprint = pair.fingerprint();
        {
            let mut last_seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *last_seen == fingerprint && !report_known_failure {
                return Ok(false);
            }
            *last_seen = fingerprint;
        }
        let key = certified_key(&self.files, &pair, &self.provider)?;
        if key.cert == self.current.load().cert {
            return Ok(false);
        }
        self.current.store(Arc::new(key));
        tracing::info!(cert = %self.files.cert.display(), "a new TLS certificate is in service");
        Ok(true)
    }

    /// The acceptor for the listener: this resolver, ALPN `h2` then `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Checks the files for a replacement every `interval` until `stop`; a replacement that
/// does not load is logged and the old certificate kept.
pub async fn watch(certificates: Arc<Certificates>, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let files = Arc::clone(&certificates);
        // File reads and key parsing are blocking work; keep them off the runtime's
        // worker threads.
        match tokio::task::spawn_blocking(move || files.reload_if_changed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %error, "the replaced TLS certificate does not load; the old one stays in service");
            }
            Err(_) => tracing::error!("the TLS certificate check did not finish"),
        }
    }
}

/// The two files' contents, as read.
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemPair {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self { cert: read("tls_cert", &files.cert)?, key: read("tls_key", &files.key)? })
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        hash.update(u64::try_from(self.cert.len()).unwrap_or(u64::MAX).to_le_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.to_owned(), source })
}

fn certified_key(
    files: &TlsFiles,
    PemPair { cert, key }: &PemPair,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let invalid = |key, path: &Path, message: String| TlsError::Invalid { key, path: path.to_owned(), message };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid("tls_cert", &files.cert, format!("not a PEM certificate chain ({error})")))?;
    if chain.is_empty() {
        return Err(invalid("tls_cert", &files.cert, "holds no certificate".to_owned()));
    }
    // The error says what is wrong with the file, never its contents.
    let private_key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|error| invalid("tls_key", &files.key, format!("not a PEM private key ({error})")))?;
    CertifiedKey::from_der(chain, private_key, provider)
        .map_err(|error| invalid("tls_key", &files.key, format!("does not fit the certificate ({error})")))
}

/// Loads the configured files once, for `veil check-config`.
pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
    Certificates::load(files).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_testkit::tls::{ServerCert, TestCa};

    fn write(dir: &Path, cert: &ServerCert) -> TlsFiles {
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, &cert.cert_pem).unwrap();
        std::fs::write(&files.key, &cert.key_pem).unwrap();
        files
    }

    fn leaf(certificates: &Certificates) -> Vec<u8> {
        certificates.current_chain()[0].to_vec()
    }

    #[test]
    fn errors_name_the_file_and_the_config_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("errors");
        let files = write(dir.path(), &ca.issue());

        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: files.key.clone() };
        let message = Certificates::load(&missing).unwrap_err().to_string();
        assert!(message.starts_with("server.tls_cert: cannot read ") && message.contains("nope.pem"), "{message}");

        std::fs::write(&files.key, "not a key").unwrap();
        let message = Certificates::load(&files).unwrap_err().to_string();
        assert!(message.starts_with("server.tls_key: ") && message.contains("key.pem"), "{message}");

        // A key from another certificate.
        std::fs::write(&files.key, ca.issue().key_pem).unwrap();
        let message = Certificates::load(&files).unwrap_err().to_string();
        assert!(message.contains("does not fit the certificate"), "{message}");
    }

    #[test]
    fn a_broken_replacement_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("reload");
        let first = ca.issue();
        let files = write(dir.path(), &first);
        let certificates = Certificates::load(&files).unwrap();
        assert_eq!(leaf(&certificates), first.der);
        assert!(!certificates.reload().unwrap(), "nothing changed");

        // Half-written: a new certificate with the old key.
        let second = ca.issue();
        std::fs::write(&files.cert, &second.cert_pem).unwrap();
        assert!(certificates.reload().is_err());
        assert_eq!(leaf(&certificates), first.der);

        std::fs::write(&files.key, &second.key_pem).unwrap();
        assert!(certificates.reload().unwrap());
        assert_eq!(leaf(&certificates), second.der);
    }

    #[tokio::test]
    async fn the_watcher_picks_up_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("watch");
        let files = write(dir.path(), &ca.issue());
        let certificates = Arc::new(Certificates::load(&files).unwrap());
        let stop = CancellationToken::new();
        let watcher = tokio_util::task::TaskTracker::new();
        watcher.spawn(watch(Arc::clone(&certificates), Duration::from_millis(20), stop.clone()));

        let second = ca.issue();
        write(dir.path(), &second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while leaf(&certificates) != second.der {
            assert!(tokio::time::Instant::now() < deadline, "the replacement was not picked up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        watcher.close();
        watcher.wait().await;
    }
}

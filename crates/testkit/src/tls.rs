//! Test certificates, made fresh for each test: a throw-away certificate authority
//! ([`TestCa`]) that issues server certificates for `127.0.0.1` and `localhost`, and
//! [`self_signed`] certificates as a private upstream without a CA would present. PEM
//! text for Veil's config files, DER for comparing what a client was shown.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::sync::Arc;

/// The names every test server certificate is valid for.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A server certificate with its private key.
#[derive(Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate as a client receives it, to tell two certificates apart.
    pub der: Vec<u8>,
}

impl ServerCert {
    /// A rustls server configuration presenting this certificate, offering HTTP/2 and
    /// HTTP/1.1 through ALPN.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A certificate authority that exists only in this test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA certificate, for a client to trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A reqwest certificate for [`reqwest::ClientBuilder::tls_certs_only`].
    pub fn reqwest_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem().as_bytes()).unwrap()
    }

    /// A fresh server certificate (and key) for 127.0.0.1 and localhost, signed by this CA.
    pub fn issue(&self) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let cert = server_params().signed_by(&key, &self.issuer).unwrap();
        ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// A certificate for 127.0.0.1 and localhost that signs itself: no client trusts it
/// unless told to skip verification.
pub fn self_signed() -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let cert = server_params().self_signed(&key).unwrap();
    ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
}

fn server_params() -> CertificateParams {
    let mut params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "veil test server");
    params
}

//! TLS on both sides of Veil.
//!
//! Toward upstreams: certificates are verified against the platform's roots, so a
//! self-signed upstream is refused unless its channel (the operator's own) turned
//! verification off; calls to an HTTP/2 upstream are spread over `upstream_connections`
//! connections instead of queueing behind one.
//!
//! Toward clients: with `tls_cert`/`tls_key` Veil serves HTTPS (HTTP/2 by ALPN), and a
//! reload puts a replaced certificate in service for new connections while established
//! ones keep theirs; a replacement that does not load leaves the current one serving.

use crate::helpers::*;
use futures_util::future::join_all;
use serde_json::json;
use std::path::Path;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::spawn_app;
use veil_testkit::tls::{ServerCert, TestCa, self_signed};

/// A channel and free model `model` in front of `upstream`; `extra` adds channel keys.
fn channel(name: &str, model: &str, upstream: &MockUpstream, extra: &str) -> String {
    format!(
        r#"
[[channel]]
name = "{name}"
type = "openai"
base_url = "{}"
models = ["{model}"]
first_byte_timeout = "5s"
{extra}

[[model]]
name = "{model}"
free = true
"#,
        upstream.base_url()
    )
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_self_signed_upstream_is_refused_unless_its_own_channel_turns_verification_off() {
    let verified_upstream = MockUpstream::start_https(&self_signed()).await;
    let own_upstream = MockUpstream::start_https(&self_signed()).await;
    let config = [
        channel("vendor", "vendor-model", &verified_upstream, ""),
        channel("own", "own-model", &own_upstream, "operator = \"self\"\nretention = \"none\"\ntls_verify = false"),
    ]
    .concat();
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("alice").await;

    let refused = post(&app, "/v1/chat/completions", &key, chat("vendor-model")).await;
    assert_eq!(error_code(refused, 502).await, "upstream_error");
    assert_eq!(verified_upstream.tls_connections(), 0, "the handshake must fail");
    assert_eq!(verified_upstream.request_count(), 0, "nothing may be sent to an unverified upstream");

    let reached = post(&app, "/v1/chat/completions", &key, chat("own-model")).await;
    assert_eq!(reached.status(), 200);
    assert_eq!(own_upstream.request_count(), 1);
}

/// Warms the pool with sequential calls (one new connection per client), then sends a
/// burst of concurrent calls, and returns the TLS connections the upstream saw.
async fn connections_used(upstream_connections: usize) -> (usize, usize) {
    let upstream = MockUpstream::start_https(&self_signed()).await;
    let config = format!(
        "[server]\nupstream_connections = {upstream_connections}\n{}",
        channel("own", "own-model", &upstream, "operator = \"self\"\nretention = \"none\"\ntls_verify = false")
    );
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("alice").await;
    for _ in 0..upstream_connections {
        assert_eq!(post(&app, "/v1/chat/completions", &key, chat("own-model")).await.status(), 200);
    }
    let burst = (0..24).map(|_| post(&app, "/v1/chat/completions", &key, chat("own-model")));
    for response in join_all(burst).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(upstream.request_count(), upstream_connections + 24);
    (upstream.tls_connections(), upstream.h2_connections())
}

#[tokio::test]
async fn calls_to_an_http2_upstream_are_spread_over_several_connections() {
    // One client: hyper multiplexes everything over a single HTTP/2 connection...
    assert_eq!(connections_used(1).await, (1, 1));
    // ...so Veil keeps several, and uses each.
    assert_eq!(connections_used(3).await, (3, 3));
}

/// Writes `cert` where the config's `tls_cert`/`tls_key` point.
fn install(dir: &Path, cert: &ServerCert) {
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
}

fn tls_config(dir: &Path) -> String {
    format!(
        "[server]\ntls_cert = '{}'\ntls_key = '{}'\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// A client that trusts exactly `cas` and reports the certificate it was shown.
fn client_trusting(cas: &[&TestCa]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(cas.iter().map(|ca| ca.reqwest_certificate()))
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate `client`'s connection presented, and the HTTP version spoken.
async fn presented(client: &reqwest::Client, url: &str) -> (Vec<u8>, reqwest::Version) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("a TLS connection");
    (info.peer_certificate().expect("a server certificate").to_vec(), response.version())
}

#[tokio::test]
async fn veil_serves_https_and_a_reload_changes_the_certificate_of_new_connections_only() {
    let (first_ca, second_ca) = (TestCa::new("first"), TestCa::new("second"));
    let dir = tempfile::tempdir().unwrap();
    let first = first_ca.issue();
    install(dir.path(), &first);
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&format!("{}{}", tls_config(dir.path()), one_channel(&upstream))).await;
    assert!(app.address.starts_with("https://"), "{}", app.address);
    let (_, key) = app.user_with_key("alice").await;
    let healthz = app.url("/healthz");

    let established = client_trusting(&[&first_ca, &second_ca]);
    assert_eq!(presented(&established, &healthz).await, (first.der.clone(), reqwest::Version::HTTP_2));
    // The relay itself over HTTPS.
    let answer = established
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Plain HTTP on the HTTPS port gets nowhere.
    let plain = reqwest::Client::new().get(healthz.replace("https://", "http://")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    let second = second_ca.issue();
    install(dir.path(), &second);
    assert!(app.reload().await.unwrap().new_certificate);
    let fresh = client_trusting(&[&first_ca, &second_ca]);
    assert_eq!(presented(&fresh, &healthz).await.0, second.der, "a new connection gets the new certificate");
    assert_eq!(presented(&established, &healthz).await.0, first.der, "an established connection is untouched");
    assert!(client_trusting(&[&first_ca]).get(&healthz).send().await.is_err());

    // A broken replacement (here: a certificate without its key) changes nothing.
    install(dir.path(), &ServerCert { key_pem: first.key_pem.clone(), ..second_ca.issue() });
    assert!(!app.reload().await.unwrap().new_certificate);
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    assert!(!app.reload().await.unwrap().new_certificate);
    let after = client_trusting(&[&first_ca, &second_ca]);
    assert_eq!(presented(&after, &healthz).await.0, second.der);
}

//! The machine's Redis for tests, and a proxy in front of it that a test can cut.
//!
//! The server is `VEIL_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`. When it is
//! unreachable the caller gets `None` and should skip, unless `VEIL_REQUIRE_SERVICES=1`
//! (as in CI), where that is a failure. Tests keep apart by key prefix, not by database.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The test Redis URL, or `None` (with a note) when it is unreachable and not required.
pub async fn test_redis_url() -> Option<String> {
    let url = std::env::var("VEIL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    match TcpStream::connect(authority(&url)).await {
        Ok(_) => Some(url),
        Err(error) => {
            if std::env::var("VEIL_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("Redis is required (VEIL_REQUIRE_SERVICES=1) but unreachable: {error}");
            }
            eprintln!("skipping: Redis is unreachable ({error})");
            None
        }
    }
}

/// The test Redis Cluster, `VEIL_TEST_REDIS_CLUSTER_URL`, default
/// `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002` (what `.ci/run` starts), or
/// `None` when its first node is unreachable and services are not required.
pub async fn test_redis_cluster_url() -> Option<String> {
    let url = std::env::var("VEIL_TEST_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".to_owned());
    let first = url.split(',').next().unwrap_or(&url).to_owned();
    match TcpStream::connect(authority(&first)).await {
        Ok(_) => Some(url),
        Err(error) => {
            if std::env::var("VEIL_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("a Redis Cluster is required (VEIL_REQUIRE_SERVICES=1) but unreachable: {error}");
            }
            eprintln!("skipping: the Redis Cluster is unreachable ({error})");
            None
        }
    }
}

/// `host:port` of a `redis://[user:password@]host:port[/db]` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') { host.to_owned() } else { format!("{host}:6379") }
}

/// A unique key prefix, so parallel tests never share limits.
pub fn unique_prefix() -> String {
    format!("veil-test-{}", uuid::Uuid::now_v7().simple())
}

/// A TCP proxy to Redis. [`cut`](Self::cut) drops every open connection and refuses new
/// ones (accepted, then closed at once) until [`restore`](Self::restore).
pub struct CutProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Proxies to the Redis of `redis_url`.
    pub async fn start(redis_url: &str) -> Self {
        let target = authority(redis_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Redis proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (cut, cut_seen) = watch::channel(false);
        #[allow(clippy::disallowed_methods)] // aborted on drop; connections end with the runtime
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_seen.borrow() {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut_seen = cut_seen.clone();
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_seen.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut, accept }
    }

    /// `redis://127.0.0.1:PORT` — the proxy, with no credentials (tests use a local Redis).
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_replace(true);
    }
}

//! [`HttpClient`]: the pooled HTTP clients every provider shares, built once and cheap to
//! clone.
//!
//! Each client keeps connections alive between calls, speaks HTTP/2 where the upstream
//! offers it through ALPN, and verifies TLS with rustls against the platform's roots
//! (reqwest's `rustls` feature: rustls-platform-verifier). It has no overall timeout on
//! purpose: a stream may legitimately last minutes, so each provider enforces the
//! channel's connect, first-byte, idle and total budgets per call.
//!
//! Two things hyper does not do are done here:
//!
//! - **Several connections per upstream.** hyper opens one HTTP/2 connection per origin
//!   and queues requests beyond the server's concurrent-stream limit (usually 100). So a
//!   transport is a [`Pool`] of `connections` clients, and calls take them in turn: a
//!   busy HTTP/2 upstream gets as many connections as the pool has clients.
//! - **One pool per transport, for the life of the process.** What a client fixes for
//!   all its calls — the connect timeout (reqwest has no per-request one) and whether
//!   certificates are verified — is the pool's key. Channels with the same transport
//!   share one pool, and a catalogue rebuilt after a store change finds the pools of the
//!   previous one, warm connections included. A pool no channel uses any more is
//!   dropped at the next look-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long opening a connection may take unless a channel's budget is shorter: the
/// client-level cap, since reqwest has no per-request connect timeout. Providers bound
/// connect plus first byte per call on top of it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients per transport unless configured (`[server] upstream_connections`).
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Idle pooled connections are closed after this long; upstream load balancers
/// typically drop them after 60–350 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("could not build the upstream HTTP client")]
pub struct HttpClientError(#[source] reqwest::Error);

/// What every call through one client shares: the key of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transport {
    pub connect_timeout: Duration,
    /// `false` only for the operator's own endpoints (config validation enforces it):
    /// the certificate is then not checked at all.
    pub tls_verify: bool,
}

impl Default for Transport {
    fn default() -> Self {
        Self { connect_timeout: DEFAULT_CONNECT_TIMEOUT, tls_verify: true }
    }
}

/// One transport's clients, taken in turn.
#[derive(Debug)]
struct Pool {
    clients: Box<[reqwest::Client]>,
    next: AtomicUsize,
}

impl Pool {
    fn build(transport: Transport, connections: usize) -> Result<Self, HttpClientError> {
        let clients = (0..connections.max(1)).map(|_| build_client(transport)).collect::<Result<_, _>>()?;
        Ok(Self { clients, next: AtomicUsize::new(0) })
    }

    fn pick(&self) -> &reqwest::Client {
        // Round-robin: long streams and short calls alike spread evenly over the
        // connections, with no bookkeeping on the call's way out.
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[index]
    }
}

fn build_client(transport: Transport) -> Result<reqwest::Client, HttpClientError> {
    reqwest::Client::builder()
        .user_agent(concat!("veil/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(transport.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(TCP_KEEPALIVE)
        .http2_adaptive_window(true)
        .tls_danger_accept_invalid_certs(!transport.tls_verify)
        // A redirect would replay the request, credential included, somewhere the
        // operator did not configure; upstream APIs do not redirect.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .build()
        .map_err(HttpClientError)
}

/// The pools of every transport in use, shared by all handles.
#[derive(Debug)]
struct Pools {
    connections: usize,
    by_transport: Mutex<HashMap<Transport, Arc<Pool>>>,
}

/// A handle on one transport's pool (see the module docs); clones share it.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pools: Arc<Pools>,
    pool: Arc<Pool>,
    transport: Transport,
}

impl HttpClient {
    /// The default transport with [`DEFAULT_CONNECTIONS`] clients.
    pub fn new() -> Result<Self, HttpClientError> {
        Self::with_connections(DEFAULT_CONNECTIONS)
    }

    /// The default transport, with `connections` clients for each transport.
    pub fn with_connections(connections: usize) -> Result<Self, HttpClientError> {
        let transport = Transport::default();
        let pool = Arc::new(Pool::build(transport, connections)?);
        let pools = Pools {
            connections: connections.max(1),
            by_transport: Mutex::new(HashMap::from([(transport, Arc::clone(&pool))])),
        };
        Ok(Self { pools: Arc::new(pools), pool, transport })
    }

    /// The handle for `transport`: its existing pool, or one built now and kept.
    pub fn for_transport(&self, transport: Transport) -> Result<Self, HttpClientError> {
        if transport == self.transport {
            return Ok(self.clone());
        }
        let mut pools = self.pools.by_transport.lock().unwrap_or_else(PoisonError::into_inner);
        // Pools only this map still holds belong to channels that are gone.
        pools.retain(|key, pool| *key == transport || Arc::strong_count(pool) > 1);
        let pool = match pools.get(&transport) {
            Some(pool) => Arc::clone(pool),
            None => {
                let pool = Arc::new(Pool::build(transport, self.pools.connections)?);
                pools.insert(transport, Arc::clone(&pool));
                pool
            }
        };
        Ok(Self { pools: Arc::clone(&self.pools), pool, transport })
    }

    /// The client for the next call.
    pub(crate) fn reqwest(&self) -> &reqwest::Client {
        self.pool.pick()
    }

    /// How many transports have a pool (for tests of the cache).
    #[cfg(test)]
    fn pool_count(&self) -> usize {
        self.pools.by_transport.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(seconds: u64, tls_verify: bool) -> Transport {
        Transport { connect_timeout: Duration::from_secs(seconds), tls_verify }
    }

    #[test]
    fn builds_and_clones_cheaply() {
        let client = HttpClient::new().unwrap();
        let copy = client.clone();
        assert!(Arc::ptr_eq(&client.pool, &copy.pool));
        assert_eq!(client.pool.clients.len(), DEFAULT_CONNECTIONS);
    }

    #[test]
    fn calls_take_the_clients_in_turn() {
        let client = HttpClient::with_connections(3).unwrap();
        let picked: Vec<*const reqwest::Client> = (0..6).map(|_| client.reqwest() as *const _).collect();
        assert_ne!(picked[0], picked[1]);
        assert_ne!(picked[1], picked[2]);
        assert_ne!(picked[0], picked[2]);
        assert_eq!(picked[..3], picked[3..]);
    }

    #[test]
    fn a_transport_gets_one_pool_however_often_it_is_asked_for() {
        let shared = HttpClient::with_connections(2).unwrap();
        let first = shared.for_transport(transport(3, true)).unwrap();
        let again = shared.for_transport(transport(3, true)).unwrap();
        assert!(Arc::ptr_eq(&first.pool, &again.pool), "a rebuilt catalogue must find the warm pool");
        let unverified = shared.for_transport(transport(3, false)).unwrap();
        assert!(!Arc::ptr_eq(&first.pool, &unverified.pool));
        assert_eq!(unverified.pool.clients.len(), 2);
        assert!(Arc::ptr_eq(&shared.for_transport(Transport::default()).unwrap().pool, &shared.pool));
        assert_eq!(shared.pool_count(), 3);
    }

    #[test]
    fn a_pool_no_channel_holds_is_dropped_at_the_next_lookup() {
        let shared = HttpClient::with_connections(1).unwrap();
        drop(shared.for_transport(transport(3, true)).unwrap());
        let kept = shared.for_transport(transport(4, true)).unwrap();
        assert_eq!(shared.pool_count(), 2, "the default pool and the one in use");
        drop(kept);
        drop(shared.for_transport(transport(5, true)).unwrap());
        assert_eq!(shared.pool_count(), 2);
    }
}

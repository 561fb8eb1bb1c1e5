//! The mock over TLS: the same scripted answers, served on `https://127.0.0.1:PORT` with a
//! given certificate and ALPN `h2`/`http/1.1`, counting the TLS connections it accepts
//! (and how many negotiated HTTP/2) — how a test sees whether Veil verified the
//! certificate and how many connections it spread its calls over.

use super::{MockUpstream, Shared, answer};
use crate::tls::ServerCert;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

impl MockUpstream {
    /// Starts the mock on a fresh loopback port, serving HTTPS with `cert`.
    pub async fn start_https(cert: &ServerCert) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind the mock upstream");
        let addr = tcp.local_addr().expect("the mock upstream's address");
        let shared = Arc::new(Shared::default());
        let listener =
            TlsListener { tcp, acceptor: TlsAcceptor::from(cert.server_config()), shared: Arc::clone(&shared) };
        let app = Router::new().fallback(answer).with_state(Arc::clone(&shared));
        #[allow(clippy::disallowed_methods)] // aborted on drop, like the plain mock's loop
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, scheme: "https", shared, server }
    }

    /// TLS connections whose handshake completed (a client that refused the certificate
    /// is not counted).
    pub fn tls_connections(&self) -> usize {
        self.shared.tls_connections.load(Ordering::SeqCst)
    }

    /// Of [`MockUpstream::tls_connections`], those that negotiated HTTP/2.
    pub fn h2_connections(&self) -> usize {
        self.shared.h2_connections.load(Ordering::SeqCst)
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else { continue };
            // A failed handshake (the client refused the certificate) is no connection.
            let Ok(tls) = self.acceptor.accept(stream).await else { continue };
            self.shared.tls_connections.fetch_add(1, Ordering::SeqCst);
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                self.shared.h2_connections.fetch_add(1, Ordering::SeqCst);
            }
            return (tls, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

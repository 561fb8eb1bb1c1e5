//! The accept loop, mini-redis style: one task per connection, all owned by a
//! [`TaskTracker`]. On shutdown the loop stops accepting, every connection is asked to
//! finish gracefully (in-flight calls and streams run to completion), and after the
//! grace period whatever is left is cut off, so shutdown is always bounded.
//!
//! With a TLS acceptor every connection is HTTPS: the handshake runs in the connection's
//! own task (a slow client cannot hold up accepting others) within [`HANDSHAKE_TIMEOUT`],
//! and ALPN picks HTTP/2 or HTTP/1.1.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    let graceful = GracefulShutdown::new();
    let cut_off = CancellationToken::new();
    let builder = Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(error = %error, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        // Subscribed now, before any shutdown, so a connection still in its handshake
        // when shutdown starts is still asked to finish.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let cut_off = cut_off.clone();
        connections.spawn(async move {
            let served = async move {
                let io = match tls {
                    None => Either::Left(stream),
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Either::Right(tls),
                        Ok(Err(error)) => {
                            tracing::debug!(error = %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    },
                };
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                if let Err(error) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
            };
            tokio::select! {
                () = served => {}
                () = cut_off.cancelled() => {}
            }
        });
    }

    drop(listener);
    tracing::info!(in_flight = connections.len(), "shutting down: draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(remaining = connections.len(), "grace period over; cutting off remaining connections");
        cut_off.cancel();
    }
    connections.close();
    connections.wait().await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

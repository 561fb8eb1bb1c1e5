#![allow(clippy::print_stdout, clippy::print_stderr)]
//! A small TCP load balancer for loopback benchmarks: round robin per accepted connection.
//!
//! Each accepted connection goes to the next backend in turn (`--backend`, repeatable) and its bytes
//! are copied both ways until either side closes; nothing is parsed, so an HTTP keep-alive
//! connection stays on the backend it was first given (a client that wants its requests spread must
//! spread them over connections: see loadgen's `--clients`). A backend that refuses the connection is
//! skipped for that connection (the next one in turn is tried; when all refuse, the client's
//! connection is closed). One thread serves everything, so the balancer's cost is easy to place and
//! measure.
//!
//! Loopback only (listen and backends), like the rest of the benchmark tools. On SIGTERM or
//! SIGINT it stops accepting, waits up to `--grace` seconds for open connections to finish, and
//! prints one JSON line per backend to stderr (connections, failed connects, bytes each way).

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::task::TaskTracker;

#[derive(Debug, Parser)]
#[command(name = "balancer", about = "Round-robin TCP load balancer for loopback benchmarks")]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long)]
    listen: SocketAddr,
    /// A backend address (loopback); repeat for each backend, in round-robin order.
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
    /// Seconds to wait for open connections after SIGTERM before closing them.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
}

/// What happened on one backend, for the summary printed at exit.
#[derive(Default)]
struct BackendStats {
    connections: AtomicU64,
    failed_connects: AtomicU64,
    bytes_to_backend: AtomicU64,
    bytes_to_client: AtomicU64,
}

struct Backend {
    addr: SocketAddr,
    stats: BackendStats,
}

struct Pool {
    backends: Vec<Backend>,
    next: AtomicUsize,
}

impl Pool {
    fn new(addrs: &[SocketAddr]) -> Self {
        Self {
            backends: addrs.iter().map(|addr| Backend { addr: *addr, stats: BackendStats::default() }).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The backend whose turn it is, then the others in order (tried when one refuses).
    fn turn(&self) -> impl Iterator<Item = &Backend> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.backends.len();
        (0..n).filter_map(move |i| self.backends.get((first + i) % n))
    }

    /// One JSON object per backend: what it was given.
    fn summary(&self) -> Vec<serde_json::Value> {
        self.backends
            .iter()
            .map(|backend| {
                let s = &backend.stats;
                json!({
                    "backend": backend.addr.to_string(),
                    "connections": s.connections.load(Ordering::Relaxed),
                    "failed_connects": s.failed_connects.load(Ordering::Relaxed),
                    "bytes_to_backend": s.bytes_to_backend.load(Ordering::Relaxed),
                    "bytes_to_client": s.bytes_to_client.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

fn check_loopback(what: &str, addr: &SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("refusing a non-loopback {what} ({addr}); use 127.x.x.x or [::1]");
    }
    Ok(())
}

async fn relay(mut client: TcpStream, pool: Arc<Pool>) {
    for backend in pool.turn() {
        match TcpStream::connect(backend.addr).await {
            Ok(mut upstream) => {
                backend.stats.connections.fetch_add(1, Ordering::Relaxed);
                // Small request/response exchanges: send each write at once.
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                // An error here is a reset by either side: the connection is over either way.
                if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    backend.stats.bytes_to_backend.fetch_add(up, Ordering::Relaxed);
                    backend.stats.bytes_to_client.fetch_add(down, Ordering::Relaxed);
                }
                return;
            }
            Err(_) => {
                backend.stats.failed_connects.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Every backend refused: dropping the client's stream closes it.
}

/// Accepts and relays until `shutdown` completes, then waits up to `grace` for open connections
/// (the rest are closed when the runtime ends). Returns whether they all finished in time.
async fn serve(listener: TcpListener, pool: Arc<Pool>, shutdown: impl Future<Output = ()>, grace: Duration) -> bool {
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(relay(client, Arc::clone(&pool)));
                }
                // Out of descriptors or a connection reset before accept: keep serving the others.
                Err(error) => {
                    eprintln!("balancer: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    let drained = tokio::time::timeout(grace, connections.wait()).await.is_ok();
    if !drained {
        eprintln!("balancer: {} connection(s) still open after the grace period, closed", connections.len());
    }
    drained
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_loopback("listen address", &args.listen)?;
    for backend in &args.backends {
        check_loopback("backend", backend)?;
    }
    if !(args.grace >= 0.0 && args.grace <= 600.0) {
        bail!("--grace must be in [0, 600] seconds");
    }
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let pool = Arc::new(Pool::new(&args.backends));
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    serve(listener, Arc::clone(&pool), shutdown, Duration::from_secs_f64(args.grace)).await;
    for line in pool.summary() {
        eprintln!("{line}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the accept loop and every relay share it.
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("balancer: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn each_connection_starts_at_the_next_backend_and_falls_back_in_order() {
        let pool = Pool::new(&[addr(1), addr(2), addr(3)]);
        let orders: Vec<Vec<u16>> = (0..4).map(|_| pool.turn().map(|b| b.addr.port()).collect()).collect();
        assert_eq!(orders, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]);
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(check_loopback("backend", &addr(80)).is_ok());
        assert!(check_loopback("backend", &"[::1]:80".parse().unwrap()).is_ok());
        assert!(check_loopback("backend", &"10.0.0.1:80".parse().unwrap()).is_err());
    }

    /// A backend that answers every connection with its own name, then closes.
    async fn named_backend(name: &'static [u8], tracker: &TaskTracker) -> SocketAddr {
        let listener = TcpListener::bind(addr(0)).await.unwrap();
        let local = listener.local_addr().unwrap();
        tracker.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4];
                stream.read_exact(&mut request).await.unwrap();
                stream.write_all(name).await.unwrap();
            }
        });
        local
    }

    #[tokio::test]
    async fn connections_alternate_between_backends_and_skip_a_dead_one() {
        let tracker = TaskTracker::new();
        let first = named_backend(b"one", &tracker).await;
        let second = named_backend(b"two", &tracker).await;
        // A port nothing listens on: bound, then released.
        let dead = TcpListener::bind(addr(0)).await.unwrap().local_addr().unwrap();
        let listener = TcpListener::bind(addr(0)).await.unwrap();
        let front = listener.local_addr().unwrap();
        let pool = Arc::new(Pool::new(&[first, dead, second]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tracker.spawn(serve(
            listener,
            Arc::clone(&pool),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));

        let mut answers = Vec::new();
        for _ in 0..6 {
            let mut stream = TcpStream::connect(front).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            answers.push(String::from_utf8(answer).unwrap());
        }
        // Turns: one, dead → two, two, one, dead → two, two.
        assert_eq!(answers, ["one", "two", "two", "one", "two", "two"]);

        stop.send(()).unwrap();
        assert!(server.await.unwrap(), "every relayed connection had finished");
        let summary = pool.summary();
        let connections: Vec<u64> = summary.iter().map(|s| s["connections"].as_u64().unwrap()).collect();
        let failed: Vec<u64> = summary.iter().map(|s| s["failed_connects"].as_u64().unwrap()).collect();
        assert_eq!(connections, [2, 0, 4]);
        assert_eq!(failed, [0, 2, 0]);
        assert_eq!(summary[0]["bytes_to_backend"].as_u64(), Some(8));
        assert_eq!(summary[2]["bytes_to_client"].as_u64(), Some(12));
    }
}

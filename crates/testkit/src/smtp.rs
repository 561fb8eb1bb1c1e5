//! A tiny SMTP sink for tests: listens on 127.0.0.1 port 0, speaks enough ESMTP for Veil's
//! mailer (EHLO/HELO, STARTTLS when started with a certificate, AUTH PLAIN, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT), accepts every message and records its envelope and data
//! (dot-unstuffed, without the final dot line) and whether it came over TLS.
// The sink's tasks end when it is dropped or with the test's runtime.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMessage {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent, CRLF line ends.
    pub data: String,
    /// The decoded `user` of `AUTH PLAIN`, when the client authenticated.
    pub auth_user: Option<String>,
    /// Whether the message arrived after STARTTLS.
    pub over_tls: bool,
}

/// A running sink; stops when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<SmtpMessage>>>,
    stop: CancellationToken,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A sink that offers STARTTLS with `cert` (from [`crate::tls::TestCa::issue`]).
    pub async fn start_with_starttls(cert: &crate::tls::ServerCert) -> Self {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(cert.server_config()))).await
    }

    async fn start_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (accepted, cancelled) = (messages.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancelled.cancelled() => return,
                    next = listener.accept() => {
                        let Ok((stream, _)) = next else { return };
                        tokio::spawn(serve(stream, accepted.clone(), acceptor.clone()));
                    }
                }
            }
        });
        Self { addr, messages, stop }
    }

    /// `smtp://127.0.0.1:<port>` for `[notifications] smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Everything accepted so far.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until at least `count` messages arrived; returns all of them.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<SmtpMessage> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= count || tokio::time::Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(stream: TcpStream, messages: Arc<Mutex<Vec<SmtpMessage>>>, acceptor: Option<tokio_rustls::TlsAcceptor>) {
    let mut conn = BufReader::new(stream);
    if !say(&mut conn, "220 veil-testkit ESMTP sink").await {
        return;
    }
    let Some(conn) = session(conn, &messages, acceptor.is_some(), false).await else { return };
    // STARTTLS: nothing may have been sent after the command (RFC 3207 §4.2).
    let (Some(acceptor), true) = (acceptor, conn.buffer().is_empty()) else { return };
    let Ok(secured) = acceptor.accept(conn.into_inner()).await else { return };
    session(BufReader::new(secured), &messages, false, true).await;
}

/// One SMTP session until QUIT or the connection ends; `Some(conn)` when the client asked
/// for STARTTLS (offered only with `offer_starttls`), for the caller to secure.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: BufReader<S>,
    messages: &Mutex<Vec<SmtpMessage>>,
    offer_starttls: bool,
    over_tls: bool,
) -> Option<BufReader<S>> {
    let (mut from, mut to, mut auth_user) = (None::<String>, Vec::new(), None);
    let mut line = String::new();
    loop {
        line.clear();
        match conn.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            let starttls = if offer_starttls { "250-STARTTLS\r\n" } else { "" };
            format!("250-veil-testkit\r\n{starttls}250-AUTH PLAIN\r\n250 8BITMIME")
        } else if upper == "STARTTLS" && offer_starttls {
            return say(&mut conn, "220 go ahead").await.then_some(conn);
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 ok".to_owned()
        } else if let Some(encoded) = upper.strip_prefix("AUTH PLAIN ").map(|_| &command[11..]) {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|byte| *byte == 0).collect();
            auth_user = parts.get(1).map(|user| String::from_utf8_lossy(user).into_owned());
            "235 authenticated".to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(address(&command[10..]));
            to.clear();
            "250 ok".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&command[8..]));
            "250 ok".to_owned()
        } else if upper == "DATA" {
            if !say(&mut conn, "354 end with <CRLF>.<CRLF>").await {
                return None;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match conn.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let message = SmtpMessage {
                from: from.take().unwrap_or_default(),
                to: std::mem::take(&mut to),
                data,
                auth_user: auth_user.clone(),
                over_tls,
            };
            messages.lock().unwrap().push(message);
            "250 queued".to_owned()
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 ok".to_owned()
        } else if upper == "QUIT" {
            let _ = say(&mut conn, "221 bye").await;
            return None;
        } else {
            "502 not implemented".to_owned()
        };
        if !say(&mut conn, &reply).await {
            return None;
        }
    }
}

async fn say<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut BufReader<S>, text: &str) -> bool {
    let stream = conn.get_mut();
    stream.write_all(format!("{text}\r\n").as_bytes()).await.is_ok() && stream.flush().await.is_ok()
}

fn address(raw: &str) -> String {
    let raw = raw.trim();
    let inner = raw.split_whitespace().next().unwrap_or_default();
    inner.trim_start_matches('<').trim_end_matches('>').to_owned()
}

//! A small SMTP client for notification mail: one connection per message, `smtps://` (TLS
//! from the first byte, rustls with the web PKI roots) or plain `smtp://` (for a relay on
//! this host or network; no STARTTLS), optional `AUTH PLAIN`. Written here rather than taking lettre:
//! Veil sends a handful of short plain-text messages, and this needs no crate beyond the
//! tokio-rustls already in the build. It never logs a message or an address.

use base64::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use veil_config::SmtpSettings;

/// How long one whole conversation may take.
const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("could not reach the SMTP server: {0}")]
    Connect(std::io::Error),
    #[error("TLS with the SMTP server failed: {0}")]
    Tls(std::io::Error),
    #[error("the SMTP server's name is not valid for TLS")]
    ServerName,
    #[error("the SMTP server answered {code} to {step}")]
    Refused { step: &'static str, code: u16 },
    #[error("the SMTP server's answer was malformed")]
    Malformed,
    #[error("the SMTP conversation took too long")]
    Timeout,
}

impl SmtpError {
    /// Worth trying again: transient failures and 4xx answers; a 5xx is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => *code < 500,
            Self::ServerName => false,
            _ => true,
        }
    }
}

/// One plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The configured server and credentials.
#[derive(Clone)]
pub struct Mailer {
    settings: SmtpSettings,
    password: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Mailer {
    /// The password is read now from `smtp_password_env`.
    pub fn new(settings: SmtpSettings) -> Self {
        let password = settings.password_env.as_deref().and_then(|name| std::env::var(name).ok());
        if settings.password_env.is_some() && password.is_none() {
            tracing::warn!("notifications.smtp_password_env names an unset variable; mail goes out unauthenticated");
        }
        let loopback = settings.host == "localhost"
            || settings
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !settings.tls && password.is_some() && !loopback {
            // No STARTTLS here: a remote server should be reached with smtps://.
            tracing::warn!("the SMTP password goes to a non-local server without TLS; use an smtps:// URL");
        }
        let tls = settings.tls.then(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Self { settings, password, tls }
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), SmtpError> {
        tokio::time::timeout(DEADLINE, self.converse(mail)).await.map_err(|_| SmtpError::Timeout)?
    }

    async fn converse(&self, mail: &Mail) -> Result<(), SmtpError> {
        let stream =
            TcpStream::connect((self.settings.host.as_str(), self.settings.port)).await.map_err(SmtpError::Connect)?;
        match &self.tls {
            Some(connector) => {
                let host = self.settings.host.trim_start_matches('[').trim_end_matches(']').to_owned();
                let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| SmtpError::ServerName)?;
                let stream = connector.connect(name, stream).await.map_err(SmtpError::Tls)?;
                self.dialogue(stream, mail).await
            }
            None => self.dialogue(stream, mail).await,
        }
    }

    async fn dialogue(&self, stream: impl AsyncRead + AsyncWrite + Unpin, mail: &Mail) -> Result<(), SmtpError> {
        let mut session = Session { stream: BufReader::new(stream) };
        session.expect("greeting", 220).await?;
        session.command("EHLO", "EHLO veil", 250).await?;
        if let (Some(user), Some(password)) = (&self.settings.username, &self.password) {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            session.command("AUTH", &format!("AUTH PLAIN {token}"), 235).await?;
        }
        session.command("MAIL FROM", &format!("MAIL FROM:<{}>", self.settings.from), 250).await?;
        session.command("RCPT TO", &format!("RCPT TO:<{}>", mail.to), 250).await?;
        session.command("DATA", "DATA", 354).await?;
        session.send_raw(&message(&self.settings.from, mail)).await?;
        session.expect("message", 250).await?;
        // The message is accepted; a failed QUIT changes nothing.
        let _ = session.command("QUIT", "QUIT", 221).await;
        Ok(())
    }
}

/// The RFC 5322 text, dot-stuffed and ending in the final `.` line.
fn message(from: &str, mail: &Mail) -> String {
    let date =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc2822).unwrap_or_default();
    let id = uuid::Uuid::now_v7();
    let subject = mail.subject.replace(['\r', '\n'], " ");
    let mut text = format!(
        "From: Veil <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@veil>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        mail.to.replace(['\r', '\n'], "")
    );
    for line in mail.body.lines() {
        if line.starts_with('.') {
            text.push('.');
        }
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(".\r\n");
    text
}

struct Session<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn command(&mut self, step: &'static str, line: &str, want: u16) -> Result<(), SmtpError> {
        self.send_raw(&format!("{line}\r\n")).await?;
        self.expect(step, want).await
    }

    async fn send_raw(&mut self, text: &str) -> Result<(), SmtpError> {
        let stream = self.stream.get_mut();
        stream.write_all(text.as_bytes()).await.map_err(SmtpError::Connect)?;
        stream.flush().await.map_err(SmtpError::Connect)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    async fn expect(&mut self, step: &'static str, want: u16) -> Result<(), SmtpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stream.read_line(&mut line).await.map_err(SmtpError::Connect)?;
            if read == 0 || line.len() < 3 {
                return Err(SmtpError::Malformed);
            }
            let code: u16 = line.get(..3).and_then(|code| code.parse().ok()).ok_or(SmtpError::Malformed)?;
            // "250-…" continues; "250 …" (or a bare "250") ends the reply.
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return if code == want { Ok(()) } else { Err(SmtpError::Refused { step, code }) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_reaches_an_smtp_server_with_its_envelope_and_credentials() {
        let sink = veil_testkit::smtp::SmtpSink::start().await;
        let settings = SmtpSettings {
            tls: false,
            host: "127.0.0.1".into(),
            port: sink.addr.port(),
            username: Some("veil".into()),
            password_env: None,
            from: "veil@relay.test".into(),
        };
        let mut mailer = Mailer::new(settings);
        mailer.password = Some("pw".into());
        let mail = Mail { to: "ann@example.com".into(), subject: "Hello".into(), body: "one\n.two".into() };
        mailer.send(&mail).await.unwrap();
        mailer.send(&mail).await.unwrap();
        let messages = sink.messages();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].from, "veil@relay.test");
        assert_eq!(messages[0].to, vec!["ann@example.com".to_owned()]);
        assert_eq!(messages[0].auth_user.as_deref(), Some("veil"));
        assert!(messages[0].data.contains("Subject: Hello\r\n"), "{}", messages[0].data);
        assert!(messages[0].data.ends_with("\r\none\r\n.two\r\n"), "{:?}", messages[0].data);
        // A refusing server is an error, and a closed port one worth retrying.
        drop(sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = mailer.send(&mail).await.unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
        assert!(!SmtpError::Refused { step: "RCPT TO", code: 550 }.is_retryable());
    }

    #[test]
    fn messages_are_dot_stuffed_and_headers_cannot_be_injected() {
        let mail = Mail {
            to: "ann@example.com".into(),
            subject: "New sign-in\r\nBcc: evil@example.com".into(),
            body: "hello\n.hidden\nbye".into(),
        };
        let text = message("veil@example.org", &mail);
        assert!(text.contains("Subject: New sign-in  Bcc: evil@example.com\r\n"), "{text}");
        assert!(!text.contains("\r\nBcc:"));
        assert!(text.contains("\r\n\r\nhello\r\n..hidden\r\nbye\r\n.\r\n"), "{text}");
    }
}

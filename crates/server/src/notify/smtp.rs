//! A small SMTP client for notification mail: one connection per message, `smtps://` (TLS
//! from the first byte), `smtp+starttls://` (STARTTLS required: a server that does not
//! offer it, or sends anything ahead of the handshake, gets nothing) or plain `smtp://` (for
//! a relay on this host or network), optional `AUTH PLAIN` (only once the connection is
//! secured, for the TLS schemes). Certificates are checked against the web PKI roots plus
//! the operator's `smtp_ca_file`. Written here rather than taking lettre:
//! Veil sends a handful of short plain-text messages, and this needs no crate beyond the
//! tokio-rustls already in the build. It never logs a message or an address.

use base64::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use veil_config::{SmtpSecurity, SmtpSettings};

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
    /// `smtp+starttls://`, but the server does not offer STARTTLS (or misbehaved around it).
    #[error("the SMTP server does not offer STARTTLS")]
    NoStartTls,
    #[error("the SMTP conversation took too long")]
    Timeout,
}

impl SmtpError {
    /// Worth trying again: transient failures and 4xx answers; a 5xx is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => *code < 500,
            Self::ServerName | Self::NoStartTls => false,
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
        let loopback = veil_config::is_loopback_host(&settings.host);
        if settings.security == SmtpSecurity::Plain && password.is_some() && !loopback {
            tracing::warn!(
                "the SMTP password goes to a non-local server without TLS; use smtps:// or smtp+starttls://"
            );
        }
        let tls = (settings.security != SmtpSecurity::Plain).then(|| {
            let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            if let Some(path) = &settings.ca_file {
                add_ca_file(&mut roots, path);
            }
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
        match self.settings.security {
            SmtpSecurity::Plain => {
                let mut session = Session::new(stream);
                session.expect("greeting", 220).await?;
                session.ehlo().await?;
                self.deliver(session, mail).await
            }
            SmtpSecurity::Tls => {
                let mut session = Session::new(self.secure(stream).await?);
                session.expect("greeting", 220).await?;
                session.ehlo().await?;
                self.deliver(session, mail).await
            }
            SmtpSecurity::StartTls => {
                let mut session = Session::new(stream);
                session.expect("greeting", 220).await?;
                let extensions = session.ehlo().await?;
                if !extensions.iter().any(|extension| extension.eq_ignore_ascii_case("STARTTLS")) {
                    return Err(SmtpError::NoStartTls);
                }
                session.command("STARTTLS", "STARTTLS", 220).await?;
                // Anything the server sent ahead of the handshake would be read as if it came
                // over TLS (RFC 3207 §4.2): refuse it.
                if !session.stream.buffer().is_empty() {
                    return Err(SmtpError::NoStartTls);
                }
                let mut session = Session::new(self.secure(session.stream.into_inner()).await?);
                // Everything learnt before the handshake is forgotten: ask again.
                session.ehlo().await?;
                self.deliver(session, mail).await
            }
        }
    }

    async fn secure(&self, stream: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SmtpError> {
        let connector = self.tls.as_ref().ok_or(SmtpError::ServerName)?;
        let host = self.settings.host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| SmtpError::ServerName)?;
        connector.connect(name, stream).await.map_err(SmtpError::Tls)
    }

    /// Authentication and the message, after the greeting and EHLO.
    async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut session: Session<S>,
        mail: &Mail,
    ) -> Result<(), SmtpError> {
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

/// Adds the certificates of a PEM file to `roots`; a file that does not load is logged
/// (the server's certificate will then not verify, and mail fails with a TLS error).
fn add_ca_file(roots: &mut rustls::RootCertStore, path: &std::path::Path) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
    match certificates {
        Ok(certificates) if !certificates.is_empty() => {
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                tracing::error!(path = %path.display(), "notifications.smtp_ca_file holds no usable certificate");
            }
        }
        Ok(_) | Err(_) => {
            tracing::error!(path = %path.display(), "notifications.smtp_ca_file could not be read as PEM")
        }
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
    fn new(stream: S) -> Self {
        Self { stream: BufReader::new(stream) }
    }

    /// EHLO, answered with the server's extensions (the reply's lines after the first).
    async fn ehlo(&mut self) -> Result<Vec<String>, SmtpError> {
        self.send_raw("EHLO veil\r\n").await?;
        let lines = self.reply("EHLO", 250).await?;
        Ok(lines.into_iter().skip(1).collect())
    }

    async fn command(&mut self, step: &'static str, line: &str, want: u16) -> Result<(), SmtpError> {
        self.send_raw(&format!("{line}\r\n")).await?;
        self.expect(step, want).await
    }

    async fn send_raw(&mut self, text: &str) -> Result<(), SmtpError> {
        let stream = self.stream.get_mut();
        stream.write_all(text.as_bytes()).await.map_err(SmtpError::Connect)?;
        stream.flush().await.map_err(SmtpError::Connect)
    }

    async fn expect(&mut self, step: &'static str, want: u16) -> Result<(), SmtpError> {
        self.reply(step, want).await.map(drop)
    }

    /// Reads one (possibly multi-line) reply, checks its code and returns each line's text.
    async fn reply(&mut self, step: &'static str, want: u16) -> Result<Vec<String>, SmtpError> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stream.read_line(&mut line).await.map_err(SmtpError::Connect)?;
            if read == 0 || line.len() < 3 || lines.len() > 100 {
                return Err(SmtpError::Malformed);
            }
            let code: u16 = line.get(..3).and_then(|code| code.parse().ok()).ok_or(SmtpError::Malformed)?;
            lines.push(line.get(4..).unwrap_or_default().trim_end().to_owned());
            // "250-…" continues; "250 …" (or a bare "250") ends the reply.
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return if code == want { Ok(lines) } else { Err(SmtpError::Refused { step, code }) };
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
            security: SmtpSecurity::Plain,
            host: "127.0.0.1".into(),
            port: sink.addr.port(),
            username: Some("veil".into()),
            password_env: None,
            from: "veil@relay.test".into(),
            ca_file: None,
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
        assert!(!messages[0].over_tls);
        // A refusing server is an error, and a closed port one worth retrying.
        drop(sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = mailer.send(&mail).await.unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
        assert!(!SmtpError::Refused { step: "RCPT TO", code: 550 }.is_retryable());
    }

    fn starttls_settings(port: u16, ca_file: Option<std::path::PathBuf>) -> SmtpSettings {
        SmtpSettings {
            security: SmtpSecurity::StartTls,
            host: "localhost".into(),
            port,
            username: Some("veil".into()),
            password_env: None,
            from: "veil@relay.test".into(),
            ca_file,
        }
    }

    #[tokio::test]
    async fn starttls_secures_the_session_before_credentials_and_checks_the_certificate() {
        let ca = veil_testkit::tls::TestCa::new("Mail CA");
        let sink = veil_testkit::smtp::SmtpSink::start_with_starttls(&ca.issue()).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let mut mailer = Mailer::new(starttls_settings(sink.addr.port(), Some(ca_file)));
        mailer.password = Some("pw".into());
        let mail = Mail { to: "ann@example.com".into(), subject: "Hi".into(), body: "over TLS".into() };
        mailer.send(&mail).await.unwrap();
        let messages = sink.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].over_tls, "the message went after STARTTLS");
        assert_eq!(messages[0].auth_user.as_deref(), Some("veil"), "credentials went over TLS");

        // Without the operator's CA the certificate does not verify: nothing is sent.
        let untrusting = Mailer::new(starttls_settings(sink.addr.port(), None));
        assert!(matches!(untrusting.send(&mail).await, Err(SmtpError::Tls(_))));
        // A server that does not offer STARTTLS gets nothing, not even the envelope.
        let plain = veil_testkit::smtp::SmtpSink::start().await;
        let mut downgraded = Mailer::new(starttls_settings(plain.addr.port(), None));
        downgraded.password = Some("pw".into());
        let refused = downgraded.send(&mail).await.unwrap_err();
        assert!(matches!(refused, SmtpError::NoStartTls) && !refused.is_retryable(), "{refused}");
        assert!(plain.messages().is_empty());
        assert_eq!(sink.messages().len(), 1);
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

//! [`OpenAiProvider`]: calls any OpenAI-compatible upstream (OpenAI itself, vLLM,
//! Ollama, LiteLLM, …) with the request body exactly as given, and Azure OpenAI, which
//! differs only in where a call goes and how the key is sent: to
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…` with an
//! `api-key` header, the deployment being the channel's upstream model name. The
//! api-version is taken from the base URL's query (`?api-version=…`), else
//! [`AZURE_DEFAULT_API_VERSION`]; a base URL ending in `/openai/v1` uses Azure's v1 API,
//! which is OpenAI's paths with the `api-key` header.
//!
//! The media endpoints use the same paths (`…/images/generations`, `…/audio/speech`, …;
//! on Azure under the deployment): images edits and transcriptions are sent as a
//! multipart form rebuilt from the request's fields and files, speech audio (and subtitle
//! transcripts) come back as [`UpstreamReply::Bytes`], forwarded chunk by chunk.
//!
//! Promises: only the channel's credential and the JSON content type are sent, never a
//! client header; every call is bounded by the channel's timeouts (connect plus first
//! byte until the response headers, idle between body chunks, total for the whole call,
//! streams included); bodies are size-capped; a streamed answer is parsed event by event
//! as bytes arrive, and dropping the stream drops the upstream response, which cancels
//! the upstream call.

use crate::error::UpstreamError;
use crate::http::HttpClient;
use crate::transport;
use crate::{Provider, UpstreamReply, UpstreamRequest};
use async_trait::async_trait;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use std::fmt;
use veil_domain::{Channel, ChannelKind, ChannelName, Timeouts};

mod videos;

/// The credential as read from the environment at construction. The secret lives only
/// in a header value marked sensitive, so it is never shown by `Debug`.
enum Credential {
    /// The channel has no `api_key_env`: local servers need no credential.
    None,
    Bearer(HeaderValue),
    Missing {
        env: String,
    },
    Unusable,
}

/// Azure's latest generally available data-plane API version when this was written.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Where calls go: OpenAI's paths under the base URL, or Azure's.
#[derive(Debug, Clone)]
enum Dialect {
    OpenAi,
    /// Deployment paths with this api-version.
    AzureDeployments {
        api_version: String,
    },
    /// Azure's v1 API: OpenAI's paths, Azure's header.
    AzureV1,
}

pub struct OpenAiProvider {
    dialect: Dialect,
    http: HttpClient,
    channel: ChannelName,
    /// The base URL without a trailing `/`, or `None` when it is not an http(s) URL.
    base_url: Option<String>,
    credential: Credential,
    timeouts: Timeouts,
    max_body_bytes: usize,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider").field("channel", &self.channel).finish_non_exhaustive()
    }
}

fn bearer(key: &str, azure: bool) -> Credential {
    let value = if azure { key.trim().to_owned() } else { format!("Bearer {}", key.trim()) };
    match HeaderValue::try_from(value) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Credential::Bearer(value)
        }
        Err(_) => Credential::Unusable,
    }
}

impl OpenAiProvider {
    /// Reads the credential from the environment variable `channel.api_key_env`, once.
    /// An unset or empty variable makes every call fail with
    /// [`UpstreamError::MissingCredential`].
    pub fn new(channel: &Channel, http: HttpClient) -> Self {
        let api_key = channel.api_key_env.as_deref().map(|env| std::env::var(env).ok());
        Self::with_api_key(channel, http, api_key)
    }

    /// With a credential stored (sealed) through the management API, which takes
    /// precedence over `api_key_env`. `None` means it was stored but could not be opened:
    /// calls then fail rather than fall back to another credential.
    pub fn with_stored_credential(channel: &Channel, http: HttpClient, credential: Option<&str>) -> Self {
        let mut provider = Self::with_api_key(channel, http, None);
        provider.credential = match credential {
            Some(key) if !key.trim().is_empty() => bearer(key, channel.kind == ChannelKind::Azure),
            _ => Credential::Missing { env: "the stored credential".to_owned() },
        };
        provider
    }

    /// `api_key`: `None` when the channel has no credential variable, `Some(None)` when
    /// the variable is unset.
    fn with_api_key(channel: &Channel, http: HttpClient, api_key: Option<Option<String>>) -> Self {
        let credential = match (api_key, &channel.api_key_env) {
            (None, _) | (_, None) => Credential::None,
            (Some(Some(key)), Some(_)) if !key.trim().is_empty() => bearer(&key, channel.kind == ChannelKind::Azure),
            (Some(_), Some(env)) => Credential::Missing { env: env.clone() },
        };
        let (base_url, dialect) = split_base_url(channel);
        Self {
            dialect,
            http,
            channel: channel.name.clone(),
            base_url,
            credential,
            timeouts: channel.timeouts,
            max_body_bytes: transport::MAX_BODY_BYTES,
        }
    }

    fn authorization(&self) -> Result<Option<&HeaderValue>, UpstreamError> {
        match &self.credential {
            Credential::None => Ok(None),
            Credential::Bearer(value) => Ok(Some(value)),
            Credential::Missing { env } => Err(UpstreamError::MissingCredential { env: env.clone() }),
            Credential::Unusable => Err(UpstreamError::Misconfigured("the credential is not a valid header value")),
        }
    }
}

/// The base URL without a trailing `/` (and, for Azure, without its query) when it is an
/// http(s) URL, and the dialect the channel's type and URL call for.
fn split_base_url(channel: &Channel) -> (Option<String>, Dialect) {
    let trimmed = channel.base_url.trim();
    let (path, query) = match trimmed.split_once('?') {
        Some((path, query)) if channel.kind == ChannelKind::Azure => (path, Some(query)),
        _ => (trimmed, None),
    };
    let base_url = path.trim_end_matches('/');
    let valid = reqwest::Url::parse(base_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .map(|_| base_url.to_owned());
    let dialect = if channel.kind != ChannelKind::Azure {
        Dialect::OpenAi
    } else if base_url.ends_with("/openai/v1") {
        Dialect::AzureV1
    } else {
        let api_version = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("api-version="))
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(AZURE_DEFAULT_API_VERSION)
            .to_owned();
        Dialect::AzureDeployments { api_version }
    };
    (valid, dialect)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn videos(&self) -> Option<&dyn crate::VideoUpstream> {
        Some(self)
    }

    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let authorization = self.authorization()?;
        let base_url =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let url = match &self.dialect {
            Dialect::OpenAi | Dialect::AzureV1 => format!("{base_url}{}", request.endpoint.upstream_path()),
            Dialect::AzureDeployments { api_version } => format!(
                "{base_url}/openai/deployments/{}{}?api-version={api_version}",
                request.model.as_str(),
                request.endpoint.upstream_path()
            ),
        };
        let auth_header = match self.dialect {
            Dialect::OpenAi => AUTHORIZATION,
            Dialect::AzureDeployments { .. } | Dialect::AzureV1 => http::HeaderName::from_static("api-key"),
        };
        if request.endpoint.is_media() {
            return self.send_media(request, &url, auth_header, authorization).await;
        }
        let body =
            request.encode_body().map_err(|_| UpstreamError::Malformed("the request body could not be encoded"))?;
        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // What OpenAI's own SDKs send, for streams too.
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = authorization {
            headers.insert(auth_header, authorization.clone());
        }
        let body = transport::post(&self.http, &url, headers, body, self.timeouts).await?;
        if request.stream {
            if transport::is_json(body.headers()) {
                return Err(UpstreamError::Malformed("a stream was asked for but the upstream sent JSON"));
            }
            return Ok(UpstreamReply::Stream(transport::event_stream(body)));
        }
        let bytes = body.read_all(self.max_body_bytes).await?;
        if !transport::is_json_object(&bytes) {
            return Err(UpstreamError::Malformed("the upstream body is not a JSON object"));
        }
        Ok(UpstreamReply::Complete(bytes))
    }
}

impl OpenAiProvider {
    /// The media endpoints: a JSON or multipart request; a JSON answer, or raw bytes
    /// (speech audio, subtitle text) passed on chunk by chunk as they arrive.
    async fn send_media(
        &self,
        request: UpstreamRequest,
        url: &str,
        auth_header: http::HeaderName,
        authorization: Option<&HeaderValue>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let mut call = self.http.reqwest().post(url);
        if let Some(authorization) = authorization {
            call = call.header(auth_header, authorization.clone());
        }
        let call = if request.endpoint.is_multipart() {
            call.multipart(multipart_form(&request))
        } else {
            let body =
                request.encode_body().map_err(|_| UpstreamError::Malformed("the request body could not be encoded"))?;
            call.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body)
        };
        let body = transport::send(call, self.timeouts).await?;
        let json = transport::is_json(body.headers());
        if request.endpoint == crate::Endpoint::AudioSpeech
            || (request.endpoint == crate::Endpoint::AudioTranscriptions && !json)
        {
            let content_type =
                transport::content_type(body.headers()).unwrap_or_else(|| "application/octet-stream".to_owned());
            return Ok(UpstreamReply::Bytes { content_type, body: transport::byte_stream(body) });
        }
        let bytes = body.read_all(self.max_body_bytes).await?;
        if !transport::is_json_object(&bytes) {
            return Err(UpstreamError::Malformed("the upstream body is not a JSON object"));
        }
        Ok(UpstreamReply::Complete(bytes))
    }
}

/// The request as `multipart/form-data`: every text field of the body (arrays as repeated
/// fields, `model` replaced by the channel's upstream model), then the files. File bytes
/// are shared, not copied, and every part has a known length so the form is sent with a
/// `content-length`.
fn multipart_form(request: &UpstreamRequest) -> reqwest::multipart::Form {
    use reqwest::multipart::{Form, Part};
    use serde_json::Value;
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut form = Form::new().text("model", request.model.as_str().to_owned());
    for (name, value) in request.body.iter().filter(|(name, _)| name.as_str() != "model") {
        match value {
            Value::Array(items) => {
                for item in items {
                    form = form.text(name.clone(), text(item));
                }
            }
            Value::Null => {}
            other => form = form.text(name.clone(), text(other)),
        }
    }
    for file in request.files.iter().flat_map(|files| files.iter()) {
        let length = u64::try_from(file.bytes.len()).unwrap_or(u64::MAX);
        let mut part = Part::stream_with_length(reqwest::Body::from(file.bytes.clone()), length);
        part = part.file_name(file.filename.clone().unwrap_or_else(|| "file".to_owned()));
        if let Some(content_type) = &file.content_type {
            part = match part.mime_str(content_type) {
                Ok(typed) => typed,
                // An unusable type is left out; the upstream sniffs the bytes.
                Err(_) => Part::stream_with_length(reqwest::Body::from(file.bytes.clone()), length)
                    .file_name(file.filename.clone().unwrap_or_else(|| "file".to_owned())),
            };
        }
        form = form.part(file.field.clone(), part);
    }
    form
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use crate::EventStream;
    use crate::error::TimeoutPhase;
    use crate::sse::SseEvent;
    use futures_util::StreamExt;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use veil_domain::Timeouts;
    use veil_domain::{ChannelKind, DataPolicy, Retention};

    /// What the scripted server does after reading the request.
    enum Step {
        Write(Vec<u8>),
        Sleep(Duration),
        /// Drop the connection at once.
        Close,
    }

    fn write(text: &str) -> Step {
        Step::Write(text.as_bytes().to_vec())
    }

    fn chunk(data: &str) -> Step {
        Step::Write(format!("{:x}\r\n{data}\r\n", data.len()).into_bytes())
    }

    fn stream_head() -> Step {
        write("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    fn json_response(status: &str, extra_headers: &str, body: &str) -> Step {
        write(&format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        ))
    }

    struct Seen {
        /// The request head, lower-cased.
        head: String,
        body: serde_json::Value,
    }

    struct Scripted {
        base_url: String,
        request: oneshot::Receiver<Seen>,
        /// Fires when the client closed its side after the script ran.
        client_closed: oneshot::Receiver<()>,
    }

    /// A one-connection HTTP/1.1 server that plays `steps` byte for byte, then waits
    /// for the client to close the connection.
    #[allow(clippy::disallowed_methods)] // the test owns the task; the runtime ends it
    async fn scripted(steps: Vec<Step>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1/", listener.local_addr().unwrap());
        let (request_tx, request) = oneshot::channel();
        let (closed_tx, client_closed) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8(received[..head_end].to_vec()).unwrap().to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |len| len.trim().parse().unwrap());
            while received.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
            }
            let body = serde_json::from_slice(&received[head_end..]).unwrap_or_default();
            let _ = request_tx.send(Seen { head, body });
            for step in steps {
                match step {
                    Step::Write(bytes) => {
                        if socket.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Step::Sleep(pause) => tokio::time::sleep(pause).await,
                    Step::Close => return,
                }
            }
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed_tx.send(());
        });
        Scripted { base_url, request, client_closed }
    }

    fn fast_timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            total: Duration::from_secs(5),
        }
    }

    fn channel(base_url: &str, api_key_env: Option<&str>, timeouts: Timeouts) -> Channel {
        Channel {
            name: ChannelName::parse("test-channel").unwrap(),
            kind: ChannelKind::Openai,
            base_url: base_url.to_owned(),
            api_key_env: api_key_env.map(str::to_owned),
            models: vec![],
            model_mapping: BTreeMap::new(),
            priority: 0,
            weight: 1,
            groups: None,
            policy: DataPolicy {
                retention: Retention::None,
                training: false,
                region: None,
                human_review: false,
                operator: "self".to_owned(),
            },
            timeouts,
            limits: Default::default(),
            tls_verify: true,
            probe_interval: None,
            enabled: true,
            managed: false,
        }
    }

    fn provider(base_url: &str, key: Option<&str>) -> OpenAiProvider {
        let channel = channel(base_url, key.map(|_| "TEST_KEY"), fast_timeouts());
        OpenAiProvider::with_api_key(&channel, HttpClient::new().unwrap(), key.map(|k| Some(k.to_owned())))
    }

    fn chat(stream: bool) -> UpstreamRequest {
        let body =
            serde_json::json!({"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let serde_json::Value::Object(body) = body else { unreachable!() };
        let model = veil_domain::ModelName::parse("upstream-m").unwrap();
        UpstreamRequest {
            endpoint: Endpoint::ChatCompletions,
            body: std::sync::Arc::new(body),
            model,
            stream,
            files: None,
        }
    }

    fn complete(reply: UpstreamReply) -> serde_json::Value {
        match reply {
            UpstreamReply::Complete(bytes) => serde_json::from_slice(&bytes).unwrap(),
            _ => panic!("expected a complete body"),
        }
    }

    fn stream(reply: UpstreamReply) -> EventStream {
        match reply {
            UpstreamReply::Stream(events) => events,
            _ => panic!("expected a stream"),
        }
    }

    #[tokio::test]
    async fn posts_the_body_with_only_the_channel_credential() {
        let server = scripted(vec![json_response("200 OK", "", r#"{"id":"x","choices":[]}"#)]).await;
        let reply = provider(&server.base_url, Some("sk-test")).send(chat(false)).await.unwrap();
        assert_eq!(complete(reply), serde_json::json!({"id": "x", "choices": []}));
        let seen = server.request.await.unwrap();
        assert!(seen.head.starts_with("post /v1/chat/completions http/1.1\r\n"), "{}", seen.head);
        assert!(seen.head.contains("\r\nauthorization: bearer sk-test\r\n"));
        assert!(seen.head.contains("\r\ncontent-type: application/json\r\n"));
        assert_eq!(seen.body["messages"][0]["content"], "hi");
        assert_eq!(seen.body["model"], "upstream-m");
        let names: Vec<&str> =
            seen.head.lines().skip(1).filter_map(|line| line.split_once(':')).map(|(name, _)| name).collect();
        for name in &names {
            assert!(
                ["authorization", "content-type", "accept", "user-agent", "host", "content-length"].contains(name),
                "unexpected header {name}"
            );
        }
    }

    #[tokio::test]
    async fn sends_no_authorization_without_a_credential_variable() {
        let server = scripted(vec![json_response("200 OK", "", "{}")]).await;
        provider(&server.base_url, None).send(chat(false)).await.unwrap();
        assert!(!server.request.await.unwrap().head.contains("authorization"));
    }

    #[tokio::test]
    async fn an_unset_credential_fails_every_call_without_connecting() {
        let channel = channel("http://127.0.0.1:9/v1", Some("VEIL_TEST_SURELY_UNSET_7f3a9c"), fast_timeouts());
        let provider = OpenAiProvider::new(&channel, HttpClient::new().unwrap());
        let error = provider.send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::MissingCredential { env: "VEIL_TEST_SURELY_UNSET_7f3a9c".to_owned() });
        assert!(!format!("{provider:?}").contains("VEIL_TEST"));
    }

    #[tokio::test]
    async fn a_bad_base_url_is_a_misconfiguration() {
        let provider = provider("ftp://example.com/v1", None);
        assert!(matches!(provider.send(chat(false)).await, Err(UpstreamError::Misconfigured(_))));
    }

    #[tokio::test]
    async fn error_statuses_carry_message_code_and_retry_after() {
        let body = r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        let server = scripted(vec![json_response("429 Too Many Requests", "retry-after: 7\r\n", body)]).await;
        let error = provider(&server.base_url, Some("k")).send(chat(true)).await.err().unwrap();
        assert_eq!(
            error,
            UpstreamError::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".to_owned(),
                code: Some("rate_limit_exceeded".to_owned()),
            }
        );
    }

    #[tokio::test]
    async fn a_non_json_success_body_is_malformed() {
        let server = scripted(vec![write("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!")]).await;
        let error = provider(&server.base_url, None).send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::Malformed("the upstream body is not a JSON object"));
        let server = scripted(vec![json_response("200 OK", "", "[1,2]")]).await;
        assert!(matches!(provider(&server.base_url, None).send(chat(false)).await, Err(UpstreamError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused() {
        let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(200));
        let server = scripted(vec![
            write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            chunk(&body[..100]),
            Step::Sleep(Duration::from_millis(20)),
            chunk(&body[100..]),
            write("0\r\n\r\n"),
        ])
        .await;
        let mut provider = provider(&server.base_url, None);
        provider.max_body_bytes = 150;
        assert_eq!(provider.send(chat(false)).await.err(), Some(UpstreamError::Malformed("upstream body too large")));
    }

    #[tokio::test]
    async fn a_slow_non_stream_body_hits_the_idle_timeout() {
        let server = scripted(vec![
            write("HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\":"),
            Step::Sleep(Duration::from_secs(3)),
        ])
        .await;
        let error = provider(&server.base_url, None).send(chat(false)).await.err();
        assert_eq!(error, Some(UpstreamError::Timeout(TimeoutPhase::Idle)));
    }

    #[tokio::test]
    async fn streams_events_as_they_arrive_and_ends_after_done() {
        let server = scripted(vec![
            stream_head(),
            chunk("data: {\"n\":1}\n\n: comment\n\ndata: {\"n\""),
            Step::Sleep(Duration::from_millis(50)),
            chunk(":2}\r\n\r\n"),
            Step::Sleep(Duration::from_millis(50)),
            chunk("data: [DONE]\n\n"),
            write("0\r\n\r\n"),
        ])
        .await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":2}"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::done())));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_stream_ending_without_done_is_truncated() {
        let server = scripted(vec![stream_head(), chunk("data: {\"n\":1}\n\n"), write("0\r\n\r\n")]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Truncated)));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_stream_cut_mid_body_is_truncated() {
        // Half a chunk, then the connection goes away.
        let server =
            scripted(vec![stream_head(), chunk("data: {\"n\":1}\n\n"), write("40\r\ndata: {\"n"), Step::Close]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Truncated)));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_silent_stream_hits_the_idle_timeout() {
        let server = scripted(vec![stream_head(), chunk("data: 1\n\n"), Step::Sleep(Duration::from_secs(3))]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("1"))));
        let started = std::time::Instant::now();
        assert_eq!(events.next().await, Some(Err(UpstreamError::Timeout(TimeoutPhase::Idle))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn invalid_sse_is_malformed() {
        let server = scripted(vec![
            stream_head(),
            chunk("data: ok\n\ndata: \u{0}\n\n"),
            Step::Write(b"4\r\n\xFF\xFE\n\n\r\n".to_vec()),
        ])
        .await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("ok"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("\u{0}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Malformed("upstream stream is not valid UTF-8"))));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_json_answer_to_a_stream_request_is_malformed() {
        let server = scripted(vec![json_response("200 OK", "", "{}")]).await;
        assert!(matches!(provider(&server.base_url, None).send(chat(true)).await, Err(UpstreamError::Malformed(_))));
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_upstream_connection() {
        // The body never ends: the server waits for the client to go away.
        let server = scripted(vec![stream_head(), chunk("data: 1\n\n")]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("1"))));
        drop(events);
        let closed = tokio::time::timeout(Duration::from_secs(2), server.client_closed).await;
        assert!(matches!(closed, Ok(Ok(()))), "the upstream connection stayed open");
    }

    #[tokio::test]
    async fn no_headers_in_time_is_a_first_byte_timeout() {
        let server = scripted(vec![Step::Sleep(Duration::from_secs(5))]).await;
        let started = std::time::Instant::now();
        let error = provider(&server.base_url, None).send(chat(false)).await.err();
        assert_eq!(error, Some(UpstreamError::Timeout(TimeoutPhase::FirstByte)));
        // Connect (2 s) + first byte (0.3 s) bound the wait for the headers.
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_total_budget_bounds_a_slow_stream() {
        let mut steps = vec![stream_head()];
        for _ in 0..20 {
            steps.push(chunk("data: tick\n\n"));
            steps.push(Step::Sleep(Duration::from_millis(100)));
        }
        let server = scripted(steps).await;
        let mut timeouts = fast_timeouts();
        timeouts.total = Duration::from_millis(500);
        let channel = channel(&server.base_url, None, timeouts);
        let provider = OpenAiProvider::with_api_key(&channel, HttpClient::new().unwrap(), None);
        let mut events = stream(provider.send(chat(true)).await.unwrap());
        let mut last = None;
        while let Some(item) = events.next().await {
            last = Some(item);
        }
        assert_eq!(last, Some(Err(UpstreamError::Timeout(TimeoutPhase::Total))));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let error = provider(&base_url, Some("sk-secret")).send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::Connect);
        assert!(error.is_retryable());
        assert!(!error.to_string().contains("127.0.0.1"));
    }
}

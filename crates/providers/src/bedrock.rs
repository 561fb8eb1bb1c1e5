//! The Amazon Bedrock dialect: the Converse API,
//! `POST {base_url}/model/{model-id}/converse` (or `/converse-stream`, answered in AWS
//! event-stream framing), signed with SigV4 for the `bedrock` service.
//!
//! The base URL is the runtime endpoint (`https://bedrock-runtime.us-east-1.amazonaws.com`);
//! the signing region is read from its host (`us-east-1` when the host does not name
//! one, e.g. a private endpoint). The channel's credential is either
//! `ACCESS_KEY_ID:SECRET_ACCESS_KEY` (optionally `:SESSION_TOKEN`), signed with SigV4,
//! or a Bedrock API key (no `:`), sent as a bearer token.

use crate::EventStream;
use crate::aws::eventstream::EventStreamDecoder;
use crate::aws::sigv4::{self, AwsCredentials, SigningRequest};
use crate::credential::{self, Secret};
use crate::error::UpstreamError;
use crate::sse::SseEvent;
use crate::transport::Body;
use crate::vendor::Dialect;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::VecDeque;
use std::time::SystemTime;
use veil_domain::Channel;
use veil_protocol::translate::UpstreamFormat;

const DEFAULT_REGION: &str = "us-east-1";
const SERVICE: &str = "bedrock";

pub(crate) struct Bedrock {
    base_url: Option<String>,
    region: String,
    secret: Secret,
}

impl Bedrock {
    pub(crate) fn new(channel: &Channel, stored: Option<Option<&str>>) -> Self {
        let base_url = credential::base_url(channel);
        let region = base_url.as_deref().and_then(region_of).unwrap_or(DEFAULT_REGION).to_owned();
        Self { base_url, region, secret: Secret::of(channel, stored) }
    }

    /// SigV4 credentials when the secret is a key pair; `None` for an API key.
    fn key_pair(&self) -> Result<Option<AwsCredentials>, UpstreamError> {
        let Some(secret) = self.secret.get()? else { return Ok(None) };
        let mut parts = secret.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), token) if !id.is_empty() && !key.is_empty() => Ok(Some(AwsCredentials {
                access_key_id: id.to_owned(),
                secret_access_key: key.to_owned(),
                session_token: token.filter(|t| !t.is_empty()).map(str::to_owned),
            })),
            _ => Ok(None),
        }
    }
}

/// `bedrock-runtime.eu-west-1.amazonaws.com` (or `bedrock-runtime-fips.…`) → `eu-west-1`.
fn region_of(base_url: &str) -> Option<&str> {
    let host = base_url.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    (service.starts_with("bedrock-runtime") && host.ends_with(".amazonaws.com")).then_some(region)
}

impl Dialect for Bedrock {
    fn format(&self) -> UpstreamFormat {
        UpstreamFormat::Bedrock
    }

    fn target(&self, model: &str, stream: bool) -> Result<(String, HeaderMap), UpstreamError> {
        let base =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let action = if stream { "converse-stream" } else { "converse" };
        let url = format!("{base}/model/{}/{action}", sigv4::encode_path_segment(model));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "application/vnd.amazon.eventstream" } else { "application/json" };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        if self.key_pair()?.is_none()
            && let Some(bearer) = self.secret.header("Bearer ")?
        {
            headers.insert(AUTHORIZATION, bearer);
        }
        Ok((url, headers))
    }

    fn sign(&self, url: &str, headers: &mut HeaderMap, body: &[u8]) -> Result<(), UpstreamError> {
        let Some(credentials) = self.key_pair()? else { return Ok(()) };
        let parsed =
            reqwest::Url::parse(url).map_err(|_| UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let signed_headers: Vec<(&str, &str)> =
            headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
        let request = SigningRequest { method: "POST", url: &parsed, headers: &signed_headers, body };
        let added = sigv4::sign(&credentials, &self.region, SERVICE, &request, SystemTime::now());
        for (name, value) in added {
            let name = HeaderName::try_from(name)
                .map_err(|_| UpstreamError::Misconfigured("a signing header could not be built"))?;
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| UpstreamError::Misconfigured("the credential is not a valid header value"))?;
            value.set_sensitive(name == AUTHORIZATION || name.as_str() == "x-amz-security-token");
            headers.insert(name, value);
        }
        Ok(())
    }

    fn events(&self, body: Body) -> EventStream {
        event_stream(body)
    }
}

struct Framing {
    body: Option<Body>,
    decoder: EventStreamDecoder,
    ready: VecDeque<SseEvent>,
}

/// Bedrock's binary event-stream messages as named events (`event: contentBlockDelta`
/// with the JSON payload as data), decoded as bytes arrive. The stream just ends when
/// the body does; a body ending inside a message is [`UpstreamError::Truncated`].
fn event_stream(body: Body) -> EventStream {
    let state = Framing { body: Some(body), decoder: EventStreamDecoder::new(), ready: VecDeque::new() };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                return Some((Ok(event), state));
            }
            let mut body = state.body.take()?;
            match body.next_chunk().await {
                Ok(Some(chunk)) => match state.decoder.push(&chunk) {
                    Ok(messages) => {
                        for message in messages {
                            match message.to_sse_event() {
                                Ok(Some(event)) => state.ready.push_back(event),
                                Ok(None) => {}
                                Err(_) => return Some((Err(malformed()), state)),
                            }
                        }
                        state.body = Some(body);
                    }
                    Err(_) => return Some((Err(malformed()), state)),
                },
                Ok(None) if state.decoder.has_partial_message() => return Some((Err(UpstreamError::Truncated), state)),
                Ok(None) => return None,
                Err(error) => return Some((Err(error), state)),
            }
        }
    }))
}

fn malformed() -> UpstreamError {
    UpstreamError::Malformed("the upstream event stream is malformed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_region_comes_from_the_runtime_host() {
        assert_eq!(region_of("https://bedrock-runtime.eu-west-1.amazonaws.com"), Some("eu-west-1"));
        assert_eq!(region_of("https://bedrock-runtime-fips.us-east-2.amazonaws.com/"), Some("us-east-2"));
        assert_eq!(region_of("http://127.0.0.1:9000"), None);
        assert_eq!(region_of("https://bedrock-runtime.example.com"), None);
    }
}

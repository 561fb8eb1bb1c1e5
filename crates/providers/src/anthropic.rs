//! The Anthropic Messages dialect: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version`, the model and the stream flag in the body. The base URL is what
//! Anthropic's SDKs use (`https://api.anthropic.com`); one ending in `/v1` works too.

use crate::credential::{self, Secret};
use crate::error::UpstreamError;
use crate::vendor::Dialect;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use veil_domain::Channel;
use veil_protocol::translate::UpstreamFormat;

/// The API version Veil's translation is written against.
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub(crate) struct Anthropic {
    base_url: Option<String>,
    secret: Secret,
}

impl Anthropic {
    pub(crate) fn new(channel: &Channel, stored: Option<Option<&str>>) -> Self {
        Self { base_url: credential::base_url(channel), secret: Secret::of(channel, stored) }
    }
}

impl Dialect for Anthropic {
    fn format(&self) -> UpstreamFormat {
        UpstreamFormat::Anthropic
    }

    fn target(&self, _model: &str, stream: bool) -> Result<(String, HeaderMap), UpstreamError> {
        let base =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let url = if base.ends_with("/v1") { format!("{base}/messages") } else { format!("{base}/v1/messages") };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "text/event-stream" } else { "application/json" };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
        if let Some(key) = self.secret.header("")? {
            headers.insert("x-api-key", key);
        }
        Ok((url, headers))
    }

    fn complete_body(&self, body: &mut serde_json::Value, model: &str, stream: bool) {
        if let Some(object) = body.as_object_mut() {
            object.insert("model".into(), model.into());
            if stream {
                object.insert("stream".into(), true.into());
            } else {
                object.remove("stream");
            }
        }
    }
}

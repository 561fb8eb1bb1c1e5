//! The Gemini dialect: `POST {base_url}/v1beta/models/{model}:generateContent` (or
//! `:streamGenerateContent?alt=sse`) with `x-goog-api-key`, and OpenAI-style embeddings
//! through `:batchEmbedContents`. The base URL is what Google's SDKs use
//! (`https://generativelanguage.googleapis.com`); one ending in `/v1beta` or `/v1` is
//! used as given.

use crate::credential::{self, Secret};
use crate::error::UpstreamError;
use crate::transport::MAX_BODY_BYTES;
use crate::vendor::{Dialect, VendorProvider};
use crate::{Endpoint, HttpClient, Provider, UpstreamReply, UpstreamRequest};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use veil_domain::Channel;
use veil_protocol::translate::UpstreamFormat;

pub(crate) struct Gemini {
    base_url: Option<String>,
    secret: Secret,
}

impl Gemini {
    fn url(&self, model: &str, method: &str) -> Result<String, UpstreamError> {
        let base =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let model = model.strip_prefix("models/").unwrap_or(model);
        let versioned = base.ends_with("/v1beta") || base.ends_with("/v1");
        let prefix = if versioned { base.to_owned() } else { format!("{base}/v1beta") };
        Ok(format!("{prefix}/models/{model}:{method}"))
    }

    fn headers(&self, stream: bool) -> Result<HeaderMap, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(if stream { "text/event-stream" } else { "application/json" }));
        if let Some(key) = self.secret.header("")? {
            headers.insert("x-goog-api-key", key);
        }
        Ok(headers)
    }
}

impl Dialect for Gemini {
    fn format(&self) -> UpstreamFormat {
        UpstreamFormat::Gemini
    }

    fn target(&self, model: &str, stream: bool) -> Result<(String, HeaderMap), UpstreamError> {
        let url = if stream {
            format!("{}?alt=sse", self.url(model, "streamGenerateContent")?)
        } else {
            self.url(model, "generateContent")?
        };
        Ok((url, self.headers(stream)?))
    }
}

pub struct GeminiProvider {
    inner: VendorProvider<Gemini>,
}

impl GeminiProvider {
    pub(crate) fn new(channel: &Channel, http: HttpClient, stored: Option<Option<&str>>) -> Self {
        let dialect = Gemini { base_url: credential::base_url(channel), secret: Secret::of(channel, stored) };
        Self { inner: VendorProvider::new(http, channel.timeouts, dialect) }
    }

    /// OpenAI embeddings through `batchEmbedContents`: one request per input string, the
    /// vectors back in OpenAI's list shape (base64 little-endian f32 when asked for).
    /// Gemini reports no token usage here; the relay then counts the input itself.
    async fn embeddings(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let model = request.model.as_str();
        let inputs: Vec<&str> = match request.body.get("input") {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => {
                items.iter().map(|item| item.as_str().ok_or_else(token_inputs_unsupported)).collect::<Result<_, _>>()?
            }
            _ => return Err(UpstreamError::Untranslatable("`input` must be a string or an array of strings.".into())),
        };
        let dimensions = request.body.get("dimensions").and_then(Value::as_u64);
        let base64 = request.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let qualified = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
        let requests: Vec<Value> = inputs
            .iter()
            .map(|text| {
                let mut one = json!({"model": qualified, "content": {"parts": [{"text": text}]}});
                if let Some(dimensions) = dimensions {
                    one["outputDimensionality"] = dimensions.into();
                }
                one
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "requests": requests }))
            .map_err(|_| UpstreamError::Malformed("the request body could not be encoded"))?;
        let url = self.inner.dialect().url(model, "batchEmbedContents")?;
        let answer = self.inner.exchange(&url, self.inner.dialect().headers(false)?, body).await?;
        let bytes = answer.read_all(MAX_BODY_BYTES).await?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| UpstreamError::Malformed("the upstream body is not JSON"))?;
        let embeddings = value
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or(UpstreamError::Malformed("no embeddings in the upstream answer"))?;
        let mut data = Vec::with_capacity(embeddings.len());
        for (index, embedding) in embeddings.iter().enumerate() {
            let values = embedding
                .get("values")
                .and_then(Value::as_array)
                .ok_or(UpstreamError::Malformed("an embedding without values"))?;
            let vector: Vec<f64> = values
                .iter()
                .map(|v| v.as_f64().ok_or(UpstreamError::Malformed("an embedding value is not a number")))
                .collect::<Result<_, _>>()?;
            let embedding = if base64 { Value::String(as_base64(&vector)) } else { json!(vector) };
            data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
        }
        let answer = json!({"object": "list", "data": data, "model": model});
        let bytes =
            serde_json::to_vec(&answer).map_err(|_| UpstreamError::Malformed("the answer could not be encoded"))?;
        Ok(UpstreamReply::Complete(Bytes::from(bytes)))
    }
}

fn token_inputs_unsupported() -> UpstreamError {
    UpstreamError::Untranslatable("Gemini embeddings take text input only, not token arrays.".into())
}

/// OpenAI's base64 embedding encoding: little-endian `f32`s.
fn as_base64(vector: &[f64]) -> String {
    #[allow(clippy::cast_possible_truncation)] // embeddings are f32 on the wire by definition
    let bytes: Vec<u8> = vector.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[async_trait]
impl Provider for GeminiProvider {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        match request.endpoint {
            Endpoint::ChatCompletions => self.inner.chat(request).await,
            Endpoint::Embeddings => self.embeddings(request).await,
            other => Err(UpstreamError::EndpointUnsupported(other.route())),
        }
    }
}

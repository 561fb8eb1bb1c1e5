//! OpenAI's Videos API for [`OpenAiProvider`]: `{base}/videos` for OpenAI and Azure's v1
//! API; for an Azure resource configured with deployment paths, its v1 API under
//! `{resource}/openai/v1/videos` (video models are not served through deployment paths).
//! The same credential header, timeouts and body caps as every other call.

use super::{Dialect, OpenAiProvider};
use crate::ByteStream;
use crate::error::UpstreamError;
use crate::transport;
use crate::videos::{UpstreamVideo, VideoUpstream, valid_id};
use async_trait::async_trait;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};
use veil_domain::ModelName;

/// Largest video object accepted (they are a few hundred bytes).
const MAX_OBJECT_BYTES: usize = 1024 * 1024;

impl OpenAiProvider {
    fn videos_url(&self) -> Result<String, UpstreamError> {
        let base_url =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        Ok(match self.dialect {
            Dialect::OpenAi | Dialect::AzureV1 => format!("{base_url}/videos"),
            Dialect::AzureDeployments { .. } => format!("{base_url}/openai/v1/videos"),
        })
    }

    fn video_headers(&self, accept: &'static str) -> Result<http::HeaderMap, UpstreamError> {
        let mut headers = http::HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        if let Some(authorization) = self.authorization()? {
            let name = match self.dialect {
                Dialect::OpenAi => AUTHORIZATION,
                Dialect::AzureDeployments { .. } | Dialect::AzureV1 => http::HeaderName::from_static("api-key"),
            };
            headers.insert(name, authorization.clone());
        }
        Ok(headers)
    }

    fn job_url(&self, id: &str) -> Result<String, UpstreamError> {
        if !valid_id(id) {
            return Err(UpstreamError::Malformed("the upstream video id is malformed"));
        }
        Ok(format!("{}/{id}", self.videos_url()?))
    }
}

#[async_trait]
impl VideoUpstream for OpenAiProvider {
    async fn create_video(&self, body: &Map<String, Value>, model: &ModelName) -> Result<UpstreamVideo, UpstreamError> {
        let mut body = body.clone();
        body.insert("model".into(), Value::String(model.as_str().to_owned()));
        let bytes =
            serde_json::to_vec(&body).map_err(|_| UpstreamError::Malformed("the request could not be encoded"))?;
        let mut headers = self.video_headers("application/json")?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let reply = transport::post(&self.http, &self.videos_url()?, headers, bytes, self.timeouts).await?;
        UpstreamVideo::parse(&reply.read_all(MAX_OBJECT_BYTES).await?)
    }

    async fn retrieve_video(&self, id: &str) -> Result<UpstreamVideo, UpstreamError> {
        let headers = self.video_headers("application/json")?;
        let reply = transport::get(&self.http, &self.job_url(id)?, headers, self.timeouts).await?;
        UpstreamVideo::parse(&reply.read_all(MAX_OBJECT_BYTES).await?)
    }

    async fn video_content(&self, id: &str) -> Result<(Option<String>, ByteStream), UpstreamError> {
        let headers = self.video_headers("application/binary")?;
        let url = format!("{}/content", self.job_url(id)?);
        let body = transport::get(&self.http, &url, headers, self.timeouts).await?;
        let content_type = body.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let stream = futures_util::stream::unfold(Some(body), |body| async move {
            let mut body = body?;
            match body.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                // The error is the last item.
                Err(error) => Some((Err(error), None)),
            }
        });
        Ok((content_type, Box::pin(stream)))
    }
}

//! The asynchronous video API of an upstream (OpenAI's Videos API: `POST /videos`,
//! `GET /videos/{id}`, `GET /videos/{id}/content`), reached through
//! [`crate::Provider::videos`] for the channel types that have one.
//!
//! Promises: only what job tracking needs is read from the upstream's video object — its
//! id, status, progress and length — never its prompt or error message (both may echo the
//! prompt); the content is handed on chunk by chunk as it arrives, never buffered whole.

use crate::ByteStream;
use crate::error::UpstreamError;
use async_trait::async_trait;
use serde_json::{Map, Value};
use veil_domain::ModelName;

/// Where an upstream job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamVideoStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
}

/// What Veil reads of an upstream video object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamVideo {
    /// The upstream's job id: 1–128 characters of `[A-Za-z0-9_-]` (checked when parsed,
    /// so it is safe in a URL path).
    pub id: String,
    pub status: UpstreamVideoStatus,
    /// 0–100.
    pub progress: u8,
    /// The length the upstream reports, in whole seconds, when it reports one.
    pub seconds: Option<u32>,
}

impl UpstreamVideo {
    /// Parses OpenAI's video object, keeping only the fields above.
    pub fn parse(bytes: &[u8]) -> Result<Self, UpstreamError> {
        const MALFORMED: UpstreamError = UpstreamError::Malformed("the upstream video object is malformed");
        let value: Value = serde_json::from_slice(bytes).map_err(|_| MALFORMED)?;
        let id = value.get("id").and_then(Value::as_str).filter(|id| valid_id(id)).ok_or(MALFORMED)?;
        let status = match value.get("status").and_then(Value::as_str) {
            Some("queued") => UpstreamVideoStatus::Queued,
            Some("in_progress") => UpstreamVideoStatus::InProgress,
            Some("completed") => UpstreamVideoStatus::Completed,
            Some("failed") => UpstreamVideoStatus::Failed,
            _ => return Err(MALFORMED),
        };
        let progress = value.get("progress").and_then(Value::as_u64).unwrap_or(0).min(100);
        let seconds = match value.get("seconds") {
            Some(Value::String(text)) => text.trim().parse::<u32>().ok(),
            Some(Value::Number(number)) => number.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        Ok(Self { id: id.to_owned(), status, progress: u8::try_from(progress).unwrap_or(100), seconds })
    }
}

/// Whether `id` may be used as an upstream job id (and so in a URL path).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[async_trait]
pub trait VideoUpstream: Send + Sync {
    /// Submits a job: `body` is the request in OpenAI's JSON form, sent with `model` as its
    /// `model`.
    async fn create_video(&self, body: &Map<String, Value>, model: &ModelName) -> Result<UpstreamVideo, UpstreamError>;
    /// The job's current state.
    async fn retrieve_video(&self, id: &str) -> Result<UpstreamVideo, UpstreamError>;
    /// The finished video: its content type (if the upstream sent one) and its bytes.
    async fn video_content(&self, id: &str) -> Result<(Option<String>, ByteStream), UpstreamError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_what_job_tracking_needs() {
        let video = UpstreamVideo::parse(
            br#"{"id":"video_abc-1","object":"video","status":"in_progress","progress":40,"seconds":"8","prompt":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            video,
            UpstreamVideo {
                id: "video_abc-1".into(),
                status: UpstreamVideoStatus::InProgress,
                progress: 40,
                seconds: Some(8)
            }
        );
    }

    #[test]
    fn refuses_ids_that_do_not_belong_in_a_path() {
        assert!(UpstreamVideo::parse(br#"{"id":"../x","status":"queued"}"#).is_err());
        assert!(UpstreamVideo::parse(br#"{"id":"v","status":"weird"}"#).is_err());
        assert!(!valid_id(""));
    }
}

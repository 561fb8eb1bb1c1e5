//! Asynchronous video jobs as the store keeps them: metadata only (DESIGN §3.1). A job row
//! has no field that could hold the prompt, and its error is Veil's own stable code, never
//! an upstream message. What the submission charged is kept on the row, so the completion
//! adjustment and the failure refund are computed from the job alone; each runs exactly
//! once because it rides on the job's one transition out of `queued`/`in_progress` (see
//! [`crate::Store::finish_video_job`]).

use crate::StoreError;
use crate::codec::{Columns, in_table};
use uuid::Uuid;
use veil_domain::{ChannelName, KeyId, ModelName, Money, Timestamp, UserId};

/// Where a job stands, as OpenAI's Videos API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl VideoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "queued" => Some(Self::Queued),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// `completed` and `failed` are final: nothing moves a job out of them.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// One video job. `id` is Veil's own (`video_<uuid>`), the only id clients see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoJob {
    pub id: String,
    pub user_id: UserId,
    pub key_id: KeyId,
    /// The submission's request id, written on every ledger row of the job.
    pub request_id: String,
    pub channel: ChannelName,
    /// The upstream's job id (not content: an opaque identifier).
    pub upstream_id: String,
    /// The public model name.
    pub model: ModelName,
    /// Seconds of video asked for (and charged at submission).
    pub seconds: u32,
    /// One of the sizes the API accepts (validated before it is stored).
    pub size: String,
    pub status: VideoStatus,
    /// 0–100.
    pub progress: u8,
    /// Veil's error code when failed (e.g. `upstream_error`, `upstream_timeout`).
    pub error_code: Option<String>,
    /// What the job costs so far: the submission's charge, then what the completion
    /// adjustment or the refund left of it.
    pub charged: Money,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// When the poller should ask the upstream next.
    pub next_poll_at: Timestamp,
    /// After this instant an unfinished job is failed as timed out and refunded.
    pub deadline: Timestamp,
    /// The finished video kept sealed in the media vault (a `media` row id), when one was kept.
    pub media_id: Option<Uuid>,
    /// When the kept video expires (the media row's `expires_at`).
    pub media_expires_at: Option<Timestamp>,
}

/// How a job ended, for [`crate::Store::finish_video_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFinish {
    /// `Completed` or `Failed`.
    pub status: VideoStatus,
    pub progress: u8,
    pub error_code: Option<String>,
    /// What the job costs in the end (the charge minus the refund).
    pub charged: Money,
    pub at: Timestamp,
    /// The finished video kept in the media vault and its expiry (completed jobs only).
    pub media_id: Option<Uuid>,
    pub media_expires_at: Option<Timestamp>,
}

pub(crate) fn job(row: &impl Columns) -> Result<VideoJob, StoreError> {
    in_table("video_jobs", || {
        let corrupt = crate::codec::corrupt;
        Ok(VideoJob {
            id: row.text("id")?,
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            key_id: KeyId::from_uuid(row.uuid("key_id")?),
            request_id: row.text("request_id")?,
            channel: ChannelName::parse(&row.text("channel")?).map_err(|_| corrupt("channel"))?,
            upstream_id: row.text("upstream_id")?,
            model: ModelName::parse(&row.text("model")?).map_err(|_| corrupt("model"))?,
            seconds: u32::try_from(row.int("seconds")?).map_err(|_| corrupt("seconds"))?,
            size: row.text("size")?,
            status: VideoStatus::parse(&row.text("status")?).ok_or_else(|| corrupt("status"))?,
            progress: u8::try_from(row.int("progress")?).map_err(|_| corrupt("progress"))?,
            error_code: row.opt_text("error_code")?,
            charged: Money::from_nanos(row.int("charged")?),
            created_at: Timestamp::from_unix_millis(row.int("created_at")?),
            updated_at: Timestamp::from_unix_millis(row.int("updated_at")?),
            completed_at: row.opt_int("completed_at")?.map(Timestamp::from_unix_millis),
            next_poll_at: Timestamp::from_unix_millis(row.int("next_poll_at")?),
            deadline: Timestamp::from_unix_millis(row.int("deadline")?),
            media_id: row.opt_uuid("media_id")?,
            media_expires_at: row.opt_int("media_expires_at")?.map(Timestamp::from_unix_millis),
        })
    })
}

//! Asynchronous video jobs (OpenAI's Videos API): `POST /v1/videos` submits a job to an
//! upstream and answers with Veil's own job id; `GET /v1/videos/{id}` reports its state;
//! `GET /v1/videos/{id}/content` serves the finished video. One background poller follows
//! every unfinished job (with `[redis] url`: on the instance holding the jobs lease only).
//!
//! Promises:
//! - Generated media (DESIGN §2, §3.1 exception (b)): when a job completes on a channel whose
//!   policy class is not `self-hosted`, the poller downloads the video once and keeps it
//!   sealed in the media vault for `[privacy] media_ttl` (the job row records only the media
//!   id and expiry). The content endpoint then serves the kept bytes, never asking the
//!   upstream again, and answers `410 media_expired` once they expired or were purged; the
//!   video object's `expires_at` is their expiry. The download is buffered in memory and
//!   refused above [`MAX_KEPT_VIDEO_BYTES`]. On a self-hosted channel nothing is kept and the
//!   content is streamed from the upstream, chunk by chunk, as it is when downloading or
//!   keeping failed (the job completes and is billed the same either way).
//! - Privacy: a job row is metadata (owner, key, channel, upstream id, model, length, size,
//!   status, progress, Veil's error code, money, times); the prompt and any upstream message
//!   are never stored or logged. The prompt passes the group's deny rules and the key's
//!   firewall, and only channels whose data policy the caller accepts are tried.
//! - Money: the submission takes a hold of price × seconds asked for (× the group's
//!   multiplier) through the normal admission checks (balance, key quota, spend caps), and
//!   settles it at once: the hold and charge rows are written in the same transaction as the
//!   job row, so the charge survives a restart with the job. When the job ends the charge is
//!   adjusted exactly once, riding on the job's one status transition
//!   ([`veil_store::Store::finish_video_job`]): completed → refund of the seconds not
//!   produced; failed or timed out → refund of the whole charge. Refunds are stamped with a
//!   store revision, so the cached balances pick them up at the next refresh.
//! - The call record is written at submission (path `/v1/videos`, `media_ms` = seconds asked
//!   for, cost = the submission's charge); later adjustments are ledger rows only, so the
//!   ledger (bills, balance) is exact and usage reports show what was charged at submission.
//! - Jobs survive a restart: the poller reads unfinished jobs from the store, polls each
//!   with exponential backoff (`[videos] poll_interval` doubling to `max_poll_interval`, at
//!   least what an upstream's `retry-after` asks), and fails a job still unfinished at its
//!   deadline (`[videos] timeout` after submission). Several instances may poll the same
//!   job: the status guard makes its settlement happen once.
//!
//! Only JSON submissions are accepted (no `input_reference` upload), on `openai` and `azure`
//! channels.

use crate::call::Call;
use crate::error::ApiError;
use crate::media::Kept;
use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::openai::request::RoutedRequest;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use crate::{client_ip, firewall, metering, receipt, relay};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use veil_config::VideoSettings;
use veil_domain::{
    ChannelKind, ErrorCode, FirewallMode, LedgerEntry, LedgerKind, ModelName, Money, PolicyClass, Timestamp, TokenUsage,
};
use veil_providers::{UpstreamError, UpstreamVideo, UpstreamVideoStatus, VideoUpstream};
use veil_store::{VideoFinish, VideoJob, VideoStatus};

const ROUTE: &str = "/v1/videos";
/// The lengths OpenAI's Videos API accepts, in seconds.
const SECONDS: [u32; 3] = [4, 8, 12];
const DEFAULT_SECONDS: u32 = 4;
const SIZES: [&str; 4] = ["720x1280", "1280x720", "1024x1792", "1792x1024"];
const DEFAULT_SIZE: &str = "720x1280";
/// At most this many channels are tried for one submission.
const MAX_ATTEMPTS: usize = 3;
/// The largest finished video the poller keeps (1 GiB). The download is collected in memory
/// before it is sealed (the vault seals one blob), so this bounds the poller's memory too;
/// a larger video is not kept and its content is streamed from the upstream instead.
const MAX_KEPT_VIDEO_BYTES: usize = 1 << 30;
/// The content type kept when the upstream names no `video/…` type.
const VIDEO_CONTENT_TYPE: &str = "video/mp4";

/// The poller's settings and its wake-up bell (rung when a job is submitted).
pub struct VideoJobs {
    pub settings: VideoSettings,
    wake: Notify,
}

impl VideoJobs {
    pub fn new(settings: VideoSettings) -> Self {
        Self { settings, wake: Notify::new() }
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

/// `POST /v1/videos`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    let snapshot = state.snapshot.load_full();
    let group = snapshot.group(&principal.user.group);
    let ip = client_ip::for_record(meta.client_ip, state.ip_logging, &state.hasher, Timestamp::now());
    let mut call = Call::begin(&meta, &principal, group.name.clone(), group.multiplier, ROUTE, ip, Arc::clone(&state));

    // Validate: only the fields the API defines are forwarded.
    let request = match Submission::parse(&body) {
        Ok(request) => request,
        Err(error) => return fail(call, error, None).await,
    };
    let mut body = request.upstream_body();

    // Screen.
    if let Err(error) = relay::screen(&snapshot, &group.name, &body, &mut call) {
        return fail(call, error, None).await;
    }

    // Resolve: the channels that may serve the model for this caller, policy included,
    // and that have a video API.
    let requirement = group.privacy.for_key(principal.key.allow_training, &principal.key.privacy);
    let routed = RoutedRequest { model: request.model.clone(), stream: false, client_wants_usage: false };
    let candidates =
        match relay::resolve(&snapshot, &principal, &group.name, &requirement, &routed, meta.session, &mut call) {
            Ok(candidates) => candidates
                .into_iter()
                .filter(|c| matches!(c.channel.kind, ChannelKind::Openai | ChannelKind::Azure))
                .collect::<Vec<_>>(),
            Err(error) => return fail(call, error, None).await,
        };
    if candidates.is_empty() {
        let error = ApiError::invalid_request(format!(
            "The model `{}` is not served by any channel with a video API.",
            request.model.as_str()
        ))
        .with_param("model");
        return fail(call, error, None).await;
    }

    // Reserve: price × seconds, through the normal admission checks.
    let Some(model) = snapshot.catalogue.model(&request.model) else {
        return fail(call, ApiError::model_not_found(request.model.as_str()), None).await;
    };
    let price = match metering::price_of(model) {
        Ok(price) => price,
        Err(error) => return fail(call, error, None).await,
    };
    let usage = TokenUsage { media_ms: u64::from(request.seconds) * 1000, ..TokenUsage::default() };
    let cost = price.charge(&usage, group.multiplier);
    let request_id = meta.request_id.to_string();
    let (admission, hold) = match metering::admit_and_hold(&state, &principal, &group, 0, cost, &request_id).await {
        Ok(reserved) => reserved,
        Err(error) => return fail(call, error, None).await,
    };

    // Firewall: identity needs nothing more (only the API's own fields are forwarded);
    // `pii` replaces personal data in the prompt (a video cannot be restored, so it stays out).
    if requirement.firewall == FirewallMode::Pii {
        match firewall::apply_pii(state.pii.as_ref(), &mut body) {
            Ok(redaction) => call.set_redactions(redaction.total),
            Err(error) => return fail(call, error, None).await,
        }
    }

    // Submit upstream, failing over on retryable errors.
    let mut last_error = None;
    let mut submitted = None;
    for candidate in candidates.iter().take(MAX_ATTEMPTS) {
        let Some(videos) = candidate.attached.videos() else { continue };
        let channel = &candidate.channel;
        // A channel cooling down is skipped; the submission's outcome feeds its health.
        let Ok(attempt) = state.health.admit(&channel.name).await else { continue };
        let upstream_model = channel.upstream_model(&request.model).clone();
        call.trying(channel.name.clone(), upstream_model.clone(), channel.policy.class());
        let started = std::time::Instant::now();
        let submitted_video = videos.create_video(&body, &upstream_model).await;
        attempt.finish(submitted_video.as_ref().map(|_| started.elapsed()));
        match submitted_video {
            Ok(video) => {
                submitted = Some((Arc::clone(candidate), video));
                break;
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(channel = channel.name.as_str(), error = %error, "video submission failed; trying the next channel");
                last_error = Some(error);
            }
            Err(error) => {
                tracing::warn!(channel = channel.name.as_str(), error = %error, "upstream refused the video submission");
                last_error = Some(error);
                break;
            }
        }
    }
    let Some((candidate, video)) = submitted else {
        let error = last_error.as_ref().map_or_else(ApiError::internal, ApiError::from_upstream);
        return fail(call, error, None).await;
    };
    let receipt = receipt::header(&candidate.channel, requirement.firewall, 0);
    drop(admission);

    // Settle the submission with the job, in one transaction.
    let now = Timestamp::now();
    let settings = state.videos.settings;
    let job = VideoJob {
        id: format!("video_{}", uuid::Uuid::new_v4().simple()),
        user_id: principal.user.id,
        key_id: principal.key.id,
        request_id: meta.request_id.to_string(),
        channel: candidate.channel.name.clone(),
        upstream_id: video.id.clone(),
        model: request.model.clone(),
        seconds: request.seconds,
        size: request.size.to_owned(),
        status: status_of(video.status),
        progress: video.progress,
        error_code: None,
        charged: cost,
        created_at: now,
        updated_at: now,
        completed_at: None,
        next_poll_at: now.plus_millis(millis(settings.poll_interval)),
        deadline: now.plus_millis(millis(settings.timeout)),
        media_id: None,
        media_expires_at: None,
    };
    let ledger = hold.settle(cost, now);
    if let Err(error) = state.store.insert_video_job(&job, &ledger).await {
        // The upstream has the job but Veil could not keep it: the client is told to retry.
        tracing::error!(error = %error, "could not store a submitted video job");
        return fail(call, ApiError::internal(), receipt).await;
    }
    if cost > Money::ZERO {
        state.risk.note_spend(principal.key.id, principal.user.id, cost, now);
    }
    call.set_usage(usage, false);
    call.set_cost(cost);
    call.finish(200, None).await;
    state.videos.wake.notify_one();
    with_receipt((StatusCode::OK, axum::Json(video_object(&job))).into_response(), receipt)
}

/// `GET /v1/videos/{id}`.
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Response {
    match owned_job(&state, &principal, &id).await {
        Ok(job) => axum::Json(video_object(&job)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /v1/videos/{id}/content`: the kept bytes from the media vault when the poller kept
/// them, otherwise the upstream's bytes, passed on as they arrive.
pub async fn content(
    State(state): State<Arc<AppState>>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Response {
    let job = match owned_job(&state, &principal, &id).await {
        Ok(job) => job,
        Err(error) => return error.into_response(),
    };
    if job.status != VideoStatus::Completed {
        let message = if job.status == VideoStatus::Failed {
            "This video job failed; there is no content."
        } else {
            "This video is not ready yet; poll GET /v1/videos/{id} until its status is `completed`."
        };
        return ApiError::new(StatusCode::CONFLICT, ErrorCode::InvalidRequestError, message).into_response();
    }
    if let Some(media_id) = job.media_id {
        return kept_content(&state, &job, media_id).await;
    }
    let snapshot = state.snapshot.load_full();
    let Some(videos) = snapshot.catalogue.channel_by_name(job.channel.as_str()).map(Arc::clone) else {
        return ApiError::new(
            StatusCode::GONE,
            ErrorCode::NotFound,
            "The channel that made this video is no longer configured.",
        )
        .into_response();
    };
    let Some(upstream) = videos.attached.videos() else { return ApiError::internal().into_response() };
    match upstream.video_content(&job.upstream_id).await {
        Ok((content_type, stream)) => {
            let stream = stream.map(|chunk| {
                chunk.map_err(|error| {
                    tracing::warn!(error = %error, "the upstream video download broke off");
                    std::io::Error::other("upstream video download failed")
                })
            });
            let mut response = Response::new(Body::from_stream(stream));
            let content_type = content_type
                .and_then(|value| HeaderValue::from_str(&value).ok())
                .unwrap_or(HeaderValue::from_static("video/mp4"));
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            response
        }
        Err(error) => {
            tracing::warn!(channel = job.channel.as_str(), error = %error, "the upstream video download failed");
            ApiError::from_upstream(&error).into_response()
        }
    }
}

/// Serves a completed job's video from the media vault.
async fn kept_content(state: &AppState, job: &VideoJob, media_id: uuid::Uuid) -> Response {
    match state.media.open_owned(media_id, job.user_id, Timestamp::now()).await {
        Ok(Some((content_type, bytes))) => {
            let content_type =
                HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static(VIDEO_CONTENT_TYPE));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
                    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => ApiError::new(
            StatusCode::GONE,
            ErrorCode::MediaExpired,
            "This video's content has expired or was deleted; generate it again.",
        )
        .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn owned_job(state: &AppState, principal: &crate::state::Principal, id: &str) -> Result<VideoJob, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "No video job with this id.");
    if !id.starts_with("video_") || id.len() > 64 {
        return Err(not_found());
    }
    match state.store.video_job(id).await {
        // Another user's job is indistinguishable from none.
        Ok(Some(job)) if job.user_id == principal.user.id => Ok(job),
        Ok(_) => Err(not_found()),
        Err(error) => {
            tracing::error!(error = %error, "could not read a video job");
            Err(ApiError::internal())
        }
    }
}

async fn fail(call: Call, error: ApiError, receipt: Option<HeaderValue>) -> Response {
    call.finish(error.status.as_u16(), Some(error.code)).await;
    with_receipt(error.into_response(), receipt)
}

fn with_receipt(mut response: Response, receipt: Option<HeaderValue>) -> Response {
    if let Some(receipt) = receipt {
        response.headers_mut().insert(receipt::DATA_POLICY, receipt);
    }
    response
}

/// A validated submission.
struct Submission {
    model: ModelName,
    prompt: String,
    seconds: u32,
    size: &'static str,
}

impl Submission {
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let model = match body.get("model") {
            Some(Value::String(name)) => ModelName::parse(name).map_err(|_| ApiError::model_not_found("(invalid)"))?,
            _ => return Err(ApiError::invalid_request("You must provide a model parameter.").with_param("model")),
        };
        let prompt = match body.get("prompt") {
            Some(Value::String(prompt)) if !prompt.trim().is_empty() => prompt.clone(),
            _ => return Err(ApiError::invalid_request("You must provide a non-empty `prompt`.").with_param("prompt")),
        };
        let seconds = match body.get("seconds") {
            None | Some(Value::Null) => Some(DEFAULT_SECONDS),
            Some(Value::String(text)) => text.trim().parse::<u32>().ok(),
            Some(Value::Number(number)) => number.as_u64().and_then(|n| u32::try_from(n).ok()),
            Some(_) => None,
        }
        .filter(|s| SECONDS.contains(s))
        .ok_or_else(|| {
            ApiError::invalid_request("`seconds` must be one of \"4\", \"8\" or \"12\".").with_param("seconds")
        })?;
        let size = match body.get("size") {
            None | Some(Value::Null) => Some(DEFAULT_SIZE),
            Some(Value::String(text)) => SIZES.iter().copied().find(|size| size == text),
            Some(_) => None,
        }
        .ok_or_else(|| {
            ApiError::invalid_request(format!("`size` must be one of {}.", SIZES.join(", "))).with_param("size")
        })?;
        Ok(Self { model, prompt, seconds, size })
    }

    fn upstream_body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.as_str().to_owned()));
        body.insert("prompt".into(), Value::String(self.prompt.clone()));
        body.insert("seconds".into(), Value::String(self.seconds.to_string()));
        body.insert("size".into(), Value::String(self.size.to_owned()));
        body
    }
}

/// OpenAI's video object, with Veil's id and nothing from the prompt.
fn video_object(job: &VideoJob) -> Value {
    let seconds = |t: Timestamp| t.unix_millis().div_euclid(1000);
    json!({
        "id": job.id,
        "object": "video",
        "model": job.model.as_str(),
        "status": job.status.as_str(),
        "progress": job.progress,
        "created_at": seconds(job.created_at),
        "completed_at": job.completed_at.map(seconds),
        // When the kept content expires; null when nothing was kept (streamed from upstream).
        "expires_at": job.media_expires_at.map(seconds),
        "seconds": job.seconds.to_string(),
        "size": job.size,
        "remixed_from_video_id": Value::Null,
        "error": job.error_code.as_ref().map(|code| json!({"code": code, "message": error_message(code)})),
    })
}

fn error_message(code: &str) -> &'static str {
    if code == ErrorCode::UpstreamTimeout.as_str() {
        "The video was not finished in time; the charge was refunded."
    } else {
        "The upstream provider failed to generate the video; the charge was refunded."
    }
}

fn status_of(status: UpstreamVideoStatus) -> VideoStatus {
    match status {
        UpstreamVideoStatus::Queued => VideoStatus::Queued,
        UpstreamVideoStatus::InProgress => VideoStatus::InProgress,
        UpstreamVideoStatus::Completed => VideoStatus::Completed,
        UpstreamVideoStatus::Failed => VideoStatus::Failed,
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------
// The poller

/// Follows every unfinished job until it ends; owned by the app's task tracker.
/// With `leadership` (Redis configured), only the instance holding the jobs lease polls;
/// the others wake on the same beat and poll once they hold it.
pub async fn poll_jobs(
    state: Arc<AppState>,
    leadership: Option<Arc<veil_cluster::Leadership>>,
    stop: CancellationToken,
) {
    let settings = state.videos.settings;
    loop {
        let now = Timestamp::now();
        let mut next_wake = now.plus_millis(millis(settings.max_poll_interval));
        let leading = leadership.as_ref().is_none_or(|lease| lease.is_leader());
        let unfinished = if leading { state.store.unfinished_video_jobs().await } else { Ok(Vec::new()) };
        match unfinished {
            Ok(jobs) => {
                for job in jobs {
                    if stop.is_cancelled() {
                        return;
                    }
                    let due = job.next_poll_at.min(job.deadline);
                    if due <= now {
                        if let Some(next) = poll_one(&state, &job, settings).await {
                            next_wake = next_wake.min(next);
                        }
                    } else {
                        next_wake = next_wake.min(due);
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not read unfinished video jobs; will retry"),
        }
        let wait = u64::try_from(next_wake.unix_millis() - Timestamp::now().unix_millis()).unwrap_or(0);
        tokio::select! {
            () = stop.cancelled() => return,
            () = state.videos.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(wait.max(10))) => {}
        }
    }
}

/// Polls one due job; returns when it should be polled next (`None` once it ended).
async fn poll_one(state: &AppState, job: &VideoJob, settings: VideoSettings) -> Option<Timestamp> {
    let now = Timestamp::now();
    if now >= job.deadline {
        finish(state, job, Outcome::Failed(ErrorCode::UpstreamTimeout), now).await;
        return None;
    }
    let snapshot = state.snapshot.load_full();
    let upstream = snapshot.catalogue.channel_by_name(job.channel.as_str()).map(Arc::clone);
    let reply: Result<UpstreamVideo, UpstreamError> = match upstream.as_ref().and_then(|c| c.attached.videos()) {
        Some(videos) => VideoUpstream::retrieve_video(videos, &job.upstream_id).await,
        // The channel was removed or changed type: keep trying until the deadline.
        None => Err(UpstreamError::Misconfigured("the job's channel has no video API now")),
    };
    let now = Timestamp::now();
    // Backoff: double the last wait, within the configured bounds.
    let last_wait = Duration::from_millis(
        u64::try_from(job.next_poll_at.unix_millis() - job.updated_at.unix_millis()).unwrap_or(0),
    );
    let mut wait = (last_wait * 2).clamp(settings.poll_interval, settings.max_poll_interval);
    let (status, progress) = match reply {
        Ok(video) => match video.status {
            UpstreamVideoStatus::Completed => {
                // Kept before the job is marked completed, so a client that sees `completed`
                // is served from the vault. Several instances polling the same job may each
                // keep a copy; only the one that finishes the job records its copy, and the
                // others expire with the media TTL.
                let kept = match upstream.as_ref() {
                    Some(channel) if channel.channel.policy.class() != PolicyClass::SelfHosted => {
                        keep_content(state, job, channel.attached.videos()).await
                    }
                    _ => None,
                };
                finish(state, job, Outcome::Completed { seconds: video.seconds, kept }, Timestamp::now()).await;
                return None;
            }
            UpstreamVideoStatus::Failed => {
                finish(state, job, Outcome::Failed(ErrorCode::UpstreamError), now).await;
                return None;
            }
            other => (status_of(other), video.progress.max(job.progress)),
        },
        // The upstream no longer knows the job: it will not finish.
        Err(UpstreamError::Status { status: 404, .. }) => {
            finish(state, job, Outcome::Failed(ErrorCode::UpstreamError), now).await;
            return None;
        }
        Err(error) => {
            tracing::warn!(channel = job.channel.as_str(), error = %error, "polling a video job failed; will retry");
            if let Some(asked) = error.retry_after() {
                wait = wait.max(asked);
            }
            (job.status, job.progress)
        }
    };
    let next = now.plus_millis(millis(wait)).min(job.deadline);
    if let Err(error) = state.store.update_video_progress(&job.id, status, progress, next, now).await {
        tracing::warn!(error = %error, "could not record a video job's progress");
    }
    Some(next)
}

enum Outcome {
    /// `seconds`: what the upstream says it produced, if it says.
    Completed {
        seconds: Option<u32>,
        /// The video kept in the media vault, if it was.
        kept: Option<Kept>,
    },
    Failed(ErrorCode),
}

/// Ends a job and adjusts its charge, exactly once (the store's status guard).
async fn finish(state: &AppState, job: &VideoJob, outcome: Outcome, now: Timestamp) {
    let (status, progress, error_code, kept, media) = match outcome {
        Outcome::Completed { seconds, kept: media } => {
            let produced = seconds.unwrap_or(job.seconds).min(job.seconds);
            (VideoStatus::Completed, 100, None, prorated(job.charged, produced, job.seconds), media)
        }
        Outcome::Failed(code) => (VideoStatus::Failed, job.progress, Some(code.as_str().to_owned()), Money::ZERO, None),
    };
    let refund_amount = job.charged.nanos().saturating_sub(kept.nanos());
    let refund = (refund_amount > 0).then(|| LedgerEntry {
        user_id: job.user_id,
        key_id: Some(job.key_id),
        kind: LedgerKind::Refund,
        amount: Money::from_nanos(refund_amount),
        time: now,
        request_id: Some(job.request_id.clone()),
        note: Some(format!("video job {}", job.id)),
    });
    let finish = VideoFinish {
        status,
        progress,
        error_code,
        charged: kept,
        at: now,
        media_id: media.as_ref().map(|media| media.id),
        media_expires_at: media.as_ref().map(|media| media.expires_at),
    };
    match state.store.finish_video_job(&job.id, &finish, refund.as_ref()).await {
        Ok(true) => {
            tracing::info!(
                job = job.id.as_str(),
                status = status.as_str(),
                refunded = refund_amount,
                "video job ended"
            );
            if refund.is_some() {
                // Apply the refund to the cached balance now rather than at the next refresh.
                if let Err(error) = state.billing.apply_credits().await {
                    tracing::warn!(error = %error, "could not apply a video refund to the cached balance yet");
                }
            }
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(error = %error, "could not end a video job; will retry"),
    }
}

/// Downloads a completed job's video (bounded by [`MAX_KEPT_VIDEO_BYTES`]) and keeps it
/// sealed for its owner. `None`, logged without content, when that fails: the content is
/// then streamed from the upstream on request.
async fn keep_content(state: &AppState, job: &VideoJob, videos: Option<&dyn VideoUpstream>) -> Option<Kept> {
    let videos = videos?;
    let channel = job.channel.as_str();
    let (content_type, mut stream) = match videos.video_content(&job.upstream_id).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::warn!(channel, error = %error, "could not download a finished video to keep it");
            return None;
        }
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if bytes.len().saturating_add(chunk.len()) <= MAX_KEPT_VIDEO_BYTES => {
                bytes.extend_from_slice(&chunk);
            }
            Ok(_) => {
                tracing::warn!(channel, limit = MAX_KEPT_VIDEO_BYTES, "a finished video is too large to keep");
                return None;
            }
            Err(error) => {
                tracing::warn!(channel, error = %error, "the download of a finished video broke off");
                return None;
            }
        }
    }
    let content_type = content_type
        .as_deref()
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| value.starts_with("video/"))
        .unwrap_or(VIDEO_CONTENT_TYPE)
        .to_owned();
    // `keep_media` logs its own failures (without content).
    state.media.keep_media(job.user_id, &content_type, bytes).await.ok()
}

/// `charged × produced / asked`, rounded down (the refund rounds in the client's favour).
fn prorated(charged: Money, produced: u32, asked: u32) -> Money {
    if asked == 0 || produced >= asked {
        return charged;
    }
    let nanos = i128::from(charged.nanos()) * i128::from(produced) / i128::from(asked);
    Money::from_nanos(i64::try_from(nanos).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proration_keeps_the_share_produced() {
        assert_eq!(prorated(Money::from_nanos(1200), 8, 12), Money::from_nanos(800));
        assert_eq!(prorated(Money::from_nanos(1200), 12, 12), Money::from_nanos(1200));
        assert_eq!(prorated(Money::from_nanos(1000), 1, 3), Money::from_nanos(333));
    }

    #[test]
    fn submissions_are_validated() {
        let body = |value: Value| value.as_object().cloned().unwrap();
        assert!(Submission::parse(&body(json!({"model": "sora-2", "prompt": "a cat"}))).is_ok());
        let parsed = Submission::parse(&body(json!({"model": "sora-2", "prompt": "x", "seconds": "8"}))).unwrap();
        assert_eq!((parsed.seconds, parsed.size), (8, DEFAULT_SIZE));
        assert!(Submission::parse(&body(json!({"model": "sora-2", "prompt": "x", "seconds": "5"}))).is_err());
        assert!(Submission::parse(&body(json!({"model": "sora-2", "prompt": ""}))).is_err());
        assert!(Submission::parse(&body(json!({"model": "sora-2", "prompt": "x", "size": "1x1"}))).is_err());
    }
}

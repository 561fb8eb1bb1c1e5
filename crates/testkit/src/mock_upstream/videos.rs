//! OpenAI's asynchronous Videos API: `POST …/videos` creates a job, `GET …/videos/{id}`
//! reports it (`queued`, then `in_progress` with rising progress, then the scripted end
//! after [`VideoPlan::polls_to_finish`] polls), `GET …/videos/{id}/content` sends the
//! scripted bytes as `video/mp4`, in two chunks. A job's plan is the one set when it was
//! created ([`MockUpstream::set_video_plan`]).

use super::{MockUpstream, RecordedRequest, Shared};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// How the jobs created from now on end.
#[derive(Debug, Clone)]
pub enum VideoOutcome {
    /// `completed`, reporting `seconds` (the length asked for when `None`).
    Complete { content: Bytes, seconds: Option<u32> },
    /// `failed`, with an error message echoing the prompt (as real upstreams may).
    Fail,
    /// Never finishes.
    Never,
}

#[derive(Debug, Clone)]
pub struct VideoPlan {
    pub polls_to_finish: usize,
    pub outcome: VideoOutcome,
}

impl Default for VideoPlan {
    fn default() -> Self {
        Self {
            polls_to_finish: 2,
            outcome: VideoOutcome::Complete {
                content: Bytes::from_static(b"\x00\x00\x00\x18ftypmp42mock-video"),
                seconds: None,
            },
        }
    }
}

struct Job {
    plan: VideoPlan,
    polls: usize,
    prompt: String,
    seconds: String,
    size: String,
    model: String,
    created_at: u64,
}

#[derive(Default)]
pub(super) struct Videos {
    plan: Mutex<Option<VideoPlan>>,
    jobs: Mutex<HashMap<String, Job>>,
    serial: AtomicU64,
    polls: AtomicUsize,
}

impl MockUpstream {
    /// The plan of video jobs created from now on (initially [`VideoPlan::default`]).
    pub fn set_video_plan(&self, plan: VideoPlan) {
        *self.shared.videos.plan.lock().unwrap_or_else(PoisonError::into_inner) = Some(plan);
    }

    /// Status polls received so far, over every job.
    pub fn video_polls(&self) -> usize {
        self.shared.videos.polls.load(Ordering::SeqCst)
    }
}

/// Answers a Videos API request, or `None` when the path is not one.
pub(super) fn answer(shared: &Shared, request: &RecordedRequest) -> Option<Response> {
    let path = request.path.as_str();
    let (_, rest) = path.rsplit_once("/videos")?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let videos = &shared.videos;
    let mut jobs = videos.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", []) => {
            let field = |name: &str| request.body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
            let id = format!("video_mock{}", videos.serial.fetch_add(1, Ordering::SeqCst) + 1);
            let plan = videos.plan.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default();
            let job = Job {
                plan,
                polls: 0,
                prompt: field("prompt"),
                seconds: field("seconds"),
                size: field("size"),
                model: field("model"),
                created_at: super::unix_now(),
            };
            let object = object(&id, &job, "queued", 0);
            jobs.insert(id, job);
            Some(json_response(StatusCode::OK, &object))
        }
        ("GET", [id]) => {
            videos.polls.fetch_add(1, Ordering::SeqCst);
            let Some(job) = jobs.get_mut(*id) else { return Some(not_found()) };
            job.polls += 1;
            let finished = job.polls >= job.plan.polls_to_finish;
            let object = match (&job.plan.outcome, finished) {
                (VideoOutcome::Complete { seconds, .. }, true) => {
                    let mut object = object(id, job, "completed", 100);
                    if let Some(seconds) = seconds {
                        object["seconds"] = json!(seconds.to_string());
                    }
                    object
                }
                (VideoOutcome::Fail, true) => {
                    let mut object = object(id, job, "failed", 0);
                    object["error"] =
                        json!({"code": "moderation_blocked", "message": format!("Rejected: {}", job.prompt)});
                    object
                }
                _ => {
                    let progress = (job.polls * 100 / (job.plan.polls_to_finish + 1)).min(99);
                    object(id, job, "in_progress", progress)
                }
            };
            Some(json_response(StatusCode::OK, &object))
        }
        ("GET", [id, "content"]) => {
            let Some(job) = jobs.get(*id) else { return Some(not_found()) };
            let content = match &job.plan.outcome {
                VideoOutcome::Complete { content, .. } if job.polls >= job.plan.polls_to_finish => content.clone(),
                _ => {
                    return Some(json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": {"message": "Video is not ready", "type": "invalid_request_error", "code": null}}),
                    ));
                }
            };
            let half = content.len() / 2;
            let chunks = vec![Ok::<_, std::io::Error>(content.slice(..half)), Ok(content.slice(half..))];
            let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
            Some(response)
        }
        _ => None,
    }
}

fn object(id: &str, job: &Job, status: &str, progress: usize) -> Value {
    json!({
        "id": id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": progress,
        "created_at": job.created_at,
        "completed_at": if status == "completed" { json!(super::unix_now()) } else { Value::Null },
        "expires_at": Value::Null,
        "seconds": job.seconds,
        "size": job.size,
        "prompt": job.prompt,
        "remixed_from_video_id": Value::Null,
        "error": Value::Null,
    })
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": "Video not found", "type": "invalid_request_error", "code": "not_found"}}),
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

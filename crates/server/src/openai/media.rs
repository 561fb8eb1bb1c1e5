//! OpenAI's media endpoints — images (generations, edits), speech, transcriptions and
//! moderations — as the parts the relay's lifecycle (`relay.rs`) does not share with chat:
//! reading a multipart body, each endpoint's required input, the hold's worst case, usage
//! from each answer shape, generated images moved into the media vault, and speech audio
//! streamed to the client chunk by chunk.
//!
//! Promises:
//! * file bytes and generated media are content: they are never logged and reach the
//!   database only sealed, through the vault (`media.rs`);
//! * every answer is billed from what the upstream reports, else from a local estimate
//!   marked as such: images by count (`per_image`) plus tokens when reported, speech by
//!   its input text (estimated, there is no usage), transcriptions by audio duration
//!   (`per_second`) plus tokens when reported, moderations by their input (estimated);
//! * the hold covers the worst case: `n` images, the text budget, and for transcriptions
//!   a bounded [`TRANSCRIPTION_HOLD_MS`] of audio, since the duration is unknown before the
//!   call (a longer file is still billed in full at settlement; the hold is a guard, not
//!   a cap).

use crate::call::Call;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Multipart;
use axum::extract::multipart::MultipartRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use std::sync::Arc;
use veil_domain::{ErrorCode, PolicyClass, TokenUsage, UserId};
use veil_providers::{ByteStream, Endpoint, FilePart};

/// Audio assumed for a transcription's hold: 10 minutes at the model's `per_second` price.
pub const TRANSCRIPTION_HOLD_MS: u64 = 10 * 60 * 1000;
/// Output tokens assumed per image for the hold (gpt-image-1 at high quality and its
/// largest size reports about 6,200).
const IMAGE_HOLD_OUTPUT_TOKENS: u64 = 8_192;
/// Most images one request may ask for (OpenAI's own limit).
const MAX_IMAGES: u64 = 10;
/// Largest subtitle answer read to find its duration.
const MAX_SUBTITLE_BYTES: usize = 16 * 1024 * 1024;

/// What the client sent besides the body's fields.
#[derive(Default)]
pub struct MediaInbound {
    /// The file parts of a multipart request.
    pub files: Option<Arc<[FilePart]>>,
    /// `scheme://host` of this request, for absolute media URLs; `None` without a usable
    /// `Host` header (URLs are then relative).
    pub origin: Option<String>,
}

/// What the relay must remember about the client's request to answer it.
pub struct MediaPlan {
    /// The client's `response_format`.
    response_format: Option<String>,
    /// A transcription asked for `text`: the upstream is asked for `json` (which carries
    /// usage) and the text is unwrapped again.
    unwrap_text: bool,
    origin: Option<String>,
}

/// A multipart body split into its text fields (as JSON strings; a repeated field becomes
/// an array) and its files. Any unreadable body is `400 invalid_request_error`.
pub async fn read_multipart(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(Map<String, Value>, Vec<FilePart>), ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::invalid_request(
                "This endpoint expects a multipart/form-data body (Content-Type: multipart/form-data).",
            )
        }
    })?;
    let mut fields = Map::new();
    let mut files = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                let status = error.status();
                return Err(if status == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::invalid_request("The multipart body could not be read.")
                });
            }
        };
        let Some(name) = field.name().map(str::to_owned) else { continue };
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let is_file = filename.is_some();
        let bytes = field.bytes().await.map_err(|error| {
            if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::invalid_request("The multipart body could not be read.")
            }
        })?;
        if is_file {
            files.push(FilePart { field: name, filename, content_type, bytes });
            continue;
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::invalid_request("A text field of the form is not valid UTF-8."))?;
        match fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(Value::String(text)),
            Some(first) => {
                let first = first.take();
                fields.insert(name, Value::Array(vec![first, Value::String(text)]));
            }
            None => {
                fields.insert(name, Value::String(text));
            }
        }
    }
    Ok((fields, files))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTooLarge,
        "The request body is larger than this server accepts.",
    )
}

/// `scheme://host` of the request from its `Host` header; the scheme is `https` when a
/// proxy in front says so (`x-forwarded-proto`), else `http`. A host with characters a
/// host cannot have is ignored.
pub fn origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let sane = !host.is_empty()
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !sane {
        return None;
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    Some(format!("{}://{host}", if https { "https" } else { "http" }))
}

/// The validate phase's media part: each endpoint's required input; prepares the body
/// for the upstream (a `text` transcription is asked for as `json`).
pub fn check(endpoint: Endpoint, body: &mut Map<String, Value>, inbound: &MediaInbound) -> Result<MediaPlan, ApiError> {
    if body.get("stream").is_some_and(|stream| stream != &Value::Bool(false) && !stream.is_null()) {
        return Err(ApiError::invalid_request("Streaming is not supported on this endpoint through this relay.")
            .with_param("stream"));
    }
    let has_file = |names: &[&str]| {
        inbound.files.as_deref().is_some_and(|files| files.iter().any(|f| names.contains(&f.field.as_str())))
    };
    let text = |field: &'static str| -> Result<(), ApiError> {
        match body.get(field) {
            Some(Value::String(text)) if !text.is_empty() => Ok(()),
            Some(Value::String(_)) | None => {
                Err(ApiError::invalid_request(format!("Missing required parameter: '{field}'.")).with_param(field))
            }
            Some(_) => Err(ApiError::invalid_request(format!("`{field}` must be a string.")).with_param(field)),
        }
    };
    match endpoint {
        Endpoint::ImageGenerations => text("prompt")?,
        Endpoint::ImageEdits => {
            text("prompt")?;
            if !has_file(&["image", "image[]"]) {
                return Err(ApiError::invalid_request("Missing required parameter: 'image'.").with_param("image"));
            }
        }
        Endpoint::AudioSpeech => text("input")?,
        Endpoint::AudioTranscriptions => {
            if !has_file(&["file"]) {
                return Err(ApiError::invalid_request("Missing required parameter: 'file'.").with_param("file"));
            }
        }
        Endpoint::Moderations => match body.get("input") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::invalid_request("`input` must be a string or an array.").with_param("input"));
            }
            None => return Err(ApiError::invalid_request("Missing required parameter: 'input'.").with_param("input")),
        },
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {}
    }
    let response_format = body.get("response_format").and_then(Value::as_str).map(str::to_owned);
    let unwrap_text = endpoint == Endpoint::AudioTranscriptions && response_format.as_deref() == Some("text");
    if unwrap_text {
        body.insert("response_format".into(), Value::String("json".into()));
    }
    Ok(MediaPlan { response_format, unwrap_text, origin: inbound.origin.clone() })
}

/// Images a request asks for (`n`, a number or, in a form, its text), 1 to 10.
fn image_count(body: &Map<String, Value>) -> u64 {
    let n = match body.get("n") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(n)) => n.trim().parse().ok(),
        _ => None,
    };
    n.unwrap_or(1).clamp(1, MAX_IMAGES)
}

/// The most output tokens a media call can be billed; `None` for the text endpoints.
pub fn max_output_tokens(endpoint: Endpoint, body: &Map<String, Value>) -> Option<u64> {
    match endpoint {
        Endpoint::ImageGenerations | Endpoint::ImageEdits => Some(image_count(body) * IMAGE_HOLD_OUTPUT_TOKENS),
        Endpoint::AudioTranscriptions => Some(veil_billing::DEFAULT_MAX_OUTPUT_TOKENS),
        Endpoint::AudioSpeech | Endpoint::Moderations => Some(0),
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => None,
    }
}

/// The images and audio the hold assumes besides tokens: `n` images; for a
/// transcription, [`TRANSCRIPTION_HOLD_MS`] of audio.
pub fn hold_media(endpoint: Endpoint, body: &Map<String, Value>) -> (u64, u64) {
    match endpoint {
        Endpoint::ImageGenerations | Endpoint::ImageEdits => (image_count(body), 0),
        Endpoint::AudioTranscriptions => (0, TRANSCRIPTION_HOLD_MS),
        _ => (0, 0),
    }
}

/// A whole media answer, ready for the client.
pub struct Answer {
    pub usage: TokenUsage,
    pub estimated: bool,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// Reads usage from a JSON answer and shapes it for the client: generated images into
/// the vault when a URL is due, a `text` transcription unwrapped.
pub async fn complete(
    state: &AppState,
    owner: UserId,
    endpoint: Endpoint,
    plan: &MediaPlan,
    request: &Map<String, Value>,
    class: Option<PolicyClass>,
    bytes: Bytes,
) -> Result<Answer, ApiError> {
    let malformed = || ApiError::from_upstream(&veil_providers::UpstreamError::Malformed("unexpected answer shape"));
    let json =
        |body: Bytes| Answer { usage: TokenUsage::default(), estimated: false, content_type: "application/json", body };
    match endpoint {
        Endpoint::ImageGenerations | Endpoint::ImageEdits => {
            let mut value: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
            let usage = image_usage(&value);
            let keep = match plan.response_format.as_deref() {
                Some(format) => format == "url",
                None => class != Some(PolicyClass::SelfHosted),
            };
            let mut answer = json(bytes);
            if keep && has_inline_images(&value) {
                let content_type = match request.get("output_format").and_then(Value::as_str) {
                    Some("jpeg") => "image/jpeg",
                    Some("webp") => "image/webp",
                    _ => "image/png",
                };
                match vault_images(state, owner, content_type, plan.origin.as_deref(), &mut value).await {
                    Ok(()) => answer.body = serde_json::to_vec(&value).map_err(|_| ApiError::internal())?.into(),
                    // Asked for a URL explicitly: failing beats an answer in a shape the
                    // client did not ask for. Otherwise the images go back inline.
                    Err(error) if plan.response_format.is_some() => return Err(error),
                    Err(_) => {}
                }
            }
            answer.usage = usage;
            Ok(answer)
        }
        Endpoint::AudioTranscriptions => {
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
            let (usage, estimated) = transcription_usage(&value);
            let mut answer = json(bytes);
            answer.usage = usage;
            answer.estimated = estimated;
            if plan.unwrap_text {
                let text = value.get("text").and_then(Value::as_str).ok_or_else(malformed)?;
                answer.body = Bytes::from(format!("{text}\n"));
                answer.content_type = "text/plain; charset=utf-8";
            }
            Ok(answer)
        }
        // Moderations (and anything else JSON): no usage is reported; the input is counted.
        _ => {
            let mut answer = json(bytes);
            answer.usage =
                TokenUsage { input_tokens: crate::openai::usage::estimate_prompt(request), ..TokenUsage::default() };
            answer.estimated = true;
            Ok(answer)
        }
    }
}

fn has_inline_images(value: &Value) -> bool {
    value
        .get("data")
        .and_then(Value::as_array)
        .is_some_and(|data| data.iter().any(|item| item.get("b64_json").is_some()))
}

/// Replaces each `b64_json` by the `url` of the same bytes kept in the vault.
async fn vault_images(
    state: &AppState,
    owner: UserId,
    content_type: &str,
    origin: Option<&str>,
    value: &mut Value,
) -> Result<(), ApiError> {
    let Some(data) = value.get_mut("data").and_then(Value::as_array_mut) else { return Ok(()) };
    for item in data.iter_mut() {
        let Some(object) = item.as_object_mut() else { continue };
        let Some(Value::String(encoded)) = object.get("b64_json") else { continue };
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes()).map_err(|_| {
            ApiError::from_upstream(&veil_providers::UpstreamError::Malformed("an image is not valid base64"))
        })?;
        let path = state.media.keep(owner, content_type, bytes).await?;
        object.remove("b64_json");
        let url = match origin {
            Some(origin) => format!("{origin}{path}"),
            None => path,
        };
        object.insert("url".into(), Value::String(url));
    }
    Ok(())
}

/// Images returned, plus tokens when reported (gpt-image-1: `input_tokens`,
/// `output_tokens`).
fn image_usage(value: &Value) -> TokenUsage {
    let images = value.get("data").and_then(Value::as_array).map_or(0, |data| data.len() as u64);
    let usage = value.get("usage");
    let tokens = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage {
        images,
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
        ..TokenUsage::default()
    }
}

/// Audio duration from `usage.seconds` (type `duration`) or `duration` (verbose_json),
/// tokens from `usage` of type `tokens`. Without either, the transcript's tokens are
/// estimated and the duration is unknown (zero).
fn transcription_usage(value: &Value) -> (TokenUsage, bool) {
    let mut usage = TokenUsage::default();
    let mut reported = false;
    let seconds = match value.get("usage") {
        Some(reported_usage) if reported_usage.get("type").and_then(Value::as_str) == Some("duration") => {
            reported_usage.get("seconds").and_then(Value::as_f64)
        }
        Some(reported_usage) if reported_usage.get("type").and_then(Value::as_str) == Some("tokens") => {
            let tokens = |field: &str| reported_usage.get(field).and_then(Value::as_u64).unwrap_or(0);
            usage.input_tokens = tokens("input_tokens");
            usage.output_tokens = tokens("output_tokens");
            reported = true;
            None
        }
        _ => None,
    }
    .or_else(|| value.get("duration").and_then(Value::as_f64));
    if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) {
        usage.media_ms = (seconds * 1000.0).round() as u64;
        reported = true;
    }
    if !reported {
        usage.output_tokens = value.get("text").and_then(Value::as_str).map_or(0, veil_tokens::estimate);
    }
    (usage, !reported)
}

/// A subtitle answer (`srt`, `vtt`): read whole (bounded), its duration taken from the
/// last cue's end, marked estimated.
pub async fn subtitles(mut body: ByteStream) -> Result<(Bytes, TokenUsage), ApiError> {
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| ApiError::from_upstream(&error))?;
        if all.len() + chunk.len() > MAX_SUBTITLE_BYTES {
            return Err(ApiError::from_upstream(&veil_providers::UpstreamError::Malformed("upstream body too large")));
        }
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&all);
    let media_ms =
        text.lines().filter_map(|line| line.split_once("-->")).filter_map(|(_, end)| timestamp_ms(end)).max();
    let usage = TokenUsage { media_ms: media_ms.unwrap_or(0), ..TokenUsage::default() };
    Ok((Bytes::from(all), usage))
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` / `MM:SS.mmm` (VTT), followed by anything.
fn timestamp_ms(text: &str) -> Option<u64> {
    let stamp = text.split_whitespace().next()?;
    let (clock, millis) = stamp.split_once([',', '.'])?;
    let mut seconds = 0_u64;
    for part in clock.split(':') {
        seconds = seconds.checked_mul(60)?.checked_add(part.parse().ok()?)?;
    }
    Some(seconds * 1000 + millis.get(..3).unwrap_or(millis).parse::<u64>().ok()?)
}

/// Speech audio streamed to the client chunk by chunk as the upstream sends it, nothing
/// buffered; the call settles when the stream ends (or the client goes away: the call's
/// `Drop`). An upstream failure mid-way aborts the body, so the client sees it truncated.
pub fn stream_bytes(content_type: &str, body: ByteStream, mut call: Call) -> Response {
    call.mark_first_token();
    let stream = futures_util::stream::unfold((body, Some(call)), |(mut body, mut call)| async move {
        let open = call.take()?;
        match body.next().await {
            Some(Ok(chunk)) => Some((Ok(chunk), (body, Some(open)))),
            Some(Err(error)) => {
                let api = ApiError::from_upstream(&error);
                open.finish(200, Some(api.code)).await;
                Some((Err(std::io::Error::other("the upstream body broke off")), (body, None)))
            }
            None => {
                open.finish(200, None).await;
                None
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let content_type =
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

// --- handlers: extract, call the relay, return.

use crate::openai::body::OpenAiJson;
use crate::openai::handlers::Authenticated;
use crate::request_meta::RequestMeta;
use axum::extract::State;

/// `POST /v1/images/generations` (JSON).
pub async fn image_generations(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    let inbound = MediaInbound { files: None, origin: origin(&headers) };
    crate::relay::relay_media(&state, principal, meta, Endpoint::ImageGenerations, body, inbound).await
}

/// `POST /v1/images/edits` (multipart: `image`/`image[]`, optional `mask`).
pub async fn image_edits(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    multipart_call(state, meta, &headers, principal, multipart, Endpoint::ImageEdits).await
}

/// `POST /v1/audio/speech` (JSON in, audio out).
pub async fn audio_speech(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    crate::relay::relay_media(&state, principal, meta, Endpoint::AudioSpeech, body, MediaInbound::default()).await
}

/// `POST /v1/audio/transcriptions` (multipart: `file`).
pub async fn audio_transcriptions(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    multipart_call(state, meta, &headers, principal, multipart, Endpoint::AudioTranscriptions).await
}

/// `POST /v1/moderations` (JSON).
pub async fn moderations(
    State(state): State<Arc<AppState>>,
    meta: RequestMeta,
    Authenticated(principal): Authenticated,
    OpenAiJson(body): OpenAiJson,
) -> Response {
    crate::relay::relay_media(&state, principal, meta, Endpoint::Moderations, body, MediaInbound::default()).await
}

async fn multipart_call(
    state: Arc<AppState>,
    meta: RequestMeta,
    headers: &HeaderMap,
    principal: Arc<crate::state::Principal>,
    multipart: Result<Multipart, MultipartRejection>,
    endpoint: Endpoint,
) -> Response {
    use axum::response::IntoResponse as _;
    let (body, files) = match read_multipart(multipart).await {
        Ok(parts) => parts,
        Err(error) => return error.into_response(),
    };
    let inbound = MediaInbound { files: Some(files.into()), origin: origin(headers) };
    crate::relay::relay_media(&state, principal, meta, endpoint, body, inbound).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transcription_usage_reads_each_shape() {
        let (usage, estimated) =
            transcription_usage(&json!({"text": "hi", "usage": {"type": "duration", "seconds": 3.5}}));
        assert_eq!((usage.media_ms, estimated), (3500, false));
        let (usage, estimated) = transcription_usage(&json!({"text": "hi", "duration": 12.25}));
        assert_eq!((usage.media_ms, estimated), (12250, false));
        let tokens = json!({"text": "hi", "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 5}});
        let (usage, estimated) = transcription_usage(&tokens);
        assert_eq!((usage.input_tokens, usage.output_tokens, estimated), (40, 5, false));
        let (_, estimated) = transcription_usage(&json!({"text": "hello there"}));
        assert!(estimated);
    }

    #[test]
    fn subtitle_timestamps_parse() {
        assert_eq!(timestamp_ms("00:01:02,500\n"), Some(62_500));
        assert_eq!(timestamp_ms(" 01:02.250 align:start"), Some(62_250));
        assert_eq!(timestamp_ms("garbage"), None);
    }

    #[test]
    fn image_counts_are_bounded() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(image_count(&body(json!({"n": 3}))), 3);
        assert_eq!(image_count(&body(json!({"n": "2"}))), 2);
        assert_eq!(image_count(&body(json!({"n": 500}))), MAX_IMAGES);
        assert_eq!(image_count(&body(json!({}))), 1);
    }
}

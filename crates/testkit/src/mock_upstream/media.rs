//! OpenAI's media endpoints, from OpenAI's API reference: `…/images/generations` and
//! `…/images/edits` (`{"created", "data": [{"b64_json"}], "usage"}` as gpt-image-1 answers),
//! `…/audio/speech` (audio bytes, streamed), `…/audio/transcriptions` (`json`,
//! `verbose_json`, `text`, `srt`, `vtt` by the form's `response_format`) and
//! `…/moderations`. Multipart requests are recorded raw; [`RecordedRequest::form_field`]
//! and [`RecordedRequest::form_file`] read them back.

use super::{Emit, RecordedRequest, Reply, ReplyKind, Shared, event_stream, json_response};
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The transcript the default transcription reply returns.
pub const DEFAULT_TRANSCRIPT: &str = "Hello from the mock transcriber.";
/// The audio duration the default transcription reply reports, in seconds.
pub const DEFAULT_AUDIO_SECONDS: f64 = 2.5;
/// A 1×1 transparent PNG, the default image.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

#[derive(Debug, Clone)]
pub(super) enum MediaReply {
    Images { png: Bytes, n: usize, usage: Option<(u64, u64)> },
    Speech { bytes: Bytes, chunks: usize, gap: Duration },
    Transcription { text: String, seconds: f64 },
    Moderation,
}

impl Reply {
    /// An images answer with `n` copies of `png` as `b64_json` and gpt-image-1's `usage`
    /// (50 input tokens, 200 output tokens per image).
    pub fn image(png: &[u8], n: usize) -> Self {
        let usage = Some((50, 200 * n as u64));
        Self::of(ReplyKind::Media(MediaReply::Images { png: Bytes::copy_from_slice(png), n, usage }))
    }

    /// Like [`Reply::image`] without `usage` (as dall-e answers).
    pub fn image_without_usage(png: &[u8], n: usize) -> Self {
        Self::of(ReplyKind::Media(MediaReply::Images { png: Bytes::copy_from_slice(png), n, usage: None }))
    }

    /// `audio/mpeg` bytes streamed in `chunks` pieces, `gap` before each after the first.
    pub fn speech(bytes: &[u8], chunks: usize, gap: Duration) -> Self {
        Self::of(ReplyKind::Media(MediaReply::Speech { bytes: Bytes::copy_from_slice(bytes), chunks, gap }))
    }

    /// A transcript of `text` for audio of `seconds`, in the format the form asked for:
    /// `json` reports `usage: {"type": "duration", "seconds"}`, `verbose_json` a `duration`,
    /// `text` the bare text, `srt`/`vtt` one cue ending at `seconds`.
    pub fn transcription(text: &str, seconds: f64) -> Self {
        Self::of(ReplyKind::Media(MediaReply::Transcription { text: text.to_owned(), seconds }))
    }

    /// A moderation result flagging nothing.
    pub fn moderation() -> Self {
        Self::of(ReplyKind::Media(MediaReply::Moderation))
    }
}

/// The default reply for a media path, if `path` is one.
pub(super) fn auto(path: &str) -> Option<ReplyKind> {
    let reply = if path.ends_with("/images/generations") || path.ends_with("/images/edits") {
        MediaReply::Images { png: Bytes::from_static(TINY_PNG), n: 1, usage: Some((50, 200)) }
    } else if path.ends_with("/audio/speech") {
        MediaReply::Speech { bytes: Bytes::from_static(b"ID3mock-audio-bytes"), chunks: 2, gap: Duration::ZERO }
    } else if path.ends_with("/audio/transcriptions") {
        MediaReply::Transcription { text: DEFAULT_TRANSCRIPT.to_owned(), seconds: DEFAULT_AUDIO_SECONDS }
    } else if path.ends_with("/moderations") {
        MediaReply::Moderation
    } else {
        return None;
    };
    Some(ReplyKind::Media(reply))
}

pub(super) fn build(shared: &Arc<Shared>, request: &RecordedRequest, reply: MediaReply) -> Response {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    match reply {
        MediaReply::Images { png, n, usage } => {
            let encoded = super::base64_encode(&png);
            let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": encoded})).collect();
            let mut body = json!({"created": created, "data": data});
            if let Some((input, output)) = usage {
                body["usage"] = json!({
                    "input_tokens": input,
                    "output_tokens": output,
                    "total_tokens": input + output,
                    "input_tokens_details": {"text_tokens": input, "image_tokens": 0}
                });
            }
            json_response(200, &body)
        }
        MediaReply::Speech { bytes, chunks, gap } => {
            let size = bytes.len().div_ceil(chunks.max(1)).max(1);
            let emits = bytes.chunks(size).map(|piece| Emit::Chunk(Bytes::copy_from_slice(piece))).collect();
            event_stream(shared, emits, gap, "audio/mpeg")
        }
        MediaReply::Transcription { text, seconds } => {
            let format = request.form_field("response_format").unwrap_or_else(|| "json".to_owned());
            match format.as_str() {
                "text" => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
                "srt" => plain(format!("1\n00:00:00,000 --> {}\n{text}\n\n", clock(seconds, ',')), "text/plain"),
                "vtt" => plain(format!("WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n", clock(seconds, '.')), "text/vtt"),
                "verbose_json" => json_response(
                    200,
                    &json!({"task": "transcribe", "language": "english", "duration": seconds, "text": text, "segments": []}),
                ),
                _ => json_response(200, &json!({"text": text, "usage": {"type": "duration", "seconds": seconds}})),
            }
        }
        MediaReply::Moderation => {
            let model = request.body.get("model").and_then(Value::as_str).unwrap_or("omni-moderation-latest");
            json_response(
                200,
                &json!({"id": "modr-mock", "model": model, "results": [{"flagged": false, "categories": {}, "category_scores": {}}]}),
            )
        }
    }
}

fn plain(text: String, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn clock(seconds: f64, separator: char) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    let (h, m, s, ms) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60, millis % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl RecordedRequest {
    /// Every part of a `multipart/form-data` body, in order; empty for other bodies.
    pub fn form_parts(&self) -> Vec<FormPart> {
        let Some(boundary) = self
            .header("content-type")
            .filter(|ct| ct.starts_with("multipart/form-data"))
            .and_then(|ct| ct.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
            .map(|b| format!("--{}", b.trim_matches('"')))
        else {
            return Vec::new();
        };
        let raw = &self.raw_body;
        let mut parts = Vec::new();
        let positions: Vec<usize> = raw
            .windows(boundary.len())
            .enumerate()
            .filter(|(_, w)| *w == boundary.as_bytes())
            .map(|(i, _)| i)
            .collect();
        for pair in positions.windows(2) {
            let section = &raw[pair[0] + boundary.len()..pair[1]];
            let section = section.strip_prefix(b"\r\n").unwrap_or(section);
            let section = section.strip_suffix(b"\r\n").unwrap_or(section);
            let Some(split) = section.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&section[..split]).into_owned();
            let body = &section[split + 4..];
            let mut part = FormPart { name: String::new(), filename: None, content_type: None, bytes: Bytes::new() };
            for line in head.lines() {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("content-disposition:") {
                    part.name = quoted(line, "name=").unwrap_or_default();
                    part.filename = quoted(line, "filename=");
                } else if let Some(value) = lower.strip_prefix("content-type:") {
                    part.content_type = Some(value.trim().to_owned());
                }
            }
            part.bytes = Bytes::copy_from_slice(body);
            parts.push(part);
        }
        parts
    }

    /// The text of the first form field `name` that is not a file.
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form_parts()
            .into_iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.bytes).into_owned())
    }

    /// The first file part named `name`.
    pub fn form_file(&self, name: &str) -> Option<FormPart> {
        self.form_parts().into_iter().find(|p| p.name == name && p.filename.is_some())
    }
}

/// The value of `key"…"` in a header line (`name="file"`), not matching inside another key.
fn quoted(line: &str, key: &str) -> Option<String> {
    let mut rest = line;
    while let Some(at) = rest.find(key) {
        let before = rest[..at].chars().last();
        let after = &rest[at + key.len()..];
        if before.is_none_or(|c| c == ' ' || c == ';') {
            let value = after.strip_prefix('"')?;
            return value.split_once('"').map(|(v, _)| v.to_owned());
        }
        rest = after;
    }
    None
}

//! OpenAI's media endpoints end to end against the mock upstream: images (generations,
//! edits), speech, transcriptions and moderations — multipart forwarding, speech streamed
//! as it arrives, generated images moved into the media vault, billing per image and per
//! second, errors in OpenAI's shape, and prompts kept out of call records.

use crate::helpers::*;
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veil_domain::{CallRecord, Money, User};
use veil_store::{CallRecordFilter, Store};
use veil_testkit::mock_upstream::{MockUpstream, Reply, TINY_PNG};
use veil_testkit::{TestApp, spawn_app};

/// An external OpenAI channel with priced media models, a self-hosted one, and an
/// Anthropic channel that cannot serve images. Multiplier 1.
fn config(upstream: &MockUpstream) -> String {
    format!(
        r#"
[[channel]]
name = "openai"
type = "openai"
base_url = "{url}"
models = ["img", "tts", "stt", "mod"]
model_mapping = {{ "img" = "gpt-image-1" }}
operator = "openai"
retention = "30d"
first_byte_timeout = "2s"
idle_timeout = "2s"

[[channel]]
name = "local"
type = "openai"
base_url = "{url}"
models = ["local-img"]
operator = "self"
retention = "none"

[[channel]]
name = "claude"
type = "anthropic"
base_url = "{url}"
api_key_env = "VEIL_MEDIA_TEST_UNSET_1"
models = ["claude-img"]

[[model]]
name = "img"
price = {{ input = 1, output = 2, per_image = 0.04 }}

[[model]]
name = "tts"
price = {{ input = 15 }}

[[model]]
name = "stt"
price = {{ per_second = 0.0001 }}

[[model]]
name = "mod"
free = true

[[model]]
name = "local-img"
free = true

[[model]]
name = "claude-img"
free = true
"#,
        url = upstream.base_url()
    )
}

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

async fn setup() -> (TestApp, MockUpstream, User, String) {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream)).await;
    let (user, key) = app.user_with_key("alice").await;
    app.credit(&user, "10").await;
    (app, upstream, user, key)
}

async fn records(app: TestApp, user: &User) -> Vec<CallRecord> {
    let store: Arc<dyn Store> = Arc::clone(&app.store);
    let _data = app.stop().await;
    store
        .list_call_records(&CallRecordFilter { user_id: Some(user.id), limit: 100, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.record)
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn post_form(app: &TestApp, path: &str, key: &str, form: reqwest::multipart::Form) -> reqwest::Response {
    reqwest::Client::new().post(app.url(path)).bearer_auth(key).multipart(form).send().await.unwrap()
}

fn file(bytes: &[u8], name: &str, mime: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()).mime_str(mime).unwrap()
}

#[tokio::test]
async fn generated_images_are_billed_per_image_kept_in_the_vault_and_the_prompt_stays_out_of_records() {
    let (app, upstream, user, key) = setup().await;
    upstream.push(Reply::image(TINY_PNG, 2));
    let canary = "CANARY-7f3e-purple-elephant";
    let body = json!({"model": "img", "prompt": format!("draw {canary}"), "n": 2, "user": "end-user-42"});
    let response = post(&app, "/v1/images/generations", &key, body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let answer: Value = response.json().await.unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for item in data {
        assert!(item.get("b64_json").is_none(), "{answer}");
        let url = item["url"].as_str().unwrap();
        assert!(url.starts_with(&app.url("/v1/media/")), "{url}");
        // The URL is the credential: no API key.
        let fetched = reqwest::get(url).await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.headers()["content-type"], "image/png");
        assert_eq!(fetched.bytes().await.unwrap().as_ref(), TINY_PNG);
    }

    // The upstream saw the prompt, its own model name, and no end-user id.
    let sent = upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/images/generations"));
    assert_eq!(sent.body["model"], "gpt-image-1");
    assert!(sent.body["prompt"].as_str().unwrap().contains(canary));
    assert!(sent.body.get("user").is_none());

    let records = records(app, &user).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.path, "/v1/images/generations");
    assert_eq!(record.status, 200);
    assert_eq!((record.usage.images, record.usage.input_tokens, record.usage.output_tokens), (2, 50, 400));
    assert!(!record.estimated);
    // 2 × 0.04 + 50 × 1/M + 400 × 2/M
    assert_eq!(record.cost, money("0.08085"));
    assert!(!format!("{records:?}").contains(canary));
}

#[tokio::test]
async fn images_asked_for_inline_come_back_inline_and_self_hosted_channels_answer_inline() {
    let (app, upstream, _user, key) = setup().await;
    upstream.push(Reply::image(TINY_PNG, 1));
    let body = json!({"model": "img", "prompt": "a cat", "response_format": "b64_json"});
    let answer: Value = post(&app, "/v1/images/generations", &key, body).await.json().await.unwrap();
    assert_eq!(answer["data"][0]["b64_json"], b64(TINY_PNG));
    assert!(answer["data"][0].get("url").is_none());

    upstream.push(Reply::image(TINY_PNG, 1));
    let body = json!({"model": "local-img", "prompt": "a cat"});
    let answer: Value = post(&app, "/v1/images/generations", &key, body).await.json().await.unwrap();
    assert_eq!(answer["data"][0]["b64_json"], b64(TINY_PNG));

    // Asked for a URL on the self-hosted channel: kept all the same.
    upstream.push(Reply::image(TINY_PNG, 1));
    let body = json!({"model": "local-img", "prompt": "a cat", "response_format": "url"});
    let answer: Value = post(&app, "/v1/images/generations", &key, body).await.json().await.unwrap();
    assert!(answer["data"][0]["url"].as_str().unwrap().contains("/v1/media/"), "{answer}");

    // An upstream URL is passed through untouched.
    let remote = json!({"created": 1, "data": [{"url": "https://cdn.example/x.png", "revised_prompt": "a cat"}]});
    upstream.push(Reply::raw(200, "application/json", remote.to_string()));
    let answer: Value = post(&app, "/v1/images/generations", &key, json!({"model": "img", "prompt": "a cat"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer, remote);
    app.stop().await;
}

#[tokio::test]
async fn image_edits_forward_the_form_fields_and_file_bytes() {
    let (app, upstream, user, key) = setup().await;
    upstream.push(Reply::image(TINY_PNG, 1));
    let mask = b"\x89PNG-mask-bytes".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("model", "img")
        .text("prompt", "add a hat")
        .text("n", "1")
        .text("user", "end-user-42")
        .part("image", file(TINY_PNG, "cat.png", "image/png"))
        .part("mask", file(&mask, "mask.png", "image/png"));
    let response = post_form(&app, "/v1/images/edits", &key, form).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["data"][0]["url"].is_string(), "{answer}");

    let sent = upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/images/edits"));
    assert!(sent.header("content-type").unwrap().starts_with("multipart/form-data; boundary="));
    assert_eq!(sent.form_field("model").as_deref(), Some("gpt-image-1"));
    assert_eq!(sent.form_field("prompt").as_deref(), Some("add a hat"));
    assert_eq!(sent.form_field("n").as_deref(), Some("1"));
    assert_eq!(sent.form_field("user"), None, "the end-user id is stripped");
    let image = sent.form_file("image").unwrap();
    assert_eq!((image.filename.as_deref(), image.content_type.as_deref()), (Some("cat.png"), Some("image/png")));
    assert_eq!(image.bytes.as_ref(), TINY_PNG);
    assert_eq!(sent.form_file("mask").unwrap().bytes.as_ref(), mask.as_slice());

    let records = records(app, &user).await;
    assert_eq!(records[0].path, "/v1/images/edits");
    assert_eq!(records[0].usage.images, 1);
}

#[tokio::test]
async fn speech_is_streamed_chunk_by_chunk_and_billed_by_its_input() {
    let (app, upstream, user, key) = setup().await;
    let audio: Vec<u8> = (0..3000_u32).map(|i| (i % 251) as u8).collect();
    upstream.push(Reply::speech(&audio, 3, Duration::from_millis(400)));
    let started = Instant::now();
    let body = json!({"model": "tts", "input": "Hello there, general reader.", "voice": "alloy"});
    let mut response = post(&app, "/v1/audio/speech", &key, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    let first = response.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut all = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    let done_at = started.elapsed();
    assert_eq!(all, audio);
    // The last chunk leaves the mock 800 ms after the first: the first reached the
    // client long before.
    assert!(first_at < Duration::from_millis(500), "first bytes after {first_at:?}");
    assert!(done_at >= Duration::from_millis(800), "done after {done_at:?}");

    let sent = upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/audio/speech"));
    assert_eq!(sent.body["voice"], "alloy");

    let records = records(app, &user).await;
    let record = &records[0];
    assert_eq!((record.path, record.status), ("/v1/audio/speech", 200));
    assert!(record.estimated);
    assert!(record.usage.input_tokens > 0);
    let expected = Money::from_nanos(i64::try_from(record.usage.input_tokens).unwrap() * 15_000);
    assert_eq!(record.cost, expected);
}

#[tokio::test]
async fn transcriptions_are_billed_by_duration_in_every_format() {
    let (app, upstream, user, key) = setup().await;
    let audio = b"RIFF-fake-wav-audio".to_vec();
    let form = |format: Option<&str>| {
        let form =
            reqwest::multipart::Form::new().text("model", "stt").part("file", file(&audio, "speech.wav", "audio/wav"));
        match format {
            Some(format) => form.text("response_format", format.to_owned()),
            None => form,
        }
    };

    upstream.push(Reply::transcription("hello world", 12.5));
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form(None)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["text"], "hello world");
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.form_file("file").unwrap().bytes.as_ref(), audio.as_slice());
    assert_eq!(sent.form_file("file").unwrap().filename.as_deref(), Some("speech.wav"));

    // `text` is asked for as `json` upstream (which reports the duration), then unwrapped.
    upstream.push(Reply::transcription("plain words", 3.0));
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form(Some("text"))).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), "plain words\n");
    assert_eq!(upstream.last_request().unwrap().form_field("response_format").as_deref(), Some("json"));

    upstream.push(Reply::transcription("long talk", 61.25));
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form(Some("verbose_json"))).await;
    assert_eq!(response.json::<Value>().await.unwrap()["duration"], 61.25);

    upstream.push(Reply::transcription("subtitled", 4.5));
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form(Some("srt"))).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("00:00:04,500"));

    let mut records = records(app, &user).await;
    records.reverse();
    let durations: Vec<(u64, bool)> = records.iter().map(|r| (r.usage.media_ms, r.estimated)).collect();
    assert_eq!(durations, vec![(12_500, false), (3_000, false), (61_250, false), (4_500, true)]);
    // 12.5 s × 0.0001 per second
    assert_eq!(records[0].cost, money("0.00125"));
    assert!(records.iter().all(|r| r.path == "/v1/audio/transcriptions"));
}

#[tokio::test]
async fn moderations_pass_through() {
    let (app, upstream, user, key) = setup().await;
    let response = post(&app, "/v1/moderations", &key, json!({"model": "mod", "input": "is this fine?"})).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["results"][0]["flagged"], false);
    assert!(upstream.last_request().unwrap().path.ends_with("/moderations"));
    let records = records(app, &user).await;
    assert_eq!((records[0].path, records[0].cost), ("/v1/moderations", Money::ZERO));
    assert!(records[0].usage.input_tokens > 0 && records[0].estimated);
}

#[tokio::test]
async fn media_errors_come_in_openai_shape() {
    let (app, upstream, _user, key) = setup().await;
    // No file.
    let form = reqwest::multipart::Form::new().text("model", "stt");
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "file");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // JSON where a form is expected.
    let response = post(&app, "/v1/audio/transcriptions", &key, json!({"model": "stt"})).await;
    assert_eq!(error_code(response, 400).await, "invalid_request_error");

    // No image to edit.
    let form = reqwest::multipart::Form::new().text("model", "img").text("prompt", "x");
    let response = post_form(&app, "/v1/images/edits", &key, form).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["param"], "image");

    // Unknown model, missing prompt.
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(error_code(response, 404).await, "model_not_found");
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "img"})).await;
    assert_eq!(error_code(response, 400).await, "invalid_request_error");
    let response = post(&app, "/v1/audio/speech", &key, json!({"model": "tts", "voice": "alloy"})).await;
    assert_eq!(error_code(response, 400).await, "invalid_request_error");

    // An Anthropic channel does not make images.
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "claude-img", "prompt": "x"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/images/generations"), "{body}");

    // An upstream refusal keeps its status and message.
    upstream.push(Reply::openai_error(
        400,
        "Your prompt was rejected by the safety system.",
        "content_policy_violation",
    ));
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "img", "prompt": "x"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("safety system"), "{body}");

    assert_eq!(upstream.request_count(), 1, "only the last call reached the upstream");
    app.stop().await;
}

#[tokio::test]
async fn the_hold_covers_n_images_and_a_bounded_transcription() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream)).await;
    let (user, key) = app.user_with_key("bob").await;
    // 0.1 covers one image (0.04 + tokens) but not three (0.12 + tokens), nor ten minutes
    // of audio at 0.0001 per second (0.06) once 0.05 of it is left.
    app.credit(&user, "0.1").await;
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "img", "prompt": "x", "n": 3})).await;
    assert_eq!(error_code(response, 429).await, "insufficient_quota");
    upstream.push(Reply::image(TINY_PNG, 1));
    let response = post(&app, "/v1/images/generations", &key, json!({"model": "img", "prompt": "x"})).await;
    assert_eq!(response.status(), 200);
    let form = reqwest::multipart::Form::new().text("model", "stt").part("file", file(b"RIFF", "a.wav", "audio/wav"));
    let response = post_form(&app, "/v1/audio/transcriptions", &key, form).await;
    assert_eq!(error_code(response, 429).await, "insufficient_quota");
    assert_eq!(upstream.request_count(), 1);
    app.stop().await;
}

//! Golden tests for every translation the relay performs, run through exactly the
//! compositions the server uses ([`veil_protocol::translate`]):
//!
//! - requests: client format X → OpenAI pivot ([`translate::client_request`]) → upstream
//!   type Y ([`translate::upstream_request`]);
//! - whole answers: upstream Y's answer → OpenAI ([`translate::upstream_response`]) →
//!   client X ([`translate::client_response`]);
//! - streams: upstream Y's events → OpenAI chunks ([`StreamTranslator::from_upstream`]) →
//!   client X's events ([`StreamTranslator::to_client`]).
//!
//! Inputs are the vendor fixtures under `tests/fixtures/<module>/`; outputs are insta
//! snapshots under `tests/snapshots/` (`golden__request__X_to_Y`,
//! `golden__response__Y_KIND_to_X`, `golden__stream__Y_KIND_to_X`). Answers from
//! upstreams that give no creation time get the current time from the encoders: every
//! integer (or digit run inside a string, e.g. a Responses id built from it) that falls
//! within the time the translation ran is replaced by `[now]`, so snapshots are stable.
//!
//! Besides the snapshots, every answer and stream pair checks invariants that must hold
//! whatever the snapshot says: the client's answer (parsed back with the client format's
//! own parser, or its stream decoded with the client format's own decoder) has the same
//! text, tool calls (id, name, arguments as JSON), stop reason and usage (input including
//! cache, cached, output) as the upstream's answer, and a stream ends with the client
//! format's terminal event exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use veil_protocol::translate::{self, RouteHints, StreamTranslator, UpstreamFormat};
use veil_protocol::{
    ChatResponse, ClientFormat, Part, SseEvent, SseParser, StopReason, StreamDecoder, StreamEvent, anthropic, bedrock,
    gemini, openai_chat, responses,
};

// ---------------------------------------------------------------------------------------
// Fixtures and names
// ---------------------------------------------------------------------------------------

/// The fixture directory (and snapshot name) of a client format.
fn client_name(format: ClientFormat) -> &'static str {
    match format {
        ClientFormat::OpenAiChat => "openai_chat",
        ClientFormat::OpenAiResponses => "responses",
        ClientFormat::Anthropic => "anthropic",
        ClientFormat::Gemini => "gemini",
    }
}

/// The fixture directory (and snapshot name) of an upstream type.
fn upstream_name(format: UpstreamFormat) -> &'static str {
    match format {
        UpstreamFormat::OpenAiChat => "openai_chat",
        UpstreamFormat::Anthropic => "anthropic",
        UpstreamFormat::Gemini => "gemini",
        UpstreamFormat::Bedrock => "bedrock",
    }
}

/// The two answers every upstream fixture set holds.
const KINDS: [&str; 2] = ["text", "tool"];

fn fixture(module: &str, name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(module).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn fixture_json(module: &str, name: &str) -> Value {
    serde_json::from_str(&fixture(module, name)).unwrap_or_else(|error| panic!("{module}/{name}: {error}"))
}

/// What the route gives besides the body: Gemini's model and stream flag live in the URL.
fn hints(client: ClientFormat) -> RouteHints<'static> {
    match client {
        ClientFormat::Gemini => RouteHints { model: Some("gemini-2.5-flash"), stream: false },
        _ => RouteHints::default(),
    }
}

// ---------------------------------------------------------------------------------------
// The current time, scrubbed
// ---------------------------------------------------------------------------------------

fn unix_now() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(elapsed.as_secs()).unwrap()
}

/// Runs `translate`, returning its result and the seconds during which it ran (any time
/// an encoder made up is within them).
fn timed<T>(translate: impl FnOnce() -> T) -> (T, RangeInclusive<i64>) {
    let before = unix_now();
    let result = translate();
    (result, before..=unix_now())
}

/// `text` with every run of digits that reads as a time within `now` replaced by `[now]`.
fn scrub_text(text: &str, now: &RangeInclusive<i64>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.parse::<i64>().is_ok_and(|number| now.contains(&number)) {
            out.push_str("[now]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// `value` with every integer within `now` replaced by `"[now]"` and strings scrubbed.
fn scrub_json(value: &mut Value, now: &RangeInclusive<i64>) {
    match value {
        Value::Number(number) if number.as_i64().is_some_and(|number| now.contains(&number)) => {
            *value = Value::String("[now]".to_owned());
        }
        Value::String(text) => *text = scrub_text(text, now),
        Value::Array(items) => items.iter_mut().for_each(|item| scrub_json(item, now)),
        Value::Object(map) => map.values_mut().for_each(|item| scrub_json(item, now)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

// ---------------------------------------------------------------------------------------
// What an answer says, for the invariants
// ---------------------------------------------------------------------------------------

/// The content of an answer that must survive every translation.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    text: String,
    reasoning: String,
    /// (id, name, arguments parsed as JSON) per tool call, in order.
    tool_calls: Vec<(String, String, Value)>,
    stop_reason: Option<StopReason>,
    /// (input including cache, cached, output).
    usage: Option<(u64, u64, u64)>,
}

fn arguments_value(arguments: &str) -> Value {
    if arguments.is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(arguments).unwrap_or_else(|error| panic!("tool arguments {arguments:?}: {error}"))
}

fn summarize_response(response: &ChatResponse) -> Summary {
    let mut summary = Summary {
        text: String::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        stop_reason: response.stop_reason,
        usage: response.usage.map(|usage| (usage.input_tokens, usage.cached_tokens, usage.output_tokens)),
    };
    for part in &response.content {
        match part {
            Part::Text { text } => summary.text.push_str(text),
            Part::Reasoning { text, .. } => summary.reasoning.push_str(text),
            Part::ToolCall { id, name, arguments } => {
                summary.tool_calls.push((id.clone(), name.clone(), arguments_value(arguments)));
            }
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    summary
}

fn summarize_events(events: &[StreamEvent]) -> Summary {
    let mut summary = Summary {
        text: String::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        stop_reason: None,
        usage: None,
    };
    let mut calls: Vec<(u32, String, String, String)> = Vec::new();
    let mut finishes = 0;
    for event in events {
        match event {
            StreamEvent::Start { .. } | StreamEvent::ReasoningSignature { .. } => {}
            StreamEvent::TextDelta { text } => summary.text.push_str(text),
            StreamEvent::ReasoningDelta { text } => summary.reasoning.push_str(text),
            StreamEvent::ToolCallStart { index, id, name } => {
                assert!(calls.iter().all(|call| call.0 != *index), "tool call {index} started twice");
                calls.push((*index, id.clone(), name.clone(), String::new()));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let call = calls.iter_mut().find(|call| call.0 == *index).expect("arguments for a call never started");
                call.3.push_str(arguments);
            }
            StreamEvent::Finish { stop_reason } => {
                finishes += 1;
                summary.stop_reason = Some(*stop_reason);
            }
            StreamEvent::Usage { usage } => {
                summary.usage = Some((usage.input_tokens, usage.cached_tokens, usage.output_tokens));
            }
        }
    }
    assert!(finishes <= 1, "the stream finished {finishes} times");
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })), "the stream does not begin with Start");
    summary.tool_calls =
        calls.into_iter().map(|(_, id, name, arguments)| (id, name, arguments_value(&arguments))).collect();
    summary
}

/// The upstream's own answer, read by its own codec: what every client must be told.
fn upstream_truth(upstream: UpstreamFormat, kind: &str) -> Summary {
    let body = fixture_json(upstream_name(upstream), &format!("response_{kind}.json"));
    let response = match upstream {
        UpstreamFormat::OpenAiChat => openai_chat::parse_response(&body),
        UpstreamFormat::Anthropic => anthropic::parse_response(&body),
        UpstreamFormat::Gemini => gemini::parse_response(&body),
        UpstreamFormat::Bedrock => bedrock::parse_response(&body),
    };
    summarize_response(&response.unwrap())
}

fn parse_client_response(client: ClientFormat, body: &Value) -> ChatResponse {
    match client {
        ClientFormat::OpenAiChat => openai_chat::parse_response(body),
        ClientFormat::OpenAiResponses => responses::parse_response(body),
        ClientFormat::Anthropic => anthropic::parse_response(body),
        ClientFormat::Gemini => gemini::parse_response(body),
    }
    .unwrap_or_else(|error| panic!("the {} answer does not parse back: {error}", client_name(client)))
}

fn client_decoder(client: ClientFormat) -> Box<dyn StreamDecoder> {
    match client {
        ClientFormat::OpenAiChat => Box::new(openai_chat::Decoder::new()),
        ClientFormat::OpenAiResponses => Box::new(responses::Decoder::new()),
        ClientFormat::Anthropic => Box::new(anthropic::Decoder::new()),
        ClientFormat::Gemini => Box::new(gemini::Decoder::new()),
    }
}

/// Snapshot settings for a pair (none special today; kept so a pair can carry a note).
fn described(_upstream: UpstreamFormat, _client: ClientFormat) -> insta::Settings {
    insta::Settings::clone_current()
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// The model a call is sent to, which Bedrock answers do not name.
const BEDROCK_MODEL: &str = "amazon.nova-pro-v1:0";

fn check_request(client: ClientFormat, upstream: UpstreamFormat) {
    let body = fixture_json(client_name(client), "request.json");
    let pivot = translate::client_request(client, &body, hints(client)).unwrap();
    let model = pivot["model"].as_str().unwrap().to_owned();
    let sent = translate::upstream_request(upstream, &pivot, &model).unwrap();
    insta::assert_json_snapshot!(format!("request__{}_to_{}", client_name(client), upstream_name(upstream)), sent);
}

// ---------------------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------------------

fn check_response(upstream: UpstreamFormat, kind: &str, client: ClientFormat) {
    let body = fixture_json(upstream_name(upstream), &format!("response_{kind}.json"));
    let (answer, now) = timed(|| {
        let pivot = translate::upstream_response(upstream, &body, BEDROCK_MODEL).unwrap();
        translate::client_response(client, &pivot).unwrap()
    });

    let told = summarize_response(&parse_client_response(client, &answer));
    assert_eq!(told, upstream_truth(upstream, kind), "the {} answer says something else", client_name(client));

    let mut snapshot = answer;
    scrub_json(&mut snapshot, &now);
    described(upstream, client).bind(|| {
        insta::assert_json_snapshot!(
            format!("response__{}_{kind}_to_{}", upstream_name(upstream), client_name(client)),
            snapshot
        );
    });
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// Runs `events` through `translator` as the relay does: event by event, finishing once
/// the source's normal end has been seen. Panics if it never is.
fn run(translator: &mut StreamTranslator, events: &[SseEvent]) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for event in events {
        translator.push(event, &mut out).unwrap();
        if translator.is_complete() {
            translator.finish(&mut out);
            return out;
        }
    }
    assert!(translator.is_complete(), "the stream ended before the source's normal end");
    translator.finish(&mut out);
    out
}

fn parse_sse(text: &str) -> Vec<SseEvent> {
    SseParser::new().push(text.as_bytes()).unwrap()
}

/// Asserts that `events` end with the client format's terminal event, sent exactly once.
fn assert_single_terminal(client: ClientFormat, events: &[SseEvent]) {
    let is_terminal = |event: &SseEvent| match client {
        ClientFormat::OpenAiChat => event.is_done(),
        ClientFormat::Anthropic => event.event.as_deref() == Some("message_stop"),
        ClientFormat::OpenAiResponses => matches!(
            event.event.as_deref(),
            Some("response.completed" | "response.incomplete" | "response.failed" | "error")
        ),
        // Gemini has no end marker: the chunk with the `finishReason` is the last.
        ClientFormat::Gemini => serde_json::from_str::<Value>(&event.data)
            .ok()
            .and_then(|chunk| chunk.pointer("/candidates/0/finishReason").cloned())
            .is_some(),
    };
    let terminals = events.iter().filter(|event| is_terminal(event)).count();
    assert_eq!(terminals, 1, "{} terminal events", client_name(client));
    assert!(events.last().is_some_and(is_terminal), "the stream does not end with its terminal event");
}

/// Per-format checks of the wire shape beyond the terminal event.
fn assert_wire_shape(client: ClientFormat, events: &[SseEvent]) {
    match client {
        ClientFormat::OpenAiResponses => {
            // Every event is named after its `type` and numbered from 0 without gaps.
            for (at, event) in events.iter().enumerate() {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.event.as_deref(), data["type"].as_str(), "event {at} is named after another type");
                assert_eq!(data["sequence_number"].as_u64(), Some(at as u64), "event {at} is misnumbered");
            }
        }
        ClientFormat::Anthropic => {
            // Blocks open in index order, one at a time, and every block is closed.
            let mut open: Option<u64> = None;
            let mut next = 0;
            for event in events {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.event.as_deref(), data["type"].as_str());
                let index = data["index"].as_u64();
                match data["type"].as_str() {
                    Some("content_block_start") => {
                        assert_eq!(open, None, "a block opened while another is open");
                        assert_eq!(index, Some(next), "blocks out of order");
                        open = index;
                        next += 1;
                    }
                    Some("content_block_delta") => assert!(index.is_some_and(|index| index < next)),
                    Some("content_block_stop") => {
                        assert_eq!(open, index, "a block closed that is not open");
                        open = None;
                    }
                    Some("message_delta" | "message_stop") => assert_eq!(open, None, "a block left open"),
                    _ => {}
                }
            }
            assert_eq!(events.first().and_then(|event| event.event.as_deref()), Some("message_start"));
        }
        ClientFormat::OpenAiChat | ClientFormat::Gemini => {
            assert!(events.iter().all(|event| event.event.is_none()), "unnamed events only");
        }
    }
}

fn check_stream(upstream: UpstreamFormat, kind: &str, client: ClientFormat) {
    let source = parse_sse(&fixture(upstream_name(upstream), &format!("stream_{kind}.sse")));
    let (client_events, now) = timed(|| {
        let chunks = run(&mut StreamTranslator::from_upstream(upstream, BEDROCK_MODEL), &source);
        run(&mut StreamTranslator::to_client(client), &chunks)
    });
    let wire: String =
        client_events.iter().map(|event| String::from_utf8(event.encode().to_vec()).unwrap()).collect::<String>();

    // The client reads the same answer back from the bytes it receives.
    let received = parse_sse(&wire);
    assert_eq!(received, client_events, "the client stream does not survive its wire form");
    assert_single_terminal(client, &received);
    assert_wire_shape(client, &received);
    let mut decoder = client_decoder(client);
    let mut decoded = Vec::new();
    for event in &received {
        decoder.decode(event, &mut decoded).unwrap();
    }
    assert!(decoder.is_complete(), "the {} stream is incomplete for its own decoder", client_name(client));
    let told = summarize_events(&decoded);
    assert_eq!(told, upstream_truth(upstream, kind), "the {} stream says something else", client_name(client));

    described(upstream, client).bind(|| {
        insta::assert_snapshot!(
            format!("stream__{}_{kind}_to_{}", upstream_name(upstream), client_name(client)),
            scrub_text(&wire, &now)
        );
    });
}

// ---------------------------------------------------------------------------------------
// Every pair
// ---------------------------------------------------------------------------------------

/// The request, both whole answers and both streams of one (client, upstream) pair.
fn check_pair(client: ClientFormat, upstream: UpstreamFormat) {
    check_request(client, upstream);
    for kind in KINDS {
        check_response(upstream, kind, client);
        check_stream(upstream, kind, client);
    }
}

macro_rules! pairs {
    ($($name:ident: $client:ident => $upstream:ident;)*) => {
        $(
            #[test]
            fn $name() {
                check_pair(ClientFormat::$client, UpstreamFormat::$upstream);
            }
        )*
    };
}

pairs! {
    openai_chat_to_openai_chat: OpenAiChat => OpenAiChat;
    openai_chat_to_anthropic: OpenAiChat => Anthropic;
    openai_chat_to_gemini: OpenAiChat => Gemini;
    openai_chat_to_bedrock: OpenAiChat => Bedrock;
    responses_to_openai_chat: OpenAiResponses => OpenAiChat;
    responses_to_anthropic: OpenAiResponses => Anthropic;
    responses_to_gemini: OpenAiResponses => Gemini;
    responses_to_bedrock: OpenAiResponses => Bedrock;
    anthropic_to_openai_chat: Anthropic => OpenAiChat;
    anthropic_to_anthropic: Anthropic => Anthropic;
    anthropic_to_gemini: Anthropic => Gemini;
    anthropic_to_bedrock: Anthropic => Bedrock;
    gemini_to_openai_chat: Gemini => OpenAiChat;
    gemini_to_anthropic: Gemini => Anthropic;
    gemini_to_gemini: Gemini => Gemini;
    gemini_to_bedrock: Gemini => Bedrock;
}

/// Every upstream fixture's stream tells the same answer as its whole answer, read by the
/// upstream's own decoder (so a failing pair above is the translation's fault).
#[test]
fn upstream_streams_match_their_whole_answers() {
    for upstream in
        [UpstreamFormat::OpenAiChat, UpstreamFormat::Anthropic, UpstreamFormat::Gemini, UpstreamFormat::Bedrock]
    {
        for kind in KINDS {
            let mut decoder: Box<dyn StreamDecoder> = match upstream {
                UpstreamFormat::OpenAiChat => Box::new(openai_chat::Decoder::new()),
                UpstreamFormat::Anthropic => Box::new(anthropic::Decoder::new()),
                UpstreamFormat::Gemini => Box::new(gemini::Decoder::new()),
                UpstreamFormat::Bedrock => Box::new(bedrock::Decoder::new()),
            };
            let mut events = Vec::new();
            for event in parse_sse(&fixture(upstream_name(upstream), &format!("stream_{kind}.sse"))) {
                decoder.decode(&event, &mut events).unwrap();
            }
            assert!(decoder.is_complete(), "{}/stream_{kind}.sse is incomplete", upstream_name(upstream));
            assert_eq!(summarize_events(&events), upstream_truth(upstream, kind), "{}/{kind}", upstream_name(upstream));
        }
    }
}

#[test]
fn scrubbing_replaces_only_the_current_time() {
    let now = 1_700_000_000..=1_700_000_002;
    assert_eq!(scrub_text("resp_1700000001_0 1741570283 17000000010", &now), "resp_[now]_0 1741570283 17000000010");
    let mut value = serde_json::json!({"created": 1_700_000_002, "n": 7, "id": "msg_1700000000"});
    scrub_json(&mut value, &now);
    assert_eq!(value, serde_json::json!({"created": "[now]", "n": 7, "id": "msg_[now]"}));
}

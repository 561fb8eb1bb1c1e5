//! The OpenAI Chat codec is the relay's pivot, so it must give back exactly what it was
//! given: requests, answers and streams, for everything OpenAI Chat can express. Also
//! checks that the vendor fixtures under `tests/fixtures/openai_chat/` decode as expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod strategies;

use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;
use veil_protocol::canonical::TokenUsage;
use veil_protocol::openai_chat::{
    Decoder, Encoder, encode_request, encode_response, parse_request, parse_request_map, parse_response,
};
use veil_protocol::{
    ChatRequest, ImageSource, Part, Role, SseEvent, SseParser, StopReason, StreamDecoder, StreamEncoder, StreamEvent,
};

/// Encodes `events` as an OpenAI stream, writes it as bytes, reads it back in chunks of
/// `split` bytes and decodes it.
fn through_the_wire(events: &[StreamEvent], split: usize) -> (Vec<StreamEvent>, bool) {
    let mut encoder = Encoder::new(true);
    let mut wire = Vec::new();
    for event in events {
        encoder.encode(event.clone(), &mut wire);
    }
    encoder.finish(&mut wire);
    let bytes: Vec<u8> = wire.iter().flat_map(|event| event.encode().to_vec()).collect();
    decode_bytes(&bytes, split)
}

fn decode_bytes(bytes: &[u8], split: usize) -> (Vec<StreamEvent>, bool) {
    let mut parser = SseParser::new();
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        for event in parser.push(chunk).unwrap() {
            decoder.decode(&event, &mut decoded).unwrap();
        }
    }
    (decoded, decoder.is_complete())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(request in strategies::chat_request()) {
        let encoded = encode_request(&request);
        prop_assert_eq!(&parse_request_map(&encoded).unwrap(), &request);
        // And through JSON text, as the body travels.
        let text = Value::Object(encoded).to_string();
        prop_assert_eq!(&parse_request(&serde_json::from_str(&text).unwrap()).unwrap(), &request);
    }

    #[test]
    fn re_encoding_a_parsed_request_is_stable(request in strategies::chat_request()) {
        let once = encode_request(&request);
        let twice = encode_request(&parse_request_map(&once).unwrap());
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn responses_round_trip(response in strategies::chat_response()) {
        let encoded = encode_response(&response);
        prop_assert_eq!(&parse_response(&encoded).unwrap(), &response);
        let text = encoded.to_string();
        prop_assert_eq!(&parse_response(&serde_json::from_str(&text).unwrap()).unwrap(), &response);
    }

    #[test]
    fn streams_round_trip((_, events) in strategies::response_stream(), split in 1usize..64) {
        let (decoded, complete) = through_the_wire(&events, split);
        prop_assert!(complete);
        prop_assert_eq!(decoded, events);
    }
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai_chat").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

const CALL_ID: &str = "call_Wb3Lgg2bH6EsdNqvLrn6Xk9Z";
const ARGUMENTS: &str = r#"{"location":"Madison, WI","unit":"celsius"}"#;

#[test]
fn fixture_request_parses() {
    let request = parse_request(&fixture_json("request.json")).unwrap();
    assert_eq!(request.model, "gpt-4o");
    assert_eq!(request.system, vec!["You are a helpful travel assistant. Answer concisely.".to_owned()]);
    let roles: Vec<Role> = request.messages.iter().map(|message| message.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::User, Role::Assistant, Role::User]);
    assert!(matches!(
        &request.messages[0].content[1],
        Part::Image { source: ImageSource::Url { url } } if url.ends_with("nature-boardwalk.jpg")
    ));
    assert_eq!(
        request.messages[3].content,
        vec![Part::ToolCall { id: CALL_ID.into(), name: "get_weather".into(), arguments: ARGUMENTS.into() }]
    );
    assert_eq!(
        request.messages[4].content,
        vec![Part::ToolResult {
            call_id: CALL_ID.into(),
            content: vec![Part::Text { text: r#"{"temperature":18,"condition":"partly cloudy"}"#.into() }],
            is_error: false,
        }]
    );
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tools[0].parameters["required"][0], "location");
    assert_eq!(request.max_output_tokens, Some(512));
    assert_eq!(request.temperature, Some(0.7));
    assert_eq!(request.user.as_deref(), Some("user-1234"));
    // The pivot body says the same thing (as `max_tokens`, image `detail` dropped).
    let pivot = encode_request(&request);
    assert_eq!(pivot["max_tokens"], 512);
    assert_eq!(parse_request_map(&pivot).unwrap(), request);
}

fn usage(input: u64, cached: u64, output: u64) -> TokenUsage {
    TokenUsage { input_tokens: input, cached_tokens: cached, output_tokens: output, ..TokenUsage::default() }
}

const ANSWER: &str = "It's 18°C and partly cloudy in Madison right now.";

#[test]
fn fixture_responses_parse() {
    let text = parse_response(&fixture_json("response_text.json")).unwrap();
    assert_eq!(text.id, "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG");
    assert_eq!(text.model, "gpt-4o-2024-08-06");
    assert_eq!(text.created, Some(1_741_570_283));
    assert_eq!(text.content, vec![Part::Text { text: ANSWER.into() }]);
    assert_eq!(text.stop_reason, Some(StopReason::EndTurn));
    assert_eq!(text.usage, Some(usage(1117, 0, 15)));

    let tool = parse_response(&fixture_json("response_tool.json")).unwrap();
    assert_eq!(
        tool.content,
        vec![Part::ToolCall { id: CALL_ID.into(), name: "get_weather".into(), arguments: ARGUMENTS.into() }]
    );
    assert_eq!(tool.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(tool.usage, Some(usage(2006, 1920, 21)));
}

#[test]
fn fixture_streams_decode_to_the_same_answers() {
    let (events, complete) = decode_bytes(fixture("stream_text.sse").as_bytes(), 4096);
    assert!(complete);
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into(),
            model: "gpt-4o-2024-08-06".into(),
            created: Some(1_741_570_283)
        }
    );
    let text: String = events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, ANSWER);
    let tail = &events[events.len() - 2..];
    assert_eq!(
        tail,
        [StreamEvent::Finish { stop_reason: StopReason::EndTurn }, StreamEvent::Usage { usage: usage(1117, 0, 15) }]
    );

    let (events, complete) = decode_bytes(fixture("stream_tool.sse").as_bytes(), 7);
    assert!(complete);
    assert_eq!(events[1], StreamEvent::ToolCallStart { index: 0, id: CALL_ID.into(), name: "get_weather".into() });
    let arguments: String = events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ToolCallDelta { index: 0, arguments } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(arguments, ARGUMENTS);
    let tail = &events[events.len() - 2..];
    assert_eq!(
        tail,
        [StreamEvent::Finish { stop_reason: StopReason::ToolUse }, StreamEvent::Usage { usage: usage(2006, 1920, 21) }]
    );
    // Every event is unnamed, as OpenAI sends them.
    let mut parser = SseParser::new();
    let wire = parser.push(fixture("stream_tool.sse").as_bytes()).unwrap();
    assert!(wire.iter().all(|event: &SseEvent| event.event.is_none()));
    assert!(wire.last().unwrap().is_done());
}

#[test]
fn a_stop_sequence_reads_back_as_the_end_of_the_turn() {
    let request = ChatRequest { model: "m".into(), ..ChatRequest::default() };
    assert!(parse_request_map(&encode_request(&request)).is_err(), "no messages is not a valid request");
    let events = [
        StreamEvent::Start { id: "c".into(), model: "m".into(), created: Some(1) },
        StreamEvent::Finish { stop_reason: StopReason::StopSequence },
    ];
    let (decoded, _) = through_the_wire(&events, 16);
    assert_eq!(decoded[1], StreamEvent::Finish { stop_reason: StopReason::EndTurn });
}

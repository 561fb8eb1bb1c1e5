//! Anthropic Messages wire format (`POST /v1/messages`), from Anthropic's API reference:
//! a `message` object, or the streaming event sequence `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`,
//! `message_delta`, `message_stop`, each written as `event: NAME\ndata: JSON\n\n`.
//!
//! Usage: the mock's prompt count includes cached tokens (OpenAI's convention), while
//! Anthropic's `input_tokens` excludes cache reads, so input is `prompt - cached` and
//! `cache_read_input_tokens` is `cached`.

use super::{Answer, CallInfo, Emit, MockUsage, Output, StreamEnd, parsed_arguments};
use bytes::Bytes;
use serde_json::{Value, json};

/// Anthropic's error body.
pub(super) fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

fn usage(usage: MockUsage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": output_tokens
    })
}

fn message_id(call: &CallInfo) -> String {
    format!("msg_mock{:020}", call.serial)
}

fn tool_use_id(call: &CallInfo) -> String {
    format!("toolu_mock{:014}", call.serial)
}

fn stop_reason(output: &Output) -> &'static str {
    match output {
        Output::Text(_) => "end_turn",
        Output::Tool { .. } => "tool_use",
    }
}

/// The whole `message` answer.
pub(super) fn message(call: &CallInfo, answer: &Answer) -> Value {
    let content = match &answer.output {
        Output::Text(pieces) => json!([{"type": "text", "text": pieces.concat()}]),
        Output::Tool { name, arguments } => {
            json!([{"type": "tool_use", "id": tool_use_id(call), "name": name, "input": parsed_arguments(arguments)}])
        }
    };
    json!({
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": stop_reason(&answer.output),
        "stop_sequence": null,
        "usage": usage(answer.usage, answer.usage.completion_tokens)
    })
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn emit(name: &str, data: &Value) -> Emit {
    Emit::Chunk(Bytes::from(event(name, data)))
}

/// The streaming event sequence. The opening events (`message_start`,
/// `content_block_start`, `ping`) go out as one write, so the scripted gap falls before
/// each content delta as it does for OpenAI's chunks.
pub(super) fn events(call: &CallInfo, answer: &Answer) -> Vec<Emit> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": message_id(call),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            // The real API reports a provisional output count of 1 here; the final,
            // cumulative count comes in `message_delta`.
            "usage": usage(answer.usage, 1)
        }
    });
    // A tool_use block opens with empty input; the arguments follow as JSON fragments.
    let block = match &answer.output {
        Output::Text(_) => json!({"type": "text", "text": ""}),
        Output::Tool { name, .. } => json!({"type": "tool_use", "id": tool_use_id(call), "name": name, "input": {}}),
    };
    let opening = [
        event("message_start", &start),
        event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": block})),
        event("ping", &json!({"type": "ping"})),
    ];
    let mut events = vec![Emit::Chunk(Bytes::from(opening.concat()))];
    let pieces = answer.pieces();
    for piece in &pieces[..answer.sent(pieces.len())] {
        let delta = match &answer.output {
            Output::Text(_) => json!({"type": "text_delta", "text": piece}),
            Output::Tool { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
        };
        events.push(emit("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": delta})));
    }
    match answer.end {
        StreamEnd::DropAfter(_) => {
            events.push(Emit::Cut);
            return events;
        }
        StreamEnd::Overloaded => {
            events.push(emit("error", &error_body("overloaded_error", "Overloaded")));
            return events;
        }
        StreamEnd::Done | StreamEnd::WithoutDone => {}
    }
    events.push(emit("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(&answer.output), "stop_sequence": null},
        "usage": {"output_tokens": answer.usage.completion_tokens}
    });
    events.push(emit("message_delta", &delta));
    if answer.end == StreamEnd::Done {
        events.push(emit("message_stop", &json!({"type": "message_stop"})));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallInfo {
        CallInfo { serial: 7, created: 0, model: "claude-x".to_owned(), include_usage: false }
    }

    fn text(end: StreamEnd) -> Answer {
        let usage = MockUsage { prompt_tokens: 30, completion_tokens: 2, cached_tokens: 12 };
        Answer { output: Output::Text(vec!["Hel".to_owned(), "lo".to_owned()]), usage, end }
    }

    /// `(event name, data)` of every event in the written stream.
    fn parse(events: &[Emit]) -> (Vec<(String, Value)>, bool) {
        let mut text = String::new();
        let mut cut = false;
        for emit in events {
            match emit {
                Emit::Chunk(bytes) => text.push_str(std::str::from_utf8(bytes).unwrap()),
                Emit::Cut => cut = true,
            }
        }
        let parsed = text
            .split_terminator("\n\n")
            .map(|block| {
                let (name, data) = block.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_owned();
                let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name, "the data's type repeats the event name");
                (name, data)
            })
            .collect();
        (parsed, cut)
    }

    fn names(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn stream_follows_the_documented_event_order() {
        let (events, cut) = parse(&super::events(&call(), &text(StreamEnd::Done)));
        assert!(!cut);
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start = &events[0].1["message"];
        assert_eq!(start["id"], "msg_mock00000000000000000007");
        assert_eq!(start["model"], "claude-x");
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["usage"]["input_tokens"], 18);
        assert_eq!(start["usage"]["cache_read_input_tokens"], 12);
        assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(events[3].1["delta"], json!({"type": "text_delta", "text": "Hel"}));
        assert_eq!(events[6].1["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
        assert_eq!(events[6].1["usage"], json!({"output_tokens": 2}));
    }

    #[test]
    fn drops_overloads_and_missing_stops() {
        let (events, cut) = parse(&super::events(&call(), &text(StreamEnd::DropAfter(1))));
        assert!(cut);
        assert_eq!(names(&events), ["message_start", "content_block_start", "ping", "content_block_delta"]);

        let (events, cut) = parse(&super::events(&call(), &text(StreamEnd::Overloaded)));
        assert!(!cut);
        assert_eq!(names(&events)[3..], ["content_block_delta", "content_block_delta", "error"]);
        assert_eq!(events[5].1["error"], json!({"type": "overloaded_error", "message": "Overloaded"}));

        let (events, _) = parse(&super::events(&call(), &text(StreamEnd::WithoutDone)));
        assert_eq!(names(&events).last(), Some(&"message_delta"));
    }

    #[test]
    fn tool_use_blocks() {
        let usage = MockUsage { prompt_tokens: 5, completion_tokens: 3, cached_tokens: 0 };
        let output =
            Output::Tool { name: "get_weather".to_owned(), arguments: r#"{"city":"Paris","unit":"c"}"#.to_owned() };
        let answer = Answer { output, usage, end: StreamEnd::Done };

        let whole = message(&call(), &answer);
        assert_eq!(whole["stop_reason"], "tool_use");
        assert_eq!(whole["content"][0]["type"], "tool_use");
        assert_eq!(whole["content"][0]["name"], "get_weather");
        assert_eq!(whole["content"][0]["input"], json!({"city": "Paris", "unit": "c"}));

        let (events, _) = parse(&super::events(&call(), &answer));
        let block = &events[1].1["content_block"];
        assert_eq!(block["type"], "tool_use");
        assert_eq!(block["id"], whole["content"][0]["id"]);
        assert_eq!(block["input"], json!({}));
        let arguments: String = events
            .iter()
            .filter(|(name, _)| name == "content_block_delta")
            .map(|(_, data)| {
                assert_eq!(data["delta"]["type"], "input_json_delta");
                data["delta"]["partial_json"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(arguments, r#"{"city":"Paris","unit":"c"}"#);
        let delta = events.iter().find(|(name, _)| name == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn whole_message_shape() {
        let body = message(&call(), &text(StreamEnd::Done));
        assert_eq!(
            body,
            json!({
                "id": "msg_mock00000000000000000007",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [{"type": "text", "text": "Hello"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 18, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 12, "output_tokens": 2}
            })
        );
    }
}

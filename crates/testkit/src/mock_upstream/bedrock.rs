//! Bedrock Converse wire format (`/model/{modelId}/converse` and `/converse-stream`),
//! from the AWS API reference and the AWS event-stream encoding.
//!
//! A stream is `application/vnd.amazon.eventstream`: binary messages, each a 12-byte
//! prelude (total length and headers length, u32 big-endian, then the CRC32 of those
//! 8 bytes), the headers, the payload, and the CRC32 of everything before it. Every
//! header is a one-byte name length, the name, a type byte (7 = string), a u16
//! big-endian value length and the value. An event's payload is the JSON of the event
//! member alone (the `:event-type` header names it), and real Bedrock pads it with a
//! `p` field of varying length so message sizes do not leak token lengths; parsers must
//! ignore it, so the mock sends one too.
//!
//! Usage: Bedrock's `inputTokens` excludes cache reads (reported as
//! `cacheReadInputTokens`), while `totalTokens` counts everything, so the mock's prompt
//! count (which includes cached tokens) maps to `prompt - cached` and `cached`.

use super::{Answer, Emit, MockUsage, Output, StreamEnd, parsed_arguments};
use bytes::Bytes;
use serde_json::{Value, json};

/// The content type of an event stream.
pub(super) const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
/// What the mock reports as the model's latency; fixed so answers are reproducible.
const LATENCY_MS: u64 = 42;
/// The characters real padding values are cut from.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Header value type: UTF-8 string.
const STRING_HEADER: u8 = 7;

/// The `x-amzn-errortype` header value for `error_type`, in the `Type:namespace` form
/// Bedrock's REST-JSON errors use.
pub(super) fn error_type_header(error_type: &str) -> String {
    format!("{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/")
}

/// One event-stream message with string headers.
fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        // The format caps names at 255 bytes and values at 65535; longer ones are cut
        // so the frame stays well formed.
        let name = &name.as_bytes()[..name.len().min(usize::from(u8::MAX))];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        encoded_headers.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        encoded_headers.extend_from_slice(name);
        encoded_headers.push(STRING_HEADER);
        encoded_headers.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        encoded_headers.extend_from_slice(value);
    }
    let total = 12 + encoded_headers.len() + payload.len() + 4;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&u32::try_from(encoded_headers.len()).unwrap_or(u32::MAX).to_be_bytes());
    let prelude_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(&encoded_headers);
    frame.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&message_crc.to_be_bytes());
    Bytes::from(frame)
}

/// An event-stream `event` message: `:event-type` `event_type`, JSON `payload` as given
/// (no padding added), for tests that script Bedrock streams by hand.
pub fn event_frame(event_type: &str, payload: &Value) -> Bytes {
    let headers = [(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")];
    message(&headers, payload.to_string().as_bytes())
}

/// An event-stream `exception` message, as Bedrock sends a mid-stream failure:
/// `:exception-type` e.g. `throttlingException`, payload `{"message": message}`.
pub fn exception_frame(exception_type: &str, message_text: &str) -> Bytes {
    let headers =
        [(":exception-type", exception_type), (":content-type", "application/json"), (":message-type", "exception")];
    message(&headers, json!({"message": message_text}).to_string().as_bytes())
}

/// `payload` with a `p` padding field whose length varies with `seed`.
fn padded(mut payload: Value, seed: usize) -> Value {
    let length = 1 + (seed * 7 + 3) % PADDING.len();
    payload["p"] = json!(&PADDING[..length]);
    payload
}

fn usage(usage: MockUsage) -> Value {
    let mut body = json!({
        "inputTokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "outputTokens": usage.completion_tokens,
        "totalTokens": usage.prompt_tokens + usage.completion_tokens
    });
    if usage.cached_tokens > 0 {
        body["cacheReadInputTokens"] = json!(usage.cached_tokens);
    }
    body
}

fn stop_reason(output: &Output) -> &'static str {
    match output {
        Output::Text(_) => "end_turn",
        Output::Tool { .. } => "tool_use",
    }
}

fn tool_use_id() -> &'static str {
    "tooluse_mock0000000000000000"
}

/// The whole Converse answer.
pub(super) fn converse(answer: &Answer) -> Value {
    let content = match &answer.output {
        Output::Text(pieces) => json!([{"text": pieces.concat()}]),
        Output::Tool { name, arguments } => {
            json!([{"toolUse": {"toolUseId": tool_use_id(), "name": name, "input": parsed_arguments(arguments)}}])
        }
    };
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(&answer.output),
        "usage": usage(answer.usage),
        "metrics": {"latencyMs": LATENCY_MS}
    })
}

/// The ConverseStream event sequence: `messageStart`, (`contentBlockStart` for a tool
/// call), `contentBlockDelta` per piece, `contentBlockStop`, `messageStop`, `metadata`.
/// Text blocks have no `contentBlockStart`, as on the real service.
pub(super) fn events(answer: &Answer) -> Vec<Emit> {
    let mut seed = 0;
    let mut event = |event_type: &str, payload: Value| {
        seed += 1;
        Emit::Chunk(event_frame(event_type, &padded(payload, seed)))
    };
    let mut events = vec![event("messageStart", json!({"role": "assistant"}))];
    if let Output::Tool { name, .. } = &answer.output {
        let start = json!({"start": {"toolUse": {"toolUseId": tool_use_id(), "name": name}}, "contentBlockIndex": 0});
        events.push(event("contentBlockStart", start));
    }
    let pieces = answer.pieces();
    for piece in &pieces[..answer.sent(pieces.len())] {
        let delta = match &answer.output {
            Output::Text(_) => json!({"text": piece}),
            Output::Tool { .. } => json!({"toolUse": {"input": piece}}),
        };
        events.push(event("contentBlockDelta", json!({"delta": delta, "contentBlockIndex": 0})));
    }
    match answer.end {
        StreamEnd::DropAfter(_) => {
            events.push(Emit::Cut);
            return events;
        }
        StreamEnd::Overloaded => {
            let message = "Bedrock is unable to process your request.";
            events.push(Emit::Chunk(exception_frame("serviceUnavailableException", message)));
            return events;
        }
        StreamEnd::Done | StreamEnd::WithoutDone => {}
    }
    events.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    events.push(event("messageStop", json!({"stopReason": stop_reason(&answer.output)})));
    events.push(event("metadata", json!({"usage": usage(answer.usage), "metrics": {"latencyMs": LATENCY_MS}})));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One decoded message: headers and JSON payload, after checking both CRCs.
    fn decode(frame: &[u8]) -> (Vec<(String, String)>, Value, usize) {
        let total = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        let headers_len = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(u32::from_be_bytes(frame[8..12].try_into().unwrap()), crc32fast::hash(&frame[..8]), "prelude CRC");
        assert_eq!(
            u32::from_be_bytes(frame[total - 4..total].try_into().unwrap()),
            crc32fast::hash(&frame[..total - 4]),
            "message CRC"
        );
        let mut headers = Vec::new();
        let mut at = 12;
        while at < 12 + headers_len {
            let name_len = usize::from(frame[at]);
            let name = std::str::from_utf8(&frame[at + 1..at + 1 + name_len]).unwrap().to_owned();
            at += 1 + name_len;
            assert_eq!(frame[at], STRING_HEADER);
            let value_len = usize::from(u16::from_be_bytes([frame[at + 1], frame[at + 2]]));
            let value = std::str::from_utf8(&frame[at + 3..at + 3 + value_len]).unwrap().to_owned();
            at += 3 + value_len;
            headers.push((name, value));
        }
        let payload = serde_json::from_slice(&frame[12 + headers_len..total - 4]).unwrap();
        (headers, payload, total)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).unwrap()
    }

    /// `(event type, payload)` of every frame, and whether the stream was cut.
    fn decode_all(events: &[Emit]) -> (Vec<(String, Value)>, bool) {
        let mut decoded = Vec::new();
        let mut cut = false;
        for emit in events {
            match emit {
                Emit::Chunk(bytes) => {
                    let (headers, payload, total) = decode(bytes);
                    assert_eq!(total, bytes.len(), "one message per write");
                    let kind =
                        if header(&headers, ":message-type") == "event" { ":event-type" } else { ":exception-type" };
                    assert_eq!(header(&headers, ":content-type"), "application/json");
                    decoded.push((header(&headers, kind).to_owned(), payload));
                }
                Emit::Cut => cut = true,
            }
        }
        (decoded, cut)
    }

    fn text(end: StreamEnd) -> Answer {
        let usage = MockUsage { prompt_tokens: 30, completion_tokens: 2, cached_tokens: 10 };
        Answer { output: Output::Text(vec!["Hel".to_owned(), "lo".to_owned()]), usage, end }
    }

    #[test]
    fn a_frame_matches_the_event_stream_layout() {
        let frame = event_frame("messageStop", &json!({"stopReason": "end_turn"}));
        let (headers, payload, total) = decode(&frame);
        assert_eq!(total, frame.len());
        assert_eq!(
            headers,
            [
                (":event-type".to_owned(), "messageStop".to_owned()),
                (":content-type".to_owned(), "application/json".to_owned()),
                (":message-type".to_owned(), "event".to_owned())
            ]
        );
        assert_eq!(payload, json!({"stopReason": "end_turn"}));
        // Byte-exact prelude: 4 + 4 + 4, header block of 3 × (1 + name + 1 + 2 + value).
        let headers_len = (1 + 11 + 3 + 11) + (1 + 13 + 3 + 16) + (1 + 13 + 3 + 5);
        assert_eq!(&frame[4..8], &u32::try_from(headers_len).unwrap().to_be_bytes());
    }

    #[test]
    fn stream_events_in_order_with_padding() {
        let (events, cut) = decode_all(&super::events(&text(StreamEnd::Done)));
        assert!(!cut);
        let types: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(
            types,
            ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
        );
        assert!(events.iter().all(|(_, payload)| payload["p"].as_str().is_some_and(|p| !p.is_empty())));
        assert_eq!(events[0].1["role"], "assistant");
        assert_eq!(events[1].1["delta"], json!({"text": "Hel"}));
        assert_eq!(events[1].1["contentBlockIndex"], 0);
        assert_eq!(events[4].1["stopReason"], "end_turn");
        assert_eq!(
            events[5].1["usage"],
            json!({"inputTokens": 20, "outputTokens": 2, "totalTokens": 32, "cacheReadInputTokens": 10})
        );
        assert_eq!(events[5].1["metrics"]["latencyMs"], LATENCY_MS);
    }

    #[test]
    fn drops_overloads_and_tool_use() {
        let (events, cut) = decode_all(&super::events(&text(StreamEnd::DropAfter(1))));
        assert!(cut);
        assert_eq!(events.len(), 2);

        let (events, cut) = decode_all(&super::events(&text(StreamEnd::Overloaded)));
        assert!(!cut);
        assert_eq!(events.last().unwrap().0, "serviceUnavailableException");

        let usage = MockUsage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 0 };
        let arguments = r#"{"city":"Paris","unit":"c"}"#;
        let output = Output::Tool { name: "get_weather".to_owned(), arguments: arguments.to_owned() };
        let answer = Answer { output, usage, end: StreamEnd::Done };
        let (events, _) = decode_all(&super::events(&answer));
        assert_eq!(events[1].0, "contentBlockStart");
        assert_eq!(events[1].1["start"]["toolUse"]["name"], "get_weather");
        let input: String = events
            .iter()
            .filter(|(kind, _)| kind == "contentBlockDelta")
            .map(|(_, payload)| payload["delta"]["toolUse"]["input"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(input, arguments);
        assert_eq!(events.iter().find(|(kind, _)| kind == "messageStop").unwrap().1["stopReason"], "tool_use");

        let whole = converse(&answer);
        assert_eq!(whole["stopReason"], "tool_use");
        assert_eq!(whole["output"]["message"]["content"][0]["toolUse"]["input"], json!({"city": "Paris", "unit": "c"}));
        assert!(whole["usage"].get("cacheReadInputTokens").is_none());
    }
}

//! Gemini `generateContent` wire format (`…/models/{model}:generateContent` and
//! `:streamGenerateContent`), from Google's API reference and captured responses.
//!
//! A stream is a sequence of whole `GenerateContentResponse` chunks. With `?alt=sse` each
//! goes out as `data: JSON\r\n\r\n`: Google's servers end SSE lines with CRLF, which
//! parsers that split on `\n\n` alone get wrong, so the mock does the same. There is no
//! terminal marker; the last chunk carries `finishReason`. Without `alt=sse` the stream
//! is one JSON array written element by element. Every chunk carries `usageMetadata`
//! with the prompt count and the candidates count so far, as the real API sends it, so
//! only the last chunk's usage is the call's.
//!
//! Usage: `promptTokenCount` includes cached tokens, as the mock's prompt count does;
//! `cachedContentTokenCount` appears only when some were cached.

use super::{Answer, CallInfo, Emit, MockUsage, Output, StreamEnd, parsed_arguments};
use bytes::Bytes;
use serde_json::{Value, json};

/// What the real API sends for `alt=sse`.
pub(super) const SSE_CONTENT_TYPE: &str = "text/event-stream";

/// Gemini's (Google API) error body.
pub(super) fn error_body(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

fn overloaded() -> Value {
    error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
}

fn usage_metadata(usage: MockUsage, candidates: u64) -> Value {
    let mut metadata = json!({
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": usage.prompt_tokens + candidates,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt_tokens}]
    });
    if usage.cached_tokens > 0 {
        metadata["cachedContentTokenCount"] = json!(usage.cached_tokens);
    }
    metadata
}

fn response_id(call: &CallInfo) -> String {
    format!("mockResp{:012}", call.serial)
}

/// One `GenerateContentResponse`.
fn chunk(call: &CallInfo, parts: Value, finish: bool, usage: Value) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if finish {
        candidate["finishReason"] = json!("STOP");
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": call.model, "responseId": response_id(call)})
}

/// A function call goes out whole (Gemini never splits one), finish reason `STOP`.
fn function_call(name: &str, arguments: &str) -> Value {
    json!([{"functionCall": {"name": name, "args": parsed_arguments(arguments)}}])
}

/// The whole answer.
pub(super) fn response(call: &CallInfo, answer: &Answer) -> Value {
    let parts = match &answer.output {
        Output::Text(pieces) => json!([{"text": pieces.concat()}]),
        Output::Tool { name, arguments } => function_call(name, arguments),
    };
    chunk(call, parts, true, usage_metadata(answer.usage, answer.usage.completion_tokens))
}

/// What a stream says, chunk by chunk, before its transport framing; `None` stands for
/// the connection cut of a scripted drop.
fn chunks(call: &CallInfo, answer: &Answer) -> Vec<Option<Value>> {
    let usage = answer.usage;
    let pieces = match &answer.output {
        Output::Tool { name, arguments } => {
            return vec![Some(chunk(
                call,
                function_call(name, arguments),
                true,
                usage_metadata(usage, usage.completion_tokens),
            ))];
        }
        // An empty answer still sends one chunk, with an empty text part.
        Output::Text(pieces) if pieces.is_empty() => vec![String::new()],
        Output::Text(pieces) => pieces.clone(),
    };
    let total = pieces.len();
    let sent = answer.sent(total);
    let finishes = matches!(answer.end, StreamEnd::Done | StreamEnd::WithoutDone);
    let mut chunks: Vec<Option<Value>> = pieces[..sent]
        .iter()
        .enumerate()
        .map(|(index, piece)| {
            let last = index + 1 == total;
            // The candidates count grows with each chunk and reaches the scripted total
            // on the last one.
            let so_far = usage.completion_tokens * super::count(index + 1) / super::count(total).max(1);
            Some(chunk(call, json!([{"text": piece}]), last && finishes, usage_metadata(usage, so_far)))
        })
        .collect();
    match answer.end {
        StreamEnd::DropAfter(_) => chunks.push(None),
        StreamEnd::Overloaded => chunks.push(Some(overloaded())),
        StreamEnd::Done | StreamEnd::WithoutDone => {}
    }
    chunks
}

/// The `alt=sse` stream.
pub(super) fn sse_events(call: &CallInfo, answer: &Answer) -> Vec<Emit> {
    chunks(call, answer)
        .into_iter()
        .map(|chunk| match chunk {
            Some(chunk) => Emit::Chunk(Bytes::from(format!("data: {chunk}\r\n\r\n"))),
            None => Emit::Cut,
        })
        .collect()
}

/// The stream without `alt=sse`: one JSON array, an element per write, closed by `]`
/// unless the connection is cut.
pub(super) fn array_events(call: &CallInfo, answer: &Answer) -> Vec<Emit> {
    let mut events = Vec::new();
    let mut first = true;
    for chunk in chunks(call, answer) {
        let Some(chunk) = chunk else {
            events.push(Emit::Cut);
            return events;
        };
        let separator = if first { "[" } else { ",\r\n" };
        first = false;
        events.push(Emit::Chunk(Bytes::from(format!("{separator}{chunk}"))));
    }
    events.push(Emit::Chunk(Bytes::from_static(b"]")));
    events
}

/// A `batchEmbedContents` answer: `{"embeddings": [{"values": [...]}, ...]}`, one unit
/// vector of `dims` per request (Gemini reports no usage here). Honours
/// `outputDimensionality`.
pub(super) fn batch_embeddings(request: &super::RecordedRequest, dims: usize) -> Value {
    let requests = request.body.get("requests").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|one| {
            let size = one
                .get("outputDimensionality")
                .and_then(Value::as_u64)
                .and_then(|d| usize::try_from(d).ok())
                .unwrap_or(dims);
            let mut values = vec![0.0_f64; size];
            if let Some(first) = values.first_mut() {
                *first = 1.0;
            }
            json!({ "values": values })
        })
        .collect();
    json!({ "embeddings": embeddings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallInfo {
        CallInfo { serial: 3, created: 0, model: "gemini-x".to_owned(), include_usage: false }
    }

    fn text(pieces: &[&str], end: StreamEnd) -> Answer {
        let usage = MockUsage { prompt_tokens: 20, completion_tokens: 4, cached_tokens: 5 };
        Answer { output: Output::Text(pieces.iter().map(|piece| (*piece).to_owned()).collect()), usage, end }
    }

    fn written(events: &[Emit]) -> (String, bool) {
        let mut text = String::new();
        let mut cut = false;
        for emit in events {
            match emit {
                Emit::Chunk(bytes) => text.push_str(std::str::from_utf8(bytes).unwrap()),
                Emit::Cut => cut = true,
            }
        }
        (text, cut)
    }

    #[test]
    fn sse_chunks_end_with_crlf_and_the_last_finishes() {
        let (body, cut) = written(&sse_events(&call(), &text(&["Hel", "lo"], StreamEnd::Done)));
        assert!(!cut);
        assert!(body.ends_with("}\r\n\r\n"));
        let chunks: Vec<Value> = body
            .split_terminator("\r\n\r\n")
            .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0]["candidates"][0]["content"], json!({"parts": [{"text": "Hel"}], "role": "model"}));
        assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
        assert_eq!(chunks[0]["usageMetadata"]["candidatesTokenCount"], 2);
        assert_eq!(chunks[1]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            chunks[1]["usageMetadata"],
            json!({
                "promptTokenCount": 20,
                "candidatesTokenCount": 4,
                "totalTokenCount": 24,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
                "cachedContentTokenCount": 5
            })
        );
        assert_eq!(chunks[1]["modelVersion"], "gemini-x");
        assert_eq!(chunks[1]["responseId"], chunks[0]["responseId"]);
    }

    #[test]
    fn the_array_stream_parses_as_one_json_array() {
        let (body, _) = written(&array_events(&call(), &text(&["a", "b", "c"], StreamEnd::Done)));
        let array: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(array.len(), 3);
        assert_eq!(array[2]["candidates"][0]["finishReason"], "STOP");

        let (body, cut) = written(&array_events(&call(), &text(&["a", "b", "c"], StreamEnd::DropAfter(1))));
        assert!(cut);
        assert!(body.starts_with('[') && !body.ends_with(']'));
    }

    #[test]
    fn drops_overloads_and_tool_calls() {
        let (body, cut) = written(&sse_events(&call(), &text(&["a", "b"], StreamEnd::DropAfter(1))));
        assert!(cut);
        assert_eq!(body.matches("data: ").count(), 1);
        assert!(!body.contains("finishReason"));

        let (body, cut) = written(&sse_events(&call(), &text(&["a", "b"], StreamEnd::Overloaded)));
        assert!(!cut);
        assert!(body.ends_with("data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n"));

        let usage = MockUsage { prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0 };
        let output = Output::Tool { name: "lookup".to_owned(), arguments: r#"{"q":"x"}"#.to_owned() };
        let answer = Answer { output, usage, end: StreamEnd::Done };
        let (body, _) = written(&sse_events(&call(), &answer));
        assert_eq!(body.matches("data: ").count(), 1, "a function call comes whole");
        let chunk: Value = serde_json::from_str(body.trim_end().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            chunk["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "lookup", "args": {"q": "x"}})
        );
        assert_eq!(chunk["candidates"][0]["finishReason"], "STOP");
        assert!(chunk["usageMetadata"].get("cachedContentTokenCount").is_none());
        assert_eq!(response(&call(), &answer)["candidates"][0]["content"], chunk["candidates"][0]["content"]);
    }
}

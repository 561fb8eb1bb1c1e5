//! Round trips through the vendor formats other than OpenAI Chat: canonical → Anthropic,
//! Gemini or Responses → canonical, for requests, whole answers and streams.
//!
//! A format that cannot carry something loses it; what comes back must then equal the
//! original after that format's normalisation, one small function per format and kind
//! below. Each step of a normalisation is a documented lossy point of the codec:
//!
//! Anthropic (`anthropic.rs`)
//! - requests: `max_tokens` is always sent (the client's, else 4096 plus any thinking
//!   budget); reasoning effort becomes a thinking budget only when thinking is allowed
//!   (no forced tool, no tool call being continued) and fits, and reads back by budget
//!   (`minimal` → `low`); with thinking on, `temperature` and `top_k` are not sent and
//!   `top_p` only from 0.95; without it, `top_p` is not sent next to `temperature`;
//!   `seed` and `response_format` are not sent; a lone empty system text is not sent;
//!   `tool_choice` and `parallel_tool_calls` are sent only with tools, parallelism only as
//!   `disable_parallel_tool_use` (so only `Some(false)` survives, turning no choice into
//!   `auto`, and not next to `none`); empty text parts and the messages they leave empty
//!   are left out; consecutive messages of one role are merged, tool results first in a
//!   user turn.
//! - answers: ids get the `msg_` prefix; no creation time; a turn that called tools stops
//!   for `tool_use`; usage is always written (zero when unknown).
//! - streams: the same, and the stop reason and usage always come (in `message_delta`).
//!
//! Gemini (`gemini.rs`)
//! - requests: `parallel_tool_calls` and `user` are not sent; a `text` response format is
//!   not sent, a JSON schema's name and strictness are not kept; effort travels as a
//!   thinking budget (`minimal` → `low`); a tool result's text travels as a JSON value
//!   (parsed when it is JSON) and its text parts are joined; consecutive messages of one
//!   role are merged.
//! - answers: no creation time; reasoning signatures are not passed on; `STOP` with a
//!   function call is a tool-use stop and without one the end of the turn (so stop
//!   sequences read back as the end of the turn); cache writes are not reported.
//! - streams: the same; a tool call's arguments arrive whole; the stop reason always
//!   comes (`STOP` when unknown).
//!
//! Responses (`responses.rs`)
//! - requests: `top_k`, `seed` and `stop` are not sent; empty system texts are dropped;
//!   consecutive messages of one role are merged (items carry no message boundaries).
//! - answers: ids get the `resp_` prefix; adjacent texts form one message item;
//!   reasoning signatures are not kept; the stop reason is the response status
//!   (`completed` is a tool-use stop with function calls, else the end of the turn).
//! - streams: the same, and the stop reason always comes (in `response.completed`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod strategies;

use proptest::prelude::*;
use serde_json::Value;
use veil_protocol::canonical::TokenUsage;
use veil_protocol::{
    ChatRequest, ChatResponse, Message, Part, ResponseFormat, Role, SseEvent, SseParser, StopReason, StreamDecoder,
    StreamEncoder, StreamEvent, ToolChoice, anthropic, gemini, responses,
};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// The body as it travels: written as JSON text and read back.
fn through_text(body: &Value) -> Value {
    serde_json::from_str(&body.to_string()).unwrap()
}

/// Encodes `events` with `encoder`, writes them as bytes, reads them back in chunks of
/// `split` bytes and decodes them with `decoder`. Returns the events and whether the
/// decoder saw the format's normal end.
fn through_the_wire(
    mut encoder: impl StreamEncoder,
    mut decoder: impl StreamDecoder,
    events: &[StreamEvent],
    split: usize,
) -> (Vec<StreamEvent>, bool) {
    let mut wire: Vec<SseEvent> = Vec::new();
    for event in events {
        encoder.encode(event.clone(), &mut wire);
    }
    encoder.finish(&mut wire);
    let bytes: Vec<u8> = wire.iter().flat_map(|event| event.encode().to_vec()).collect();
    let mut parser = SseParser::new();
    let mut decoded = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        for event in parser.push(chunk).unwrap() {
            decoder.decode(&event, &mut decoded).unwrap();
        }
    }
    (decoded, decoder.is_complete())
}

fn has_tool_calls(content: &[Part]) -> bool {
    content.iter().any(|part| matches!(part, Part::ToolCall { .. }))
}

/// Merges each message into the previous one when both have the same role.
fn merge_same_role(messages: Vec<Message>) -> Vec<Message> {
    let mut merged: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages {
        match merged.last_mut() {
            Some(last) if last.role == message.role => last.content.extend(message.content),
            _ => merged.push(message),
        }
    }
    merged
}

/// Replaces the stream's tail (its `Finish` and `Usage` events) with `finish` and `usage`,
/// which is where every encoder here writes them: at the end.
fn with_tail(events: &[StreamEvent], finish: Option<StopReason>, usage: Option<TokenUsage>) -> Vec<StreamEvent> {
    let mut out: Vec<StreamEvent> = events
        .iter()
        .filter(|event| !matches!(event, StreamEvent::Finish { .. } | StreamEvent::Usage { .. }))
        .cloned()
        .collect();
    out.extend(finish.map(|stop_reason| StreamEvent::Finish { stop_reason }));
    out.extend(usage.map(|usage| StreamEvent::Usage { usage }));
    out
}

fn stream_stop_reason(events: &[StreamEvent]) -> Option<StopReason> {
    events.iter().find_map(|event| match event {
        StreamEvent::Finish { stop_reason } => Some(*stop_reason),
        _ => None,
    })
}

fn stream_usage(events: &[StreamEvent]) -> Option<TokenUsage> {
    events.iter().rev().find_map(|event| match event {
        StreamEvent::Usage { usage } => Some(*usage),
        _ => None,
    })
}

fn stream_calls_tools(events: &[StreamEvent]) -> bool {
    events.iter().any(|event| matches!(event, StreamEvent::ToolCallStart { .. }))
}

/// `Start` with its id and creation time replaced.
fn restart(events: &mut [StreamEvent], id: impl Fn(&str) -> String, created: impl Fn(Option<i64>) -> Option<i64>) {
    if let Some(StreamEvent::Start { id: start_id, created: start_created, .. }) = events.first_mut() {
        *start_id = id(start_id);
        *start_created = created(*start_created);
    }
}

// ---------------------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------------------

/// What Anthropic gives back of `request` (see the module docs).
fn anthropic_request(mut request: ChatRequest) -> ChatRequest {
    // Thinking: asked for only when allowed and when it fits under `max_tokens`.
    let forced_tool = matches!(request.tool_choice, Some(ToolChoice::Required | ToolChoice::Named(_)));
    // The strategies' assistant turns never start with signed reasoning.
    let continues_tool_call = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::Assistant)
        .is_some_and(|message| has_tool_calls(&message.content));
    let budget = request
        .reasoning_effort
        .as_deref()
        .and_then(anthropic::budget_for_effort)
        .filter(|_| !forced_tool && !continues_tool_call);
    let max_tokens = request.max_output_tokens.unwrap_or(match budget {
        Some(budget) => budget + anthropic::DEFAULT_MAX_TOKENS,
        None => anthropic::DEFAULT_MAX_TOKENS,
    });
    let thinking = budget.filter(|budget| max_tokens > *budget);
    request.max_output_tokens = Some(max_tokens);
    request.reasoning_effort = thinking.map(|budget| anthropic::effort_for_budget(budget).to_owned());
    if thinking.is_some() {
        request.temperature = None;
        request.top_k = None;
        request.top_p = request.top_p.filter(|top_p| *top_p >= 0.95);
    } else if request.temperature.is_some() {
        request.top_p = None;
    }

    request.seed = None;
    request.response_format = None;
    if request.system == [String::new()] {
        request.system.clear();
    }

    if request.tools.is_empty() {
        request.tool_choice = None;
        request.parallel_tool_calls = None;
    } else if request.parallel_tool_calls == Some(false) {
        match request.tool_choice {
            None => request.tool_choice = Some(ToolChoice::Auto),
            Some(ToolChoice::None) => request.parallel_tool_calls = None,
            Some(_) => {}
        }
    } else {
        request.parallel_tool_calls = None;
    }

    let messages = std::mem::take(&mut request.messages)
        .into_iter()
        .map(|message| {
            let content: Vec<Part> = message
                .content
                .into_iter()
                .filter(|part| !matches!(part, Part::Text { text } if text.is_empty()))
                .map(|part| match part {
                    Part::ToolResult { call_id, content, is_error } => Part::ToolResult {
                        call_id,
                        content: content
                            .into_iter()
                            .filter(|part| !matches!(part, Part::Text { text } if text.is_empty()))
                            .collect(),
                        is_error,
                    },
                    other => other,
                })
                .collect();
            Message { role: message.role, content }
        })
        .filter(|message| !message.content.is_empty())
        .collect();
    request.messages = merge_same_role(messages)
        .into_iter()
        .map(|mut message| {
            if message.role == Role::User {
                // Stable: results keep their order, and so does the rest.
                message.content.sort_by_key(|part| !matches!(part, Part::ToolResult { .. }));
            }
            message
        })
        .collect();
    request
}

/// Anthropic's stop reason for an answer: a turn that called tools waits for their results.
fn anthropic_stop_reason(reason: Option<StopReason>, called_tools: bool) -> Option<StopReason> {
    match reason {
        Some(StopReason::EndTurn) | None if called_tools => Some(StopReason::ToolUse),
        reason => reason,
    }
}

fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") }
}

fn anthropic_response(mut response: ChatResponse) -> ChatResponse {
    response.id = anthropic_id(&response.id);
    response.created = None;
    response.stop_reason = anthropic_stop_reason(response.stop_reason, has_tool_calls(&response.content));
    response.usage = Some(response.usage.unwrap_or_default());
    response
}

fn anthropic_stream(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let stop_reason =
        anthropic_stop_reason(stream_stop_reason(events), stream_calls_tools(events)).unwrap_or(StopReason::EndTurn);
    let mut out = with_tail(events, Some(stop_reason), Some(stream_usage(events).unwrap_or_default()));
    restart(&mut out, anthropic_id, |_| None);
    out
}

// ---------------------------------------------------------------------------------------
// Gemini
// ---------------------------------------------------------------------------------------

/// A tool result's text as Gemini gives it back: the text travels as a JSON value when it
/// is JSON (a JSON string losing its quotes, other values re-serialised), as a string
/// otherwise.
fn gemini_result_text(text: String) -> String {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::String(inner)) => inner,
        Ok(value) => value.to_string(),
        Err(_) => text,
    }
}

fn gemini_request(mut request: ChatRequest) -> ChatRequest {
    request.parallel_tool_calls = None;
    request.user = None;
    request.response_format = match request.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            Some(ResponseFormat::JsonSchema { name: "response".to_owned(), schema, strict: None })
        }
    };
    request.reasoning_effort = request.reasoning_effort.map(|effort| match effort.as_str() {
        "minimal" => "low".to_owned(),
        _ => effort,
    });
    let messages = std::mem::take(&mut request.messages)
        .into_iter()
        .map(|mut message| {
            for part in &mut message.content {
                if let Part::ToolResult { content, .. } = part {
                    let text: String = content
                        .iter()
                        .filter_map(|part| match part {
                            Part::Text { text } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    *content = vec![Part::Text { text: gemini_result_text(text) }];
                }
            }
            message
        })
        .collect();
    request.messages = merge_same_role(messages);
    request
}

/// The stop reason Gemini's `finishReason` reads back as.
fn gemini_stop_reason(reason: StopReason, called_tools: bool) -> StopReason {
    match reason {
        StopReason::MaxTokens => StopReason::MaxTokens,
        StopReason::ContentFilter => StopReason::ContentFilter,
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse if called_tools => StopReason::ToolUse,
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => StopReason::EndTurn,
    }
}

fn gemini_usage(usage: TokenUsage) -> TokenUsage {
    TokenUsage { cache_write_tokens: 0, ..usage }
}

fn gemini_response(mut response: ChatResponse) -> ChatResponse {
    let called_tools = has_tool_calls(&response.content);
    response.created = None;
    for part in &mut response.content {
        if let Part::Reasoning { signature, .. } = part {
            *signature = None;
        }
    }
    response.stop_reason = response.stop_reason.map(|reason| gemini_stop_reason(reason, called_tools));
    response.usage = response.usage.map(gemini_usage);
    response
}

fn gemini_stream(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let called_tools = stream_calls_tools(events);
    let stop_reason = gemini_stop_reason(stream_stop_reason(events).unwrap_or(StopReason::EndTurn), called_tools);
    let mut out: Vec<StreamEvent> = Vec::with_capacity(events.len());
    for event in with_tail(events, Some(stop_reason), stream_usage(events).map(gemini_usage)) {
        match event {
            // A call's argument fragments arrive as one.
            StreamEvent::ToolCallDelta { index, arguments } => match out.last_mut() {
                Some(StreamEvent::ToolCallDelta { index: last, arguments: so_far }) if *last == index => {
                    so_far.push_str(&arguments);
                }
                _ => out.push(StreamEvent::ToolCallDelta { index, arguments }),
            },
            other => out.push(other),
        }
    }
    restart(&mut out, str::to_owned, |_| None);
    out
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn responses_request(mut request: ChatRequest) -> ChatRequest {
    request.top_k = None;
    request.seed = None;
    request.stop.clear();
    request.system.retain(|text| !text.is_empty());
    request.messages = merge_same_role(std::mem::take(&mut request.messages));
    request
}

fn responses_id(id: &str) -> String {
    if id.starts_with("resp_") { id.to_owned() } else { format!("resp_{id}") }
}

/// The stop reason a response's status reads back as.
fn responses_stop_reason(reason: Option<StopReason>, called_tools: bool) -> StopReason {
    match reason {
        Some(StopReason::MaxTokens) => StopReason::MaxTokens,
        Some(StopReason::ContentFilter) => StopReason::ContentFilter,
        _ if called_tools => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

fn responses_response(mut response: ChatResponse) -> ChatResponse {
    response.id = responses_id(&response.id);
    response.stop_reason = Some(responses_stop_reason(response.stop_reason, has_tool_calls(&response.content)));
    let mut content: Vec<Part> = Vec::with_capacity(response.content.len());
    for part in std::mem::take(&mut response.content) {
        match (content.last_mut(), part) {
            (Some(Part::Text { text }), Part::Text { text: more }) => text.push_str(&more),
            (_, Part::Reasoning { text, .. }) => content.push(Part::Reasoning { text, signature: None }),
            (_, part) => content.push(part),
        }
    }
    response.content = content;
    response
}

fn responses_stream(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let stop_reason = responses_stop_reason(stream_stop_reason(events), stream_calls_tools(events));
    let mut out = with_tail(events, Some(stop_reason), stream_usage(events));
    restart(&mut out, responses_id, |created| created);
    out
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn anthropic_requests_round_trip(request in strategies::chat_request()) {
        let expected = anthropic_request(request.clone());
        let parsed = anthropic::parse_request(&through_text(&anthropic::encode_request(&request)));
        if expected.messages.is_empty() {
            // Nothing Anthropic accepts is left (only empty texts): the body is refused.
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(parsed.unwrap(), expected);
        }
    }

    #[test]
    fn anthropic_responses_round_trip(response in strategies::vendor_response()) {
        let parsed = anthropic::parse_response(&through_text(&anthropic::encode_response(&response))).unwrap();
        prop_assert_eq!(parsed, anthropic_response(response));
    }

    #[test]
    fn anthropic_streams_round_trip((_, events) in strategies::vendor_response_stream(), split in 1usize..64) {
        let (decoded, complete) =
            through_the_wire(anthropic::Encoder::new(), anthropic::Decoder::new(), &events, split);
        prop_assert!(complete);
        prop_assert_eq!(decoded, anthropic_stream(&events));
    }

    #[test]
    fn gemini_requests_round_trip(request in strategies::chat_request()) {
        let body = through_text(&gemini::encode_request(&request));
        let parsed = gemini::parse_request(&request.model, request.stream, &body).unwrap();
        prop_assert_eq!(parsed, gemini_request(request));
    }

    #[test]
    fn gemini_responses_round_trip(response in strategies::vendor_response()) {
        let parsed = gemini::parse_response(&through_text(&gemini::encode_response(&response))).unwrap();
        prop_assert_eq!(parsed, gemini_response(response));
    }

    #[test]
    fn gemini_streams_round_trip((_, events) in strategies::vendor_response_stream(), split in 1usize..64) {
        let (decoded, complete) = through_the_wire(gemini::Encoder::new(), gemini::Decoder::new(), &events, split);
        prop_assert!(complete);
        prop_assert_eq!(decoded, gemini_stream(&events));
    }

    #[test]
    fn responses_requests_round_trip(request in strategies::chat_request()) {
        let parsed = responses::parse_request(&through_text(&responses::encode_request(&request))).unwrap();
        prop_assert_eq!(parsed, responses_request(request));
    }

    #[test]
    fn responses_responses_round_trip(response in strategies::vendor_response()) {
        let parsed = responses::parse_response(&through_text(&responses::encode_response(&response))).unwrap();
        prop_assert_eq!(parsed, responses_response(response));
    }

    #[test]
    fn responses_streams_round_trip((_, events) in strategies::vendor_response_stream(), split in 1usize..64) {
        let (decoded, complete) =
            through_the_wire(responses::Encoder::new(), responses::Decoder::new(), &events, split);
        prop_assert!(complete);
        prop_assert_eq!(decoded, responses_stream(&events));
    }
}

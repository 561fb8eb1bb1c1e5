//! Proptest strategies for canonical values, shared by the codecs' property tests
//! (`mod strategies;`).
//!
//! They generate what OpenAI Chat Completions (the relay's pivot) can express, in the
//! shape its parser gives back: text, images, tool calls, text tool results, system
//! prompts and every request option; answers with at most one reasoning and one text part
//! (OpenAI joins them) followed by tool calls. So for the OpenAI codec `parse(encode(x))
//! == x` exactly; a codec that can express less may normalise further before comparing.

#![allow(dead_code)] // each test binary uses its own subset

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use veil_protocol::canonical::TokenUsage;
use veil_protocol::{
    ChatRequest, ChatResponse, ImageSource, Message, Part, ResponseFormat, Role, StopReason, StreamEvent, Tool,
    ToolChoice,
};

/// Any short text, including empty, quotes, backslashes, line breaks and non-ASCII.
pub fn any_text() -> impl Strategy<Value = String> {
    "[ -~\n\té中🙂\"\\\\]{0,16}"
}

/// Short text that is not empty (formats drop or reject empty text blocks).
pub fn some_text() -> impl Strategy<Value = String> {
    "[ -~\né中🙂\"\\\\]{1,16}"
}

pub fn identifier() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,10}"
}

pub fn call_id() -> impl Strategy<Value = String> {
    "call_[A-Za-z0-9]{1,16}"
}

/// The JSON text of an arguments object, as a model would write it.
pub fn arguments_json() -> impl Strategy<Value = String> {
    vec((identifier(), prop_oneof![any::<i32>().prop_map(Value::from), any_text().prop_map(Value::from)]), 0..4)
        .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<String, Value>>()).to_string())
}

/// A small JSON Schema object.
pub fn json_schema() -> impl Strategy<Value = Value> {
    vec(identifier(), 0..4).prop_map(|names| {
        let properties: Map<String, Value> = names.into_iter().map(|name| (name, json!({"type": "string"}))).collect();
        json!({"type": "object", "properties": properties})
    })
}

pub fn image() -> impl Strategy<Value = Part> {
    prop_oneof![
        "https://[a-z]{1,8}\\.test/[a-z0-9]{1,8}\\.(png|jpg)".prop_map(|url| ImageSource::Url { url }),
        ("image/(png|jpeg|webp|gif)", "[A-Za-z0-9+/]{4,24}={0,2}")
            .prop_map(|(media_type, data)| ImageSource::Base64 { media_type, data }),
    ]
    .prop_map(|source| Part::Image { source })
}

pub fn text_part() -> impl Strategy<Value = Part> {
    any_text().prop_map(|text| Part::Text { text })
}

pub fn tool_call() -> impl Strategy<Value = Part> {
    (call_id(), identifier(), arguments_json()).prop_map(|(id, name, arguments)| Part::ToolCall { id, name, arguments })
}

/// A tool result with one or more text parts (OpenAI tool messages carry text only and
/// no error flag).
pub fn tool_result() -> impl Strategy<Value = Part> {
    (call_id(), vec(text_part(), 1..3)).prop_map(|(call_id, content)| Part::ToolResult {
        call_id,
        content,
        is_error: false,
    })
}

fn user_content_part() -> impl Strategy<Value = Part> {
    prop_oneof![3 => text_part(), 1 => image()]
}

/// A user message: text and images, or tool results followed by text and images.
pub fn user_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(user_content_part(), 1..4),
        (vec(tool_result(), 1..3), vec(user_content_part(), 0..3)).prop_map(|(mut results, rest)| {
            results.extend(rest);
            results
        }),
    ]
    .prop_map(|content| Message { role: Role::User, content })
}

/// An assistant message: non-empty text parts then tool calls, at least one of either.
pub fn assistant_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (vec(some_text(), 1..3), vec(tool_call(), 0..3)),
        vec(tool_call(), 1..4).prop_map(|calls| (Vec::new(), calls)),
    ]
    .prop_map(|(texts, calls)| {
        let mut content: Vec<Part> = texts.into_iter().map(|text| Part::Text { text }).collect();
        content.extend(calls);
        Message { role: Role::Assistant, content }
    })
}

/// A conversation in the shape OpenAI's parser gives back: a user message right after a
/// message of tool results only belongs to the same turn (OpenAI cannot tell them apart).
pub fn conversation() -> impl Strategy<Value = Vec<Message>> {
    vec(prop_oneof![user_message(), assistant_message()], 1..7).prop_map(merge_tool_turns)
}

/// Merges a user message into a preceding user message that holds only tool results.
pub fn merge_tool_turns(messages: Vec<Message>) -> Vec<Message> {
    let mut merged: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages {
        if message.role == Role::User
            && let Some(last) = merged.last_mut()
            && last.role == Role::User
            && !last.content.is_empty()
            && last.content.iter().all(|part| matches!(part, Part::ToolResult { .. }))
        {
            last.content.extend(message.content);
            continue;
        }
        merged.push(message);
    }
    merged
}

pub fn tool() -> impl Strategy<Value = Tool> {
    (identifier(), option::of(any_text()), json_schema()).prop_map(|(name, description, parameters)| Tool {
        name,
        description,
        parameters,
    })
}

pub fn tool_choice() -> impl Strategy<Value = ToolChoice> {
    prop_oneof![
        Just(ToolChoice::Auto),
        Just(ToolChoice::None),
        Just(ToolChoice::Required),
        identifier().prop_map(ToolChoice::Named),
    ]
}

pub fn response_format() -> impl Strategy<Value = ResponseFormat> {
    prop_oneof![
        Just(ResponseFormat::Text),
        Just(ResponseFormat::JsonObject),
        (identifier(), json_schema(), option::of(any::<bool>()))
            .prop_map(|(name, schema, strict)| ResponseFormat::JsonSchema { name, schema, strict }),
    ]
}

/// A probability-like number with a short decimal form, so it survives JSON text exactly.
fn unit_number(steps: u32) -> impl Strategy<Value = f64> {
    (0..=steps).prop_map(move |step| f64::from(step) / f64::from(steps))
}

pub fn chat_request() -> impl Strategy<Value = ChatRequest> {
    let conversation_part = (
        identifier(),
        vec(any_text(), 0..3),
        conversation(),
        vec(tool(), 0..3),
        option::of(tool_choice()),
        option::of(any::<bool>()),
    );
    let options = (
        option::of(1u64..1_000_000),
        option::of(unit_number(10).prop_map(|t| t * 2.0)),
        option::of(unit_number(20)),
        option::of(1u64..200),
        vec(some_text(), 0..4),
        option::of(any::<i64>()),
        option::of(response_format()),
        option::of(prop_oneof![Just("minimal"), Just("low"), Just("medium"), Just("high")].prop_map(String::from)),
        any::<bool>(),
        option::of(identifier()),
    );
    (conversation_part, options).prop_map(
        |(
            (model, system, messages, tools, tool_choice, parallel_tool_calls),
            (max_output_tokens, temperature, top_p, top_k, stop, seed, response_format, reasoning_effort, stream, user),
        )| ChatRequest {
            model,
            system,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls,
            max_output_tokens,
            temperature,
            top_p,
            top_k,
            stop,
            seed,
            response_format,
            reasoning_effort,
            stream,
            user,
        },
    )
}

/// Usage with the relations every vendor keeps (cache and reasoning shares within totals).
pub fn token_usage() -> impl Strategy<Value = TokenUsage> {
    (0u64..1_000_000, 0u64..1_000_000)
        .prop_flat_map(|(input, output)| (Just(input), 0..=input, Just(output), 0..=output))
        .prop_flat_map(|(input, cached, output, reasoning)| {
            (Just(input), Just(cached), 0..=input - cached, Just(output), Just(reasoning))
        })
        .prop_map(|(input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens)| TokenUsage {
            input_tokens,
            cached_tokens,
            cache_write_tokens,
            output_tokens,
            reasoning_tokens,
            ..TokenUsage::default()
        })
}

/// Stop reasons OpenAI tells apart (a stop sequence reads back as the end of the turn).
pub fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::EndTurn),
        Just(StopReason::MaxTokens),
        Just(StopReason::ToolUse),
        Just(StopReason::ContentFilter),
    ]
}

/// Every stop reason, a stop sequence included: the vendor formats other than OpenAI's
/// tell it apart or say how they lose it.
pub fn any_stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![stop_reason(), Just(StopReason::StopSequence)]
}

/// A part of an answer as the vendor formats hold them: text, reasoning with or without a
/// signature, or a tool call.
pub fn answer_part() -> impl Strategy<Value = Part> {
    prop_oneof![
        3 => some_text().prop_map(|text| Part::Text { text }),
        1 => (some_text(), option::of("[A-Za-z0-9+/]{8,24}"))
            .prop_map(|(text, signature)| Part::Reasoning { text, signature }),
        2 => tool_call(),
    ]
}

/// An answer in the shape the vendor formats (Anthropic, Gemini, Responses) can carry:
/// any number of text, reasoning and tool call parts in any order, any stop reason, ids
/// with or without the vendors' prefixes.
pub fn vendor_response() -> impl Strategy<Value = ChatResponse> {
    (
        "(msg_|resp_|chatcmpl-)?[A-Za-z0-9_-]{1,24}",
        identifier(),
        0i64..4_000_000_000,
        vec(answer_part(), 0..6),
        option::of(any_stop_reason()),
        option::of(token_usage()),
    )
        .prop_map(|(id, model, created, content, stop_reason, usage)| ChatResponse {
            id,
            model,
            created: Some(created),
            content,
            stop_reason,
            usage,
        })
}

/// A [`vendor_response`] with its stream events.
pub fn vendor_response_stream() -> impl Strategy<Value = (ChatResponse, Vec<StreamEvent>)> {
    (vendor_response(), 1usize..8).prop_map(|(response, size)| {
        let events = response_events(&response, size);
        (response, events)
    })
}

pub fn chat_response() -> impl Strategy<Value = ChatResponse> {
    (
        "chatcmpl-[A-Za-z0-9]{1,24}",
        identifier(),
        0i64..4_000_000_000,
        option::of(some_text()),
        option::of(some_text()),
        vec(tool_call(), 0..3),
        option::of(stop_reason()),
        option::of(token_usage()),
    )
        .prop_map(|(id, model, created, reasoning, text, calls, stop_reason, usage)| {
            let mut content = Vec::new();
            if let Some(text) = reasoning {
                content.push(Part::Reasoning { text, signature: None });
            }
            if let Some(text) = text {
                content.push(Part::Text { text });
            }
            content.extend(calls);
            ChatResponse { id, model, created: Some(created), content, stop_reason, usage }
        })
}

/// The stream events an upstream would send for `response`, text and arguments cut into
/// pieces of `piece_chars` characters.
pub fn response_events(response: &ChatResponse, piece_chars: usize) -> Vec<StreamEvent> {
    let mut events =
        vec![StreamEvent::Start { id: response.id.clone(), model: response.model.clone(), created: response.created }];
    let mut tool_calls = 0u32;
    for part in &response.content {
        match part {
            Part::Text { text } => {
                events.extend(pieces(text, piece_chars).map(|text| StreamEvent::TextDelta { text }));
            }
            Part::Reasoning { text, .. } => {
                events.extend(pieces(text, piece_chars).map(|text| StreamEvent::ReasoningDelta { text }));
            }
            Part::ToolCall { id, name, arguments } => {
                let index = tool_calls;
                tool_calls += 1;
                events.push(StreamEvent::ToolCallStart { index, id: id.clone(), name: name.clone() });
                events.extend(
                    pieces(arguments, piece_chars).map(|arguments| StreamEvent::ToolCallDelta { index, arguments }),
                );
            }
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    if let Some(stop_reason) = response.stop_reason {
        events.push(StreamEvent::Finish { stop_reason });
    }
    if let Some(usage) = response.usage {
        events.push(StreamEvent::Usage { usage });
    }
    events
}

/// `text` cut into pieces of at most `size` characters (none for empty text).
pub fn pieces(text: &str, size: usize) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(size.max(1)).map(|piece| piece.iter().collect()).collect();
    pieces.into_iter()
}

/// A generated answer with its stream events.
pub fn response_stream() -> impl Strategy<Value = (ChatResponse, Vec<StreamEvent>)> {
    (chat_response(), 1usize..8).prop_map(|(response, size)| {
        let events = response_events(&response, size);
        (response, events)
    })
}

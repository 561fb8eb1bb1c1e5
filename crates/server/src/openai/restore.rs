//! Restoring PII placeholders in an OpenAI chunk stream, across chunk boundaries.
//!
//! Each independent text channel of the stream — a choice's content, reasoning or
//! refusal text, legacy completion text, and each tool call's arguments — has its own
//! streaming restorer, which holds back at most one partial placeholder. When a choice
//! finishes, its channels are flushed into that same chunk; anything still held at
//! `[DONE]` goes out in one last chunk before it.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use veil_privacy::{Restorer, StreamRestorer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Text(&'static str),
    Tool(u64),
}

const TEXT_FIELDS: [&str; 3] = ["content", "reasoning_content", "refusal"];

pub struct ChunkRestorer {
    restorer: Restorer,
    channels: BTreeMap<(u64, Channel), StreamRestorer>,
    /// `id`, `object`, `created`, `model` of the last chunk, for a closing chunk.
    envelope: Map<String, Value>,
}

impl ChunkRestorer {
    pub fn new(restorer: Restorer) -> Self {
        Self { restorer, channels: BTreeMap::new(), envelope: Map::new() }
    }

    fn push(&mut self, choice: u64, channel: Channel, text: &str) -> String {
        let restorer = &self.restorer;
        self.channels
            .entry((choice, channel))
            .or_insert_with(|| match channel {
                Channel::Text(_) => restorer.stream(),
                Channel::Tool(_) => restorer.stream_json_text(),
            })
            .push(text)
    }

    /// Restores placeholders in `chunk` in place; returns whether it changed.
    pub fn apply(&mut self, chunk: &mut Value) -> bool {
        if self.restorer.is_empty() {
            return false;
        }
        for key in ["id", "object", "created", "model", "system_fingerprint"] {
            if let Some(value) = chunk.get(key) {
                self.envelope.insert(key.to_owned(), value.clone());
            }
        }
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else { return false };
        let mut changed = false;
        for (position, choice) in choices.iter_mut().enumerate() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            if let Some(Value::String(text)) = choice.get_mut("text") {
                *text = self.push(index, Channel::Text("text"), text);
                changed = true;
            }
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                for field in TEXT_FIELDS {
                    if let Some(Value::String(text)) = delta.get_mut(field) {
                        *text = self.push(index, Channel::Text(field), text);
                        changed = true;
                    }
                }
                if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    for (call_position, call) in calls.iter_mut().enumerate() {
                        let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(call_position as u64);
                        if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                            *arguments = self.push(index, Channel::Tool(call_index), arguments);
                            changed = true;
                        }
                    }
                }
            }
            if choice.get("finish_reason").is_some_and(|reason| !reason.is_null()) {
                changed |= self.flush_choice(index, choice);
            }
        }
        changed
    }

    /// Appends whatever the choice's channels still hold to this (finishing) choice.
    fn flush_choice(&mut self, index: u64, choice: &mut Value) -> bool {
        let keys: Vec<(u64, Channel)> = self.channels.keys().filter(|(c, _)| *c == index).copied().collect();
        let mut changed = false;
        for key in keys {
            let Some(mut stream) = self.channels.remove(&key) else { continue };
            let rest = stream.finish();
            if rest.is_empty() {
                continue;
            }
            changed = true;
            append(choice, key.1, &rest);
        }
        changed
    }

    /// A closing chunk carrying everything still held back, if anything is.
    pub fn closing_chunk(&mut self) -> Option<Value> {
        let mut choices: BTreeMap<u64, Value> = BTreeMap::new();
        for ((index, channel), mut stream) in std::mem::take(&mut self.channels) {
            let rest = stream.finish();
            if rest.is_empty() {
                continue;
            }
            let choice =
                choices.entry(index).or_insert_with(|| json!({"index": index, "delta": {}, "finish_reason": null}));
            append(choice, channel, &rest);
        }
        if choices.is_empty() {
            return None;
        }
        let mut chunk = self.envelope.clone();
        chunk.insert("choices".into(), Value::Array(choices.into_values().collect()));
        Some(Value::Object(chunk))
    }
}

fn append(choice: &mut Value, channel: Channel, rest: &str) {
    let Some(choice) = choice.as_object_mut() else { return };
    match channel {
        Channel::Text("text") => extend_string(choice, "text", rest),
        Channel::Text(field) => {
            if let Some(delta) = choice.entry("delta").or_insert_with(|| json!({})).as_object_mut() {
                extend_string(delta, field, rest);
            }
        }
        Channel::Tool(call_index) => {
            let Some(delta) = choice.entry("delta").or_insert_with(|| json!({})).as_object_mut() else { return };
            let calls = delta.entry("tool_calls").or_insert_with(|| json!([]));
            if let Some(calls) = calls.as_array_mut() {
                calls.push(json!({"index": call_index, "function": {"arguments": rest}}));
            }
        }
    }
}

fn extend_string(object: &mut Map<String, Value>, field: &str, rest: &str) {
    match object.get_mut(field) {
        Some(Value::String(text)) => text.push_str(rest),
        _ => {
            object.insert(field.to_owned(), Value::String(rest.to_owned()));
        }
    }
}

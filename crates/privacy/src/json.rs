//! Redacting and restoring the text inside JSON request and response bodies.
//!
//! The walk redacts every string value except those under a caller-given set of keys whose
//! values are identifiers, enums or opaque blobs (`model`, `role`, `tool_call_id`, base64
//! `data`, …), and except data URLs (base64 media: redacting inside would corrupt it and
//! could only produce false positives). Object keys are never redacted. Strings that hold
//! JSON themselves (tool-call `arguments`) are redacted as text: detection treats JSON
//! escapes as boundaries, and a placeholder needs no escaping inside a JSON string.
//! The walk is iterative, so a deeply nested document cannot overflow the stack.

use crate::error::RedactError;
use crate::mapping::{Insert, Mapping};
use crate::redactor::Redactor;
use crate::restore::Restorer;
use serde_json::Value;
use std::borrow::Cow;

/// Keys whose string values are not free text in the OpenAI, Anthropic and Gemini request
/// formats. Applies at any depth, to a string directly under the key or in an array under it.
pub const NON_TEXT_KEYS: &[&str] = &[
    "model",
    "role",
    "type",
    "object",
    "id",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "previous_response_id",
    "name",
    "encoding_format",
    "finish_reason",
    "stop_reason",
    "media_type",
    "mime_type",
    "mimeType",
    "data",
    "file_id",
    "fileUri",
    "file_uri",
    "detail",
    "format",
    "voice",
    "service_tier",
    "reasoning_effort",
    "effort",
    "truncation",
    "signature",
    "thoughtSignature",
    "encrypted_content",
];

/// Keys whose string values are JSON source themselves (tool-call arguments).
pub const JSON_TEXT_KEYS: &[&str] = &["arguments", "partial_json"];

/// Strings this long or shorter cannot hold any value the detectors look for.
const SHORTEST_INTERESTING: usize = 5;

fn is_data_url(text: &str) -> bool {
    let head = text.get(..text.len().min(256)).unwrap_or_default();
    head.get(..5).is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:")) && head.contains(";base64,")
}

impl Redactor {
    /// Redacts, in place, every string value of `value` except those under `keep_keys` (see
    /// [`NON_TEXT_KEYS`]) and data URLs. On error the document is partly redacted: the caller
    /// must fail the request and drop it.
    pub fn redact_json_strings(&mut self, value: &mut Value, keep_keys: &[&str]) -> Result<(), RedactError> {
        // Reserve first, over every string and key (kept ones too: they reach the upstream
        // as they are), so numbering never collides with text the client wrote itself.
        self.reserve_json(value);
        let mut stack: Vec<(&mut Value, bool)> = vec![(value, false)];
        while let Some((node, kept)) = stack.pop() {
            match node {
                Value::String(text) => {
                    if kept || text.len() <= SHORTEST_INTERESTING || is_data_url(text) {
                        continue;
                    }
                    if let Cow::Owned(redacted) = self.redact(text)? {
                        *text = redacted;
                    }
                }
                // Pushed in reverse so values are visited in document order, which numbers
                // placeholders in order of first appearance.
                Value::Array(items) => stack.extend(items.iter_mut().rev().map(|item| (item, kept))),
                Value::Object(map) => {
                    stack.extend(map.iter_mut().rev().map(|(key, item)| (item, keep_keys.contains(&key.as_str()))));
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        Ok(())
    }

    fn reserve_json(&mut self, value: &Value) {
        let mut stack = vec![value];
        while let Some(node) = stack.pop() {
            match node {
                Value::String(text) => self.reserve_placeholders_in(text),
                Value::Array(items) => stack.extend(items),
                Value::Object(map) => {
                    for (key, item) in map {
                        self.reserve_placeholders_in(key);
                        stack.push(item);
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }

    /// See [`Restorer::restore_json_strings`].
    pub fn restore_json_strings(&self, value: &mut Value) {
        restore_json(self.mapping(), value);
    }
}

impl Restorer {
    /// Restores, in place, every string value and object key of `value`; strings under
    /// [`JSON_TEXT_KEYS`] are JSON source and restored as such
    /// ([`Restorer::restore_json_text`]).
    pub fn restore_json_strings(&self, value: &mut Value) {
        restore_json(self.mapping(), value);
    }
}

fn restore_json(mapping: &Mapping, value: &mut Value) {
    if mapping.is_empty() {
        return;
    }
    let mut stack = vec![(value, Insert::Plain)];
    while let Some((node, insert)) = stack.pop() {
        match node {
            Value::String(text) => {
                if let Cow::Owned(restored) = mapping.restore(text, insert) {
                    *text = restored;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut().map(|item| (item, insert))),
            Value::Object(map) => {
                // The model may use a placeholder as a key (a map keyed by e-mail address).
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|key| match mapping.restore(key, Insert::Plain) {
                        Cow::Owned(restored) => Some((key.clone(), restored)),
                        Cow::Borrowed(_) => None,
                    })
                    .collect();
                for (old, new) in renamed {
                    if let Some(item) = map.remove(&old) {
                        map.insert(new, item);
                    }
                }
                stack.extend(map.iter_mut().map(|(key, item)| {
                    let insert = if JSON_TEXT_KEYS.contains(&key.as_str()) { Insert::JsonText } else { Insert::Plain };
                    (item, insert)
                }));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;

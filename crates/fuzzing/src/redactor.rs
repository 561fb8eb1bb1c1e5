//! `pii_redactor`: the PII firewall (veil-privacy) over arbitrary text.
//!
//! The input (UTF-8, invalid bytes replaced) is split at NUL into the text fields of one
//! request; when it starts with `!` the first field is one that goes upstream unredacted
//! (its placeholder-shaped text is only reserved). Checks, for one [`Redactor`]:
//! - the detector's findings are ordered, disjoint, in bounds and on character boundaries;
//! - redacting never fails (the input is far below the limits) and restoring every redacted
//!   field gives it back exactly, as does restoring the unredacted field;
//! - no value the detector finds is left in a redacted field (outside placeholders);
//! - a [`StreamRestorer`] fed the response in any chunking emits what restoring it whole
//!   gives, for prose and for JSON source;
//! - when the whole input is JSON, redacting its strings as the firewall does and restoring
//!   them gives the document back (except strings that are JSON source and whose originals
//!   hold control characters, which are restored escaped on purpose).

use crate::chunks::{cut_sets, split_at};
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use veil_privacy::{Detector, JSON_TEXT_KEYS, NON_TEXT_KEYS, Redactor, StreamRestorer};

static DETECTOR: LazyLock<Option<Arc<Detector>>> = LazyLock::new(|| Detector::new().ok().map(Arc::new));

/// Marks a first field that is reserved instead of redacted.
const UNREDACTED_MARKER: char = '!';

pub fn pii_redactor(data: &[u8]) {
    assert!(DETECTOR.is_some(), "the PII detector failed to build");
    let Some(detector) = DETECTOR.as_ref() else { return };
    let text = String::from_utf8_lossy(data);
    let mut fields: Vec<&str> = text.split('\0').collect();
    for field in &fields {
        check_findings(detector, field);
    }

    let mut redactor = Redactor::new(Arc::clone(detector));
    let unredacted = match fields.first() {
        Some(first) if first.starts_with(UNREDACTED_MARKER) => {
            redactor.reserve_placeholders_in(first);
            Some(fields.remove(0))
        }
        _ => None,
    };
    let mut redacted = Vec::with_capacity(fields.len());
    for field in &fields {
        let result = redactor.redact(field);
        assert!(result.is_ok(), "redacting a small text failed: {result:?}");
        redacted.push(result.map(|text| text.into_owned()).unwrap_or_default());
    }
    for (field, redacted) in fields.iter().zip(&redacted) {
        assert_eq!(redactor.restore(redacted), *field, "restoring a redacted field did not give it back");
        // A value straddling a placeholder was one before, inside a replaced span: not a leak.
        let mut left = detector.find(redacted).unwrap_or_default();
        left.retain(|finding| {
            redacted.get(finding.start..finding.end).is_some_and(|value| !value.contains(['[', ']']))
        });
        assert!(left.is_empty(), "values were left in a redacted field: {left:?}");
    }
    if let Some(unredacted) = unredacted {
        assert_eq!(redactor.restore(unredacted), unredacted, "restoring changed a field never redacted");
    }

    // The upstream echoes placeholders amid text of its own (here: the original fields).
    let response: String =
        redacted.iter().zip(&fields).flat_map(|(redacted, field)| [redacted.as_str(), field]).collect();
    let restorer = redactor.restorer();
    check_streaming(data, &response, restorer.stream(), &restorer.restore(&response));
    check_streaming(data, &response, restorer.stream_json_text(), &restorer.restore_json_text(&response));

    if let Ok(document) = serde_json::from_str::<Value>(&text) {
        check_json(detector, document);
    }
}

fn check_findings(detector: &Detector, text: &str) {
    let found = detector.find(text);
    assert!(found.is_ok(), "finding values in a small text failed: {found:?}");
    let mut previous_end = 0;
    for finding in found.unwrap_or_default() {
        assert!(finding.start >= previous_end && finding.start < finding.end, "findings overlap or are empty");
        assert!(finding.end <= text.len(), "a finding runs past the text");
        assert!(text.is_char_boundary(finding.start) && text.is_char_boundary(finding.end), "a finding cuts a char");
        previous_end = finding.end;
    }
}

fn check_streaming(seed: &[u8], response: &str, mut stream: StreamRestorer, whole: &str) {
    for mut cuts in cut_sets(seed, response.len(), 4) {
        cuts.retain(|&cut| response.is_char_boundary(cut));
        let mut streamed = String::with_capacity(whole.len());
        for piece in split_at(response.as_bytes(), &cuts) {
            // Cuts are on char boundaries, so every piece is valid UTF-8.
            streamed.push_str(&stream.push(std::str::from_utf8(piece).unwrap_or_default()));
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, whole, "streaming restore at {cuts:?} differs from restoring the whole");
    }
}

fn check_json(detector: &Arc<Detector>, original: Value) {
    let mut document = original.clone();
    let mut redactor = Redactor::new(Arc::clone(detector));
    let result = redactor.redact_json_strings(&mut document, NON_TEXT_KEYS);
    assert!(result.is_ok(), "redacting a small document failed: {result:?}");
    redactor.restorer().restore_json_strings(&mut document);
    if !has_control_in_json_text(&original, false) {
        assert_eq!(document, original, "restoring a redacted document did not give it back");
    }
}

/// Whether a string restored as JSON source (under [`JSON_TEXT_KEYS`], directly or in arrays)
/// holds a control character: its originals come back escaped, by design.
fn has_control_in_json_text(value: &Value, json_text: bool) -> bool {
    match value {
        Value::String(text) => json_text && text.chars().any(char::is_control),
        Value::Array(items) => items.iter().any(|item| has_control_in_json_text(item, json_text)),
        Value::Object(map) => {
            map.iter().any(|(key, item)| has_control_in_json_text(item, JSON_TEXT_KEYS.contains(&key.as_str())))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

//! Streaming restore across chunk boundaries.

use crate::{Detector, Redactor};
use std::sync::Arc;

fn redactor_with(text: &str) -> (Redactor, String) {
    let mut redactor = Redactor::new(Arc::new(Detector::new().unwrap()));
    let redacted = redactor.redact(text).unwrap().into_owned();
    (redactor, redacted)
}

fn stream_all(redactor: &Redactor, pieces: &[&str]) -> String {
    let mut stream = redactor.stream_restorer();
    let mut out: String = pieces.iter().map(|piece| stream.push(piece)).collect();
    out.push_str(&stream.finish());
    out
}

#[test]
fn restores_a_placeholder_split_across_chunks() {
    let (redactor, _) = redactor_with("john@x.com");
    assert_eq!(stream_all(&redactor, &["Hi [EMA", "IL_1] ok"]), "Hi john@x.com ok");
    assert_eq!(stream_all(&redactor, &["[", "E", "M", "A", "I", "L", "_", "1", "]"]), "john@x.com");
}

#[test]
fn holds_back_only_a_possible_placeholder() {
    let (redactor, _) = redactor_with("john@x.com");
    let mut stream = redactor.stream_restorer();
    assert_eq!(stream.push("a [link](x) and [EMA"), "a [link](x) and ");
    assert!(stream.is_holding());
    assert_eq!(stream.push("IL_1]"), "john@x.com");
    assert!(!stream.is_holding());
    assert_eq!(stream.push("[lower"), "[lower");
    assert_eq!(stream.push("[EMAIL_12345"), "[EMAIL_12345", "longer than any issued placeholder");
    assert_eq!(stream.push("[EMAIL_"), "");
    assert_eq!(stream.finish(), "[EMAIL_");
}

#[test]
fn every_split_point_gives_the_whole_restore() {
    let (redactor, redacted) = redactor_with("mail john@x.com, call +44 20 7946 0958, card 4111 1111 1111 1111 [x]");
    let whole = redactor.restore(&redacted).into_owned();
    for first in 0..=redacted.len() {
        for second in first..=redacted.len() {
            let pieces = [&redacted[..first], &redacted[first..second], &redacted[second..]];
            assert_eq!(stream_all(&redactor, &pieces), whole, "split at {first}, {second}");
        }
    }
}

#[test]
fn passes_text_through_when_nothing_was_redacted() {
    let (redactor, _) = redactor_with("nothing here");
    let mut stream = redactor.stream_restorer();
    assert_eq!(stream.push("[EMA"), "[EMA");
    assert_eq!(stream.finish(), "");
}

#[test]
fn channels_are_independent() {
    let (redactor, _) = redactor_with("john@x.com +44 20 7946 0958");
    let restorer = redactor.restorer();
    let mut content = restorer.stream();
    let mut arguments = restorer.stream();
    assert_eq!(content.push("to [EMA"), "to ");
    assert_eq!(arguments.push("{\"p\":\"[PHO"), "{\"p\":\"");
    assert_eq!(content.push("IL_1]"), "john@x.com");
    assert_eq!(arguments.push("NE_1]\"}"), "+44 20 7946 0958\"}");
}

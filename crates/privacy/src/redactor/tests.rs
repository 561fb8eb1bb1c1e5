//! Placeholder numbering, reuse, escaping of look-alike placeholders, limits and Debug.

use super::*;
use crate::Limits;

fn redactor() -> Redactor {
    Redactor::new(Arc::new(Detector::new().unwrap()))
}

#[test]
fn numbers_per_kind_in_order_and_reuses_placeholders() {
    let mut r = redactor();
    let text = "a@x.io, +44 20 7946 0958, b@x.io, again a@x.io";
    let redacted = r.redact(text).unwrap();
    assert_eq!(redacted, "[EMAIL_1], [PHONE_1], [EMAIL_2], again [EMAIL_1]");
    assert_eq!(r.restore(&redacted), text);
    assert_eq!(r.counts(), BTreeMap::from([(EntityKind::Email, 2), (EntityKind::Phone, 1)]));
    assert_eq!(r.total(), 3);
    // Later fields continue the numbering and reuse earlier placeholders.
    assert_eq!(r.redact("c@x.io and a@x.io").unwrap(), "[EMAIL_3] and [EMAIL_1]");
}

#[test]
fn text_without_findings_is_borrowed() {
    let mut r = redactor();
    assert!(matches!(r.redact("nothing personal here").unwrap(), Cow::Borrowed(_)));
    assert!(matches!(r.restore("[EMAIL_1]"), Cow::Borrowed(_)));
}

#[test]
fn placeholders_already_in_the_input_are_never_issued() {
    let mut r = redactor();
    let text = "template [EMAIL_1] and [EMAIL_2], real one john@x.com";
    let redacted = r.redact(text).unwrap();
    assert_eq!(redacted, "template [EMAIL_1] and [EMAIL_2], real one [EMAIL_3]");
    assert_eq!(r.restore(&redacted), text);
    // The model echoing the user's own template text gets it back untouched.
    assert_eq!(r.restore("[EMAIL_1] [EMAIL_3]"), "[EMAIL_1] john@x.com");
}

#[test]
fn an_issued_placeholder_typed_in_a_later_field_is_escaped() {
    let mut r = redactor();
    let first = r.redact("mail john@x.com").unwrap().into_owned();
    assert_eq!(first, "mail [EMAIL_1]");
    let second_text = "the user typed [EMAIL_1] literally";
    let second = r.redact(second_text).unwrap().into_owned();
    assert_eq!(second, "the user typed [EMAIL_2] literally");
    assert_eq!(r.restore(&first), "mail john@x.com");
    assert_eq!(r.restore(&second), second_text);
    // Restoring is one pass: the restored `[EMAIL_1]` is not restored again.
    assert_eq!(r.restore("[EMAIL_2]"), "[EMAIL_1]");
    // Escapes are not personal data and are not counted.
    assert_eq!(r.total(), 1);
}

#[test]
fn unknown_placeholders_are_left_alone() {
    let mut r = redactor();
    let _ = r.redact("john@x.com").unwrap();
    assert_eq!(r.restore("[EMAIL_9] [PHONE_1] [EMAIL_1] [EMAIL_1"), "[EMAIL_9] [PHONE_1] john@x.com [EMAIL_1");
}

#[test]
fn a_restorer_is_a_snapshot() {
    let mut r = redactor();
    let _ = r.redact("john@x.com").unwrap();
    let early = r.restorer();
    let _ = r.redact("jane@x.com").unwrap();
    let late = r.restorer();
    assert_eq!(early.restore("[EMAIL_1] [EMAIL_2]"), "john@x.com [EMAIL_2]");
    assert_eq!(late.restore("[EMAIL_1] [EMAIL_2]"), "john@x.com jane@x.com");
}

#[test]
fn input_limit_is_per_request() {
    let detector = Detector::with_limits(Limits { max_input_bytes: 20, max_entities: 10 }).unwrap();
    let mut r = Redactor::new(Arc::new(detector));
    assert!(r.redact("0123456789").is_ok());
    assert!(r.redact("0123456789").is_ok());
    assert_eq!(r.redact("x"), Err(RedactError::InputTooLarge { limit: 20 }));
}

#[test]
fn entity_limit_fails_closed() {
    let detector = Detector::with_limits(Limits { max_input_bytes: 1 << 20, max_entities: 2 }).unwrap();
    let mut r = Redactor::new(Arc::new(detector));
    assert!(r.redact("a@x.io b@x.io a@x.io").is_ok());
    assert_eq!(r.redact("c@x.io"), Err(RedactError::TooManyEntities { limit: 2 }));
}

#[test]
fn debug_and_errors_show_no_content() {
    let mut r = redactor();
    let _ = r.redact("john@x.com 4111 1111 1111 1111").unwrap();
    let shown = format!("{r:?} {:?} {:?}", r.restorer(), r.stream_restorer());
    assert!(!shown.contains("john") && !shown.contains("4111"), "{shown}");
    assert!(shown.contains("Email: 1") && shown.contains("Card: 1"), "{shown}");
    let error = RedactError::InputTooLarge { limit: 5 }.to_string();
    assert!(!error.contains("john"));
}

/// Found by fuzzing (crates/fuzzing/regressions/pii_redactor/): a value glued to another is
/// no value until its neighbour becomes a placeholder, and must not leave then.
#[test]
fn values_revealed_by_replacing_a_neighbour_are_replaced_too() {
    let mut r = redactor();
    let text = "write to carol@example.or13812345678 today";
    let redacted = r.redact(text).unwrap().into_owned();
    assert_eq!(redacted, "write to [EMAIL_1][PHONE_1] today");
    assert_eq!(r.restore(&redacted), text);

    let text = "at 2001:db8:85a3::8a2e:370:73FODNN7EXAMP13812345678bob@corp.io ok";
    let redacted = r.redact(text).unwrap().into_owned();
    assert_eq!(redacted, "at [IP_1]:[EMAIL_2] ok");
    assert_eq!(r.restore(&redacted), text);
    assert!(r.detector.find(&redacted).unwrap().is_empty());
}

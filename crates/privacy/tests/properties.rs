//! Properties of the firewall over generated inputs:
//! (a) restoring a redaction gives back the input, whatever it holds;
//! (b) no generated value survives redaction;
//! (c) streaming restore over any chunking equals restoring the whole text;
//! (d) JSON-encoded text (tool-call arguments) stays valid JSON and keeps no value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use proptest::sample::select;
use std::sync::{Arc, LazyLock};
use veil_privacy::{Detector, Redactor};

static DETECTOR: LazyLock<Arc<Detector>> = LazyLock::new(|| Arc::new(Detector::new().unwrap()));

fn redactor() -> Redactor {
    Redactor::new(Arc::clone(&DETECTOR))
}

// ---- generators of valid values ---------------------------------------------------------

fn email() -> impl Strategy<Value = String> {
    ("[a-z][a-z0-9]{0,7}(\\.[a-z0-9]{1,5})?", "[a-z]{2,8}", select(vec!["com", "org", "io", "cn", "co.uk"]))
        .prop_map(|(local, domain, tld)| format!("{local}@{domain}.{tld}"))
}

fn luhn_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn card() -> impl Strategy<Value = String> {
    (select(vec![4u8, 5]), proptest::collection::vec(0u8..10, 14), any::<bool>()).prop_filter_map(
        "not one repeated digit",
        |(first, rest, grouped)| {
            let mut digits = vec![first];
            digits.extend(rest);
            digits.push(luhn_check_digit(&digits));
            if digits.windows(2).all(|w| w[0] == w[1]) {
                return None;
            }
            let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            Some(if grouped {
                plain.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
            } else {
                plain
            })
        },
    )
}

fn iban() -> impl Strategy<Value = String> {
    (proptest::collection::vec(0u8..10, 18), any::<bool>()).prop_map(|(bban, grouped)| {
        let bban: String = bban.iter().map(|d| char::from(b'0' + d)).collect();
        // Check digits: 98 - (BBAN + "DE00" as digits) mod 97; D=13, E=14.
        let numeric = format!("{bban}131400");
        let remainder = numeric.bytes().fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
        let plain = format!("DE{:02}{bban}", 98 - remainder);
        if grouped {
            plain.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
        } else {
            plain
        }
    })
}

fn cn_id() -> impl Strategy<Value = String> {
    (select(vec!["110105", "310101", "440305", "510104", "650102"]), 1900u32..2024, 1u32..13, 1u32..29, 0u32..1000)
        .prop_map(|(region, year, month, day, sequence)| {
            let body = format!("{region}{year:04}{month:02}{day:02}{sequence:03}");
            const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
            let sum: u32 = WEIGHTS.iter().zip(body.bytes()).map(|(w, b)| w * u32::from(b - b'0')).sum();
            format!("{body}{}", char::from(b"10X98765432"[(sum % 11) as usize]))
        })
}

fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        "1[3-9][0-9]{9}",
        "\\+86 1[3-9][0-9] [0-9]{4} [0-9]{4}",
        "\\+44 20 [0-9]{4} [0-9]{4}",
        "\\+1 \\([2-9][0-9]{2}\\) [2-9][0-9]{2}-[0-9]{4}",
        "[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}",
    ]
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u8..224, any::<u8>(), any::<u8>(), 1u8..255)
            .prop_filter("not loopback", |(a, ..)| *a != 127)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        proptest::collection::vec(1u16.., 8)
            .prop_map(|groups| { groups.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":") }),
    ]
}

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z]{10}[0-9][A-Za-z0-9]{20}".prop_map(|body| format!("sk-proj-{body}")),
        "[A-Z2-7]{16}".prop_map(|body| format!("AKIA{body}")),
        "[A-Za-z0-9]{36}".prop_map(|body| format!("ghp_{body}")),
    ]
}

fn entity() -> impl Strategy<Value = String> {
    prop_oneof![email(), card(), iban(), cn_id(), phone(), ip(), secret()]
}

/// Text that tries to confuse the placeholder scheme.
fn placeholder_like() -> impl Strategy<Value = String> {
    prop_oneof![
        (select(vec!["EMAIL", "PHONE", "CN_ID", "CARD", "IBAN", "IP", "SECRET", "NAME"]), 0u32..4)
            .prop_map(|(label, n)| format!("[{label}_{n}]")),
        select(vec!["[", "]", "[EMAIL_", "_1]", "[[EMAIL_1]]", "\\", "\\n", "\\u00e9"]).prop_map(str::to_owned),
    ]
}

fn separator() -> impl Strategy<Value = String> {
    select(vec![" ", ", ", "\n", " and ", "；", "，", "。", "\t", " (", ") ", ": ", "/", "|", "\"", "; ", "<", "> "])
        .prop_map(str::to_owned)
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => entity(),
        2 => placeholder_like(),
        2 => "\\PC{0,12}",
        1 => "[0-9 .+\\-]{0,12}",
    ]
}

fn mixed_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..8).prop_map(|segments| segments.concat())
}

// ---- properties -------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) Every field of a request comes back exactly, whatever order they are redacted in.
    #[test]
    fn restore_inverts_redact(fields in proptest::collection::vec(mixed_text(), 1..4)) {
        let mut r = redactor();
        let redacted: Vec<String> = fields.iter().map(|field| r.redact(field).unwrap().into_owned()).collect();
        for (field, redacted) in fields.iter().zip(&redacted) {
            prop_assert_eq!(r.restore(redacted), field.as_str());
        }
    }

    /// (a) for arbitrary Unicode, including text that only looks like placeholders.
    #[test]
    fn restore_inverts_redact_on_any_string(first in "\\PC*", second in "\\PC*") {
        let mut r = redactor();
        let a = r.redact(&first).unwrap().into_owned();
        let b = r.redact(&second).unwrap().into_owned();
        prop_assert_eq!(r.restore(&a), first.as_str());
        prop_assert_eq!(r.restore(&b), second.as_str());
    }

    /// (b) No generated value is left in the redacted text.
    #[test]
    fn no_value_survives(values in proptest::collection::vec((entity(), separator()), 1..6), prefix in separator()) {
        let mut text = prefix;
        for (value, separator) in &values {
            text.push_str(value);
            text.push_str(separator);
        }
        let mut r = redactor();
        let redacted = r.redact(&text).unwrap().into_owned();
        for (value, _) in &values {
            prop_assert!(!redacted.contains(value.as_str()), "{value:?} survived in {redacted:?}");
        }
        prop_assert_eq!(r.restore(&redacted), text.as_str());
    }

    /// (c) Any chunking of a response restores to the same text as the whole response.
    #[test]
    fn streaming_equals_whole(
        input in mixed_text(),
        response in proptest::collection::vec(prop_oneof![mixed_text(), placeholder_like()], 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut r = redactor();
        let redacted = r.redact(&input).unwrap().into_owned();
        // The upstream echoes our placeholders amid other text.
        let text = format!("{redacted}{}{redacted}", response.concat());
        let mut boundaries: Vec<usize> = cuts.iter().map(|cut| cut.index(text.len() + 1)).collect();
        boundaries.retain(|&b| text.is_char_boundary(b));
        boundaries.sort_unstable();
        let restorer = r.restorer();
        for (mut stream, whole) in [
            (restorer.stream(), restorer.restore(&text).into_owned()),
            (restorer.stream_json_text(), restorer.restore_json_text(&text).into_owned()),
        ] {
            let mut streamed = String::new();
            let mut last = 0;
            for &boundary in boundaries.iter().chain([&text.len()]) {
                streamed.push_str(&stream.push(&text[last..boundary]));
                last = boundary;
            }
            streamed.push_str(&stream.finish());
            prop_assert_eq!(streamed, whole);
        }
    }

    /// (d) Tool-call arguments are JSON inside a string: redacted as text they must stay
    /// valid JSON (escapes such as `\n` never cut) and hold none of the values.
    #[test]
    fn json_encoded_text_stays_valid(values in proptest::collection::vec((entity(), separator()), 1..5), prefix in "\\PC{0,6}") {
        let body: String = values.iter().map(|(value, separator)| format!("{value}{separator}\n")).collect();
        let arguments = serde_json::json!({"note": format!("{prefix}\n{body}"), "to": values[0].0}).to_string();
        let mut r = redactor();
        let redacted = r.redact(&arguments).unwrap().into_owned();
        let parsed: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        let note = parsed["note"].as_str().unwrap();
        for (value, _) in &values {
            prop_assert!(!note.contains(value.as_str()), "{value:?} survived in {note:?}");
        }
        prop_assert_eq!(r.restore(&redacted), arguments.as_str());
    }
}

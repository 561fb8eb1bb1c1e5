//! Per-detector true positives and near-miss negatives.

use super::*;

static DETECTOR: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(|| Detector::new().unwrap());

fn detector() -> &'static Detector {
    &DETECTOR
}

/// The texts and kinds of every finding.
fn found(text: &str) -> Vec<(EntityKind, &str)> {
    detector().find(text).unwrap().into_iter().map(|f| (f.kind, &text[f.start..f.end])).collect()
}

fn assert_single(text: &str, kind: EntityKind, value: &str) {
    assert_eq!(found(text), vec![(kind, value)], "in {text:?}");
}

fn assert_none(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

#[test]
fn emails() {
    assert_single(
        "write to john.doe+tag@mail.example.co.uk today",
        EntityKind::Email,
        "john.doe+tag@mail.example.co.uk",
    );
    assert_single("邮箱是zhang_san@example.cn谢谢", EntityKind::Email, "zhang_san@example.cn");
    assert_single("<mailto:a.b@c.io>", EntityKind::Email, "a.b@c.io");
    assert_single("José: josé@correo.es", EntityKind::Email, "josé@correo.es");
    assert_single(r#"{"body":"Hi,\njohn@x.com\n"}"#, EntityKind::Email, "john@x.com");
    assert_single(r#"{"to":"\u00e9mile@x.fr"}"#, EntityKind::Email, "mile@x.fr");
    assert_single("...leading.dots@x.org", EntityKind::Email, "leading.dots@x.org");
    assert_none("user@localhost");
    assert_none("@handle and a@b");
    assert_none("price 3@4.5");
}

#[test]
fn international_phones() {
    for phone in [
        "+44 20 7946 0958",
        "+1 (415) 555-2671",
        "+1-415-555-2671",
        "+1.415.555.2671",
        "+33 1 23 45 67 89",
        "+49 30 1234567",
        "+91 98765 43210",
        "+8613812345678",
        "+86 138-1234-5678",
        "+44 (0)20 7946 0958",
    ] {
        assert_single(&format!("call {phone} now"), EntityKind::Phone, phone);
    }
    assert_single("+44 20 7946 0958 2 times", EntityKind::Phone, "+44 20 7946 0958");
    assert_none("+100.000.000 users");
    assert_none("+1234567 is seven digits");
    assert_none("+1 2 3 4 5 6 7 8");
    assert_none("x+44 20 7946 0958");
    assert_none("+12345678901234567 too long");
}

#[test]
fn north_american_phones() {
    for phone in ["(415) 555-2671", "415-555-2671", "415.555.2671", "415 555 2671", "1-800-555-1212", "(415)555-2671"] {
        assert_single(&format!("tel: {phone}."), EntityKind::Phone, phone);
    }
    assert_none("call 4155552671");
    assert_none("call 123-456-7890");
    assert_none("id 12-415-555-2671");
    assert_none("v415.555.2671");
}

#[test]
fn chinese_mobiles() {
    assert_single("手机13812345678，谢谢", EntityKind::Phone, "13812345678");
    assert_single("phone: 138 1234 5678", EntityKind::Phone, "138 1234 5678");
    assert_single("phone: 138-1234-5678", EntityKind::Phone, "138-1234-5678");
    assert_single("0086 13812345678", EntityKind::Phone, "0086 13812345678");
    assert_none("12812345678");
    assert_none("138123456789");
    assert_none("order 1700000000000");
    assert_none("id13812345678");
}

/// `body` (17 digits) with its ISO 7064 MOD 11-2 check character appended.
fn cn_id(body: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = WEIGHTS.iter().zip(body.bytes()).map(|(w, b)| w * u32::from(b - b'0')).sum();
    format!("{body}{}", char::from(b"10X98765432"[(sum % 11) as usize]))
}

#[test]
fn chinese_resident_ids() {
    assert_single("身份证号11010519491231002X。", EntityKind::CnId, "11010519491231002X");
    let id = cn_id("44030419900307123");
    assert_single(&format!("ID: {id}"), EntityKind::CnId, &id);
    let wrong_check = format!("{}{}", &id[..17], if id.ends_with('0') { '1' } else { '0' });
    assert!(found(&wrong_check).iter().all(|(kind, _)| *kind != EntityKind::CnId));
    assert_none(&cn_id("44030419901307123"));
    assert_none(&format!("{id}5"));
}

#[test]
fn payment_cards() {
    for card in
        ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004", "3782 822463 10005"]
    {
        assert_single(&format!("card {card} exp"), EntityKind::Card, card);
    }
    assert_single("ref 12 4111 1111 1111 1111", EntityKind::Card, "4111 1111 1111 1111");
    assert_single("4111111111111111-12", EntityKind::Card, "4111111111111111");
    assert_none("4111 1111 1111 1112");
    assert_none("random 4539 1488 0343 6468");
    assert_none("5555555555555555");
    assert_none("x4111111111111111");
    assert_none("ts 1700000000000");
    assert_none("+4111111111111111");
    assert_none("44 20 7946 0958 2");
}

#[test]
fn random_sixteen_digit_numbers_failing_luhn_are_kept() {
    let mut kept = 0;
    for seed in 0u64..200 {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut number = String::from("4");
        for _ in 0..15 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            number.push(char::from(b'0' + ((state >> 33) % 10) as u8));
        }
        let digits: Vec<u8> = number.bytes().map(|b| b - b'0').collect();
        if !luhn_valid(&digits) {
            assert_none(&number);
            kept += 1;
        }
    }
    assert!(kept > 150);
}

#[test]
fn ibans() {
    for iban in [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "NL91ABNA0417164300",
        "NO9386011117947",
    ] {
        assert_single(&format!("IBAN: {iban}."), EntityKind::Iban, iban);
    }
    assert_single("iban de89370400440532013000", EntityKind::Iban, "de89370400440532013000");
    assert_single("DE89 3704 0044 0532 0130 00 99", EntityKind::Iban, "DE89 3704 0044 0532 0130 00");
    assert_none("DE88370400440532013000");
    assert_none("US89370400440532013000");
    assert_none("DE8937040044053201300");
    assert_none("XDE89370400440532013000");
}

#[test]
fn ipv4_addresses_and_version_strings() {
    assert_single("host 192.168.1.10:8080", EntityKind::Ip, "192.168.1.10");
    assert_single("from 8.8.8.8.", EntityKind::Ip, "8.8.8.8");
    assert_single("ip=203.0.113.5,", EntityKind::Ip, "203.0.113.5");
    assert_none("version 1.2.3.4.5");
    assert_none("1.2.3.4.5.6");
    assert_none("256.1.1.1");
    assert_none("01.02.03.04");
    assert_none("127.0.0.1 and 0.0.0.0");
    assert_none("v10.0.0.1");
}

#[test]
fn ipv6_addresses() {
    for address in [
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8::8a2e:370:7334",
        "fe80::1ff:fe23:4567:890a",
        "::ffff:192.0.2.128",
    ] {
        assert_single(&format!("addr {address} up"), EntityKind::Ip, address);
    }
    assert_single("[2001:db8::1:2]:443", EntityKind::Ip, "2001:db8::1:2");
    assert_single("at 2001:db8::1:2:", EntityKind::Ip, "2001:db8::1:2");
    // JSON-encoded text: the `b` of the escape `\b` is not part of the address.
    assert_single(r"\bbeef:1:2::3", EntityKind::Ip, "beef:1:2::3");
    assert_single(r"\u00e9ab:cd::1:2", EntityKind::Ip, "ab:cd::1:2");
    assert_none("::1 and ::");
    assert_none("std::io::Result and a::b");
    assert_none("12:30:45");
    assert_none("00:1A:2B:3C:4D:5E");
    assert_none("fe80::1");
}

#[test]
fn secrets() {
    let cases = [
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1HgFeDcBa",
        "sk-veil-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_0123456789abcdefghijABCDEFGHIJklmnop",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-1234567890-abcdefghij",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ];
    for secret in cases {
        assert_single(&format!("key={secret} end"), EntityKind::Secret, secret);
    }
    assert_none("pip install scikit-learn sk-learn-is-a-long-package-name");
    assert_none("task-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z");
    assert_none("AKIA1234");
}

#[test]
fn bearer_tokens() {
    assert_single("Authorization: Bearer q8Zr3LmA0xT7vKpW2nYcD4", EntityKind::Secret, "q8Zr3LmA0xT7vKpW2nYcD4");
    assert_single("authorization: bearer q8Zr3LmA0xT7vKpW2nYcD4", EntityKind::Secret, "q8Zr3LmA0xT7vKpW2nYcD4");
    assert_none("Bearer YOUR_API_KEY_GOES_HERE");
    assert_none("Bearer aaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_none("the bearer of this letter");
}

#[test]
fn private_key_blocks() {
    let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF\n-----END RSA PRIVATE KEY-----";
    assert_single(&format!("key:\n{block}\nthanks"), EntityKind::Secret, block);
    let escaped = r#"{"pem":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n"}"#;
    assert_single(
        escaped,
        EntityKind::Secret,
        r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
    );
    let unterminated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n";
    assert_single(unterminated, EntityKind::Secret, unterminated.trim_end());
}

#[test]
fn a_straddling_chance_match_does_not_hide_two_real_values() {
    // Covering two values beats one longer span across both.
    let spans = vec![(0usize, 19usize, 4u8), (5, 30, 4), (20, 39, 4)];
    assert_eq!(resolve_overlaps(spans, |&s| s), vec![(0, 19, 4), (20, 39, 4)]);
}

#[test]
fn overlaps_prefer_longer_then_more_specific() {
    // An 18-digit CN ID that also passes Luhn would be a card too; it is reported once.
    let id = cn_id("11010519491231002");
    let findings = found(&id);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].0, EntityKind::CnId);
    // The e-mail contains a mobile number; the longer e-mail wins.
    assert_single("13812345678@qq.com", EntityKind::Email, "13812345678@qq.com");
    // The international form includes the North-American one.
    assert_single("+1 415 555 2671", EntityKind::Phone, "+1 415 555 2671");
}

#[test]
fn resolution_is_order_independent() {
    let spans = vec![(0usize, 10usize, 1u8), (5, 20, 1), (18, 25, 9), (30, 31, 1), (0, 10, 5)];
    let mut reversed = spans.clone();
    reversed.reverse();
    let forward = resolve_overlaps(spans, |&s| s);
    let backward = resolve_overlaps(reversed, |&s| s);
    assert_eq!(forward, backward);
    assert_eq!(forward, vec![(0, 10, 5), (18, 25, 9), (30, 31, 1)]);
}

#[test]
fn many_findings_in_mixed_text() {
    let text = "Contact john@x.com or +44 20 7946 0958; card 4111 1111 1111 1111; \
                IBAN DE89370400440532013000 from 203.0.113.5 with sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv";
    let kinds: Vec<_> = found(text).into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntityKind::Email,
            EntityKind::Phone,
            EntityKind::Card,
            EntityKind::Iban,
            EntityKind::Ip,
            EntityKind::Secret
        ]
    );
}

#[test]
fn oversized_text_is_refused() {
    let small = Detector::with_limits(Limits { max_input_bytes: 10, max_entities: 10 }).unwrap();
    assert_eq!(small.find("01234567890"), Err(RedactError::InputTooLarge { limit: 10 }));
    assert!(small.find("0123456789").is_ok());
}

#[test]
fn pathological_inputs_finish_quickly() {
    let digits = "1".repeat(200_000);
    let _ = detector().find(&digits).unwrap();
    let keys = "sk-".repeat(100_000);
    let _ = detector().find(&keys).unwrap();
    let colons = "a:".repeat(100_000);
    let _ = detector().find(&colons).unwrap();
    let ibans = "DE89 ".repeat(50_000);
    let _ = detector().find(&ibans).unwrap();
    for unit in ["4 ", "1.", "a@", "+1 ", "::", "ab:", "(1) ", "a.b@", "Bearer ", "-----BEGIN PRIVATE KEY-----"] {
        let text = unit.repeat(200_000 / unit.len());
        let _ = detector().find(&text).unwrap();
    }
    let long_local_part = format!("{}@", "a".repeat(200_000));
    let _ = detector().find(&long_local_part).unwrap();
}

#[test]
fn debug_output_has_no_content() {
    let rendered = format!("{:?}", detector());
    assert!(rendered.starts_with("Detector"));
    assert!(!rendered.contains('@'));
}

#[test]
fn digit_runs_join_short_separators_only() {
    let text = b"call (415) 555-2671 or 1.2.3.4   99 DE89 3704";
    let runs: Vec<_> = digit_runs(text).map(|run| (&text[run.start..run.end], run.digits, run.dots)).collect();
    assert_eq!(
        runs,
        vec![(&b"415) 555-2671"[..], 10, 0), (&b"1.2.3.4"[..], 4, 3), (&b"99"[..], 2, 0), (&b"89 3704"[..], 6, 0)]
    );
    assert_eq!(next_digit(&[b'a'; 100]), None);
    assert_eq!(next_digit(&[&[b'a'; 70][..], b"7"].concat()), Some(70));
}

#[test]
fn hex_colon_runs_need_two_colons() {
    let text = b"at 10:30, addr 2001:db8::1 and fe80::1.";
    let runs: Vec<_> = hex_colon_runs(text).map(|(s, e)| &text[s..e]).collect();
    assert_eq!(runs, vec![&b"2001:db8::1"[..], &b"fe80::1."[..]]);
}

mod located_search {
    use super::*;
    use proptest::prelude::*;

    fn resolved(findings: Vec<Finding>) -> Vec<Finding> {
        resolve_overlaps(findings, |f| (f.start, f.end, f.kind.specificity()))
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-fA-FxX:. +()\\-@]{0,24}",
            "[a-z ]{0,8}",
            proptest::sample::select(vec![
                "4111 1111 1111 1111",
                "+44 20 7946 0958",
                "(415) 555-2671",
                "13812345678",
                "11010519491231002X",
                "DE89 3704 0044 0532 0130 00",
                "GB82WEST12345698765432",
                "192.168.1.10",
                "2001:db8::8a2e:370:7334",
                "::ffff:192.0.2.128",
                "john@x.com",
                "AKIAIOSFODNN7EXAMPLE",
                "\\n",
                "\\b",
                "\\f",
                "\\u00e9",
                "\\\\",
                "，",
            ])
            .prop_map(str::to_owned),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Looking only inside located runs finds exactly what scanning everything finds.
        #[test]
        fn agrees_with_scanning_everything(pieces in proptest::collection::vec(piece(), 0..10)) {
            let text = pieces.concat();
            let detector = detector();
            let mut located = Vec::new();
            detector.collect(&text, &mut located);
            let mut everything = Vec::new();
            detector.collect_exhaustively(&text, &mut everything);
            prop_assert_eq!(resolved(located), resolved(everything), "in {:?}", text);
        }
    }
}

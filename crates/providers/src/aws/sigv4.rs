//! AWS Signature Version 4 for one request with its whole body in hand (Bedrock's
//! JSON `POST`s), sent in the `Authorization` header.
//!
//! [`sign`] returns the headers to add to the request; the request must then be sent
//! exactly as signed: same method, URL (path and query as given), body, and the
//! headers passed in with the values passed in. Promises, per AWS's specification:
//! - the canonical URI is the URL's path as it goes on the wire (already
//!   percent-encoded) with each segment URI-encoded once more, as every service but S3
//!   requires, so a Bedrock model id `…-v1:0` sent as `…-v1%3A0` signs as `…-v1%253A0`
//!   (build paths with [`encode_path_segment`]);
//! - the canonical query sorts the parameters by name, then value, each URI-encoded;
//! - header names are lower-cased, values trimmed with inner runs of spaces collapsed,
//!   repeated headers joined with `,`; `host` comes from the URL;
//! - the payload's SHA-256 is sent as `x-amz-content-sha256` and signed, and a session
//!   token, when there is one, is sent as `x-amz-security-token` and signed.
//!
//! Secrets never reach a `Debug` output or a log.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers [`sign`] computes itself; the same names in the caller's headers are ignored
/// so that nothing is sent twice.
const COMPUTED_HEADERS: [&str; 5] =
    ["host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "authorization"];

/// Long-term (access key) or temporary (with a session token) AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set for temporary credentials (STS, instance roles).
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access key id identifies the key but grants nothing; it helps diagnose
        // which credential a channel uses. The secret and the token stay hidden.
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The request to sign.
#[derive(Debug, Clone, Copy)]
pub struct SigningRequest<'a> {
    /// `POST`, `GET`, … (upper case, as sent).
    pub method: &'a str,
    /// The URL as it will be sent; its path must already be percent-encoded.
    pub url: &'a reqwest::Url,
    /// Other headers to sign and send (e.g. `content-type`, `accept`), with the exact
    /// values that will be sent.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Signs `request` for `service` in `region` at `time` and returns the headers to add:
/// `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` (when the credentials
/// have a session token) and `authorization`, in that order, names in lower case.
pub fn sign(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    request: &SigningRequest<'_>,
    time: SystemTime,
) -> Vec<(String, String)> {
    sign_with(credentials, region, service, request, time, true).headers
}

/// URI-encodes a path segment the SigV4 way (everything but `A-Z a-z 0-9 - _ . ~`),
/// which is also how AWS expects a segment on the wire: `anthropic.claude-v1:0`
/// becomes `anthropic.claude-v1%3A0`.
pub fn encode_path_segment(segment: &str) -> String {
    uri_encode(segment.as_bytes())
}

struct Signed {
    /// Kept for the tests, which pin it against AWS's published canonical requests.
    #[cfg_attr(not(test), expect(dead_code))]
    canonical_request: String,
    headers: Vec<(String, String)>,
}

/// [`sign`], with the choice of sending `x-amz-content-sha256` (AWS's published test
/// vectors do not; services accept it either way, and signing it binds the body hash
/// explicitly).
fn sign_with(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    request: &SigningRequest<'_>,
    time: SystemTime,
    send_content_sha256: bool,
) -> Signed {
    let (date, date_time) = amz_dates(time);
    let payload_hash = hex::encode(Sha256::digest(request.body));

    let mut added = vec![("x-amz-date".to_owned(), date_time.clone())];
    if send_content_sha256 {
        added.push(("x-amz-content-sha256".to_owned(), payload_hash.clone()));
    }
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }

    let mut signed_headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), normalize_header_value(value)))
        .filter(|(name, _)| !COMPUTED_HEADERS.contains(&name.as_str()))
        .collect();
    signed_headers.push(("host".to_owned(), host(request.url)));
    signed_headers.extend(added.iter().map(|(name, value)| (name.clone(), normalize_header_value(value))));
    // Stable: repeated headers keep their order when joined.
    signed_headers.sort_by(|a, b| a.0.cmp(&b.0));

    let mut canonical_headers = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &signed_headers {
        if names.last() == Some(&name.as_str()) {
            canonical_headers.pop();
            canonical_headers.push(',');
        } else {
            names.push(name);
            canonical_headers.push_str(name);
            canonical_headers.push(':');
        }
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_names = names.join(";");

    let canonical_request = format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{signed_names}\n{payload_hash}",
        method = request.method,
        uri = canonical_uri(request.url.path()),
        query = canonical_query(request.url.query().unwrap_or_default()),
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign =
        format!("{ALGORITHM}\n{date_time}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));

    let secret = format!("AWS4{}", credentials.secret_access_key);
    let mut signing_key = hmac_sha256(secret.as_bytes(), date.as_bytes());
    for part in [region.as_bytes(), service.as_bytes(), b"aws4_request"] {
        signing_key = hmac_sha256(&signing_key, part);
    }
    let signature = hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
        credentials.access_key_id
    );
    added.push(("authorization".to_owned(), authorization));
    Signed { canonical_request, headers: added }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this never fails; the fallback only keeps the
    // code free of panics.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `host[:port]` as the request will carry it (the port only when not the default).
fn host(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Trims a header value and collapses inner runs of spaces into one.
fn normalize_header_value(value: &str) -> String {
    let mut normalized = String::with_capacity(value.len());
    for word in value.split(' ').filter(|word| !word.is_empty()) {
        if !normalized.is_empty() {
            normalized.push(' ');
        }
        normalized.push_str(word);
    }
    normalized.trim_matches(|c: char| c.is_ascii_whitespace()).to_owned()
}

/// The wire path with each segment encoded once more (non-S3 rule).
fn canonical_uri(wire_path: &str) -> String {
    if wire_path.is_empty() {
        return "/".to_owned();
    }
    wire_path.split('/').map(|segment| uri_encode(segment.as_bytes())).collect::<Vec<_>>().join("/")
}

/// The query's parameters decoded, re-encoded the SigV4 way and sorted.
fn canonical_query(wire_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = wire_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(name)), uri_encode(&percent_decode(value)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

fn uri_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    encoded
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(hex) = bytes.get(at + 1..at + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            decoded.push(byte);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    decoded
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` in UTC; times before 1970 count as 1970.
fn amz_dates(time: SystemTime) -> (String, String) {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let date = format!("{year:04}{month:02}{day:02}");
    let date_time =
        format!("{date}T{:02}{:02}{:02}Z", second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    (date, date_time)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The credentials, scope and time every case of AWS's SigV4 test suite uses.
    fn suite_credentials(session_token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(Into::into),
        }
    }

    /// 2015-08-30T12:36:00Z.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    /// Signs like the test suite (no `x-amz-content-sha256`) and returns the signature
    /// header and the canonical request.
    fn suite_sign(method: &str, url: &str, headers: &[(&str, &str)], body: &str, token: Option<&str>) -> Signed {
        let url = reqwest::Url::parse(url).unwrap();
        let request = SigningRequest { method, url: &url, headers, body: body.as_bytes() };
        sign_with(&suite_credentials(token), "us-east-1", "service", &request, suite_time(), false)
    }

    fn authorization(signed: &Signed) -> &str {
        &signed.headers.iter().find(|(name, _)| name == "authorization").unwrap().1
    }

    fn suite_authorization(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed_headers}, Signature={signature}"
        )
    }

    // Expected values from AWS's Signature Version 4 test suite (aws-sig-v4-test-suite,
    // as shipped in the AWS SDKs' signer tests).

    #[test]
    fn post_vanilla() {
        let signed = suite_sign("POST", "https://example.amazonaws.com/", &[], "", None);
        assert_eq!(
            signed.canonical_request,
            "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            authorization(&signed),
            suite_authorization("host;x-amz-date", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
        );
        assert_eq!(signed.headers[0], ("x-amz-date".to_owned(), "20150830T123600Z".to_owned()));
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let signed = suite_sign("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", &[], "", None);
        assert_eq!(
            signed.canonical_request,
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            authorization(&signed),
            suite_authorization("host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
    }

    #[test]
    fn post_vanilla_query() {
        let signed = suite_sign("POST", "https://example.amazonaws.com/?Param1=value1", &[], "", None);
        assert_eq!(
            authorization(&signed),
            suite_authorization("host;x-amz-date", "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11")
        );
    }

    #[test]
    fn get_vanilla_query_unreserved() {
        let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let url = format!("https://example.amazonaws.com/?{unreserved}={unreserved}");
        let signed = suite_sign("GET", &url, &[], "", None);
        assert_eq!(
            authorization(&signed),
            suite_authorization("host;x-amz-date", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197")
        );
    }

    #[test]
    fn get_unreserved() {
        let url = "https://example.amazonaws.com/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let signed = suite_sign("GET", url, &[], "", None);
        assert_eq!(
            authorization(&signed),
            suite_authorization("host;x-amz-date", "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f")
        );
    }

    #[test]
    fn get_header_value_trim() {
        let headers = [("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")];
        let signed = suite_sign("GET", "https://example.amazonaws.com/", &headers, "", None);
        assert!(signed.canonical_request.contains("\nmy-header1:value1\nmy-header2:\"a b c\"\n"));
        assert_eq!(
            authorization(&signed),
            suite_authorization(
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
            )
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        let signed = suite_sign("POST", "https://example.amazonaws.com/", &headers, "Param1=value1", None);
        assert_eq!(
            authorization(&signed),
            suite_authorization(
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
    }

    #[test]
    fn post_sts_header_before() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIY\
                     RqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSX\
                     Dvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8\
                     fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let signed = suite_sign("POST", "https://example.amazonaws.com/", &[], "", Some(token));
        assert_eq!(
            authorization(&signed),
            suite_authorization(
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            )
        );
        assert_eq!(signed.headers[1], ("x-amz-security-token".to_owned(), token.to_owned()));
    }

    #[test]
    fn repeated_headers_are_joined_in_order() {
        // The test suite's get-header-key-duplicate, sent as separate headers.
        let headers = [("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")];
        let signed = suite_sign("GET", "https://example.amazonaws.com/", &headers, "", None);
        assert_eq!(
            authorization(&signed),
            suite_authorization(
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
            )
        );
    }

    #[test]
    fn bedrock_model_ids_are_double_encoded_in_the_canonical_uri() {
        let model = "anthropic.claude-3-5-sonnet-20240620-v1:0";
        assert_eq!(encode_path_segment(model), "anthropic.claude-3-5-sonnet-20240620-v1%3A0");
        let url = format!(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/{}/converse-stream",
            encode_path_segment(model)
        );
        assert!(url.ends_with("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"));
        let url = reqwest::Url::parse(&url).unwrap();
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let request = SigningRequest {
            method: "POST",
            url: &url,
            headers: &[("Content-Type", "application/json"), ("Accept", "application/vnd.amazon.eventstream")],
            body,
        };
        let credentials = suite_credentials(Some("session"));
        let signed = sign_with(&credentials, "us-east-1", "bedrock", &request, suite_time(), true);
        let body_hash = hex::encode(Sha256::digest(body));
        assert_eq!(
            signed.canonical_request,
            format!(
                "POST\n/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse-stream\n\n\
                 accept:application/vnd.amazon.eventstream\ncontent-type:application/json\n\
                 host:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-content-sha256:{body_hash}\n\
                 x-amz-date:20150830T123600Z\nx-amz-security-token:session\n\n\
                 accept;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token\n{body_hash}"
            )
        );
        let headers = sign(&credentials, "us-east-1", "bedrock", &request, suite_time());
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "authorization"]);
        assert_eq!(headers[1].1, body_hash);
        assert!(headers[3].1.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
             SignedHeaders=accept;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ));
        assert_eq!(headers[3], signed.headers[3]);
    }

    #[test]
    fn matches_a_botocore_signature_for_a_bedrock_converse_call() {
        // Published as generated by botocore's SigV4Auth for this request at
        // 2026-07-11T12:34:56Z: it pins the double-encoded model id end to end.
        let url = reqwest::Url::parse(concat!(
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
        ))
        .unwrap();
        let request = SigningRequest {
            method: "POST",
            url: &url,
            headers: &[("content-type", "application/json")],
            body: br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        };
        let time = UNIX_EPOCH + Duration::from_secs(1_783_773_296);
        assert_eq!(amz_dates(time).1, "20260711T123456Z");
        let signed = sign_with(&suite_credentials(None), "us-east-1", "bedrock", &request, time, false);
        assert_eq!(
            authorization(&signed),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260711/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ae768b88a6982fa3a8811e2286c4360bf143e55da1d1aac37851bbf7a0b78773"
        );
    }

    #[test]
    fn caller_headers_cannot_override_computed_ones() {
        let url = reqwest::Url::parse("https://example.amazonaws.com:8443/a%20b/").unwrap();
        let request = SigningRequest {
            method: "POST",
            url: &url,
            headers: &[("Host", "evil.example"), ("X-Amz-Date", "19990101T000000Z"), ("Authorization", "x")],
            body: b"",
        };
        let signed = sign_with(&suite_credentials(None), "us-east-1", "service", &request, suite_time(), false);
        assert!(signed.canonical_request.starts_with(
            "POST\n/a%2520b/\n\nhost:example.amazonaws.com:8443\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
        ));
    }

    #[test]
    fn canonical_pieces() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/model/a%3Ab/converse"), "/model/a%253Ab/converse");
        assert_eq!(canonical_query("b=2&a=1&a=0&c=a*b&&d"), "a=0&a=1&b=2&c=a%2Ab&d=");
        assert_eq!(canonical_query("k=%E1%88%B4&bad=%zz"), "bad=%25zz&k=%E1%88%B4");
        assert_eq!(normalize_header_value("  a   b  "), "a b");
    }

    #[test]
    fn formats_dates_in_utc() {
        assert_eq!(amz_dates(suite_time()), ("20150830".into(), "20150830T123600Z".into()));
        assert_eq!(amz_dates(UNIX_EPOCH), ("19700101".into(), "19700101T000000Z".into()));
        // A leap day and the last second of a year.
        assert_eq!(amz_dates(UNIX_EPOCH + Duration::from_secs(951_782_400)).1, "20000229T000000Z");
        assert_eq!(amz_dates(UNIX_EPOCH + Duration::from_secs(1_704_067_199)).1, "20231231T235959Z");
        assert_eq!(amz_dates(UNIX_EPOCH - Duration::from_secs(10)).1, "19700101T000000Z");
    }

    #[test]
    fn debug_hides_the_secret_and_the_token() {
        let shown = format!("{:?}", suite_credentials(Some("TOKENVALUE")));
        assert_eq!(
            shown,
            concat!(
                r#"AwsCredentials { access_key_id: "AKIDEXAMPLE", secret_access_key: "<redacted>", "#,
                r#"session_token: Some("<redacted>") }"#
            )
        );
        assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("TOKENVALUE"));
    }
}

//! Redacting and restoring whole request and response bodies.

use super::*;
use crate::Detector;
use serde_json::json;
use std::sync::Arc;

fn redactor() -> Redactor {
    Redactor::new(Arc::new(Detector::new().unwrap()))
}

#[test]
fn redacts_text_fields_and_keeps_identifiers() {
    let mut request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Support agent. Escalations go to boss@corp.example."},
            {"role": "user", "content": [
                {"type": "text", "text": "I am john@x.com, card 4111 1111 1111 1111"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUtJQUlPU0ZPRE5ON0VYQU1QTEUgNDExMTExMTExMTExMTExMQ=="}}
            ]},
            {"role": "assistant", "tool_calls": [{
                "id": "call_john@x.com",
                "type": "function",
                "function": {"name": "send_mail", "arguments": "{\"to\":\"john@x.com\",\"body\":\"Hi,\\ncall +44 20 7946 0958\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sent to john@x.com"}
        ],
        "stream": true,
        "temperature": 0.2
    });
    let original = request.clone();
    let mut r = redactor();
    r.redact_json_strings(&mut request, NON_TEXT_KEYS).unwrap();

    assert_eq!(request["model"], "gpt-4o-mini");
    assert_eq!(request["messages"][0]["content"], "Support agent. Escalations go to [EMAIL_1].");
    assert_eq!(request["messages"][1]["content"][0]["text"], "I am [EMAIL_2], card [CARD_1]");
    assert_eq!(request["messages"][1]["content"][1], original["messages"][1]["content"][1], "data URL untouched");
    let call = &request["messages"][2]["tool_calls"][0];
    assert_eq!(call["id"], "call_john@x.com", "identifiers are kept");
    assert_eq!(call["function"]["name"], "send_mail");
    let arguments = call["function"]["arguments"].as_str().unwrap();
    assert_eq!(arguments, r#"{"to":"[EMAIL_2]","body":"Hi,\ncall [PHONE_1]"}"#);
    let parsed: Value = serde_json::from_str(arguments).unwrap();
    assert_eq!(parsed["body"], "Hi,\ncall [PHONE_1]", "arguments are still valid JSON");
    assert_eq!(request["messages"][3]["content"], "sent to [EMAIL_2]");
    assert_eq!(request["temperature"], 0.2);

    r.restore_json_strings(&mut request);
    assert_eq!(request, original);
}

#[test]
fn placeholders_in_kept_fields_are_reserved() {
    let mut request = json!({"id": "[EMAIL_1]", "messages": [{"content": "john@x.com"}]});
    let mut r = redactor();
    r.redact_json_strings(&mut request, NON_TEXT_KEYS).unwrap();
    assert_eq!(request["messages"][0]["content"], "[EMAIL_2]");
}

#[test]
fn restores_values_and_keys_in_a_response() {
    let mut r = redactor();
    let _ = r.redact("john@x.com 10.1.2.3").unwrap();
    let mut response = json!({
        "choices": [{"message": {"content": "Mailed [EMAIL_1] from [IP_1]", "tool_calls": [
            {"function": {"arguments": "{\"to\":\"[EMAIL_1]\"}"}}
        ]}}],
        "input": {"[EMAIL_1]": "[EMAIL_9]"}
    });
    r.restorer().restore_json_strings(&mut response);
    assert_eq!(response["choices"][0]["message"]["content"], "Mailed john@x.com from 10.1.2.3");
    assert_eq!(response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"to":"john@x.com"}"#);
    assert_eq!(response["input"]["john@x.com"], "[EMAIL_9]");
}

#[test]
fn a_multi_line_original_restored_into_arguments_keeps_them_valid_json() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    let mut r = redactor();
    assert_eq!(r.redact(&format!("use this key:\n{key}")).unwrap(), "use this key:\n[SECRET_1]");
    let mut response =
        json!({"tool_calls": [{"function": {"arguments": "{\"pem\":\"[SECRET_1]\"}"}}], "content": "[SECRET_1]"});
    r.restore_json_strings(&mut response);
    let arguments: Value =
        serde_json::from_str(response["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["pem"], key);
    assert_eq!(response["content"], key);
    // Streamed arguments, split inside the placeholder.
    let mut stream = r.restorer().stream_json_text();
    let streamed = [stream.push("{\"pem\":\"[SEC"), stream.push("RET_1]\"}"), stream.finish()].concat();
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap()["pem"], key);
}

#[test]
fn deep_documents_do_not_overflow_the_stack() {
    let mut value = json!("john@x.com");
    for _ in 0..100_000 {
        value = Value::Array(vec![value]);
    }
    let mut r = redactor();
    r.redact_json_strings(&mut value, NON_TEXT_KEYS).unwrap();
    r.restore_json_strings(&mut value);
    let mut inner = &value;
    while let Value::Array(items) = inner {
        inner = &items[0];
    }
    assert_eq!(inner, "john@x.com");
    // Dropping a 100 000-deep Value recurses in serde_json itself; flatten it first.
    let mut stack = vec![value];
    while let Some(node) = stack.pop() {
        if let Value::Array(items) = node {
            stack.extend(items);
        }
    }
}

#[test]
fn data_urls_are_recognised() {
    assert!(is_data_url("data:image/png;base64,AAAA"));
    assert!(is_data_url("DATA:audio/wav;base64,AAAA"));
    assert!(!is_data_url("data: my email is john@x.com"));
    assert!(!is_data_url("https://example.com/a.png"));
}

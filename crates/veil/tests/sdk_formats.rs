//! End to end with the official Anthropic, OpenAI and Google Gen AI Python SDKs, each talking to
//! Veil in its own format while the answers come from an upstream of a *different* type: the
//! compiled `veil serve` in front of one scripted mock upstream that has a channel of every type
//! (`openai`, `azure`, `anthropic`, `gemini`, `bedrock`) pointing at it.
//!
//! | client (Python file)                         | Veil route                  | upstreams         |
//! |----------------------------------------------|-----------------------------|-------------------|
//! | `anthropic` (`test_anthropic_sdk.py`)        | `/v1/messages`              | OpenAI, Gemini, Bedrock |
//! | `openai` Responses (`test_responses_sdk.py`) | `/v1/responses`             | Anthropic         |
//! | `openai` Chat (`test_responses_sdk.py`)      | `/v1/chat/completions`      | Gemini, Bedrock, Azure |
//! | `google-genai` (`test_genai_sdk.py`)         | `/v1beta/models/{m}:…`      | Anthropic, OpenAI |
//!
//! Design: the mock answers from one queue, so the scripting must line up with the calls. Rather
//! than running whole Python files against a long queue (where one added or failing call shifts
//! every later answer), the Rust side runs **one pytest function at a time** (`file::test`)
//! against the same Veil: [`cases`] lists, per Python test, the replies to queue just before it,
//! a check of exactly the upstream requests it caused, and the call records it must leave. After
//! each case any reply it did not consume is drained, so a failing case cannot shift the next one.
//! The mock's default reply is an error, so an unscripted upstream call is visible. Every Python
//! test must have its case: the test collects the Python files and fails on a missing or stale
//! entry. Failures are gathered and reported together at the end.
//!
//! The Python interpreter comes from `VEIL_PYTHON` (set by `scripts/test`, which prepares a venv
//! with the SDKs from `tests/sdk/requirements.txt`). Without it the test is skipped with a note,
//! unless `VEIL_REQUIRE_SERVICES=1`, as in CI, where a missing SDK is a failure.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use common::{Server, veil_json};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, RecordedRequest, Reply};

const OPENAI_SECRET: &str = "openai-upstream-secret";
const ANTHROPIC_SECRET: &str = "anthropic-upstream-secret";
const GEMINI_SECRET: &str = "gemini-upstream-secret";
const BEDROCK_KEY_ID: &str = "AKIDVEILSDKTEST";
const BEDROCK_SECRET: &str = "AKIDVEILSDKTEST:bedrock-upstream-secret";
const AZURE_SECRET: &str = "azure-upstream-secret";

/// What each channel calls the models routed to it.
const OPENAI_MODEL: &str = "gpt-4o-mini";
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
const GEMINI_MODEL: &str = "gemini-2.5-flash";
const BEDROCK_MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const AZURE_DEPLOYMENT: &str = "gpt-4o-prod";
const AZURE_API_VERSION: &str = "2024-10-21";

/// The arguments of the scripted tool calls (the Anthropic SDK tests ask for a unit too).
const WEATHER_ARGS: &str = r#"{"city":"Paris"}"#;
const WEATHER_ARGS_WITH_UNIT: &str = r#"{"city":"Paris","unit":"celsius"}"#;

const MESSAGES: &str = "/v1/messages";
const RESPONSES: &str = "/v1/responses";
const CHAT: &str = "/v1/chat/completions";
const GENERATE: &str = "/v1beta/models/{model}:generateContent";
const STREAM_GENERATE: &str = "/v1beta/models/{model}:streamGenerateContent";

fn python() -> Option<String> {
    match std::env::var("VEIL_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ if std::env::var("VEIL_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("VEIL_PYTHON is not set but VEIL_REQUIRE_SERVICES=1: run through scripts/test")
        }
        _ => {
            eprintln!("skipped: VEIL_PYTHON is not set (run scripts/test to prepare the SDK venv)");
            None
        }
    }
}

/// A call record one case must leave (status 200).
#[derive(Debug)]
struct Expected {
    path: &'static str,
    model: &'static str,
    channel: &'static str,
    stream: bool,
    input_tokens: u64,
    output_tokens: u64,
}

fn record(
    path: &'static str,
    model: &'static str,
    channel: &'static str,
    stream: bool,
    input_tokens: u64,
    output_tokens: u64,
) -> Expected {
    Expected { path, model, channel, stream, input_tokens, output_tokens }
}

/// One Python test function: the replies queued for it, a check of the upstream requests it
/// caused (exactly as many as `replies`), and the call records it leaves.
struct Case {
    file: &'static str,
    test: &'static str,
    replies: Vec<Reply>,
    check: fn(&[RecordedRequest]),
    records: Vec<Expected>,
}

fn case(file: &'static str, test: &'static str, replies: Vec<Reply>, check: fn(&[RecordedRequest])) -> Case {
    Case { file, test, replies, check, records: Vec::new() }
}

impl Case {
    fn leaves(mut self, records: Vec<Expected>) -> Self {
        self.records = records;
        self
    }
}

/// Usage the mock reports for a tool call: its default prompt count and one token per
/// argument fragment of up to eight characters.
fn tool_call_output_tokens(arguments: &str) -> u64 {
    u64::try_from(arguments.chars().count().div_ceil(8)).unwrap()
}

const ANTHROPIC_FILE: &str = "test_anthropic_sdk.py";
const RESPONSES_FILE: &str = "test_responses_sdk.py";
const GENAI_FILE: &str = "test_genai_sdk.py";

fn cases() -> Vec<Case> {
    let gap = Duration::from_millis(5);
    let tool_with_unit = tool_call_output_tokens(WEATHER_ARGS_WITH_UNIT);
    let tool = tool_call_output_tokens(WEATHER_ARGS);
    vec![
        // --- Anthropic SDK -> /v1/messages -------------------------------------------------
        case(
            ANTHROPIC_FILE,
            "test_create_through_openai",
            vec![Reply::chat_with_usage("Bonjour from the OpenAI upstream.", 30, 4, 12)],
            check_messages_create_through_openai,
        )
        .leaves(vec![record(MESSAGES, "claude-via-openai", "mock-openai", false, 30, 4)]),
        case(
            ANTHROPIC_FILE,
            "test_stream_through_gemini",
            vec![Reply::stream_with_usage(vec!["Streaming", " through", " Gemini."], gap, 21, 3, 0)],
            check_messages_stream_through_gemini,
        )
        .leaves(vec![record(MESSAGES, "claude-via-gemini", "mock-gemini", true, 21, 3)]),
        case(
            ANTHROPIC_FILE,
            "test_tool_use_round_trip_through_bedrock",
            vec![
                Reply::tool_call("get_weather", WEATHER_ARGS_WITH_UNIT),
                Reply::chat_with_usage("It is 18 degrees in Paris.", 40, 7, 0),
            ],
            check_messages_tool_use_through_bedrock,
        )
        .leaves(vec![
            record(MESSAGES, "claude-via-bedrock", "mock-bedrock", false, 10, tool_with_unit),
            record(MESSAGES, "claude-via-bedrock", "mock-bedrock", false, 40, 7),
        ]),
        case(
            ANTHROPIC_FILE,
            "test_streamed_tool_use_through_openai",
            vec![Reply::tool_call("get_weather", WEATHER_ARGS_WITH_UNIT)],
            check_messages_streamed_tool_use_through_openai,
        )
        .leaves(vec![record(MESSAGES, "claude-via-openai", "mock-openai", true, 10, tool_with_unit)]),
        case(ANTHROPIC_FILE, "test_count_tokens", vec![], no_upstream_call),
        case(ANTHROPIC_FILE, "test_unknown_model_is_a_not_found_error", vec![], no_upstream_call),
        case(ANTHROPIC_FILE, "test_bad_key_is_an_authentication_error", vec![], no_upstream_call),
        case(ANTHROPIC_FILE, "test_malformed_request_is_a_bad_request_error", vec![], no_upstream_call),
        // --- OpenAI SDK, Responses -> /v1/responses --------------------------------------------
        case(
            RESPONSES_FILE,
            "test_responses_create",
            vec![Reply::chat_with_usage("Hello from the Anthropic upstream.", 25, 5, 0)],
            check_responses_create,
        )
        .leaves(vec![record(RESPONSES, "gpt-via-anthropic", "mock-anthropic", false, 25, 5)]),
        case(
            RESPONSES_FILE,
            "test_responses_stream",
            vec![Reply::stream_with_usage(vec!["Streamed", " from", " Claude."], gap, 17, 3, 0)],
            check_responses_stream,
        )
        .leaves(vec![record(RESPONSES, "gpt-via-anthropic", "mock-anthropic", true, 17, 3)]),
        case(
            RESPONSES_FILE,
            "test_responses_function_call_round_trip",
            vec![Reply::tool_call("get_weather", WEATHER_ARGS), Reply::chat_with_usage("Sunny in Paris.", 18, 3, 0)],
            check_responses_function_call_round_trip,
        )
        .leaves(vec![
            record(RESPONSES, "gpt-via-anthropic", "mock-anthropic", false, 10, tool),
            record(RESPONSES, "gpt-via-anthropic", "mock-anthropic", false, 18, 3),
        ]),
        case(
            RESPONSES_FILE,
            "test_responses_streamed_function_call",
            vec![Reply::tool_call("get_weather", WEATHER_ARGS)],
            check_responses_streamed_function_call,
        )
        .leaves(vec![record(RESPONSES, "gpt-via-anthropic", "mock-anthropic", true, 10, tool)]),
        case(RESPONSES_FILE, "test_responses_previous_response_id_is_a_bad_request", vec![], no_upstream_call),
        // --- OpenAI SDK, Chat Completions -> /v1/chat/completions ------------------------------
        case(
            RESPONSES_FILE,
            "test_chat_tools_through_gemini",
            vec![
                Reply::tool_call("get_weather", WEATHER_ARGS),
                Reply::stream_with_usage(vec!["Sunny", " in Paris."], gap, 33, 2, 0),
            ],
            check_chat_tools_through_gemini,
        )
        .leaves(vec![
            record(CHAT, "gpt-via-gemini", "mock-gemini", false, 10, tool),
            record(CHAT, "gpt-via-gemini", "mock-gemini", true, 33, 2),
        ]),
        case(
            RESPONSES_FILE,
            "test_chat_stream_tools_through_bedrock",
            vec![Reply::tool_call("get_weather", WEATHER_ARGS), Reply::chat_with_usage("It is sunny.", 44, 3, 0)],
            check_chat_stream_tools_through_bedrock,
        )
        .leaves(vec![
            record(CHAT, "gpt-via-bedrock", "mock-bedrock", true, 10, tool),
            record(CHAT, "gpt-via-bedrock", "mock-bedrock", false, 44, 3),
        ]),
        case(
            RESPONSES_FILE,
            "test_chat_through_azure",
            vec![
                Reply::chat_with_usage("Hello from Azure.", 12, 3, 0),
                Reply::stream_with_usage(vec!["Streamed", " from Azure."], gap, 11, 2, 0),
            ],
            check_chat_through_azure,
        )
        .leaves(vec![
            record(CHAT, "gpt-via-azure", "mock-azure", false, 12, 3),
            record(CHAT, "gpt-via-azure", "mock-azure", true, 11, 2),
        ]),
        // --- Google Gen AI SDK -> /v1beta/models/{model}:… --------------------------------------
        case(
            GENAI_FILE,
            "test_generate_content_through_anthropic",
            vec![Reply::chat_with_usage("Hello from the Anthropic upstream.", 12, 6, 0)],
            check_genai_generate_through_anthropic,
        )
        .leaves(vec![record(GENERATE, "gemini-via-anthropic", "mock-anthropic", false, 12, 6)]),
        case(
            GENAI_FILE,
            "test_generate_content_stream_through_anthropic",
            vec![Reply::stream_with_usage(vec!["Streamed", " through", " Claude."], gap, 14, 3, 0)],
            check_genai_stream_through_anthropic,
        )
        .leaves(vec![record(STREAM_GENERATE, "gemini-via-anthropic", "mock-anthropic", true, 14, 3)]),
        case(
            GENAI_FILE,
            "test_function_call_through_openai",
            vec![Reply::tool_call("get_weather", WEATHER_ARGS), Reply::chat_with_usage("Sunny in Paris.", 27, 3, 0)],
            check_genai_function_call_through_openai,
        )
        .leaves(vec![
            record(GENERATE, "gemini-via-openai", "mock-openai", false, 10, tool),
            record(GENERATE, "gemini-via-openai", "mock-openai", false, 27, 3),
        ]),
        case(GENAI_FILE, "test_count_tokens_and_models", vec![], no_upstream_call),
        case(
            GENAI_FILE,
            "test_the_default_api_version",
            vec![Reply::chat_with_usage("Hello through v1.", 9, 3, 0)],
            check_genai_default_api_version,
        ),
        case(GENAI_FILE, "test_errors", vec![], no_upstream_call),
    ]
}

// --- Checks of what the upstream received ------------------------------------------------------

fn no_upstream_call(requests: &[RecordedRequest]) {
    assert!(requests.is_empty(), "no upstream call expected, got {:?}", paths(requests));
}

fn paths(requests: &[RecordedRequest]) -> Vec<String> {
    requests.iter().map(|r| format!("{} {}?{}", r.method, r.path, r.query.as_deref().unwrap_or(""))).collect()
}

/// The text of an OpenAI or Anthropic `content`: a string, or the joined `text` of its blocks.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        _ => String::new(),
    }
}

fn assert_openai_upstream(request: &RecordedRequest) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions", "{:?}", paths(std::slice::from_ref(request)));
    assert_eq!(request.header("authorization"), Some(format!("Bearer {OPENAI_SECRET}").as_str()));
    assert_eq!(request.body["model"], OPENAI_MODEL);
}

fn assert_anthropic_upstream(request: &RecordedRequest) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/messages", "{:?}", paths(std::slice::from_ref(request)));
    assert_eq!(request.header("x-api-key"), Some(ANTHROPIC_SECRET));
    assert!(request.header("authorization").is_none(), "the Anthropic API takes x-api-key only");
    assert!(request.header("anthropic-version").is_some(), "no anthropic-version header");
    assert_eq!(request.body["model"], ANTHROPIC_MODEL);
    assert!(request.body["max_tokens"].as_u64().is_some_and(|n| n > 0), "Anthropic requires max_tokens");
    // The Messages body is Anthropic's, not OpenAI's.
    for field in ["stream_options", "max_completion_tokens", "n", "store"] {
        assert!(request.body.get(field).is_none(), "an OpenAI field '{field}' in an Anthropic body");
    }
}

/// A Gemini call of the channel's model, its credential as `x-goog-api-key` or `?key=`.
fn assert_gemini_upstream(request: &RecordedRequest, stream: bool) {
    assert_eq!(request.method, "POST");
    let method = if stream { "streamGenerateContent" } else { "generateContent" };
    assert_eq!(request.path, format!("/v1beta/models/{GEMINI_MODEL}:{method}"));
    let query = request.query.as_deref().unwrap_or("");
    let in_query = query.split('&').any(|pair| pair == format!("key={GEMINI_SECRET}"));
    assert!(
        request.header("x-goog-api-key") == Some(GEMINI_SECRET) || in_query,
        "no Gemini credential: headers {:?}, query {query}",
        request.headers
    );
    if stream {
        assert!(query.split('&').any(|pair| pair == "alt=sse"), "a Gemini stream without alt=sse: {query}");
    }
    assert!(request.body["contents"].is_array(), "not a Gemini body: {}", request.body);
    assert!(request.body.get("messages").is_none());
}

fn assert_bedrock_upstream(request: &RecordedRequest, stream: bool) {
    assert_eq!(request.method, "POST");
    let tail = if stream { "/converse-stream" } else { "/converse" };
    let model = request.path.strip_prefix("/model/").and_then(|rest| rest.strip_suffix(tail));
    let model = model.unwrap_or_else(|| panic!("not a Bedrock Converse path: {}", request.path));
    assert!(
        model == BEDROCK_MODEL || model == BEDROCK_MODEL.replace(':', "%3A"),
        "the Bedrock model id in the path is {model}"
    );
    let authorization = request.header("authorization").unwrap_or_default();
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={BEDROCK_KEY_ID}/")),
        "not SigV4-signed with the channel's key id: {authorization:?}"
    );
    assert!(authorization.contains("/bedrock/aws4_request"), "{authorization}");
    assert!(authorization.contains("SignedHeaders=") && authorization.contains("Signature="), "{authorization}");
    assert!(!authorization.contains("bedrock-upstream-secret"), "the secret key leaked into the header");
    assert!(request.header("x-amz-date").is_some(), "no x-amz-date");
    assert!(request.body["messages"].is_array(), "not a Converse body: {}", request.body);
    assert!(request.body.get("model").is_none(), "Converse bodies carry no model");
}

fn assert_azure_upstream(request: &RecordedRequest) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"));
    assert_eq!(request.query.as_deref(), Some(format!("api-version={AZURE_API_VERSION}").as_str()));
    assert_eq!(request.header("api-key"), Some(AZURE_SECRET));
    assert!(request.header("authorization").is_none(), "Azure takes api-key, not a Bearer token");
}

fn check_messages_create_through_openai(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    let request = &requests[0];
    assert_openai_upstream(request);
    let body = &request.body;
    assert!(!request.is_stream());
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(text_of(&messages[0]["content"]), "Be brief.");
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(text_of(&messages[1]["content"]), "Say hello");
    let max = body.get("max_completion_tokens").or_else(|| body.get("max_tokens"));
    assert_eq!(max, Some(&json!(256)), "{body}");
}

fn check_messages_stream_through_gemini(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    let request = &requests[0];
    assert_gemini_upstream(request, true);
    let body = &request.body;
    assert_eq!(text_of(&body["systemInstruction"]["parts"]), "Be brief.", "{body}");
    assert_eq!(body["contents"][0]["role"], "user");
    assert_eq!(text_of(&body["contents"][0]["parts"]), "Stream please");
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 256, "{body}");
}

fn check_messages_tool_use_through_bedrock(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    for request in requests {
        assert_bedrock_upstream(request, false);
        let spec = &request.body["toolConfig"]["tools"][0]["toolSpec"];
        assert_eq!(spec["name"], "get_weather", "{}", request.body);
        assert_eq!(spec["inputSchema"]["json"]["properties"]["city"]["type"], "string");
        assert_eq!(request.body["inferenceConfig"]["maxTokens"], 256, "{}", request.body);
    }
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", requests[1].body);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["role"], "assistant");
    let tool_use = messages[1]["content"].as_array().unwrap().iter().find_map(|b| b.get("toolUse")).unwrap();
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(tool_use["input"], json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(messages[2]["role"], "user");
    let result = messages[2]["content"].as_array().unwrap().iter().find_map(|b| b.get("toolResult")).unwrap();
    assert_eq!(result["toolUseId"], tool_use["toolUseId"], "the result must answer the call");
    assert_eq!(text_of(&result["content"]), "18 degrees and sunny", "{result}");
}

fn check_messages_streamed_tool_use_through_openai(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    let request = &requests[0];
    assert_openai_upstream(request);
    assert!(request.is_stream());
    assert_eq!(request.body["stream_options"]["include_usage"], true);
    let tool = &request.body["tools"][0];
    assert_eq!(tool["type"], "function");
    assert_eq!(tool["function"]["name"], "get_weather");
    assert_eq!(tool["function"]["parameters"]["required"], json!(["city"]));
}

fn check_responses_create(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    let request = &requests[0];
    assert_anthropic_upstream(request);
    let body = &request.body;
    assert!(!request.is_stream());
    assert_eq!(text_of(&body["system"]), "Answer in English.", "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(text_of(&body["messages"][0]["content"]), "Say hello");
}

fn check_responses_stream(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    assert_anthropic_upstream(&requests[0]);
    assert!(requests[0].is_stream(), "{}", requests[0].body);
    assert_eq!(text_of(&requests[0].body["messages"][0]["content"]), "Stream please");
}

fn assert_anthropic_weather_tool(body: &Value) {
    let tool = &body["tools"][0];
    assert_eq!(tool["name"], "get_weather", "{body}");
    assert_eq!(tool["input_schema"]["properties"]["city"]["type"], "string", "{body}");
}

fn check_responses_function_call_round_trip(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    for request in requests {
        assert_anthropic_upstream(request);
        assert_anthropic_weather_tool(&request.body);
    }
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", requests[1].body);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["role"], "assistant");
    let tool_use = messages[1]["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(tool_use["input"], json!({"city": "Paris"}));
    assert_eq!(messages[2]["role"], "user");
    let result = messages[2]["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_result").unwrap();
    assert_eq!(result["tool_use_id"], tool_use["id"], "the result must answer the call");
    assert_eq!(text_of(&result["content"]), "18C, sunny", "{result}");
}

fn check_responses_streamed_function_call(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    assert_anthropic_upstream(&requests[0]);
    assert!(requests[0].is_stream());
    assert_anthropic_weather_tool(&requests[0].body);
}

fn check_chat_tools_through_gemini(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    assert_gemini_upstream(&requests[0], false);
    assert_gemini_upstream(&requests[1], true);
    for request in requests {
        let declaration = &request.body["tools"][0]["functionDeclarations"][0];
        assert_eq!(declaration["name"], "get_weather", "{}", request.body);
    }
    let contents = requests[1].body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "{}", requests[1].body);
    assert_eq!(contents[1]["role"], "model");
    let call = contents[1]["parts"].as_array().unwrap().iter().find_map(|p| p.get("functionCall")).unwrap();
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"city": "Paris"}));
    assert_eq!(contents[2]["role"], "user");
    let response = contents[2]["parts"].as_array().unwrap().iter().find_map(|p| p.get("functionResponse")).unwrap();
    assert_eq!(response["name"], "get_weather", "Gemini matches results to calls by name");
    assert!(response["response"].to_string().contains("18C, sunny"), "{response}");
}

fn check_chat_stream_tools_through_bedrock(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    assert_bedrock_upstream(&requests[0], true);
    assert_bedrock_upstream(&requests[1], false);
    for request in requests {
        assert_eq!(request.body["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather", "{}", request.body);
    }
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", requests[1].body);
    let tool_use = messages[1]["content"].as_array().unwrap().iter().find_map(|b| b.get("toolUse")).unwrap();
    assert_eq!(tool_use["input"], json!({"city": "Paris"}));
    let result = messages[2]["content"].as_array().unwrap().iter().find_map(|b| b.get("toolResult")).unwrap();
    assert_eq!(result["toolUseId"], tool_use["toolUseId"]);
    assert_eq!(text_of(&result["content"]), "18C, sunny", "{result}");
}

fn check_chat_through_azure(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    for request in requests {
        assert_azure_upstream(request);
    }
    assert!(!requests[0].is_stream());
    assert!(requests[1].is_stream());
    assert_eq!(text_of(&requests[1].body["messages"][0]["content"]), "Stream please");
}

fn check_genai_generate_through_anthropic(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    let request = &requests[0];
    assert_anthropic_upstream(request);
    let body = &request.body;
    assert!(!request.is_stream());
    assert_eq!(text_of(&body["system"]), "Be brief.", "{body}");
    assert_eq!(body["max_tokens"], 128, "{body}");
    assert_eq!(body["temperature"], 0.2, "{body}");
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(text_of(&body["messages"][0]["content"]), "Say hello");
}

fn check_genai_stream_through_anthropic(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    assert_anthropic_upstream(&requests[0]);
    assert!(requests[0].is_stream());
    assert_eq!(requests[0].body["max_tokens"], 128);
}

fn check_genai_default_api_version(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 1, "{:?}", paths(requests));
    assert_anthropic_upstream(&requests[0]);
}

fn check_genai_function_call_through_openai(requests: &[RecordedRequest]) {
    assert_eq!(requests.len(), 2, "{:?}", paths(requests));
    for request in requests {
        assert_openai_upstream(request);
        assert_eq!(request.body["tools"][0]["function"]["name"], "get_weather", "{}", request.body);
    }
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", requests[1].body);
    assert_eq!(messages[1]["role"], "assistant");
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], call["id"], "the result must answer the call");
    assert!(text_of(&messages[2]["content"]).contains("18C, sunny"), "{}", messages[2]);
}

// --- The run ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_openai_and_gemini_sdks_work_through_every_upstream_type() {
    let Some(python) = python() else { return };
    let upstream = Arc::new(MockUpstream::start().await);
    // An upstream call no case scripted gets an error the SDK surfaces.
    upstream.set_default(Reply::openai_error(400, "unscripted upstream call", "unscripted"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("veil.toml"), config(&upstream)).unwrap();
    let d = dir.path().to_owned();
    let mock = Arc::clone(&upstream);
    let failures = tokio::task::spawn_blocking(move || run(&d, &python, &mock)).await.unwrap();
    assert!(failures.is_empty(), "{} failure(s):\n\n{}", failures.len(), failures.join("\n\n"));
}

fn config(upstream: &MockUpstream) -> String {
    let addr = upstream.addr();
    let channel = |name: &str, kind: &str, base_url: &str, env: &str, upstream_model: &str, models: &[&str]| {
        let list = models.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
        let mapping = models.iter().map(|m| format!("\"{m}\" = \"{upstream_model}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "[[channel]]\nname = \"{name}\"\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\napi_key_env = \"{env}\"\n\
             models = [{list}]\nmodel_mapping = {{ {mapping} }}\nretention = \"30d\"\nregion = \"US\"\n\n"
        )
    };
    let mut text = "[server]\nlisten = \"127.0.0.1:0\"\n\n".to_owned();
    text += &channel(
        "mock-openai",
        "openai",
        &format!("http://{addr}/v1"),
        "VEIL_FMT_OPENAI_KEY",
        OPENAI_MODEL,
        &["claude-via-openai", "gemini-via-openai"],
    );
    text += &channel(
        "mock-anthropic",
        "anthropic",
        &format!("http://{addr}"),
        "VEIL_FMT_ANTHROPIC_KEY",
        ANTHROPIC_MODEL,
        &["gpt-via-anthropic", "gemini-via-anthropic"],
    );
    text += &channel(
        "mock-gemini",
        "gemini",
        &format!("http://{addr}"),
        "VEIL_FMT_GEMINI_KEY",
        GEMINI_MODEL,
        &["claude-via-gemini", "gpt-via-gemini"],
    );
    text += &channel(
        "mock-bedrock",
        "bedrock",
        &format!("http://{addr}"),
        "VEIL_FMT_BEDROCK_KEY",
        BEDROCK_MODEL,
        &["claude-via-bedrock", "gpt-via-bedrock"],
    );
    text += &channel(
        "mock-azure",
        "azure",
        &format!("http://{addr}?api-version={AZURE_API_VERSION}"),
        "VEIL_FMT_AZURE_KEY",
        AZURE_DEPLOYMENT,
        &["gpt-via-azure"],
    );
    text += "[[group]]\nname = \"default\"\n\n";
    for model in [
        "claude-via-openai",
        "gemini-via-openai",
        "gpt-via-anthropic",
        "gemini-via-anthropic",
        "claude-via-gemini",
        "gpt-via-gemini",
        "claude-via-bedrock",
        "gpt-via-bedrock",
        "gpt-via-azure",
    ] {
        text += &format!("[[model]]\nname = \"{model}\"\nfree = true\n\n");
    }
    text
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk")
}

/// Runs every case; returns what failed, each with the output to read.
fn run(dir: &Path, python: &str, upstream: &MockUpstream) -> Vec<String> {
    let mut failures = Vec::new();
    let cases = cases();
    for file in [ANTHROPIC_FILE, RESPONSES_FILE, GENAI_FILE] {
        match collect(python, file) {
            Ok(tests) => {
                let listed: BTreeSet<&str> = cases.iter().filter(|c| c.file == file).map(|c| c.test).collect();
                let found: BTreeSet<&str> = tests.iter().map(String::as_str).collect();
                if listed != found {
                    failures.push(format!(
                        "{file}: the Python tests and the cases here differ; only in Python: {:?}, only here: {:?}",
                        found.difference(&listed).collect::<Vec<_>>(),
                        listed.difference(&found).collect::<Vec<_>>()
                    ));
                }
            }
            Err(error) => failures.push(error),
        }
    }

    veil_json(dir, &["--config", "veil.toml", "admin", "user", "add", "formats", "--credit", "10", "--json"]);
    let key = veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "formats", "--json"]);
    let secret = key["secret"].as_str().unwrap().to_owned();
    let (mut server, _) = Server::start(
        dir,
        &["--config", "veil.toml"],
        &[
            ("VEIL_FMT_OPENAI_KEY", OPENAI_SECRET),
            ("VEIL_FMT_ANTHROPIC_KEY", ANTHROPIC_SECRET),
            ("VEIL_FMT_GEMINI_KEY", GEMINI_SECRET),
            ("VEIL_FMT_BEDROCK_KEY", BEDROCK_SECRET),
            ("VEIL_FMT_AZURE_KEY", AZURE_SECRET),
        ],
    );

    let drain = reqwest::blocking::Client::new();
    let mut expected_records = Vec::new();
    // VEIL_SDK_FORMATS_ONLY=text runs only the cases whose `file::test` contains it.
    let only = std::env::var("VEIL_SDK_FORMATS_ONLY").unwrap_or_default();
    for case in cases {
        if !format!("{}::{}", case.file, case.test).contains(&only) {
            continue;
        }
        let name = format!("{}::{}", case.file, case.test);
        let before = upstream.request_count();
        let scripted = case.replies.len();
        for reply in case.replies {
            upstream.push(reply);
        }
        let output = Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"])
            .arg(format!("{}::{}", sdk_dir().join(case.file).display(), case.test))
            .env("VEIL_ROOT_URL", &server.address)
            .env("VEIL_API_KEY", &secret)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        eprintln!("--- {name}\n{said}");
        if !output.status.success() {
            failures.push(format!("{name}: the SDK test failed:\n{said}"));
        }
        let requests: Vec<RecordedRequest> = upstream.requests().split_off(before);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (case.check)(&requests))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!(
                "{name}: the upstream requests are wrong: {message}\nrequests: {:#?}",
                bodies(&requests)
            ));
        }
        // Replies the case did not use would answer the next case's calls.
        for _ in requests.len()..scripted {
            let _ = drain.post(format!("http://{}/drain/chat/completions", upstream.addr())).body("{}").send();
        }
        expected_records.extend(case.records);
    }

    let status = server.terminate();
    if !status.success() {
        failures.push(format!("veil did not stop cleanly: {status}"));
    }
    let logs = veil_json(dir, &["--config", "veil.toml", "admin", "logs", "--json", "--limit", "200"]);
    failures.extend(check_records(logs.as_array().unwrap(), expected_records));
    failures
}

fn bodies(requests: &[RecordedRequest]) -> Vec<(String, Value)> {
    requests.iter().zip(paths(requests)).map(|(r, path)| (path, r.body.clone())).collect()
}

/// The test function names pytest finds in `file`.
fn collect(python: &str, file: &str) -> Result<Vec<String>, String> {
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"])
        .arg(sdk_dir().join(file))
        .env("VEIL_ROOT_URL", "http://127.0.0.1:9")
        .env("VEIL_API_KEY", "unused")
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{file}: pytest cannot collect it:\n{stdout}{}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(stdout.lines().filter_map(|line| line.split_once("::")).map(|(_, test)| test.trim().to_owned()).collect())
}

/// Every expected record is among the call records, each matched once.
fn check_records(records: &[Value], expected: Vec<Expected>) -> Vec<String> {
    let mut unused: Vec<&Value> = records.iter().collect();
    let mut failures = Vec::new();
    for want in expected {
        let found = unused.iter().position(|r| {
            r["path"] == want.path
                && r["model"] == want.model
                && r["channel"] == want.channel
                && r["stream"] == want.stream
                && r["status"] == 200
                && r["input_tokens"] == want.input_tokens
                && r["output_tokens"] == want.output_tokens
        });
        match found {
            Some(index) => {
                unused.remove(index);
            }
            None => failures.push(format!("no call record {want:?}")),
        }
    }
    if !failures.is_empty() {
        let summary: Vec<Value> = records
            .iter()
            .map(|r| {
                json!([
                    r["path"],
                    r["model"],
                    r["channel"],
                    r["stream"],
                    r["status"],
                    r["error_code"],
                    r["input_tokens"],
                    r["cached_tokens"],
                    r["output_tokens"],
                    r["estimated"]
                ])
            })
            .collect();
        failures.push(format!(
            "call records [path, model, channel, stream, status, error, input, cached, output, estimated]:\n{}",
            summary.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
        ));
    }
    failures
}

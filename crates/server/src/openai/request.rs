//! Validating an OpenAI-format request just enough to route it. Only the fields Veil
//! acts on are checked (model, stream, stream_options, and each endpoint's required
//! input); everything else passes through to the upstream untouched.

use crate::error::ApiError;
use serde_json::{Map, Value};
use veil_domain::ModelName;
use veil_providers::Endpoint;

#[derive(Debug)]
pub struct RoutedRequest {
    pub model: ModelName,
    pub stream: bool,
    /// The client asked for the usage chunk itself (`stream_options.include_usage`).
    pub client_wants_usage: bool,
}

pub fn validate(endpoint: Endpoint, body: &Map<String, Value>) -> Result<RoutedRequest, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(name)) => ModelName::parse(name).map_err(|_| ApiError::model_not_found(&shorten(name)))?,
        Some(_) => return Err(ApiError::invalid_request("`model` must be a string.").with_param("model")),
        None => return Err(ApiError::invalid_request("You must provide a model parameter.").with_param("model")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_request("`stream` must be a boolean.").with_param("stream")),
    };
    let client_wants_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid_request("`stream_options.include_usage` must be a boolean.")
                    .with_param("stream_options"));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_request("`stream_options` must be an object.").with_param("stream_options"));
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => {
                if messages.iter().any(|m| !m.is_object()) {
                    return Err(
                        ApiError::invalid_request("Each entry of `messages` must be an object.").with_param("messages")
                    );
                }
            }
            Some(Value::Array(_)) => {
                return Err(
                    ApiError::invalid_request("`messages` must contain at least one message.").with_param("messages")
                );
            }
            Some(_) => return Err(ApiError::invalid_request("`messages` must be an array.").with_param("messages")),
            None => {
                return Err(ApiError::invalid_request("Missing required parameter: 'messages'.").with_param("messages"));
            }
        },
        Endpoint::Completions => match body.get("prompt") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::invalid_request("`prompt` must be a string or an array.").with_param("prompt"));
            }
            None => return Err(ApiError::invalid_request("Missing required parameter: 'prompt'.").with_param("prompt")),
        },
        Endpoint::Embeddings => {
            if stream {
                return Err(ApiError::invalid_request("Embeddings cannot be streamed.").with_param("stream"));
            }
            match body.get("input") {
                Some(Value::String(_) | Value::Array(_)) => {}
                Some(_) => {
                    return Err(ApiError::invalid_request("`input` must be a string or an array.").with_param("input"));
                }
                None => {
                    return Err(ApiError::invalid_request("Missing required parameter: 'input'.").with_param("input"));
                }
            }
        }
        // Each media endpoint's input is checked in `media.rs`, files included.
        Endpoint::ImageGenerations
        | Endpoint::ImageEdits
        | Endpoint::AudioSpeech
        | Endpoint::AudioTranscriptions
        | Endpoint::Moderations => {}
    }
    Ok(RoutedRequest { model, stream, client_wants_usage })
}

/// Model names from clients are echoed in errors; keep them short.
fn shorten(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn valid_requests_are_routed() {
        let routed = validate(
            Endpoint::ChatCompletions,
            &body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                         "stream_options": {"include_usage": true}, "unknown_field": 1})),
        )
        .unwrap();
        assert_eq!(routed.model.as_str(), "m");
        assert!(routed.stream && routed.client_wants_usage);
    }

    #[test]
    fn wrong_types_name_their_parameter() {
        let cases = [
            (Endpoint::ChatCompletions, json!({"messages": [{}]}), "model"),
            (Endpoint::ChatCompletions, json!({"model": 5, "messages": [{}]}), "model"),
            (Endpoint::ChatCompletions, json!({"model": "m"}), "messages"),
            (Endpoint::ChatCompletions, json!({"model": "m", "messages": "hi"}), "messages"),
            (Endpoint::ChatCompletions, json!({"model": "m", "messages": []}), "messages"),
            (Endpoint::ChatCompletions, json!({"model": "m", "messages": ["hi"]}), "messages"),
            (Endpoint::ChatCompletions, json!({"model": "m", "messages": [{}], "stream": "yes"}), "stream"),
            (Endpoint::ChatCompletions, json!({"model": "m", "messages": [{}], "stream_options": 1}), "stream_options"),
            (Endpoint::Completions, json!({"model": "m"}), "prompt"),
            (Endpoint::Embeddings, json!({"model": "m", "input": 3}), "input"),
            (Endpoint::Embeddings, json!({"model": "m", "input": "x", "stream": true}), "stream"),
        ];
        for (endpoint, value, param) in cases {
            let error = validate(endpoint, &body(value.clone())).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{value}");
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{value}");
        }
        let odd_name = validate(Endpoint::ChatCompletions, &body(json!({"model": "no such model!", "messages": [{}]})));
        assert_eq!(odd_name.unwrap_err().code, veil_domain::ErrorCode::ModelNotFound);
    }
}

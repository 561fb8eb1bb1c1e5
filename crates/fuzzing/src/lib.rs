//! Fuzz targets for everything in Veil that reads untrusted bytes: the SSE parser, the client
//! request parsers (OpenAI Chat, Responses, Anthropic, Gemini), the upstream answer parsers
//! (whole bodies, SSE streams and Bedrock's binary event stream) and the PII firewall.
//!
//! Each target is a plain function of `&[u8]` so that one body of code serves three callers:
//! the cargo-fuzz wrappers under `fuzz/fuzz_targets/` (nightly, libFuzzer), the regression
//! replays in `tests/regressions.rs` (stable, part of `cargo test --workspace`) and the
//! proptests beside them. [`TARGETS`] names them; the directory names under `fuzz/corpus/`
//! and `regressions/` are those names.
//!
//! Promises: a target returns normally for every input that the code under test handles
//! correctly. It panics — which is how a fuzzer learns of a bug — when the code under test
//! panics, or when a cheap invariant that the code documents is broken (SSE parsing does not
//! depend on how the bytes are chunked; restoring a redaction gives the text back; the
//! relay accepts its own translated output; …). Everything a target does with the input
//! is deterministic, including the chunk boundaries it tries, so a saved crash replays.

mod chunks;
mod eventstream;
mod redactor;
mod requests;
mod sse;
mod upstream;

pub use eventstream::bedrock_eventstream;
pub use redactor::pii_redactor;
pub use requests::{anthropic_request, gemini_request, openai_chat_request, responses_request};
pub use sse::sse_parser;
pub use upstream::upstream_responses;

/// A fuzz target: panics on a bug, returns otherwise.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its cargo-fuzz binary and of its corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("sse_parser", sse_parser),
    ("openai_chat_request", openai_chat_request),
    ("responses_request", responses_request),
    ("anthropic_request", anthropic_request),
    ("gemini_request", gemini_request),
    ("upstream_responses", upstream_responses),
    ("bedrock_eventstream", bedrock_eventstream),
    ("pii_redactor", pii_redactor),
];

/// The target called `name`, if there is one.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(known, _)| *known == name).map(|&(_, target)| target)
}

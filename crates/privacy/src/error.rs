//! Errors of detection and redaction. Messages name limits only, never any part of the text.

/// Redaction could not be completed; the caller must fail the call (never forward the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    /// The text of one request is larger than [`crate::Limits::max_input_bytes`].
    #[error("text to redact exceeds the limit of {limit} bytes per request")]
    InputTooLarge { limit: usize },
    /// One request holds more distinct values than [`crate::Limits::max_entities`].
    #[error("more than {limit} distinct values to redact in one request")]
    TooManyEntities { limit: usize },
    /// Text crafted so that every round of replacing values reveals new ones.
    #[error("replacing values kept revealing new ones after {rounds} rounds")]
    KeepsRevealing { rounds: usize },
}

/// The detector's patterns failed to compile (a programming error, reported at start-up).
#[derive(Debug, thiserror::Error)]
#[error("PII detector patterns failed to compile")]
pub struct BuildError(#[source] pub(crate) regex::Error);

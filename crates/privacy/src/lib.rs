//! The PII firewall: reversible, per-request pseudonymisation of personal data and secrets.
//!
//! Pure code: no IO, no async, no global state. The flow for one request:
//!
//! 1. At start-up build one [`Detector`] and share it (`Arc`).
//! 2. Per request make a [`Redactor`] and pass every text field through
//!    [`Redactor::redact`] or [`Redactor::redact_json_strings`]; values become placeholders
//!    such as `[EMAIL_1]`, numbered per kind in order of first appearance, one placeholder per
//!    distinct value. Any [`RedactError`] means: fail the call, never forward the text.
//! 3. On the response take a [`Restorer`] ([`Redactor::restorer`]) and restore whole texts or
//!    JSON, or make one [`StreamRestorer`] per streamed text channel. Text that is JSON source
//!    (tool-call `arguments`) is restored with the `json_text` variants, which keep it valid.
//! 4. Drop the redactor and restorers with the request; originals are zeroed on drop and are
//!    never shown by `Debug` or in any error.
//!
//! Module map: `entity` (kinds and labels), `checks` (checksums), `detect` (patterns and
//! overlap resolution), `placeholder` (syntax), `mapping` (the placeholder table),
//! `redactor`, `restore`, `json`.

mod checks;
mod detect;
mod entity;
mod error;
mod json;
mod mapping;
mod placeholder;
mod redactor;
mod restore;

pub use detect::{Detector, Finding, Limits};
pub use entity::EntityKind;
pub use error::{BuildError, RedactError};
pub use json::{JSON_TEXT_KEYS, NON_TEXT_KEYS};
pub use redactor::Redactor;
pub use restore::{Restorer, StreamRestorer};

#[cfg(test)]
mod tests {
    /// The server shares the detector across tasks and moves restorers into response streams.
    #[test]
    fn handles_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::Detector>();
        send_sync::<super::Restorer>();
        send::<super::Redactor>();
        send::<super::StreamRestorer>();
    }
}

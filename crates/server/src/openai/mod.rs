//! The OpenAI client format: request validation, body extraction, usage reading, the
//! stream transformer and the thin handlers for `/v1/…`.

pub mod body;
pub mod handlers;
pub mod media;
pub mod request;
pub mod restore;
pub mod stream;
pub mod usage;

//! Test-only helpers: [`spawn_app`] starts the real Veil application on port 0 with its
//! own store, and [`mock_upstream`] is a scripted OpenAI-format upstream with timed SSE.

// Test support: failing loudly on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod codes;
pub mod mock_upstream;
pub mod oidc;
pub mod postgres;
pub mod redis;
pub mod smtp;
mod spawn;
pub mod tls;

pub use spawn::{KeyOptions, TestApp, spawn_app, spawn_app_in};

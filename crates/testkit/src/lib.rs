//! Test-only helpers: [`spawn_app`] starts the real Veil application on port 0 with its
//! own store, and [`mock_upstream`] is a scripted OpenAI-format upstream with timed SSE.

pub mod mock_upstream;

//! Black-box tests: the real application on port 0 with its own SQLite store, in front
//! of the scripted mock upstream, spoken to over real HTTP.
// Helpers outside #[test] functions fail loudly too: this whole crate is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account;
mod capture;
mod errors;
mod helpers;
mod pii;
mod postgres;
mod privacy;
mod relay;
mod streaming;

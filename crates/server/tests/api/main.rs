//! Black-box tests: the real application on port 0 with its own SQLite store, in front
//! of the scripted mock upstream, spoken to over real HTTP.
// Helpers outside #[test] functions fail loudly too: this whole crate is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account;
mod billing;
mod capture;
mod channels_api;
mod cluster;
mod errors;
mod faults;
mod formats;
mod helpers;
mod keepalive;
mod limits;
mod media;
mod media_endpoints;
mod metrics;
mod operations;
mod pii;
mod postgres;
mod privacy;
mod redeem;
mod relay;
mod reports;
mod risk;
mod routing;
mod streaming;
mod tls;
mod videos;

//! The web console, black-box: the real application on port 0, spoken to over plain HTTP
//! (`http.rs`: CSRF, cookies, throttling, headers, sign-up rules, the no-content canary;
//! `oidc.rs`: OpenID Connect sign-in against the test provider)
//! and through headless Chromium (`browser.rs`: the user's journey, with screenshots).
// Helpers outside #[test] functions fail loudly too: this whole crate is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod browser;
mod http;
mod notifications;
mod oidc;
mod support;

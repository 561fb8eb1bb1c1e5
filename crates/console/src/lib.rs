//! Veil's web console, without IO: compiled-in page templates, embedded static assets, the
//! SVG chart module, and the security pieces the HTTP handlers (in `veil-server`) rely on:
//! session tokens, CSRF tokens, TOTP two-factor codes and OpenID Connect sign-in. Nothing here talks to the store
//! or the network, so every piece can be tested on its own.

pub mod admin;
pub mod assets;
pub mod chart;
pub mod oidc;
pub mod pages;
pub mod password;
pub mod security;
pub mod totp;

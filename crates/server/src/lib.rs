//! Veil's HTTP server: the OpenAI-compatible relay surface, the request lifecycle,
//! authentication, call records and graceful shutdown.
//!
//! Layout: `app` builds and runs everything; `listener` owns connections and shutdown;
//! `router` is the route table and layer order; `openai` holds the client format and
//! thin handlers; `relay` sequences the phases of a call; `call` guarantees each call is
//! recorded exactly once; `records` batches those records into the store; `state` and
//! `refresh` keep the cached view of the store fresh; `error` is the one place errors
//! become responses.

pub mod account;
mod admin_api;
mod admin_billing;
mod app;
mod auth;
mod call;
mod capture;
mod channel_admin;
pub mod channels;
pub mod client_ip;
mod console;
mod error;
mod failover;
mod firewall;
mod formats;
mod guess_throttle;
mod health;
mod jobs;
mod listener;
mod me;
pub mod media;
mod metering;
pub mod metrics;
mod notify;
mod openai;
pub mod openapi;
pub mod probe;
mod receipt;
mod records;
mod redeem;
mod refresh;
mod relay;
mod reload;
mod reports;
mod request_meta;
mod risk;
mod router;
mod screening;
mod seed;
mod state;
pub mod tls;
mod transparency;
mod videos;
pub mod views;

pub use app::{Application, StartupError, open_store};
pub use error::ApiError;
pub use listener::shutdown_signal;
pub use refresh::announce_store_changes;
pub use reload::{ReloadError, ReloadHandle, ReloadReport};

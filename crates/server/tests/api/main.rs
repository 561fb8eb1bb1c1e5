//! Black-box tests: the real application on port 0 with its own SQLite store, in front
//! of the scripted mock upstream, spoken to over real HTTP.

mod errors;
mod helpers;
mod relay;
mod streaming;

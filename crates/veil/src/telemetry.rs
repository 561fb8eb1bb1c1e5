//! Process logging: text or JSON lines on stderr, filtered by `log.level` (or
//! `RUST_LOG`). Log events carry metadata fields only; request and response bodies are
//! never passed to a log macro anywhere in Veil.

use tracing_subscriber::EnvFilter;

pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // `log_internal_errors(false)`: tracing-subscriber would otherwise report a failed
    // write with `eprintln!`, which panics when stderr is a closed pipe — inside whatever
    // task was logging, e.g. a request. A relay must not fail calls because its log sink
    // went away.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    if result.is_err() {
        crate::output::note("logging was already initialised");
    }
}

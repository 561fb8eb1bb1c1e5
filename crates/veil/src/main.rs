//! The `veil` binary: parse the command line, load the configuration, run a command.

mod cli;
mod commands;
mod output;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: a relayed call makes many small, short-lived
/// allocations (headers, JSON values, frames) and glibc's malloc was a sizeable share of
/// the per-call CPU; mimalloc's thread-local free lists make those cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            output::error(&format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

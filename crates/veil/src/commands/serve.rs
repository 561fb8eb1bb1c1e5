//! `veil serve`: start the relay and run until SIGTERM or Ctrl-C.

use crate::{output, telemetry};
use anyhow::Context;
use std::process::ExitCode;
use veil_config::Settings;
use veil_secrets::MASTER_KEY_ENV;
use veil_server::Application;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    telemetry::init(&settings.log_filter, settings.log_json);
    let master_key = std::env::var(MASTER_KEY_ENV).ok();
    let app = Application::build(&settings, master_key.as_deref()).await.context("Veil could not start")?;
    output::note(&format!("Veil listening on http://{}", app.local_addr()));
    if settings.builtin_echo {
        output::note(
            "No [[channel]] configured: serving the built-in TEST provider `echo` (model `veil-echo`), which answers locally.",
        );
    }
    if !app.has_users() {
        output::note(
            "No accounts yet. Create the first admin and a key with:\n  veil admin user add admin --role admin --password-stdin\n  veil admin key create --user admin",
        );
    }
    app.run_until_stopped(veil_server::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

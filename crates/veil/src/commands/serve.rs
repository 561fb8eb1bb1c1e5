//! `veil serve`: start the relay and run until SIGTERM or Ctrl-C; SIGHUP reloads the
//! configuration file (the reload itself is the server's: `ReloadHandle`).

use crate::{output, telemetry};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use veil_config::Settings;
use veil_secrets::MASTER_KEY_ENV;
use veil_server::{Application, ReloadHandle};

/// `config` is the file the settings came from, read again on SIGHUP.
pub async fn run(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let telemetry = telemetry::init(&settings);
    let master_key = std::env::var(MASTER_KEY_ENV).ok();
    let app = Application::build(&settings, master_key.as_deref()).await.context("Veil could not start")?;
    output::note(&format!("Veil listening on {}", app.url()));
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
    let reloads = reload_on_sighup(app.reload_handle(), config);
    tokio::select! {
        () = app.run_until_stopped(veil_server::shutdown_signal()) => {}
        () = reloads => {}
    }
    // Flushing waits on the collector: off the async runtime.
    if tokio::task::spawn_blocking(move || telemetry.shutdown()).await.is_err() {
        output::error("flushing the last traces failed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reloads on every SIGHUP; never returns (the server's end ends it).
async fn reload_on_sighup(reload: ReloadHandle, config: Option<PathBuf>) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // The outcome is logged by the reload; a failed one changes nothing.
                let _ = reload.reload(config.as_deref()).await;
            }
        }
        Err(error) => tracing::warn!(error = %error, "cannot listen for SIGHUP; reload by restarting"),
    }
    #[cfg(not(unix))]
    let _ = (reload, config);
    std::future::pending::<()>().await;
}

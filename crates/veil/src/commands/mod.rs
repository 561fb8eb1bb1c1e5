//! Dispatch from the parsed command line to each command.

mod admin;
mod code;
mod rotate;
mod serve;

use crate::cli::{Cli, Command};
use crate::output;
use anyhow::Context;
use serde_json::json;
use std::process::ExitCode;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = veil_config::load_from_process(cli.config.as_deref()).context("invalid configuration")?;
    match cli.command {
        Command::Serve => serve::run(settings, cli.config.clone()).await,
        Command::CheckConfig => {
            // The certificate files are part of the configuration: a path that does not
            // load fails here, not at start-up.
            if let Some(files) = &settings.tls {
                veil_server::tls::check(files).context("invalid configuration")?;
            }
            if cli.json {
                output::json(&json!({
                    "valid": true,
                    "listen": settings.listen.to_string(),
                    "database": if settings.database_url.starts_with("sqlite:") { "sqlite" } else { "postgres" },
                    "groups": settings.groups.len(),
                    "channels": settings.channels.len(),
                    "models": settings.models.len(),
                }));
            } else {
                output::line(&format!(
                    "configuration is valid: listen {}, {} group(s), {} channel(s), {} model(s)",
                    settings.listen,
                    settings.groups.len(),
                    settings.channels.len(),
                    settings.models.len()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            veil_server::open_store(&settings).await.context("migration failed")?;
            if cli.json {
                output::json(&json!({"migrated": true}));
            } else {
                output::line("migrations applied");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => admin::run(&settings, command, cli.json).await,
    }
}

//! Veil's configuration: a TOML file layered under `VEIL_…` environment variables,
//! deserialized strictly (an unknown key is an error naming its path) and then validated
//! into domain types. Nothing outside this crate sees the raw file shape.

mod console;
mod decimal;
mod duration;
mod env;
mod raw;
mod risk;
mod routing;
mod settings;
mod telemetry;
mod videos;

pub use console::{OidcSettings, is_loopback_host};
pub use duration::parse_duration;
pub use raw::RawConfig;
pub use risk::{AuthFailuresRule, BlockAction, NetworksRule, RiskAction, RiskSettings, SpendSpikeRule};
pub use routing::{NotificationSettings, RoutingSettings, SmtpSecurity, SmtpSettings};
pub use settings::{BillingDurability, LimitsOnFailure, Settings, TlsFiles};
pub use telemetry::TelemetrySettings;
pub use videos::VideoSettings;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A key or value is wrong; `key` is its dotted path, e.g. `channel[0].base_url`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), message: message.into() }
    }
}

/// Loads the file (if any), applies `VEIL_…` overrides from `env`, and validates.
pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
            text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
                path: path.display().to_string(),
                message: e.message().to_owned(),
            })?
        }
        None => toml::Table::new(),
    };
    env::apply_overrides(&mut table, env)?;
    let raw = raw::RawConfig::from_table(table)?;
    settings::Settings::from_raw(raw)
}

/// One channel from a `[[channel]]` table in any serde format (the management API's JSON),
/// through the file's own checks and defaults. Unknown keys are refused; an error's key
/// names the field (`base_url`, `tls_verify`, `model_mapping.NAME`, or an unknown key).
/// The channel is not `managed`: only the file's own channels are.
pub fn channel_from<'de, D: serde::Deserializer<'de>>(table: D) -> Result<veil_domain::Channel, ConfigError> {
    let raw = raw::RawChannel::from_deserializer(table)?;
    let channel = settings::validate_channel("", &raw)?;
    Ok(veil_domain::Channel { managed: false, ..channel })
}

/// Loads from the process environment.
pub fn load_from_process(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load(file, std::env::vars())
}

#[cfg(test)]
mod tests;

//! `[telemetry]`: where request traces go. Every field is optional; without
//! `otlp_endpoint` no trace leaves the process (logs and `/metrics` are always on).
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"  # OTLP/HTTP; traces are POSTed to {endpoint}/v1/traces
//! service_name = "veil"                    # the `service.name` resource attribute
//! sample_ratio = 1.0                       # share of new traces kept, 0.0 to 1.0
//! ```

use crate::ConfigError;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The collector's base URL, without the `/v1/traces` path; `None`: traces are off.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Share of new traces kept; a trace's spans are all kept or all dropped.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "veil".into(), sample_ratio: 1.0 }
    }
}

impl TelemetrySettings {
    /// Where spans are POSTed: the endpoint with the OTLP traces path.
    pub fn traces_url(&self) -> Option<String> {
        self.otlp_endpoint.as_ref().map(|endpoint| format!("{}/v1/traces", endpoint.trim_end_matches('/')))
    }
}

pub(crate) fn validate(raw: &RawTelemetry) -> Result<TelemetrySettings, ConfigError> {
    let defaults = TelemetrySettings::default();
    let otlp_endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(endpoint) if endpoint.starts_with("http://") || endpoint.starts_with("https://") => {
            Some(endpoint.trim_end_matches('/').to_owned())
        }
        Some(_) => {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL such as \"http://127.0.0.1:4318\"",
            ));
        }
    };
    let service_name = match raw.service_name.as_deref().map(str::trim) {
        None => defaults.service_name,
        Some("") => return Err(ConfigError::invalid("telemetry.service_name", "must not be empty")),
        Some(name) => name.to_owned(),
    };
    let sample_ratio = match raw.sample_ratio {
        None => defaults.sample_ratio,
        Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
        Some(_) => return Err(ConfigError::invalid("telemetry.sample_ratio", "must be between 0.0 and 1.0")),
    };
    Ok(TelemetrySettings { otlp_endpoint, service_name, sample_ratio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_traces_off() {
        let settings = validate(&RawTelemetry::default()).unwrap();
        assert_eq!(settings, TelemetrySettings::default());
        assert_eq!(settings.traces_url(), None);
    }

    #[test]
    fn the_traces_path_is_appended_to_the_endpoint() {
        let raw = RawTelemetry { otlp_endpoint: Some("http://127.0.0.1:4318/".into()), ..RawTelemetry::default() };
        assert_eq!(validate(&raw).unwrap().traces_url().as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
    }

    #[test]
    fn environment_variables_set_the_section() {
        let env =
            [("VEIL_TELEMETRY__OTLP_ENDPOINT", "http://collector:4318"), ("VEIL_TELEMETRY__SAMPLE_RATIO", "0.25")];
        let settings = crate::load(None, env.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap();
        assert_eq!(settings.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert!((settings.telemetry.sample_ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(settings.telemetry.service_name, "veil");
    }

    #[test]
    fn bad_values_name_their_key() {
        let endpoint = RawTelemetry { otlp_endpoint: Some("127.0.0.1:4318".into()), ..RawTelemetry::default() };
        let ratio = RawTelemetry { sample_ratio: Some(1.5), ..RawTelemetry::default() };
        let name = RawTelemetry { service_name: Some(" ".into()), ..RawTelemetry::default() };
        for (raw, key) in
            [(endpoint, "telemetry.otlp_endpoint"), (ratio, "telemetry.sample_ratio"), (name, "telemetry.service_name")]
        {
            match validate(&raw) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}

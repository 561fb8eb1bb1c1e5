//! A channel's secret for the vendor adapters: read once when the provider is built,
//! from the stored (sealed) credential or the channel's `api_key_env`, and never shown
//! by `Debug`. A missing secret is reported when a call is made, not at start-up, so one
//! misconfigured channel does not stop the relay.

use crate::error::UpstreamError;
use http::HeaderValue;
use std::fmt;
use veil_domain::Channel;

pub(crate) enum Secret {
    /// The channel names no credential (a local server or a proxy that needs none).
    NotNeeded,
    Present(String),
    Missing {
        env: String,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNeeded => f.write_str("NotNeeded"),
            Self::Present(_) => f.write_str("Present(<redacted>)"),
            Self::Missing { env } => f.debug_struct("Missing").field("env", env).finish(),
        }
    }
}

impl Secret {
    /// `stored`: `Some(Some(secret))` for a stored credential that opened, `Some(None)`
    /// for one that could not be opened (calls then fail closed), `None` when none is
    /// stored and `api_key_env` applies.
    pub(crate) fn of(channel: &Channel, stored: Option<Option<&str>>) -> Self {
        match stored {
            Some(Some(secret)) if !secret.trim().is_empty() => Self::Present(secret.trim().to_owned()),
            Some(_) => Self::Missing { env: "the stored credential".to_owned() },
            None => match &channel.api_key_env {
                None => Self::NotNeeded,
                Some(env) => match std::env::var(env) {
                    Ok(value) if !value.trim().is_empty() => Self::Present(value.trim().to_owned()),
                    _ => Self::Missing { env: env.clone() },
                },
            },
        }
    }

    /// The secret, `None` when the channel needs none.
    pub(crate) fn get(&self) -> Result<Option<&str>, UpstreamError> {
        match self {
            Self::NotNeeded => Ok(None),
            Self::Present(secret) => Ok(Some(secret)),
            Self::Missing { env } => Err(UpstreamError::MissingCredential { env: env.clone() }),
        }
    }

    /// The secret as a header value marked sensitive (kept out of HTTP/2 header
    /// compression tables and debug output), `None` when the channel needs none.
    pub(crate) fn header(&self, prefix: &str) -> Result<Option<HeaderValue>, UpstreamError> {
        let Some(secret) = self.get()? else { return Ok(None) };
        let mut value = HeaderValue::try_from(format!("{prefix}{secret}"))
            .map_err(|_| UpstreamError::Misconfigured("the credential is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The channel's base URL without a trailing `/`, when it is an http(s) URL.
pub(crate) fn base_url(channel: &Channel) -> Option<String> {
    let base_url = channel.base_url.trim().trim_end_matches('/');
    reqwest::Url::parse(base_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .map(|_| base_url.to_owned())
}

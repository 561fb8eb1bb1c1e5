//! `[videos]`: how asynchronous video jobs are followed. Every field is optional.
//!
//! ```toml
//! [videos]
//! poll_interval = "2s"       # the first wait between polls of an upstream job; doubles
//! max_poll_interval = "60s"  # up to this (an upstream's retry-after is honoured)
//! timeout = "1h"             # a job unfinished this long after submission fails and is refunded
//! ```

use crate::ConfigError;
use crate::duration::parse_duration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideos {
    pub poll_interval: Option<String>,
    pub max_poll_interval: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSettings {
    pub poll_interval: Duration,
    pub max_poll_interval: Duration,
    pub timeout: Duration,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            max_poll_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(60 * 60),
        }
    }
}

pub(crate) fn validate(raw: &RawVideos) -> Result<VideoSettings, ConfigError> {
    let defaults = VideoSettings::default();
    let field = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Ok(duration) if !duration.is_zero() => Ok(duration),
            Ok(_) => Err(ConfigError::invalid(key, "must be longer than zero")),
            Err(message) => Err(ConfigError::invalid(key, message)),
        },
    };
    let poll_interval = field("videos.poll_interval", &raw.poll_interval, defaults.poll_interval)?;
    let max_poll_interval = field("videos.max_poll_interval", &raw.max_poll_interval, defaults.max_poll_interval)?;
    if max_poll_interval < poll_interval {
        return Err(ConfigError::invalid("videos.max_poll_interval", "must not be shorter than videos.poll_interval"));
    }
    let timeout = field("videos.timeout", &raw.timeout, defaults.timeout)?;
    Ok(VideoSettings { poll_interval, max_poll_interval, timeout })
}

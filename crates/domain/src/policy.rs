//! Data policies (what a channel does with data) and privacy requirements (what a caller
//! accepts). Both are stored from the first release; enforcement is the privacy engine's.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How long a channel's operator keeps what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    None,
    Days(u32),
}

impl Retention {
    /// Parses `none`, `30d` or a bare day count.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("none") || raw == "0" || raw == "0d" {
            return Ok(Self::None);
        }
        let digits = raw.strip_suffix('d').unwrap_or(raw);
        digits
            .parse::<u32>()
            .map(Self::Days)
            .map_err(|_| format!("retention '{raw}' must be \"none\" or a number of days such as \"30d\""))
    }
    pub fn days(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Days(d) => d,
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Days(d) => write!(f, "{d}d"),
        }
    }
}

/// A channel's data policy (DESIGN §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPolicy {
    pub retention: Retention,
    pub training: bool,
    pub region: Option<String>,
    pub human_review: bool,
    /// `self` for the operator's own deployment, else the provider's name.
    pub operator: String,
}

impl DataPolicy {
    pub fn class(&self) -> PolicyClass {
        if self.training {
            PolicyClass::Free
        } else if self.operator == "self" && self.retention == Retention::None {
            PolicyClass::SelfHosted
        } else {
            PolicyClass::External
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyClass {
    SelfHosted,
    External,
    Free,
}

impl PolicyClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfHosted => "self-hosted",
            Self::External => "external",
            Self::Free => "free",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "self-hosted" => Some(Self::SelfHosted),
            "external" => Some(Self::External),
            "free" => Some(Self::Free),
            _ => None,
        }
    }
}

impl fmt::Display for PolicyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallMode {
    Off,
    #[default]
    Identity,
    Pii,
}

impl FirewallMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Identity => "identity",
            Self::Pii => "pii",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "off" => Some(Self::Off),
            "identity" => Some(Self::Identity),
            "pii" => Some(Self::Pii),
            _ => None,
        }
    }
}

/// What a group or key accepts of a channel's data policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyRequirement {
    pub max_retention_days: Option<u32>,
    pub allow_training: bool,
    pub regions: Option<Vec<String>>,
    pub firewall: FirewallMode,
}

/// How client IPs are written into call records (DESIGN §3.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpLogging {
    Full,
    #[default]
    Truncated,
    Hashed,
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(operator: &str, retention: Retention, training: bool) -> DataPolicy {
        DataPolicy { retention, training, region: None, human_review: false, operator: operator.into() }
    }

    #[test]
    fn class_follows_the_definition() {
        assert_eq!(policy("self", Retention::None, false).class(), PolicyClass::SelfHosted);
        assert_eq!(policy("self", Retention::Days(1), false).class(), PolicyClass::External);
        assert_eq!(policy("openai", Retention::Days(30), false).class(), PolicyClass::External);
        assert_eq!(policy("self", Retention::None, true).class(), PolicyClass::Free);
    }

    #[test]
    fn retention_parses_days_and_none() {
        assert_eq!(Retention::parse("none"), Ok(Retention::None));
        assert_eq!(Retention::parse("30d"), Ok(Retention::Days(30)));
        assert_eq!(Retention::parse("7"), Ok(Retention::Days(7)));
        assert!(Retention::parse("forever").is_err());
        assert_eq!(Retention::Days(30).to_string(), "30d");
    }
}

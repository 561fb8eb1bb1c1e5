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

/// Why a channel's data policy does not meet a requirement; the message names the
/// constraint so the caller knows what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmetConstraint {
    Retention { channel_days: u32, max_days: u32 },
    Training,
    Region { channel: Option<String>, allowed: Vec<String> },
}

impl fmt::Display for UnmetConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retention { channel_days, max_days } => write!(
                f,
                "max_retention_days = {max_days}, but the channels serving this model keep data for {channel_days} days"
            ),
            Self::Training => f.write_str(
                "allow_training: the channels serving this model may train on the data, which needs the key's explicit consent (--allow-training) and a group that allows it",
            ),
            Self::Region { channel, allowed } => write!(
                f,
                "regions = [{}], but the channels serving this model are in {}",
                allowed.join(", "),
                channel.as_deref().unwrap_or("an undeclared region")
            ),
        }
    }
}

/// What a key adds to its group's requirement. A key can only narrow: a shorter
/// retention, fewer regions, a stricter firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPrivacy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallMode>,
}

impl KeyPrivacy {
    pub fn is_empty(&self) -> bool {
        self == &KeyPrivacy::default()
    }
}

fn strictness(mode: FirewallMode) -> u8 {
    match mode {
        FirewallMode::Off => 0,
        FirewallMode::Identity => 1,
        FirewallMode::Pii => 2,
    }
}

impl PrivacyRequirement {
    /// The requirement a call runs under: the group's, narrowed by the key — training
    /// consent only when the group allows it *and* the key gave its own explicit consent,
    /// the shorter retention, the regions both allow, the stricter firewall.
    pub fn for_key(&self, key_allows_training: bool, key: &KeyPrivacy) -> PrivacyRequirement {
        let max_retention_days = match (self.max_retention_days, key.max_retention_days) {
            (Some(group), Some(key)) => Some(group.min(key)),
            (group, key) => group.or(key),
        };
        let regions = match (&self.regions, &key.regions) {
            (Some(group), Some(key)) => {
                Some(group.iter().filter(|r| key.iter().any(|k| k.eq_ignore_ascii_case(r))).cloned().collect())
            }
            (group, key) => group.clone().or_else(|| key.clone()),
        };
        let firewall = match key.firewall {
            Some(mode) if strictness(mode) > strictness(self.firewall) => mode,
            _ => self.firewall,
        };
        PrivacyRequirement {
            max_retention_days,
            allow_training: self.allow_training && key_allows_training,
            regions,
            firewall,
        }
    }

    /// Whether a channel with `policy` may receive this caller's data.
    pub fn admits(&self, policy: &DataPolicy) -> Result<(), UnmetConstraint> {
        if let Some(max_days) = self.max_retention_days {
            let channel_days = policy.retention.days();
            if channel_days > max_days {
                return Err(UnmetConstraint::Retention { channel_days, max_days });
            }
        }
        if policy.training && !self.allow_training {
            return Err(UnmetConstraint::Training);
        }
        if let Some(allowed) = &self.regions {
            let inside =
                policy.region.as_ref().is_some_and(|region| allowed.iter().any(|a| a.eq_ignore_ascii_case(region)));
            if !inside {
                return Err(UnmetConstraint::Region { channel: policy.region.clone(), allowed: allowed.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod requirement_tests {
    use super::*;

    fn policy(retention: Retention, training: bool, region: Option<&str>) -> DataPolicy {
        DataPolicy { retention, training, region: region.map(str::to_owned), human_review: false, operator: "x".into() }
    }

    #[test]
    fn each_constraint_is_checked_and_named() {
        let strict = PrivacyRequirement {
            max_retention_days: Some(7),
            allow_training: false,
            regions: Some(vec!["EU".into()]),
            firewall: FirewallMode::Pii,
        };
        assert_eq!(strict.admits(&policy(Retention::None, false, Some("eu"))), Ok(()));
        assert_eq!(strict.admits(&policy(Retention::Days(7), false, Some("EU"))), Ok(()));
        assert_eq!(
            strict.admits(&policy(Retention::Days(30), false, Some("EU"))),
            Err(UnmetConstraint::Retention { channel_days: 30, max_days: 7 })
        );
        assert_eq!(strict.admits(&policy(Retention::None, true, Some("EU"))), Err(UnmetConstraint::Training));
        let region = strict.admits(&policy(Retention::None, false, Some("US"))).unwrap_err();
        assert!(region.to_string().contains("regions = [EU]") && region.to_string().contains("US"));
        assert!(strict.admits(&policy(Retention::None, false, None)).is_err(), "an undeclared region is not inside");
        assert_eq!(PrivacyRequirement::default().admits(&policy(Retention::Days(365), false, None)), Ok(()));
    }

    #[test]
    fn training_needs_both_the_group_and_the_key() {
        let group = PrivacyRequirement { allow_training: true, ..PrivacyRequirement::default() };
        let free = policy(Retention::Days(30), true, None);
        let none = KeyPrivacy::default();
        assert_eq!(group.for_key(false, &none).admits(&free), Err(UnmetConstraint::Training));
        assert_eq!(group.for_key(true, &none).admits(&free), Ok(()));
        assert_eq!(PrivacyRequirement::default().for_key(true, &none).admits(&free), Err(UnmetConstraint::Training));
    }

    #[test]
    fn a_key_can_only_narrow_its_group() {
        let group = PrivacyRequirement {
            max_retention_days: Some(30),
            allow_training: false,
            regions: Some(vec!["EU".into(), "US".into()]),
            firewall: FirewallMode::Identity,
        };
        let key = KeyPrivacy {
            max_retention_days: Some(7),
            regions: Some(vec!["eu".into(), "CN".into()]),
            firewall: Some(FirewallMode::Pii),
        };
        let narrowed = group.for_key(false, &key);
        assert_eq!(narrowed.max_retention_days, Some(7));
        assert_eq!(narrowed.regions, Some(vec!["EU".to_owned()]));
        assert_eq!(narrowed.firewall, FirewallMode::Pii);
        let loosening = KeyPrivacy { max_retention_days: Some(90), regions: None, firewall: Some(FirewallMode::Off) };
        let kept = group.for_key(false, &loosening);
        assert_eq!((kept.max_retention_days, kept.firewall), (Some(30), FirewallMode::Identity));
        assert_eq!(kept.regions, group.regions);
    }
}

//! How a client's address is written into a call record (`privacy.ip_logging`).

use std::net::IpAddr;
use veil_domain::{IpLogging, Timestamp};
use veil_secrets::KeyHasher;

pub fn for_record(ip: IpAddr, mode: IpLogging, hasher: &KeyHasher, now: Timestamp) -> String {
    match mode {
        IpLogging::Full => ip.to_string(),
        IpLogging::Truncated => truncate(ip).to_string(),
        IpLogging::Hashed => {
            // The month is part of the hashed label, so the same address hashes
            // differently each month and records cannot be linked across months.
            format!("h:{}", monthly_pseudonym(hasher, "client-ip", &ip.to_string(), now))
        }
        IpLogging::Off => String::new(),
    }
}

/// 32 hex characters of a keyed hash of `value` under `domain` and the current month:
/// stable within a month, unlinkable across months, meaningless without the key.
pub fn monthly_pseudonym(hasher: &KeyHasher, domain: &str, value: &str, now: Timestamp) -> String {
    let digest = hasher.hash_label(&format!("{domain}/{}", now.month_label()), value);
    digest.get(..32).unwrap_or(&digest).to_owned()
}

/// IPv4 with the last octet zeroed; IPv6 kept to its /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_reduces_the_address_as_documented() {
        let hasher = KeyHasher::new(&[9u8; 32]);
        let now = Timestamp::parse_rfc3339("2026-11-23T00:00:00Z").unwrap();
        let later = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12:1:2:3:4".parse().unwrap();
        assert_eq!(for_record(v4, IpLogging::Full, &hasher, now), "203.0.113.77");
        assert_eq!(for_record(v4, IpLogging::Truncated, &hasher, now), "203.0.113.0");
        assert_eq!(for_record(v6, IpLogging::Truncated, &hasher, now), "2001:db8:abcd::");
        assert_eq!(for_record(v4, IpLogging::Off, &hasher, now), "");
        let hashed = for_record(v4, IpLogging::Hashed, &hasher, now);
        assert!(hashed.starts_with("h:") && !hashed.contains("203"));
        assert_eq!(hashed, for_record(v4, IpLogging::Hashed, &hasher, now));
        assert_ne!(hashed, for_record(v4, IpLogging::Hashed, &hasher, later));
    }
}

//! The kinds of personal data and secrets the firewall replaces, and their placeholder labels.
//!
//! A label is upper-case ASCII and underscores only, so a placeholder (`[CN_ID_2]`) never needs
//! escaping inside JSON and can be recognised by shape alone.

use std::fmt;

/// One kind of value the firewall replaces by a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    Email,
    Phone,
    /// Chinese resident identity card number (18 characters, checksummed).
    CnId,
    /// Payment card number (Luhn-valid).
    Card,
    Iban,
    /// IPv4 or IPv6 address.
    Ip,
    /// API keys, access tokens and private keys.
    Secret,
}

impl EntityKind {
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Email,
        EntityKind::Phone,
        EntityKind::CnId,
        EntityKind::Card,
        EntityKind::Iban,
        EntityKind::Ip,
        EntityKind::Secret,
    ];

    /// The label used in placeholders (`[EMAIL_1]`) and in data receipts.
    pub const fn label(self) -> &'static str {
        match self {
            EntityKind::Email => "EMAIL",
            EntityKind::Phone => "PHONE",
            EntityKind::CnId => "CN_ID",
            EntityKind::Card => "CARD",
            EntityKind::Iban => "IBAN",
            EntityKind::Ip => "IP",
            EntityKind::Secret => "SECRET",
        }
    }

    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.label() == label)
    }

    /// Position in [`EntityKind::ALL`], for per-kind arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            EntityKind::Email => 0,
            EntityKind::Phone => 1,
            EntityKind::CnId => 2,
            EntityKind::Card => 3,
            EntityKind::Iban => 4,
            EntityKind::Ip => 5,
            EntityKind::Secret => 6,
        }
    }

    /// Breaks ties between overlapping findings of equal length: the kind whose validator is
    /// stricter wins (an 18-digit CN ID that also passes Luhn is a CN ID, not a card).
    pub(crate) const fn specificity(self) -> u8 {
        match self {
            EntityKind::Secret => 7,
            EntityKind::CnId => 6,
            EntityKind::Iban => 5,
            EntityKind::Card => 4,
            EntityKind::Email => 3,
            EntityKind::Ip => 2,
            EntityKind::Phone => 1,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_indexes_match_all() {
        for (position, kind) in EntityKind::ALL.into_iter().enumerate() {
            assert_eq!(EntityKind::from_label(kind.label()), Some(kind));
            assert_eq!(kind.index(), position);
            assert!(kind.label().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
        assert_eq!(EntityKind::from_label("NAME"), None);
    }
}

//! Sticky routing: a client-supplied session key keeps landing on the same channel, so
//! the upstream's prompt cache stays warm.
//!
//! Each priority tier is ordered by weighted rendezvous hashing: every channel gets a
//! score from a hash of (session, channel name) and its weight, highest first. For one
//! key the order is fixed (and the same on every instance: the hash is not seeded per
//! process); across keys a channel comes first with probability weight / total weight.
//! Removing a channel (cooling down, disabled) only moves the keys that were on it, to
//! their next channel; the others stay where they are.
//!
//! The key is the client's text hashed at once: [`SessionKey`] holds only the hash, so the
//! session id itself is never kept, logged or forwarded.

use veil_domain::ChannelName;

/// A session id, hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(u64);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the hash: it would let logs link a client's calls together.
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Hashes a client's session id.
    pub fn from_client(id: &str) -> Self {
        Self(mix(fnv1a(id.as_bytes())))
    }

    /// The channel's rendezvous score for this session: higher goes first. With `u`
    /// uniform in (0, 1) from the hash, `weight / -ln(u)` makes the highest score an
    /// exponential race won by each channel with probability proportional to its weight.
    pub fn score(self, channel: &ChannelName, weight: u32) -> f64 {
        let hash = mix(self.0 ^ fnv1a(channel.as_str().as_bytes()));
        // 53 random bits, shifted off 0 so the logarithm is finite and negative.
        let uniform = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        f64::from(weight.max(1)) / -uniform.ln()
    }
}

/// FNV-1a, 64 bits: stable across processes and releases, unlike std's `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_hides_the_key() {
        assert_eq!(format!("{:?}", SessionKey::from_client("conversation-secret")), "SessionKey(..)");
    }

    #[test]
    fn scores_are_stable_per_key_and_channel() {
        let a = ChannelName::parse("a").unwrap();
        let key = SessionKey::from_client("s-1");
        assert_eq!(key.score(&a, 1), SessionKey::from_client("s-1").score(&a, 1));
        assert_ne!(key.score(&a, 1), SessionKey::from_client("s-2").score(&a, 1));
        assert!(key.score(&a, 1).is_finite() && key.score(&a, 1) > 0.0);
    }
}

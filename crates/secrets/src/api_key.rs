//! API key secrets: generation, the display prefix, and the keyed hash the store keeps.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

const SCHEME: &str = "sk-veil-";
const BODY_LEN: usize = 43;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// How many characters of a secret are kept for display (`sk-veil-AbCd`).
pub const PREFIX_LEN: usize = 12;

/// A freshly generated secret: shown to its owner once, then dropped (and zeroed).
pub struct ApiKeySecret(Zeroizing<String>);

impl ApiKeySecret {
    pub fn generate() -> Self {
        let mut secret = String::with_capacity(SCHEME.len() + BODY_LEN);
        secret.push_str(SCHEME);
        push_base62(&mut secret, BODY_LEN);
        Self(Zeroizing::new(secret))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn prefix(&self) -> String {
        display_prefix(&self.0)
    }
}

/// Appends `len` characters drawn uniformly from base62 by the thread-local CSPRNG (shared
/// with redemption codes, which are bearer secrets too).
pub(crate) fn push_base62(out: &mut String, len: usize) {
    let mut rng = rand::rng();
    for _ in 0..len {
        let index = rng.random_range(0..ALPHABET.len());
        out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'0')));
    }
}

/// What may be shown of a presented secret (e.g. in an "incorrect API key" message).
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_LEN).collect()
}

/// Whether a presented bearer token is shaped like a Veil key at all; anything else is
/// refused without hashing or a lookup.
pub fn looks_like_key(token: &str) -> bool {
    token.len() == SCHEME.len() + BODY_LEN
        && token.starts_with(SCHEME)
        && token.bytes().skip(SCHEME.len()).all(|b| b.is_ascii_alphanumeric())
}

#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an empty
        // key rather than panic to satisfy the type.
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| Hmac::<Sha256>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_mac()));
        Self { mac }
    }

    /// Hex HMAC-SHA-256 of `secret`.
    pub fn hash(&self, secret: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A keyed hash of an arbitrary label (used for hashed client IPs), domain-separated
    /// from API key hashes.
    pub fn hash_label(&self, domain: &str, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn looks_like_key(token: &str) -> bool {
        looks_like_key(token)
    }

    pub fn display_prefix(secret: &str) -> String {
        display_prefix(secret)
    }
}

#[allow(clippy::panic)]
fn unreachable_mac() -> Hmac<Sha256> {
    panic!("HMAC-SHA-256 rejected a 32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_well_formed_and_distinct() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(looks_like_key(a.expose()));
        assert_eq!(a.prefix().len(), PREFIX_LEN);
        assert!(a.expose().starts_with(&a.prefix()));
        assert!(!looks_like_key("sk-veil-short"));
        assert!(!looks_like_key(&format!("sk-other{}", &a.expose()[8..])));
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let secret = ApiKeySecret::generate();
        let one = KeyHasher::new(&[1u8; 32]);
        let two = KeyHasher::new(&[2u8; 32]);
        assert_eq!(one.hash(secret.expose()), one.hash(secret.expose()));
        assert_ne!(one.hash(secret.expose()), two.hash(secret.expose()));
        assert_eq!(one.hash(secret.expose()).len(), 64);
        assert_ne!(one.hash_label("ip", "1.2.3.4"), one.hash("1.2.3.4"));
    }
}

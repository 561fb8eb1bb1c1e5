//! Redemption codes: bearer credits (`veil-` plus 24 base62 characters, ≈ 143 bits from the
//! CSPRNG), shown once when created. Like API keys, the store keeps only their keyed hash
//! (a [`crate::KeyHasher`] under the installation's own `redemption-code-hash` key) and a
//! short display prefix.

use crate::api_key::push_base62;
use zeroize::Zeroizing;

const SCHEME: &str = "veil-";
const BODY_LEN: usize = 24;
/// How many characters of a code are kept for display (`veil-AbCd`).
pub const CODE_PREFIX_LEN: usize = 9;

/// A freshly generated code: printed once, then dropped (and zeroed).
pub struct RedemptionCode(Zeroizing<String>);

impl RedemptionCode {
    pub fn generate() -> Self {
        let mut code = String::with_capacity(SCHEME.len() + BODY_LEN);
        code.push_str(SCHEME);
        push_base62(&mut code, BODY_LEN);
        Self(Zeroizing::new(code))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn prefix(&self) -> String {
        self.0.chars().take(CODE_PREFIX_LEN).collect()
    }

    /// Whether a presented code is shaped like one at all; anything else is refused without
    /// hashing or a lookup.
    pub fn looks_like_code(presented: &str) -> bool {
        presented.len() == SCHEME.len() + BODY_LEN
            && presented.starts_with(SCHEME)
            && presented.bytes().skip(SCHEME.len()).all(|b| b.is_ascii_alphanumeric())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyHasher;

    #[test]
    fn codes_are_well_formed_and_distinct() {
        let a = RedemptionCode::generate();
        let b = RedemptionCode::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 29);
        assert!(RedemptionCode::looks_like_code(a.expose()));
        assert_eq!(a.prefix().len(), CODE_PREFIX_LEN);
        assert!(a.expose().starts_with(&a.prefix()));
        assert!(!RedemptionCode::looks_like_code("veil-short"));
        assert!(!RedemptionCode::looks_like_code(&format!("veil_{}", &a.expose()[5..])));
        assert!(!RedemptionCode::looks_like_code(&format!("{}!", &a.expose()[..28])));
    }

    #[test]
    fn codes_hash_apart_from_api_keys_under_another_key() {
        let code = RedemptionCode::generate();
        let keys = KeyHasher::new(&[1u8; 32]);
        let codes = KeyHasher::new(&[2u8; 32]);
        assert_eq!(codes.hash(code.expose()), codes.hash(code.expose()));
        assert_ne!(codes.hash(code.expose()), keys.hash(code.expose()));
        assert!(!codes.hash(code.expose()).contains(&code.expose()[5..]));
    }
}

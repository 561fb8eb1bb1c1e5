//! Session tokens and CSRF tokens. A session token is 256 random bits handed to the browser
//! once (in the `veil_session` cookie); the store keeps only its SHA-256, so a database
//! leak yields no usable session. CSRF tokens are an HMAC of the session (or, before sign-in,
//! of a random pre-session cookie) under a server key, so they need no storage and a token
//! taken from one session is worthless in another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries a signed-in session.
pub const SESSION_COOKIE: &str = "veil_session";
/// The cookie that binds CSRF tokens of forms shown before sign-in (sign-in, sign-up).
pub const PRE_SESSION_COOKIE: &str = "veil_presession";
/// The form field every console form carries.
pub const CSRF_FIELD: &str = "csrf";
/// The header a script or API client sends the CSRF token in, for cookie-authenticated
/// calls to the JSON API.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A fresh random token: 32 bytes, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new session: the token for the cookie, and the hash the store keeps.
pub struct NewSession {
    pub token: String,
    pub hash: String,
}

impl NewSession {
    pub fn generate() -> Self {
        let token = random_token();
        let hash = session_hash(&token);
        Self { token, hash }
    }
}

/// What the store keeps of a session token. `None` for anything not shaped like one, so a
/// forged cookie costs no lookup.
pub fn session_hash_checked(token: &str) -> Option<String> {
    (token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| session_hash(token))
}

fn session_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Derives and checks CSRF tokens. The key is per installation (derived from the master key)
/// or per process; a restart with a new key only invalidates open forms.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(…)")
    }
}

impl CsrfKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The token for forms bound to `binding` (a session hash, or a pre-session cookie).
    pub fn token(&self, binding: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_mac());
        mac.update(b"veil-console-csrf\0");
        mac.update(binding.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `presented` is the token for `binding`, compared in constant time.
    pub fn verify(&self, binding: &str, presented: &str) -> bool {
        let expected = self.token(binding);
        !binding.is_empty() && expected.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

// HMAC accepts keys of any length, so `new_from_slice` cannot fail; this keeps the
// workspace's no-panic lint without an `expect`.
fn unreachable_mac() -> Hmac<Sha256> {
    loop {
        if let Ok(mac) = <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]) {
            return mac;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_keep_only_a_hash_and_reject_malformed_tokens() {
        let session = NewSession::generate();
        assert_eq!(session.token.len(), 43);
        assert_ne!(session.token, session.hash);
        assert_eq!(session_hash_checked(&session.token).as_deref(), Some(session.hash.as_str()));
        assert_eq!(session_hash_checked("short"), None);
        assert_eq!(session_hash_checked(&format!("{}!", &session.token[..42])), None);
        assert_ne!(NewSession::generate().token, session.token);
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session_and_key() {
        let key = CsrfKey::new([7; 32]);
        let token = key.token("session-a");
        assert!(key.verify("session-a", &token));
        assert!(!key.verify("session-b", &token));
        assert!(!key.verify("session-a", ""));
        assert!(!key.verify("", &key.token("")));
        assert!(!CsrfKey::new([8; 32]).verify("session-a", &token));
    }
}

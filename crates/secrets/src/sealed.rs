//! Sealing data Veil must keep encrypted at rest (debug captures): XChaCha20-Poly1305
//! under an installation key, with caller-chosen associated data binding each sealed
//! value to its owner and purpose, so a ciphertext moved to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// The purpose under which the debug-capture key is stored.
pub const CAPTURE_PURPOSE: &str = "debug-capture";
/// The purpose under which the key sealing stored channel credentials is kept.
pub const CREDENTIAL_PURPOSE: &str = "channel-credential";
/// The purpose under which the key sealing kept generated media (images, audio, video) is stored.
pub const MEDIA_PURPOSE: &str = "generated-media";
/// The purpose under which the HMAC key signing generated-media URLs is stored: its own key,
/// so a URL signature never matches anything else Veil signs or hashes.
pub const MEDIA_URL_PURPOSE: &str = "generated-media-url";

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sealed data could not be opened (wrong key, wrong owner, or tampered)")]
pub struct OpenError;

impl Sealer {
    /// `key` must be 32 bytes (an installation key).
    pub fn new(key: &[u8]) -> Option<Self> {
        XChaCha20Poly1305::new_from_slice(key).ok().map(|cipher| Self { cipher })
    }

    /// Returns `(nonce, ciphertext)`.
    pub fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self.cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: associated }).ok()?;
        Some((nonce.to_vec(), ciphertext))
    }

    pub fn open(&self, associated: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, OpenError> {
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| OpenError)?;
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: associated }).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_associated_data() {
        let sealer = Sealer::new(&[5u8; 32]).unwrap();
        let (nonce, ciphertext) = sealer.seal(b"owner-1", b"captured body").unwrap();
        assert!(!ciphertext.windows(8).any(|w| w == b"captured"));
        assert_eq!(sealer.open(b"owner-1", &nonce, &ciphertext).unwrap(), b"captured body");
        assert!(sealer.open(b"owner-2", &nonce, &ciphertext).is_err());
        assert!(Sealer::new(&[6u8; 32]).unwrap().open(b"owner-1", &nonce, &ciphertext).is_err());
        assert!(Sealer::new(&[1u8; 3]).is_none());
    }
}

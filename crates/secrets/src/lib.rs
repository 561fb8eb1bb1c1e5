//! Veil's own secrets: the master key, the installation keys it wraps, and API key
//! secrets.
//!
//! * The master key comes from `VEIL_MASTER_KEY` (32 bytes, standard base64; every
//!   instance of a deployment gets the same) or from `<data_dir>/master.key`, created
//!   with mode 0600 on first start.
//! * Installation keys (today: the key that hashes API key secrets) are random, stored
//!   in the database only wrapped by the master key (XChaCha20-Poly1305, the purpose as
//!   associated data), so the database alone reveals none of them and rotating the master
//!   key re-wraps them without changing what they protect.
//! * API key secrets are `sk-veil-` plus 43 base62 characters (≥ 256 bits), shown once;
//!   the store keeps only their HMAC-SHA-256 under the hashing key and a display prefix.

mod api_key;
mod master;

pub use api_key::{ApiKeySecret, KeyHasher, PREFIX_LEN};
pub use master::{MASTER_KEY_ENV, MasterKey};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use veil_store::{Store, StoreError, WrappedSecret};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{MASTER_KEY_ENV} must be 32 bytes in standard base64")]
    BadMasterKeyEnv,
    #[error("{path} must hold 32 bytes in standard base64")]
    BadMasterKeyFile { path: String },
    #[error("cannot use the master key file {path}: {source}")]
    MasterKeyIo { path: String, source: std::io::Error },
    #[error("the {purpose} key was wrapped by master key {wrapped_by}, but the master key in use is {in_use}")]
    WrongMasterKey { purpose: String, wrapped_by: String, in_use: String },
    #[error("the stored {purpose} key does not decrypt with the master key (tampered or wrong key)")]
    Unwrap { purpose: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The purpose under which the API-key hashing key is stored.
pub const KEY_HASH_PURPOSE: &str = "api-key-hash";

impl MasterKey {
    fn cipher(&self) -> Result<XChaCha20Poly1305, SecretsError> {
        XChaCha20Poly1305::new_from_slice(self.bytes()).map_err(|_| SecretsError::BadMasterKeyEnv)
    }

    pub fn wrap(&self, purpose: &str, plaintext: &[u8]) -> Result<WrappedSecret, SecretsError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()?
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: purpose.as_bytes() })
            .map_err(|_| SecretsError::Unwrap { purpose: purpose.to_owned() })?;
        Ok(WrappedSecret { purpose: purpose.to_owned(), master_key_id: self.id(), nonce: nonce.to_vec(), ciphertext })
    }

    pub fn unwrap_secret(&self, wrapped: &WrappedSecret) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        if wrapped.master_key_id != self.id() {
            return Err(SecretsError::WrongMasterKey {
                purpose: wrapped.purpose.clone(),
                wrapped_by: wrapped.master_key_id.clone(),
                in_use: self.id(),
            });
        }
        let unwrap_error = || SecretsError::Unwrap { purpose: wrapped.purpose.clone() };
        let nonce: [u8; 24] = wrapped.nonce.as_slice().try_into().map_err(|_| unwrap_error())?;
        self.cipher()?
            .decrypt(&XNonce::from(nonce), Payload { msg: &wrapped.ciphertext, aad: wrapped.purpose.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| unwrap_error())
    }
}

/// Loads the installation key for `purpose`, creating it on first use. Safe when several
/// processes start at once: the store keeps the first one written.
pub async fn installation_key(
    store: &dyn Store,
    master: &MasterKey,
    purpose: &str,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    if let Some(existing) = store.wrapped_secret(purpose).await? {
        return master.unwrap_secret(&existing);
    }
    let mut fresh = Zeroizing::new(vec![0u8; 32]);
    rand::rng().fill_bytes(&mut fresh);
    let kept = store.insert_wrapped_secret_if_absent(&master.wrap(purpose, &fresh)?).await?;
    master.unwrap_secret(&kept)
}

/// The hasher for API key secrets of this installation.
pub async fn key_hasher(store: &dyn Store, master: &MasterKey) -> Result<KeyHasher, SecretsError> {
    Ok(KeyHasher::new(&installation_key(store, master, KEY_HASH_PURPOSE).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_round_trips_and_binds_the_purpose() {
        let master = MasterKey::from_bytes([7u8; 32]);
        let wrapped = master.wrap("api-key-hash", b"secret bytes").unwrap();
        assert_ne!(wrapped.ciphertext, b"secret bytes");
        assert_eq!(master.unwrap_secret(&wrapped).unwrap().as_slice(), b"secret bytes");
        let mut moved = wrapped.clone();
        moved.purpose = "other".into();
        assert!(matches!(master.unwrap_secret(&moved), Err(SecretsError::Unwrap { .. })));
        let mut tampered = wrapped.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(master.unwrap_secret(&tampered), Err(SecretsError::Unwrap { .. })));
        let other = MasterKey::from_bytes([8u8; 32]);
        assert!(matches!(other.unwrap_secret(&wrapped), Err(SecretsError::WrongMasterKey { .. })));
    }
}

//! Veil's own secrets: the master key, the installation keys it wraps, API key secrets and
//! redemption codes.
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
//! * Redemption codes are `veil-` plus 24 base62 characters, shown once; the store keeps
//!   only their HMAC-SHA-256 under a key of their own (`redemption-code-hash`).

mod api_key;
mod master;
mod redemption_code;
mod sealed;

pub use api_key::{ApiKeySecret, KeyHasher, PREFIX_LEN};
pub use master::{MASTER_KEY_ENV, MasterKey};
pub use redemption_code::{CODE_PREFIX_LEN, RedemptionCode};
pub use sealed::{CAPTURE_PURPOSE, CREDENTIAL_PURPOSE, MEDIA_PURPOSE, MEDIA_URL_PURPOSE, OpenError, Sealer};

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
    #[error(
        "the {purpose} key is wrapped only by master key(s) {wrapped_by}, but the master key in use is {in_use} \
         (finish a rotation only once every instance runs with the new key)"
    )]
    WrongMasterKey { purpose: String, wrapped_by: String, in_use: String },
    #[error("the stored {purpose} key does not decrypt with the master key (tampered or wrong key)")]
    Unwrap { purpose: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The purpose under which the API-key hashing key is stored.
pub const KEY_HASH_PURPOSE: &str = "api-key-hash";
/// The purpose under which the redemption-code hashing key is stored: its own key, so a
/// code's hash never matches anything hashed for API keys or client IPs.
pub const CODE_HASH_PURPOSE: &str = "redemption-code-hash";

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

/// Loads the installation key for `purpose` from the copy wrapped by `master`, creating
/// the key on first use. Safe when several processes start at once: the store keeps the
/// first one written. Fails with [`SecretsError::WrongMasterKey`] when only other master
/// keys hold a copy (a rotation not yet applied here, or finished too early).
pub async fn installation_key(
    store: &dyn Store,
    master: &MasterKey,
    purpose: &str,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let copies = store.wrapped_secrets(purpose).await?;
    if let Some(mine) = copies.iter().find(|copy| copy.master_key_id == master.id()) {
        return master.unwrap_secret(mine);
    }
    if !copies.is_empty() {
        return Err(SecretsError::WrongMasterKey {
            purpose: purpose.to_owned(),
            wrapped_by: key_ids(&copies),
            in_use: master.id(),
        });
    }
    let mut fresh = Zeroizing::new(vec![0u8; 32]);
    rand::rng().fill_bytes(&mut fresh);
    let kept = store.insert_wrapped_secret_if_absent(&master.wrap(purpose, &fresh)?).await?;
    master.unwrap_secret(&kept)
}

fn key_ids(copies: &[WrappedSecret]) -> String {
    let mut ids: Vec<&str> = copies.iter().map(|copy| copy.master_key_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.join(", ")
}

/// First step of a master-key rotation: every secret copy `old` wrapped gets a copy wrapped
/// by `new` (same plaintext). Idempotent; returns how many copies were added. Instances
/// running with either key keep finding theirs.
pub async fn rotate(store: &dyn Store, old: &MasterKey, new: &MasterKey) -> Result<usize, SecretsError> {
    let mut added = 0;
    for copy in store.list_wrapped_secrets().await?.iter().filter(|copy| copy.master_key_id == old.id()) {
        let plaintext = old.unwrap_secret(copy)?;
        if store.add_wrapped_copy(&new.wrap(&copy.purpose, &plaintext)?).await? {
            added += 1;
        }
    }
    Ok(added)
}

/// Last step of a rotation: deletes the copies master key `old_id` wrapped (never a
/// purpose's last copy). Returns how many were deleted.
pub async fn retire(store: &dyn Store, old_id: &str) -> Result<u64, SecretsError> {
    Ok(store.retire_wrapped_copies(old_id).await?)
}

/// Finishes a rotation to `current`: checks that `current` unwraps a copy of every stored
/// secret, then retires every other master key's copies. Returns the retired key ids and
/// how many copies were deleted.
pub async fn retire_all_but(store: &dyn Store, current: &MasterKey) -> Result<(Vec<String>, u64), SecretsError> {
    let copies = store.list_wrapped_secrets().await?;
    let mut others = Vec::new();
    for copy in &copies {
        if copy.master_key_id == current.id() {
            current.unwrap_secret(copy)?;
        } else if !copies.iter().any(|c| c.purpose == copy.purpose && c.master_key_id == current.id()) {
            let same_purpose: Vec<WrappedSecret> =
                copies.iter().filter(|c| c.purpose == copy.purpose).cloned().collect();
            return Err(SecretsError::WrongMasterKey {
                purpose: copy.purpose.clone(),
                wrapped_by: key_ids(&same_purpose),
                in_use: current.id(),
            });
        } else {
            others.push(copy.master_key_id.clone());
        }
    }
    others.sort_unstable();
    others.dedup();
    let mut deleted = 0;
    for old_id in &others {
        deleted += retire(store, old_id).await?;
    }
    Ok((others, deleted))
}

/// The hasher for API key secrets of this installation.
pub async fn key_hasher(store: &dyn Store, master: &MasterKey) -> Result<KeyHasher, SecretsError> {
    Ok(KeyHasher::new(&installation_key(store, master, KEY_HASH_PURPOSE).await?))
}

/// The hasher for redemption codes of this installation (the CLI that creates codes and the
/// server that redeems them derive the same one).
pub async fn code_hasher(store: &dyn Store, master: &MasterKey) -> Result<KeyHasher, SecretsError> {
    Ok(KeyHasher::new(&installation_key(store, master, CODE_HASH_PURPOSE).await?))
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

#[cfg(test)]
mod rotation_tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, std::sync::Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = veil_store::connect(&format!("sqlite://{}/veil.db", dir.path().display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn rotation_keeps_the_installation_key_for_both_master_keys() {
        let (_dir, store) = store().await;
        let old = MasterKey::from_bytes([1u8; 32]);
        let new = MasterKey::from_bytes([2u8; 32]);
        let key = installation_key(store.as_ref(), &old, KEY_HASH_PURPOSE).await.unwrap();

        // Before the rotation the new key finds only the old key's copy, and says so.
        let error = installation_key(store.as_ref(), &new, KEY_HASH_PURPOSE).await.unwrap_err().to_string();
        assert!(error.contains(&old.id()) && error.contains(&new.id()), "{error}");
        // Finishing now would lose the secret: refused, nothing deleted.
        assert!(retire_all_but(store.as_ref(), &new).await.is_err());

        assert_eq!(rotate(store.as_ref(), &old, &new).await.unwrap(), 1);
        assert_eq!(rotate(store.as_ref(), &old, &new).await.unwrap(), 0);
        assert_eq!(installation_key(store.as_ref(), &new, KEY_HASH_PURPOSE).await.unwrap(), key);
        assert_eq!(installation_key(store.as_ref(), &old, KEY_HASH_PURPOSE).await.unwrap(), key);

        let (retired, deleted) = retire_all_but(store.as_ref(), &new).await.unwrap();
        assert_eq!((retired, deleted), (vec![old.id()], 1));
        assert_eq!(installation_key(store.as_ref(), &new, KEY_HASH_PURPOSE).await.unwrap(), key);
        assert!(matches!(
            installation_key(store.as_ref(), &old, KEY_HASH_PURPOSE).await,
            Err(SecretsError::WrongMasterKey { .. })
        ));
        assert_eq!(retire(store.as_ref(), &new.id()).await.unwrap(), 0, "the last copy stays");
    }
}

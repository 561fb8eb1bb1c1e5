//! The master key: from the environment, or from a 0600 file created on first start.

use crate::SecretsError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroizing;

pub const MASTER_KEY_ENV: &str = "VEIL_MASTER_KEY";
const FILE_NAME: &str = "master.key";
const NEW_FILE_NAME: &str = "master.key.new";
const OLD_FILE_NAME: &str = "master.key.old";

pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// A short public fingerprint, stored beside what this key wraps.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.0.as_slice());
        hex::encode(digest.get(..8).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Self> {
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        Self::from_bytes(*bytes)
    }

    /// The key in standard base64, as `VEIL_MASTER_KEY` takes it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes()))
    }

    /// Makes `self` the key in `<data_dir>/master.key`, keeping the current one as
    /// `master.key.old`: writes `master.key.new` (0600), links the current file to
    /// `master.key.old`, then renames the new file over `master.key`, so a process starting
    /// at any moment reads one whole key. Refuses while `master.key.old` exists (an earlier
    /// rotation not finished).
    pub fn replace_key_file(&self, data_dir: &Path) -> Result<(), SecretsError> {
        let path = data_dir.join(FILE_NAME);
        let new_path = data_dir.join(NEW_FILE_NAME);
        let old_path = data_dir.join(OLD_FILE_NAME);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SecretsError::MasterKeyIo { path, source }
        };
        if old_path.exists() {
            return Err(SecretsError::MasterKeyIo {
                path: old_path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a previous rotation is not finished (veil admin rotate-master-key --finish)",
                ),
            });
        }
        // A leftover from an interrupted run.
        if let Err(e) = std::fs::remove_file(&new_path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io(&new_path)(e));
        }
        write_private(&new_path, self.to_base64().as_bytes()).map_err(io(&new_path))?;
        let written = std::fs::read_to_string(&new_path).map_err(io(&new_path))?;
        if Self::decode(&written).map(|key| key.id()) != Some(self.id()) {
            return Err(SecretsError::BadMasterKeyFile { path: new_path.display().to_string() });
        }
        std::fs::hard_link(&path, &old_path).map_err(io(&old_path))?;
        std::fs::rename(&new_path, &path).map_err(io(&path))
    }

    /// Removes `<data_dir>/master.key.old` if present; `true` when it was there.
    pub fn remove_old_key_file(data_dir: &Path) -> Result<bool, SecretsError> {
        let old_path = data_dir.join(OLD_FILE_NAME);
        match std::fs::remove_file(&old_path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(SecretsError::MasterKeyIo { path: old_path.display().to_string(), source }),
        }
    }

    /// `VEIL_MASTER_KEY` when `env_value` is given, else `<data_dir>/master.key`,
    /// created (with its directory) on first use.
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<Self, SecretsError> {
        if let Some(value) = env_value {
            return Self::decode(value).ok_or(SecretsError::BadMasterKeyEnv);
        }
        let path = data_dir.join(FILE_NAME);
        let io = |source| SecretsError::MasterKeyIo { path: path.display().to_string(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::decode(&text).ok_or_else(|| SecretsError::BadMasterKeyFile { path: path.display().to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(bytes.as_mut_slice());
                let encoded = Zeroizing::new(STANDARD.encode(bytes.as_slice()));
                write_private(&path, encoded.as_bytes()).map_err(io)?;
                // Another process may have won the race to create it; use what is on disk.
                let text = std::fs::read_to_string(&path).map_err(io)?;
                Self::decode(&text).ok_or_else(|| SecretsError::BadMasterKeyFile { path: path.display().to_string() })
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(contents)?;
            file.write_all(b"\n")?;
            file.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("veil-data");
        let first = MasterKey::load_or_create(None, &data).unwrap();
        let second = MasterKey::load_or_create(None, &data).unwrap();
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_key_file_is_replaced_keeping_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(None, dir.path()).unwrap();
        let second = MasterKey::generate();
        second.replace_key_file(dir.path()).unwrap();
        assert_eq!(MasterKey::load_or_create(None, dir.path()).unwrap().id(), second.id());
        let old = std::fs::read_to_string(dir.path().join("master.key.old")).unwrap();
        assert_eq!(MasterKey::decode(&old).unwrap().id(), first.id());
        assert!(!dir.path().join("master.key.new").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // An unfinished rotation blocks the next one.
        assert!(MasterKey::generate().replace_key_file(dir.path()).is_err());
        assert_eq!(MasterKey::load_or_create(None, dir.path()).unwrap().id(), second.id());
        assert!(MasterKey::remove_old_key_file(dir.path()).unwrap());
        assert!(!MasterKey::remove_old_key_file(dir.path()).unwrap());
    }

    #[test]
    fn the_environment_wins_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let encoded = STANDARD.encode([3u8; 32]);
        let key = MasterKey::load_or_create(Some(&encoded), dir.path()).unwrap();
        assert_eq!(key.id(), MasterKey::from_bytes([3u8; 32]).id());
        assert!(!dir.path().join("master.key").exists());
        assert!(matches!(MasterKey::load_or_create(Some("short"), dir.path()), Err(SecretsError::BadMasterKeyEnv)));
    }
}

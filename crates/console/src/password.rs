//! Console passwords: Argon2id with the crate's default parameters, as PHC strings. The
//! one place passwords are checked and hashed: `veil admin user add --password-stdin` uses
//! these functions too. Both functions are CPU-heavy
//! by design: call them off the async runtime (`spawn_blocking`).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Shortest password accepted (the same rule as the CLI's).
pub const MIN_LENGTH: usize = 8;
/// Longest accepted: Argon2 takes any length, but a megabyte "password" is a cheap way to
/// make the server work.
pub const MAX_LENGTH: usize = 1_024;

/// A hash of a password nobody knows, verified against when an account does not exist, so a
/// sign-in takes as long for an unknown address as for a wrong password.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$dmVpbC1kdW1teS1zYWx0$3x7B0D7rWQ9xT0qM7m4Ez8k3Kx1cTQJjR9m0bY0Jz0Y";

/// Why a new password is refused, as a sentence for the form.
pub fn check_new(password: &str) -> Result<(), &'static str> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        Err("The password must have at least 8 characters.")
    } else if password.len() > MAX_LENGTH {
        Err("The password is too long.")
    } else {
        Ok(())
    }
}

/// The PHC string for `password`, with a fresh salt; `None` if hashing failed.
pub fn hash(password: &str) -> Option<String> {
    argon2::Argon2::default().hash_password(password.as_bytes()).ok().map(|hash| hash.to_string())
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    password.len() <= MAX_LENGTH && argon2::Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let phc = hash("correct horse").unwrap_or_default();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("anything", DUMMY_HASH));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        // Unknown accounts must cost a full Argon2 run: a hash that fails to parse would not.
        let parsed = argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH);
        assert!(parsed.is_ok_and(|hash| hash.algorithm.as_str() == "argon2id" && hash.hash.is_some()));
    }

    #[test]
    fn new_passwords_need_eight_characters() {
        assert!(check_new("1234567").is_err());
        assert!(check_new("12345678").is_ok());
        assert!(check_new(&"x".repeat(2_000)).is_err());
    }
}

//! TOTP two-factor codes (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits — what every
//! authenticator app accepts) and single-use recovery codes. The secret is shown to the
//! user as base32 and as an `otpauth://` URI; at rest it is sealed by the server.

use hmac_sha1::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const STEP_SECONDS: u64 = 30;
const DIGITS: u32 = 6;
/// Steps either side of now that are accepted, for clocks that drift a little.
const SKEW_STEPS: u64 = 1;
/// How many recovery codes an enrolment hands out.
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A TOTP secret (20 random bytes, as RFC 4226 recommends).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 20];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as authenticator apps take it typed in: unpadded base32.
    pub fn base32(&self) -> String {
        base32_encode(&self.0)
    }

    pub fn from_base32(text: &str) -> Option<Self> {
        base32_decode(text).map(Self)
    }

    /// The `otpauth://` URI an authenticator app imports (as a QR code or pasted).
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            percent(issuer),
            percent(account),
            self.base32(),
            percent(issuer)
        )
    }

    /// The code for the step containing `unix_seconds`.
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.code_for_step(unix_seconds / STEP_SECONDS)
    }

    fn code_for_step(&self, step: u64) -> String {
        let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary = (u32::from(digest[offset] & 0x7f) << 24)
            | (u32::from(digest[offset + 1]) << 16)
            | (u32::from(digest[offset + 2]) << 8)
            | u32::from(digest[offset + 3]);
        format!("{:0width$}", binary % 10u32.pow(DIGITS), width = DIGITS as usize)
    }

    /// The step a presented code belongs to, if it is valid within the allowed skew. The
    /// caller refuses a step at or before the last one used, so a code works only once.
    pub fn verify(&self, presented: &str, unix_seconds: u64) -> Option<u64> {
        let presented: String = presented.chars().filter(|c| !c.is_whitespace()).collect();
        if presented.len() != DIGITS as usize || !presented.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix_seconds / STEP_SECONDS;
        (now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS)
            .find(|step| bool::from(self.code_for_step(*step).as_bytes().ct_eq(presented.as_bytes())))
    }
}

/// Ten fresh recovery codes, shown to the user once (`xxxxx-xxxxx`, base32, 50 bits each).
pub fn recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rand::rng().fill_bytes(&mut bytes);
            let text = base32_encode(&bytes).to_ascii_lowercase();
            format!("{}-{}", &text[..5], &text[5..10])
        })
        .collect()
}

/// What the store keeps of a recovery code: a hash of its normalised form (case, spaces and
/// dashes do not matter when it is typed back).
pub fn recovery_code_hash(code: &str) -> String {
    let normalised: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    hex::encode(Sha256::digest(format!("veil-recovery:{normalised}").as_bytes()))
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = BASE32.iter().position(|&b| char::from(b) == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 are ours).
    #[test]
    fn matches_the_rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (time, full) in
            [(59, "94287082"), (1_111_111_109, "07081804"), (1_234_567_890, "89005924"), (20_000_000_000, "65353130")]
        {
            assert_eq!(secret.code_at(time), full[2..], "time {time}");
        }
    }

    #[test]
    fn accepts_one_step_of_skew_and_nothing_else() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_000;
        assert_eq!(secret.verify(&secret.code_at(now), now), Some(now / 30));
        assert!(secret.verify(&secret.code_at(now - 30), now).is_some());
        assert!(secret.verify(&secret.code_at(now + 30), now).is_some());
        assert_eq!(secret.verify(&secret.code_at(now - 90), now), None);
        assert_eq!(secret.verify("12345", now), None);
        assert_eq!(secret.verify("abcdef", now), None);
    }

    #[test]
    fn base32_round_trips_and_the_uri_names_the_secret() {
        let secret = TotpSecret::generate();
        assert_eq!(TotpSecret::from_base32(&secret.base32()), Some(secret.clone()));
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        let uri = secret.uri("Veil", "ann@example.com");
        assert!(uri.starts_with("otpauth://totp/Veil:ann@example.com?secret="), "{uri}");
        assert!(uri.contains(&secret.base32()));
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_the_same_however_typed() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 11);
        assert_eq!(recovery_code_hash(code), recovery_code_hash(&format!(" {} ", code.to_uppercase())));
        assert_ne!(recovery_code_hash(code), recovery_code_hash(&codes[1]));
    }
}

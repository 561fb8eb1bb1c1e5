//! OpenID Connect sign-in, the protocol without IO: the provider's discovery document and
//! key set, the authorisation request (state, nonce, PKCE S256), the signed flow cookie that
//! carries them across the round trip, and ID-token verification.
//!
//! Promises:
//! - An ID token is accepted only if its signature verifies under a key of the provider's
//!   key set with an asymmetric algorithm (RS256/384/512, ES256/384; never `none` or an HMAC
//!   algorithm, whatever the token's header says), its issuer is the configured one, its
//!   audience holds the client id (and `azp` names it when there are several), it has not
//!   expired, was not issued in the future, and carries this flow's nonce.
//! - The flow cookie is bound to this installation's key and expires; a forged, altered or
//!   stale one opens to nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::security::{CsrfKey, random_token};

/// The cookie that carries one sign-in's state, nonce and PKCE verifier to the callback.
pub const FLOW_COOKIE: &str = "veil_oidc";
/// How long a sign-in at the provider may take.
pub const FLOW_SECONDS: u64 = 600;
/// Clock difference tolerated between Veil and the provider.
pub const LEEWAY_SECONDS: u64 = 120;

/// Why an OpenID Connect step failed. The messages are for logs and name no token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the discovery document is not usable: {0}")]
    Discovery(&'static str),
    #[error("the key set is not usable")]
    KeySet,
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token's algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("no key of the provider matches the ID token")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by someone else")]
    Issuer,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token has expired or is not valid yet")]
    Expired,
    #[error("the ID token belongs to another sign-in")]
    Nonce,
}

/// The parts of `{issuer}/.well-known/openid-configuration` Veil uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

impl Discovery {
    /// Parses a discovery document and checks it describes `issuer` (OpenID Connect
    /// Discovery §4.3: the document's issuer must be exactly the one it was fetched for).
    pub fn parse(body: &[u8], issuer: &str) -> Result<Self, OidcError> {
        let document: Self =
            serde_json::from_slice(body).map_err(|_| OidcError::Discovery("not JSON of the right shape"))?;
        if document.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(OidcError::Discovery("it names another issuer"));
        }
        for endpoint in [&document.authorization_endpoint, &document.token_endpoint, &document.jwks_uri] {
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                return Err(OidcError::Discovery("an endpoint is not an http(s) URL"));
            }
        }
        Ok(document)
    }
}

/// One key of a JSON Web Key Set (RFC 7517), the members Veil reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub usage: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A provider's signing keys.
#[derive(Debug, Clone, Deserialize)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

impl KeySet {
    pub fn parse(body: &[u8]) -> Result<Self, OidcError> {
        serde_json::from_slice(body).map_err(|_| OidcError::KeySet)
    }

    /// Whether a key with this id is in the set (a token naming an unknown one means the
    /// provider rotated its keys and the set should be fetched again).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

/// What one sign-in sends to the provider and must find again at the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Unix seconds after which the callback is refused.
    pub expires: u64,
}

impl Flow {
    pub fn start(now: u64) -> Self {
        Self { state: random_token(), nonce: random_token(), verifier: random_token(), expires: now + FLOW_SECONDS }
    }

    /// The PKCE `code_challenge` (S256) for this flow's verifier (RFC 7636 §4.2).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// The cookie value: the flow and a MAC over it under the installation's key.
    pub fn seal(&self, key: &CsrfKey) -> String {
        let payload = format!("{}.{}.{}.{}", self.state, self.nonce, self.verifier, self.expires);
        let mac = key.token(&format!("oidc-flow:{payload}"));
        format!("{payload}.{mac}")
    }

    /// The flow a cookie carries, if its MAC verifies and it has not expired.
    pub fn open(cookie: &str, key: &CsrfKey, now: u64) -> Option<Self> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        if !key.verify(&format!("oidc-flow:{payload}"), mac) {
            return None;
        }
        let mut parts = payload.split('.');
        let (state, nonce, verifier, expires) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let expires: u64 = expires.parse().ok()?;
        if parts.next().is_some() || now > expires {
            return None;
        }
        Some(Self { state: state.to_owned(), nonce: nonce.to_owned(), verifier: verifier.to_owned(), expires })
    }
}

/// The authorisation request URL (OpenID Connect Core §3.1.2.1, code flow with PKCE).
pub fn authorization_url(
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    flow: &Flow,
) -> String {
    let scope = scopes.join(" ");
    let challenge = flow.challenge();
    let query = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope.as_str()),
        ("state", flow.state.as_str()),
        ("nonce", flow.nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(name, value)| format!("{name}={}", form_encode(value)))
    .collect::<Vec<_>>()
    .join("&");
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{query}")
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The claims of an ID token Veil uses, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// What an ID token must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    // Some providers send `"email_verified": "true"`.
    Text(String),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    name: Option<String>,
}

/// The token's key id, if its header names one (to decide whether to refetch the key set).
pub fn token_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.kid
}

/// Verifies an ID token (a compact JWS) and returns who it names.
pub fn verify_id_token(token: &str, keys: &KeySet, expected: &Expected<'_>) -> Result<Identity, OidcError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| OidcError::Malformed);
    let header: Header = serde_json::from_slice(&decode(header_b64)?).map_err(|_| OidcError::Malformed)?;
    let signature = decode(signature_b64)?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    let algorithm = Algorithm::parse(&header.alg)?;
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|key| header.kid.is_none() || key.kid == header.kid)
        .filter(|key| key.usage.as_deref().is_none_or(|usage| usage == "sig"))
        .filter(|key| key.kty == algorithm.key_type())
        .collect();
    if candidates.is_empty() {
        return Err(OidcError::UnknownKey);
    }
    if !candidates.iter().any(|key| algorithm.verify(key, signed, &signature)) {
        return Err(OidcError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(claims_b64)?).map_err(|_| OidcError::Malformed)?;
    if claims.iss.trim_end_matches('/') != expected.issuer.trim_end_matches('/') {
        return Err(OidcError::Issuer);
    }
    let audiences = match &claims.aud {
        Audience::One(one) => vec![one.as_str()],
        Audience::Many(many) => many.iter().map(String::as_str).collect(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(OidcError::Audience);
    }
    if audiences.len() > 1 && claims.azp.as_deref() != Some(expected.client_id) {
        return Err(OidcError::Audience);
    }
    if claims.exp + LEEWAY_SECONDS < expected.now || claims.iat.is_some_and(|iat| iat > expected.now + LEEWAY_SECONDS) {
        return Err(OidcError::Expired);
    }
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(OidcError::Nonce);
    }
    let email_verified = match claims.email_verified {
        Some(Flag::Bool(verified)) => verified,
        Some(Flag::Text(text)) => text.eq_ignore_ascii_case("true"),
        None => false,
    };
    Ok(Identity {
        issuer: claims.iss,
        subject: claims.sub,
        email: claims.email.filter(|email| !email.is_empty()),
        email_verified,
        name: claims.name.filter(|name| !name.is_empty()),
    })
}

/// The signature algorithms accepted for ID tokens.
#[derive(Debug, Clone, Copy)]
enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
}

impl Algorithm {
    fn parse(name: &str) -> Result<Self, OidcError> {
        match name {
            "RS256" => Ok(Self::Rs256),
            "RS384" => Ok(Self::Rs384),
            "RS512" => Ok(Self::Rs512),
            "ES256" => Ok(Self::Es256),
            "ES384" => Ok(Self::Es384),
            other => Err(OidcError::Algorithm(other.chars().take(16).collect())),
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 => "RSA",
            Self::Es256 | Self::Es384 => "EC",
        }
    }

    fn verify(self, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature;
        let member = |value: &Option<String>| value.as_deref().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 => {
                let (Some(n), Some(e)) = (member(&key.n), member(&key.e)) else { return false };
                let parameters = match self {
                    Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n: &n, e: &e }.verify(parameters, message, signature).is_ok()
            }
            Self::Es256 | Self::Es384 => {
                let (curve, algorithm): (&str, &'static signature::EcdsaVerificationAlgorithm) = match self {
                    Self::Es256 => ("P-256", &signature::ECDSA_P256_SHA256_FIXED),
                    _ => ("P-384", &signature::ECDSA_P384_SHA384_FIXED),
                };
                let (Some(x), Some(y)) = (member(&key.x), member(&key.y)) else { return false };
                if key.crv.as_deref() != Some(curve) {
                    return false;
                }
                // An uncompressed SEC1 point: 0x04 ‖ x ‖ y.
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                signature::UnparsedPublicKey::new(algorithm, &point).verify(message, signature).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://id.example.com";

    struct Signer {
        key: RsaKeyPair,
        kid: &'static str,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            Self { key: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(), kid }
        }

        fn jwk(&self) -> serde_json::Value {
            let public = self.key.public_key();
            json!({
                "kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            })
        }

        fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut signature = vec![0; self.key.public_modulus_len()];
            self.key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }

        fn token(&self, claims: serde_json::Value) -> String {
            self.sign(json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"}), claims)
        }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "sub": "u-1", "aud": "veil", "exp": 2_000, "iat": 1_000, "nonce": "n-1",
               "email": "ann@example.com", "email_verified": true, "name": "Ann"})
    }

    fn expected() -> Expected<'static> {
        Expected { issuer: ISSUER, client_id: "veil", nonce: "n-1", now: 1_500 }
    }

    fn keys(signers: &[&Signer]) -> KeySet {
        KeySet::parse(json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string().as_bytes())
            .unwrap()
    }

    fn with(mut claims: serde_json::Value, name: &str, value: serde_json::Value) -> serde_json::Value {
        claims[name] = value;
        claims
    }

    #[test]
    fn a_good_token_gives_the_identity() {
        let signer = Signer::new("k1");
        let other = Signer::new("k2");
        let identity = verify_id_token(&signer.token(claims()), &keys(&[&other, &signer]), &expected()).unwrap();
        assert_eq!(
            identity,
            Identity {
                issuer: ISSUER.into(),
                subject: "u-1".into(),
                email: Some("ann@example.com".into()),
                email_verified: true,
                name: Some("Ann".into()),
            }
        );
        assert_eq!(token_kid(&signer.token(claims())).as_deref(), Some("k1"));
        let text = with(claims(), "email_verified", json!("true"));
        assert!(verify_id_token(&signer.token(text), &keys(&[&signer]), &expected()).unwrap().email_verified);
        let missing = with(claims(), "email_verified", serde_json::Value::Null);
        assert!(!verify_id_token(&signer.token(missing), &keys(&[&signer]), &expected()).unwrap().email_verified);
    }

    #[test]
    fn every_claim_check_refuses_its_own_mismatch() {
        let signer = Signer::new("k1");
        let set = keys(&[&signer]);
        let refuse = |claims: serde_json::Value| verify_id_token(&signer.token(claims), &set, &expected()).unwrap_err();
        assert_eq!(refuse(with(claims(), "iss", json!("https://evil.example.com"))), OidcError::Issuer);
        assert_eq!(refuse(with(claims(), "aud", json!("another-client"))), OidcError::Audience);
        assert_eq!(refuse(with(claims(), "aud", json!(["veil", "other"]))), OidcError::Audience, "azp missing");
        let shared = with(with(claims(), "aud", json!(["veil", "other"])), "azp", json!("veil"));
        assert!(verify_id_token(&signer.token(shared), &set, &expected()).is_ok());
        assert_eq!(refuse(with(claims(), "exp", json!(1_000))), OidcError::Expired);
        assert_eq!(refuse(with(claims(), "iat", json!(9_000))), OidcError::Expired);
        assert_eq!(refuse(with(claims(), "nonce", json!("n-2"))), OidcError::Nonce);
        let mut no_nonce = claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        assert_eq!(refuse(no_nonce), OidcError::Nonce);
        // Within the leeway an expired token still passes (clocks differ).
        assert!(verify_id_token(&signer.token(with(claims(), "exp", json!(1_450))), &set, &expected()).is_ok());
    }

    #[test]
    fn signatures_must_verify_under_the_providers_keys() {
        let signer = Signer::new("k1");
        let impostor = Signer::new("k1");
        assert_eq!(
            verify_id_token(&impostor.token(claims()), &keys(&[&signer]), &expected()),
            Err(OidcError::Signature)
        );
        assert_eq!(
            verify_id_token(&Signer::new("k9").token(claims()), &keys(&[&signer]), &expected()),
            Err(OidcError::UnknownKey)
        );
        // A payload swapped under a valid signature.
        let token = signer.token(claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string());
        parts[1] = &forged;
        assert_eq!(verify_id_token(&parts.join("."), &keys(&[&signer]), &expected()), Err(OidcError::Signature));
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused_whatever_the_header_says() {
        let signer = Signer::new("k1");
        let set = keys(&[&signer]);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        for alg in ["none", "HS256", "PS256"] {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
            let token = format!("{header}.{body}.");
            assert_eq!(verify_id_token(&token, &set, &expected()), Err(OidcError::Algorithm(alg.into())));
        }
        assert_eq!(verify_id_token("a.b", &set, &expected()), Err(OidcError::Malformed));
        assert_eq!(verify_id_token("!!.!!.!!", &set, &expected()), Err(OidcError::Malformed));
    }

    #[test]
    fn flow_cookies_open_only_unaltered_with_their_key_and_in_time() {
        let key = CsrfKey::new([3; 32]);
        let flow = Flow::start(100);
        let sealed = flow.seal(&key);
        assert_eq!(Flow::open(&sealed, &key, 200), Some(flow.clone()));
        assert_eq!(Flow::open(&sealed, &key, 100 + FLOW_SECONDS + 1), None, "expired");
        assert_eq!(Flow::open(&sealed, &CsrfKey::new([4; 32]), 200), None, "another installation");
        let altered = sealed.replacen(&flow.state, &Flow::start(100).state, 1);
        assert_eq!(Flow::open(&altered, &key, 200), None, "altered");
        assert_eq!(Flow::open("garbage", &key, 200), None);
        // RFC 7636 appendix B's example verifier and challenge.
        let example = Flow {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            expires: 0,
        };
        assert_eq!(example.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn discovery_must_name_the_issuer_it_was_fetched_for() {
        let document = json!({"issuer": ISSUER, "authorization_endpoint": "https://id.example.com/auth",
                              "token_endpoint": "https://id.example.com/token", "jwks_uri": "https://id.example.com/jwks"});
        assert!(Discovery::parse(document.to_string().as_bytes(), &format!("{ISSUER}/")).is_ok());
        let other = with(document.clone(), "issuer", json!("https://evil.example.com"));
        assert!(Discovery::parse(other.to_string().as_bytes(), ISSUER).is_err());
        let scheme = with(document, "token_endpoint", json!("javascript:alert(1)"));
        assert!(Discovery::parse(scheme.to_string().as_bytes(), ISSUER).is_err());
        assert!(Discovery::parse(b"<html>", ISSUER).is_err());
    }

    #[test]
    fn the_authorisation_url_carries_every_parameter_encoded() {
        let flow = Flow { state: "s".into(), nonce: "n".into(), verifier: "v".into(), expires: 0 };
        let url = authorization_url(
            "https://id.example.com/auth?tenant=x",
            "veil app",
            "https://relay.example.com/console/oidc/callback",
            &["openid".into(), "email".into()],
            &flow,
        );
        assert!(url.starts_with("https://id.example.com/auth?tenant=x&response_type=code&client_id=veil+app&"));
        assert!(url.contains("&redirect_uri=https%3A%2F%2Frelay.example.com%2Fconsole%2Foidc%2Fcallback&"));
        assert!(url.contains("&scope=openid+email&state=s&nonce=n&"));
        assert!(url.ends_with(&format!("&code_challenge={}&code_challenge_method=S256", flow.challenge())));
    }
}

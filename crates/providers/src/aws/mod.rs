//! What talking to AWS needs beyond HTTP: Signature Version 4 request signing
//! ([`sigv4`]) and the binary event stream framing AWS streams answers in
//! ([`eventstream`]). Both are pure (no IO), so the Bedrock provider composes them with
//! the shared HTTP client and the Bedrock wire codec in `veil_protocol::bedrock`.

pub mod eventstream;
pub mod sigv4;

//! `[console.oidc]`: optional OpenID Connect sign-in for the web console. Validated here so a
//! wrong issuer or a missing client id stops start-up with the key's path, not a failed
//! sign-in later.

use crate::ConfigError;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The provider's issuer URL; its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// The environment variable holding the client secret (never the secret itself);
    /// omitted: a public client (PKCE only).
    pub client_secret_env: Option<String>,
    /// What the sign-in page calls the provider ("Sign in with …").
    pub name: Option<String>,
    /// The callback URL registered at the provider; default: this request's own
    /// `{scheme}://{host}/console/oidc/callback`.
    pub redirect_url: Option<String>,
    /// Scopes asked for; default `["openid", "email", "profile"]`.
    pub scopes: Option<Vec<String>>,
    /// Whether a verified e-mail address without an account gets one (in `signup_group`,
    /// only at `signup_domains` if those are set). Default true.
    pub create_accounts: Option<bool>,
}

/// `[console.oidc]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub name: String,
    pub redirect_url: Option<String>,
    pub scopes: Vec<String>,
    pub create_accounts: bool,
}

/// Whether `host` (a URL's host, with or without `:port`; IPv6 in brackets) names this
/// machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(rest) => rest.split_once(']').map_or(host, |(literal, _)| literal),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` is `https://`, or `http://` to this machine (a provider for development or
/// tests); anything else would send codes and tokens in the clear.
fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    is_loopback_host(rest.split(['/', '?', '#']).next().unwrap_or_default())
}

pub(crate) fn validate(raw: Option<&RawOidc>) -> Result<Option<OidcSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let issuer = raw.issuer.as_deref().map(str::trim).unwrap_or_default();
    if issuer.is_empty() {
        return Err(ConfigError::invalid("console.oidc.issuer", "is required for OpenID Connect sign-in"));
    }
    if !secure_or_loopback(issuer) {
        return Err(ConfigError::invalid("console.oidc.issuer", "must be an https:// URL (http:// only on loopback)"));
    }
    let client_id = raw.client_id.as_deref().map(str::trim).unwrap_or_default();
    if client_id.is_empty() {
        return Err(ConfigError::invalid("console.oidc.client_id", "is required for OpenID Connect sign-in"));
    }
    if let Some(url) = raw.redirect_url.as_deref()
        && (!secure_or_loopback(url) || !url.ends_with("/console/oidc/callback"))
    {
        return Err(ConfigError::invalid(
            "console.oidc.redirect_url",
            "must be https://<this relay>/console/oidc/callback (http:// only on loopback)",
        ));
    }
    let scopes = raw.scopes.clone().unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|scope| scope == "openid") {
        return Err(ConfigError::invalid("console.oidc.scopes", "must include \"openid\""));
    }
    if scopes.iter().any(|scope| scope.is_empty() || scope.contains(char::is_whitespace)) {
        return Err(ConfigError::invalid("console.oidc.scopes", "scopes are single words"));
    }
    Ok(Some(OidcSettings {
        issuer: issuer.trim_end_matches('/').to_owned(),
        client_id: client_id.to_owned(),
        client_secret_env: raw.client_secret_env.clone().filter(|name| !name.is_empty()),
        name: raw.name.clone().filter(|name| !name.trim().is_empty()).unwrap_or_else(|| "single sign-on".into()),
        redirect_url: raw.redirect_url.clone(),
        scopes,
        create_accounts: raw.create_accounts.unwrap_or(true),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(secure_or_loopback("https://id.example.com"));
        assert!(secure_or_loopback("http://localhost:9000/realms/x"));
        assert!(secure_or_loopback("http://127.0.0.1"));
        assert!(secure_or_loopback("http://[::1]:8080"));
        assert!(!secure_or_loopback("http://id.example.com"));
        assert!(!secure_or_loopback("http://localhost.evil.com"));
        assert!(!secure_or_loopback("ftp://localhost"));
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("LOCALHOST") && !is_loopback_host("10.0.0.1"));
    }
}

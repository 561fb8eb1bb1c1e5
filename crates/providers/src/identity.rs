//! Talking to an OpenID Connect provider for console sign-in: fetching its discovery
//! document and key set, and the token request. Here because this crate owns Veil's
//! outbound HTTP client; the protocol itself (what the documents mean, how an ID token is
//! checked) is `veil-console`'s, and the flow is the server's.
//!
//! Promises: every exchange has a deadline, redirects are not followed (the client's
//! policy), and a reply is read only up to [`MAX_REPLY_BYTES`], so a broken or hostile
//! provider cannot make Veil wait or buffer without bound. Nothing here logs a URL, a code
//! or a token.

use crate::HttpClient;
use bytes::{Bytes, BytesMut};
use std::time::Duration;

/// The largest discovery document, key set or token reply read.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the identity provider could not be reached")]
    Unreachable,
    #[error("the identity provider answered HTTP {0}")]
    Status(u16),
    #[error("the identity provider's reply is larger than {MAX_REPLY_BYTES} bytes")]
    TooLarge,
}

/// GETs a JSON document (discovery, key set); its body on 2xx.
pub async fn get_document(http: &HttpClient, url: &str, deadline: Duration) -> Result<Bytes, IdentityError> {
    let request = http.reqwest().get(url).timeout(deadline).header(http::header::ACCEPT, "application/json");
    read(request.send().await.map_err(|_| IdentityError::Unreachable)?).await
}

/// POSTs the token request (`application/x-www-form-urlencoded`, RFC 6749 §4.1.3), with
/// HTTP Basic client authentication when a secret is given; the reply's body on 2xx.
pub async fn post_token_request(
    http: &HttpClient,
    url: &str,
    client: (&str, Option<&str>),
    form: &str,
    deadline: Duration,
) -> Result<Bytes, IdentityError> {
    let mut request = http
        .reqwest()
        .post(url)
        .timeout(deadline)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let (id, Some(secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    read(request.send().await.map_err(|_| IdentityError::Unreachable)?).await
}

async fn read(mut response: reqwest::Response) -> Result<Bytes, IdentityError> {
    let status = response.status();
    if !status.is_success() {
        return Err(IdentityError::Status(status.as_u16()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| IdentityError::Unreachable)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(IdentityError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

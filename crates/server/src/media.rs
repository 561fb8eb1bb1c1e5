//! The generated-media vault (DESIGN §2, §3.1 exception (b)). Bytes an upstream generated
//! (images, audio, video) are kept sealed for `[privacy] media_ttl` and served at an
//! HMAC-signed, expiring URL: `/v1/media/{id}?expires=…&sig=…`.
//!
//! Promises:
//! * the store only ever sees ciphertext: bytes are sealed (XChaCha20-Poly1305, installation
//!   key `generated-media`) with the media id, owner and content type as associated data,
//!   so a ciphertext moved to another row, or a row whose content type was rewritten, does
//!   not open;
//! * the URL is the only credential: its signature (HMAC-SHA-256 under the installation key
//!   `generated-media-url`, compared in constant time) covers the id and the expiry, so
//!   neither can be changed; a missing or bad signature is `403 permission_denied` whatever
//!   the id, so unsigned probes learn nothing;
//! * a URL past its expiry, or whose media was purged or erased, is `410 media_expired`;
//!   the scheduled purge (jobs.rs, `veil admin purge`) deletes expired rows;
//! * neither the bytes nor a URL's signature reach a log (the access log never logs the
//!   query string).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use veil_domain::{ErrorCode, Timestamp, UserId};
use veil_secrets::{MasterKey, Sealer};
use veil_store::{NewMedia, Store};

/// The content type kept when an upstream named none that is usable as a header.
const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

type UrlSigner = Hmac<Sha256>;

pub struct MediaVault {
    store: Arc<dyn Store>,
    sealer: Option<Sealer>,
    signer: Option<UrlSigner>,
    ttl: Duration,
}

impl MediaVault {
    /// `sealer` seals the bytes and `url_key` signs the URLs; when either is missing (its
    /// installation key could not be loaded), keeping fails and every URL is refused.
    pub fn new(store: Arc<dyn Store>, sealer: Option<Sealer>, url_key: Option<&[u8]>, ttl: Duration) -> Self {
        let signer = url_key.and_then(|key| UrlSigner::new_from_slice(key).ok());
        Self { store, sealer, signer, ttl }
    }

    /// Loads both installation keys wrapped by `master` (creating them on first use). Every
    /// instance of a deployment, and `veil admin`, derives the same keys, so a URL one of
    /// them signed is served by any other.
    pub async fn load(store: Arc<dyn Store>, master: &MasterKey, ttl: Duration) -> Self {
        let sealer = veil_secrets::installation_key(store.as_ref(), master, veil_secrets::MEDIA_PURPOSE)
            .await
            .inspect_err(|error| tracing::error!(error = %error, "the media key is unavailable; media cannot be kept"))
            .ok()
            .and_then(|key| Sealer::new(&key));
        let url_key = veil_secrets::installation_key(store.as_ref(), master, veil_secrets::MEDIA_URL_PURPOSE)
            .await
            .inspect_err(
                |error| tracing::error!(error = %error, "the media URL key is unavailable; media cannot be served"),
            )
            .ok();
        Self::new(store, sealer, url_key.as_deref().map(Vec::as_slice), ttl)
    }

    /// How long kept media stays available.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Seals `bytes` (of `content_type`) for `owner` and returns the signed path a
    /// client fetches them from (`/v1/media/{id}?expires=…&sig=…`, relative to Veil's
    /// own origin), valid for [`MediaVault::ttl`].
    pub async fn keep(&self, owner: UserId, content_type: &str, bytes: Vec<u8>) -> Result<String, ApiError> {
        Ok(self.keep_media(owner, content_type, bytes).await?.url)
    }

    /// [`MediaVault::keep`], also answering the media's id and expiry (for a record that
    /// refers to the kept bytes, such as a video job).
    pub async fn keep_media(&self, owner: UserId, content_type: &str, bytes: Vec<u8>) -> Result<Kept, ApiError> {
        let (Some(sealer), Some(signer)) = (&self.sealer, &self.signer) else {
            tracing::error!("generated media dropped: the media keys are unavailable");
            return Err(ApiError::internal());
        };
        let content_type = usable_content_type(content_type);
        let id = Uuid::now_v7();
        let now = Timestamp::now();
        // Whole seconds in the URL, rounded down: a URL never outlives the TTL.
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = now.unix_millis().saturating_add(ttl_ms).div_euclid(1000);
        let associated = associated_data(id, owner, content_type);
        let Some((nonce, ciphertext)) = sealer.seal(associated.as_bytes(), &bytes) else {
            tracing::error!("generated media could not be sealed");
            return Err(ApiError::internal());
        };
        drop(bytes);
        let media = NewMedia {
            id,
            user_id: owner,
            content_type: content_type.to_owned(),
            created_at: now,
            expires_at: Timestamp::from_unix_millis(expires.saturating_mul(1000)),
            nonce,
            ciphertext,
        };
        self.store.put_media(&media).await.map_err(|error| {
            tracing::warn!(error = %error, "generated media could not be stored");
            ApiError::internal()
        })?;
        let url = format!("/v1/media/{id}?expires={expires}&sig={}", sign(signer, id, expires));
        Ok(Kept { id, expires_at: media.expires_at, url })
    }

    /// The media `id` opened for its `owner`, without a signed URL (the caller has already
    /// authenticated the owner, e.g. a video job's content endpoint). `Ok(None)` when it
    /// expired, was purged or erased, or belongs to someone else (indistinguishable).
    pub async fn open_owned(
        &self,
        id: Uuid,
        owner: UserId,
        now: Timestamp,
    ) -> Result<Option<(String, Vec<u8>)>, ApiError> {
        let Some(sealer) = &self.sealer else {
            tracing::error!("kept media was refused: the media key is unavailable");
            return Err(ApiError::internal());
        };
        let stored = self.store.media(id).await.map_err(|error| {
            tracing::warn!(error = %error, "kept media could not be read");
            ApiError::internal()
        })?;
        let Some(stored) = stored.filter(|stored| stored.expires_at > now && stored.user_id == owner) else {
            return Ok(None);
        };
        let associated = associated_data(id, stored.user_id, &stored.content_type);
        let bytes = sealer.open(associated.as_bytes(), &stored.nonce, &stored.ciphertext).map_err(|_| {
            tracing::error!("kept media does not open (tampered, or sealed under another key)");
            ApiError::internal()
        })?;
        Ok(Some((stored.content_type, bytes)))
    }

    /// The media a signed URL names, checked and opened; see the module's promises for
    /// which failure gets which answer.
    async fn open(&self, id: &str, query: &MediaQuery, now: Timestamp) -> Result<Opened, ApiError> {
        let (Some(sealer), Some(signer)) = (&self.sealer, &self.signer) else {
            tracing::error!("a media URL was refused: the media keys are unavailable");
            return Err(ApiError::internal());
        };
        let (id, expires) = verified(signer, id, query).ok_or_else(bad_signature)?;
        let expires_at = expires.saturating_mul(1000);
        if expires_at <= now.unix_millis() {
            return Err(gone());
        }
        let stored = self.store.media(id).await.map_err(|error| {
            tracing::warn!(error = %error, "kept media could not be read");
            ApiError::internal()
        })?;
        let Some(stored) = stored.filter(|stored| stored.expires_at > now) else { return Err(gone()) };
        let associated = associated_data(id, stored.user_id, &stored.content_type);
        let bytes = sealer.open(associated.as_bytes(), &stored.nonce, &stored.ciphertext).map_err(|_| {
            tracing::error!("kept media does not open (tampered, or sealed under another key)");
            ApiError::internal()
        })?;
        let until = expires_at.min(stored.expires_at.unix_millis());
        let max_age = (until - now.unix_millis()).div_euclid(1000);
        Ok(Opened { content_type: stored.content_type, max_age, bytes })
    }
}

/// Media just kept: its id, its expiry and the signed path it is served at.
pub struct Kept {
    pub id: Uuid,
    pub expires_at: Timestamp,
    pub url: String,
}

struct Opened {
    content_type: String,
    /// Seconds the URL stays valid, for `cache-control`.
    max_age: i64,
    bytes: Vec<u8>,
}

/// The signed URL's query. Both parameters are optional here so that a missing one is a
/// bad signature (403), not a malformed request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MediaQuery {
    expires: Option<String>,
    sig: Option<String>,
}

/// `GET /v1/media/{id}?expires=…&sig=…`: needs no credential but the signature.
pub(crate) async fn serve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<MediaQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    match state.media.open(&id, &query, Timestamp::now()).await {
        Ok(opened) => {
            let content_type = HeaderValue::from_str(&opened.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static(FALLBACK_CONTENT_TYPE));
            let cache = HeaderValue::from_str(&format!("private, max-age={}", opened.max_age.max(0)))
                .unwrap_or_else(|_| HeaderValue::from_static("no-store"));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, cache),
                    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                    // Served from Veil's own origin: whatever an upstream made (an SVG with
                    // script, say) must not run there.
                    (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox")),
                    // The URL is the credential: do not hand it on to links inside the media.
                    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                ],
                opened.bytes,
            )
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn bad_signature() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::PermissionDenied,
        "This media URL's signature is missing or invalid.",
    )
}

fn gone() -> ApiError {
    ApiError::new(StatusCode::GONE, ErrorCode::MediaExpired, "This media URL has expired or its media was deleted.")
}

fn usable_content_type(raw: &str) -> &str {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 255 || HeaderValue::from_str(raw).is_err() { FALLBACK_CONTENT_TYPE } else { raw }
}

/// What the seal binds a blob to: its id, owner and content type.
fn associated_data(id: Uuid, owner: UserId, content_type: &str) -> String {
    format!("veil-media-v1\n{id}\n{owner}\n{content_type}")
}

/// What a URL's signature covers: the id and the expiry, in canonical form.
fn signed_message(id: Uuid, expires: i64) -> String {
    format!("veil-media-url-v1\n{id}\n{expires}")
}

fn sign(signer: &UrlSigner, id: Uuid, expires: i64) -> String {
    let mut mac = signer.clone();
    mac.update(signed_message(id, expires).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The id and expiry a URL names, if its signature is valid (checked in constant time).
fn verified(signer: &UrlSigner, id: &str, query: &MediaQuery) -> Option<(Uuid, i64)> {
    let id = Uuid::parse_str(id).ok()?;
    let expires: i64 = query.expires.as_deref()?.parse().ok()?;
    let sig = hex::decode(query.sig.as_deref()?).ok()?;
    let mut mac = signer.clone();
    mac.update(signed_message(id, expires).as_bytes());
    mac.verify_slice(&sig).ok()?;
    Some((id, expires))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_domain::{GroupName, NewUser, Role, UserName};

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = veil_store::connect(&format!("sqlite://{}/veil.db", dir.path().display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    async fn user(store: &dyn Store) -> UserId {
        store
            .create_user(NewUser {
                name: UserName::parse("alice").unwrap(),
                email: None,
                password_hash: None,
                group: GroupName::parse("default").unwrap(),
                role: Role::User,
            })
            .await
            .unwrap()
            .id
    }

    fn split(url: &str) -> (String, MediaQuery) {
        let (path, query) = url.split_once('?').unwrap();
        let id = path.strip_prefix("/v1/media/").unwrap().to_owned();
        let mut parsed = MediaQuery::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            match name {
                "expires" => parsed.expires = Some(value.to_owned()),
                "sig" => parsed.sig = Some(value.to_owned()),
                other => panic!("unexpected parameter {other}"),
            }
        }
        (id, parsed)
    }

    #[tokio::test]
    async fn kept_media_opens_only_with_its_signature_and_until_it_expires() {
        let (_dir, store) = store().await;
        let owner = user(store.as_ref()).await;
        let master = MasterKey::from_bytes([9u8; 32]);
        let vault = MediaVault::load(Arc::clone(&store), &master, Duration::from_secs(3600)).await;
        assert_eq!(vault.ttl(), Duration::from_secs(3600));

        let url = vault.keep(owner, "image/png", b"\x89PNG pixels".to_vec()).await.unwrap();
        let (id, query) = split(&url);
        let now = Timestamp::now();
        let opened = vault.open(&id, &query, now).await.unwrap();
        assert_eq!(opened.bytes, b"\x89PNG pixels");
        assert_eq!(opened.content_type, "image/png");
        assert!((3590..=3600).contains(&opened.max_age), "{}", opened.max_age);

        // The store holds ciphertext only.
        let stored = store.media(Uuid::parse_str(&id).unwrap()).await.unwrap().unwrap();
        assert!(!stored.ciphertext.windows(6).any(|w| w == b"pixels"));

        // Another instance with the same master key serves it.
        let twin = MediaVault::load(Arc::clone(&store), &master, Duration::from_secs(60)).await;
        assert_eq!(twin.open(&id, &query, now).await.unwrap().bytes, b"\x89PNG pixels");

        // Tampering with anything signed is a bad signature.
        let status = |result: Result<Opened, ApiError>| result.err().map(|error| (error.status, error.code));
        let forbidden = Some((StatusCode::FORBIDDEN, ErrorCode::PermissionDenied));
        let later = MediaQuery { expires: Some("99999999999".into()), sig: query.sig.clone() };
        assert_eq!(status(vault.open(&id, &later, now).await), forbidden);
        let mut flipped = query.sig.clone().unwrap();
        flipped.replace_range(0..1, if flipped.starts_with('0') { "1" } else { "0" });
        let bad_sig = MediaQuery { expires: query.expires.clone(), sig: Some(flipped) };
        assert_eq!(status(vault.open(&id, &bad_sig, now).await), forbidden);
        let other_id = Uuid::now_v7().to_string();
        assert_eq!(status(vault.open(&other_id, &query, now).await), forbidden);
        assert_eq!(status(vault.open(&id, &MediaQuery::default(), now).await), forbidden);
        assert_eq!(status(vault.open("not-a-uuid", &query, now).await), forbidden);

        // Past its expiry: gone, whether or not the purge ran yet.
        let gone = Some((StatusCode::GONE, ErrorCode::MediaExpired));
        let after = now.plus_millis(3_601_000);
        assert_eq!(status(vault.open(&id, &query, after).await), gone);
        assert_eq!(store.purge_expired_media(after).await.unwrap(), 1);
        assert_eq!(status(vault.open(&id, &query, now).await), gone);
    }

    #[tokio::test]
    async fn a_moved_or_relabelled_ciphertext_does_not_open() {
        let (_dir, store) = store().await;
        let owner = user(store.as_ref()).await;
        let master = MasterKey::from_bytes([3u8; 32]);
        let vault = MediaVault::load(Arc::clone(&store), &master, Duration::from_secs(600)).await;
        let first = vault.keep(owner, "image/png", b"first".to_vec()).await.unwrap();
        let second = vault.keep(owner, "image/png", b"second".to_vec()).await.unwrap();
        let (first_id, _) = split(&first);
        let (second_id, second_query) = split(&second);
        let original = store.media(Uuid::parse_str(&first_id).unwrap()).await.unwrap().unwrap();

        // Re-store the first blob's ciphertext under the second's id (purge, then put).
        let second_uuid = Uuid::parse_str(&second_id).unwrap();
        let kept = store.media(second_uuid).await.unwrap().unwrap();
        store.purge_expired_media(kept.expires_at).await.unwrap();
        let moved = NewMedia {
            id: second_uuid,
            user_id: owner,
            content_type: "text/html".into(),
            created_at: kept.created_at,
            expires_at: kept.expires_at,
            nonce: original.nonce,
            ciphertext: original.ciphertext,
        };
        store.put_media(&moved).await.unwrap();
        let error = vault.open(&second_id, &second_query, Timestamp::now()).await.err().unwrap();
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn without_keys_nothing_is_kept() {
        let (_dir, store) = store().await;
        let owner = user(store.as_ref()).await;
        let vault = MediaVault::new(store, None, None, Duration::from_secs(60));
        let error = vault.keep(owner, "image/png", b"x".to_vec()).await.unwrap_err();
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn content_types_that_cannot_be_headers_fall_back() {
        assert_eq!(usable_content_type(" image/webp "), "image/webp");
        assert_eq!(usable_content_type(""), FALLBACK_CONTENT_TYPE);
        assert_eq!(usable_content_type("image/png\r\nx-evil: 1"), FALLBACK_CONTENT_TYPE);
    }
}

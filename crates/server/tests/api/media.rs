//! Generated media (DESIGN §2, §3.1 exception (b)): kept sealed, served at an expiring
//! HMAC-signed URL that needs no other credential; `403` for a bad signature, `410` once
//! expired, purged or erased.

use crate::helpers::*;
use std::path::Path;
use std::time::Duration;
use veil_domain::{Timestamp, UserName};
use veil_secrets::MasterKey;
use veil_server::media::MediaVault;
use veil_testkit::TestApp;

/// A vault sharing the running app's store and master key, so the URLs it signs are the
/// app's own (as a second instance of the same deployment would sign them).
async fn vault_of(app: &TestApp, ttl: Duration) -> MediaVault {
    let master = MasterKey::load_or_create(None, &app.settings.data_dir).unwrap();
    MediaVault::load(std::sync::Arc::clone(&app.store), &master, ttl).await
}

async fn user_id(app: &TestApp, name: &str) -> veil_domain::UserId {
    app.store.user_by_name(&UserName::parse(name).unwrap()).await.unwrap().unwrap().id
}

/// Every byte under `dir` (the SQLite database, its WAL and everything else on disk).
fn everything_on_disk(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(everything_on_disk(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test]
async fn kept_media_is_served_at_its_signed_url_until_it_expires_or_is_purged() {
    let (app, _upstream, _key) = app_with_upstream().await;
    let alice = user_id(&app, "alice").await;
    let vault = vault_of(&app, Duration::from_secs(3600)).await;
    let client = reqwest::Client::new();

    let canary = b"GENERATED-MEDIA-CANARY-5521".repeat(40);
    let path = vault.keep(alice, "image/png", canary.clone()).await.unwrap();
    assert!(path.starts_with("/v1/media/") && path.contains("?expires=") && path.contains("&sig="), "{path}");

    // No credential but the URL: served with its type, privately cacheable until expiry.
    let response = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let cache = headers["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cache.strip_prefix("private, max-age=").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&max_age), "{cache}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), canary.as_slice());

    // At rest it is sealed: neither the row nor any file on disk holds the bytes.
    let id = path.strip_prefix("/v1/media/").unwrap().split('?').next().unwrap();
    let stored = app.store.media(id.parse().unwrap()).await.unwrap().unwrap();
    assert!(!contains(&stored.ciphertext, b"GENERATED-MEDIA-CANARY"));
    assert!(!contains(&everything_on_disk(app.data_dir.path()), b"GENERATED-MEDIA-CANARY"));

    // A bad, missing or reused signature: 403, whatever the id.
    let sig_at = path.find("&sig=").unwrap() + "&sig=".len();
    let mut tampered = path.clone();
    let flipped = if &path[sig_at..=sig_at] == "0" { "1" } else { "0" };
    tampered.replace_range(sig_at..=sig_at, flipped);
    let longer = path.replacen("?expires=", "?expires=9", 1);
    let unsigned = path.split('&').next().unwrap().to_owned();
    let bare = format!("/v1/media/{id}");
    let elsewhere = path.replacen(id, &uuid_like_other(id), 1);
    for bad in [tampered, longer, unsigned, bare, elsewhere] {
        let response = client.get(app.url(&bad)).send().await.unwrap();
        assert_eq!(error_code(response, 403).await, "permission_denied", "{bad}");
    }

    // An expired URL: 410.
    let expired = vault_of(&app, Duration::ZERO).await.keep(alice, "audio/mpeg", b"short".to_vec()).await.unwrap();
    assert_eq!(error_code(client.get(app.url(&expired)).send().await.unwrap(), 410).await, "media_expired");

    // Purged (here: a purge running as if two hours had passed): 410 for a URL still in date.
    let purged = app.store.purge_expired_media(Timestamp::now().plus_millis(2 * 3_600_000)).await.unwrap();
    assert_eq!(purged, 2);
    assert_eq!(error_code(client.get(app.url(&path)).send().await.unwrap(), 410).await, "media_expired");
}

#[tokio::test]
async fn erasing_the_owner_takes_their_media() {
    let (app, _upstream, _key) = app_with_upstream().await;
    let (bob, _) = app.user_with_key("bob").await;
    let vault = vault_of(&app, Duration::from_secs(600)).await;
    let client = reqwest::Client::new();
    let path = vault.keep(bob.id, "image/webp", b"bob's picture".to_vec()).await.unwrap();
    assert_eq!(client.get(app.url(&path)).send().await.unwrap().status(), 200);

    app.store.erase_user(bob.id).await.unwrap();
    assert_eq!(error_code(client.get(app.url(&path)).send().await.unwrap(), 410).await, "media_expired");
}

/// Another id of the same shape, differing in its last hex digit.
fn uuid_like_other(id: &str) -> String {
    let (head, last) = id.split_at(id.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

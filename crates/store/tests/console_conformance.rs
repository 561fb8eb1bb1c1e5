//! Conformance of the web console's account storage (sessions, TOTP, recovery codes,
//! OpenID Connect identity links) on
//! both backends: SQLite in a temporary directory, PostgreSQL in a fresh database per test
//! (skipped when unreachable unless `VEIL_REQUIRE_SERVICES=1`).

#![cfg(test)]

use veil_domain::{NewUser, Role, Timestamp, UserId};
use veil_store::{ConsoleSession, StoreError, UserChange};

mod common;

use common::{TestDb, conformance, postgres_db, sqlite_db};

conformance!(
    users_are_found_by_email_and_passwords_change,
    sessions_expire_touch_and_end,
    totp_enrols_enables_and_refuses_replays,
    recovery_codes_work_once,
    erasure_deletes_sessions_and_totp,
    admins_change_role_group_and_disabling,
    identities_link_once_and_go_with_the_user,
);

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

async fn user(db: &TestDb, name: &str) -> UserId {
    db.store
        .create_user(NewUser {
            name: name.parse().unwrap(),
            email: Some(format!("{name}@Example.com")),
            role: Role::User,
            group: "default".parse().unwrap(),
            password_hash: Some("old".into()),
        })
        .await
        .unwrap()
        .id
}

fn session(hash: &str, user: UserId, created: i64) -> ConsoleSession {
    ConsoleSession {
        token_hash: hash.into(),
        user_id: user,
        created_at: at(created),
        expires_at: at(created + 1_000),
        last_seen_at: at(created),
        second_factor_pending: true,
    }
}

async fn users_are_found_by_email_and_passwords_change(db: &TestDb) {
    let ann = user(db, "ann").await;
    let found = db.store.user_by_email("ANN@example.COM").await.unwrap().unwrap();
    assert_eq!(found.id, ann);
    assert!(db.store.user_by_email("bob@example.com").await.unwrap().is_none());
    assert!(db.store.set_password_hash(ann, "new").await.unwrap());
    let reread = db.store.user_by_id(ann).await.unwrap().unwrap();
    assert_eq!(reread.password_hash.as_deref(), Some("new"));
    assert!(!db.store.set_password_hash(UserId::generate(), "x").await.unwrap());
}

async fn sessions_expire_touch_and_end(db: &TestDb) {
    let ann = user(db, "ann").await;
    let bob = user(db, "bob").await;
    let store = &db.store;
    store.create_console_session(&session("h1", ann, 10_000)).await.unwrap();
    store.create_console_session(&session("h2", ann, 20_000)).await.unwrap();
    store.create_console_session(&session("h3", bob, 10_000)).await.unwrap();
    // A second session with the same hash is a conflict, never an overwrite.
    assert!(store.create_console_session(&session("h1", bob, 10_000)).await.is_err());

    let read = store.console_session("h1", at(10_500)).await.unwrap().unwrap();
    assert_eq!(read, session("h1", ann, 10_000));
    assert!(store.console_session("h1", at(11_000)).await.unwrap().is_none(), "expired at expires_at");
    assert!(store.console_session("nope", at(10_500)).await.unwrap().is_none());

    assert!(store.touch_console_session("h1", at(10_900), at(50_000), false).await.unwrap());
    let touched = store.console_session("h1", at(30_000)).await.unwrap().unwrap();
    assert_eq!(
        (touched.last_seen_at, touched.expires_at, touched.second_factor_pending),
        (at(10_900), at(50_000), false)
    );

    let listed: Vec<String> =
        store.list_console_sessions(ann).await.unwrap().into_iter().map(|s| s.token_hash).collect();
    assert_eq!(listed, ["h2", "h1"]);
    assert_eq!(store.delete_console_sessions(ann, Some("h1")).await.unwrap(), 1);
    assert!(store.console_session("h2", at(20_500)).await.unwrap().is_none());
    assert!(store.delete_console_session("h1").await.unwrap());
    assert!(!store.delete_console_session("h1").await.unwrap());
    assert_eq!(store.purge_expired_console_sessions(at(11_000)).await.unwrap(), 1, "bob's h3");
    assert!(store.list_console_sessions(bob).await.unwrap().is_empty());
}

async fn totp_enrols_enables_and_refuses_replays(db: &TestDb) {
    let ann = user(db, "ann").await;
    let store = &db.store;
    assert!(store.console_totp(ann).await.unwrap().is_none());
    assert!(!store.enable_console_totp(ann, 5, &[], at(1)).await.unwrap(), "nothing to enable");
    assert!(store.begin_console_totp(ann, b"n1", b"c1", at(1)).await.unwrap());
    assert!(store.begin_console_totp(ann, b"n2", b"c2", at(2)).await.unwrap(), "re-enrolling replaces");
    let enrolling = store.console_totp(ann).await.unwrap().unwrap();
    assert_eq!(
        (enrolling.nonce.as_slice(), enrolling.ciphertext.as_slice(), enrolling.enabled),
        (&b"n2"[..], &b"c2"[..], false)
    );
    assert!(!store.accept_console_totp_step(ann, 9).await.unwrap(), "not enabled yet");

    let codes = vec!["r1".to_owned(), "r2".to_owned()];
    assert!(store.enable_console_totp(ann, 100, &codes, at(3)).await.unwrap());
    assert!(!store.enable_console_totp(ann, 101, &codes, at(3)).await.unwrap(), "already enabled");
    assert!(!store.begin_console_totp(ann, b"n3", b"c3", at(4)).await.unwrap(), "an enabled secret stays");
    let enabled = store.console_totp(ann).await.unwrap().unwrap();
    assert_eq!((enabled.nonce.as_slice(), enabled.enabled, enabled.last_step), (&b"n2"[..], true, 100));

    assert!(!store.accept_console_totp_step(ann, 100).await.unwrap(), "the confirming code is spent");
    assert!(store.accept_console_totp_step(ann, 101).await.unwrap());
    assert!(!store.accept_console_totp_step(ann, 101).await.unwrap(), "replay");
    assert!(!store.accept_console_totp_step(ann, 99).await.unwrap(), "older step");

    assert_eq!(store.unused_console_recovery_codes(ann).await.unwrap(), 2);
    assert!(store.clear_console_totp(ann).await.unwrap());
    assert!(store.console_totp(ann).await.unwrap().is_none());
    assert_eq!(store.unused_console_recovery_codes(ann).await.unwrap(), 0);
    assert!(!store.clear_console_totp(ann).await.unwrap());
}

async fn recovery_codes_work_once(db: &TestDb) {
    let ann = user(db, "ann").await;
    let bob = user(db, "bob").await;
    let store = &db.store;
    store.begin_console_totp(ann, b"n", b"c", at(1)).await.unwrap();
    store.enable_console_totp(ann, 1, &["a".to_owned(), "b".to_owned()], at(1)).await.unwrap();
    assert!(!store.use_console_recovery_code(bob, "a", at(2)).await.unwrap(), "another user's code");
    assert!(store.use_console_recovery_code(ann, "a", at(2)).await.unwrap());
    assert!(!store.use_console_recovery_code(ann, "a", at(3)).await.unwrap(), "single use");
    assert!(!store.use_console_recovery_code(ann, "zzz", at(3)).await.unwrap());
    assert_eq!(store.unused_console_recovery_codes(ann).await.unwrap(), 1);
}

async fn erasure_deletes_sessions_and_totp(db: &TestDb) {
    let ann = user(db, "ann").await;
    let store = &db.store;
    store.create_console_session(&session("h1", ann, 10_000)).await.unwrap();
    store.begin_console_totp(ann, b"n", b"c", at(1)).await.unwrap();
    store.enable_console_totp(ann, 1, &["a".to_owned()], at(1)).await.unwrap();
    store.erase_user(ann).await.unwrap();
    assert!(store.console_session("h1", at(10_001)).await.unwrap().is_none());
    assert!(store.list_console_sessions(ann).await.unwrap().is_empty());
    assert!(store.console_totp(ann).await.unwrap().is_none());
    assert_eq!(store.unused_console_recovery_codes(ann).await.unwrap(), 0);
}

async fn admins_change_role_group_and_disabling(db: &TestDb) {
    let ann = user(db, "ann").await;
    let store = &db.store;
    let mut group = veil_domain::Group::builtin_default();
    group.name = "staff".parse().unwrap();
    store.upsert_group(&group).await.unwrap();
    let before = store.revision().await.unwrap();
    let change = UserChange { role: Some(Role::Admin), group: Some(group.name.clone()), disabled: Some(true) };
    assert!(store.update_user(ann, &change).await.unwrap());
    assert!(store.revision().await.unwrap() > before, "cached keys must be looked up again");
    let changed = store.user_by_id(ann).await.unwrap().unwrap();
    assert_eq!((changed.role, changed.group.as_str(), changed.disabled), (Role::Admin, "staff", true));
    // Fields left out are kept.
    assert!(store.update_user(ann, &UserChange { disabled: Some(false), ..UserChange::default() }).await.unwrap());
    let enabled = store.user_by_id(ann).await.unwrap().unwrap();
    assert_eq!((enabled.role, enabled.group.as_str(), enabled.disabled), (Role::Admin, "staff", false));
    let listed = store.list_users().await.unwrap();
    assert!(listed.iter().any(|summary| summary.user.id == ann && !summary.user.disabled));
    // An unknown group is refused and changes nothing; an unknown user is no change.
    let missing = UserChange { group: Some("nowhere".parse().unwrap()), ..UserChange::default() };
    assert!(matches!(store.update_user(ann, &missing).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.user_by_id(ann).await.unwrap().unwrap().group.as_str(), "staff");
    assert!(!store.update_user(UserId::generate(), &change).await.unwrap());
}

async fn identities_link_once_and_go_with_the_user(db: &TestDb) {
    let ann = user(db, "ann").await;
    let bob = user(db, "bob").await;
    let store = &db.store;
    let issuer = "https://id.example.com";
    assert_eq!(store.console_identity_user(issuer, "sub-1").await.unwrap(), None);
    store.link_console_identity(issuer, "sub-1", ann, at(5)).await.unwrap();
    store.link_console_identity("https://other.example.com", "sub-1", bob, at(6)).await.unwrap();
    assert_eq!(store.console_identity_user(issuer, "sub-1").await.unwrap(), Some(ann));
    assert_eq!(store.console_identity_user("https://other.example.com", "sub-1").await.unwrap(), Some(bob));
    assert!(
        matches!(store.link_console_identity(issuer, "sub-1", bob, at(7)).await, Err(StoreError::Conflict(_))),
        "one identity names one account"
    );
    let links = store.console_identities(ann).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].issuer.as_str(), links[0].subject.as_str(), links[0].created_at), (issuer, "sub-1", at(5)));
    store.erase_user(ann).await.unwrap();
    assert_eq!(store.console_identity_user(issuer, "sub-1").await.unwrap(), None, "erasure removes the link");
    assert!(store.console_identities(ann).await.unwrap().is_empty());
}

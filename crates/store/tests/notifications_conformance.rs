//! Conformance of notification storage (preferences, key expiry reminders sent) on both
//! backends: SQLite in a temporary directory, PostgreSQL in a fresh database per test
//! (skipped when unreachable unless `VEIL_REQUIRE_SERVICES=1`).

#![cfg(test)]

use veil_domain::{KeyLimits, Money, NewApiKey, NewUser, Role, Timestamp, UserId};
use veil_store::{BalanceAlert, KeyNotice, NotificationPreferences, StoreError};

mod common;

use common::{TestDb, conformance, postgres_db, sqlite_db};

conformance!(
    preferences_default_to_everything_and_are_replaced,
    key_notices_are_claimed_once,
    balance_alerts_go_out_once_until_rearmed,
    erasure_deletes_preferences_and_reminders
);

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

async fn user(db: &TestDb, name: &str) -> UserId {
    db.store
        .create_user(NewUser {
            name: name.parse().unwrap(),
            email: Some(format!("{name}@example.com")),
            role: Role::User,
            group: "default".parse().unwrap(),
            password_hash: None,
        })
        .await
        .unwrap()
        .id
}

async fn key(db: &TestDb, user: UserId, hash: &str) -> veil_domain::KeyId {
    let key = NewApiKey {
        user_id: user,
        name: None,
        prefix: "sk-veil-Zz".to_owned(),
        hash: hash.to_owned(),
        models: None,
        expires_at: Some(at(1_900_000_000_000)),
        quota: None,
        limits: KeyLimits::default(),
        daily_spend: None,
        monthly_spend: None,
        ip_allow: Vec::new(),
        allow_training: false,
        privacy: veil_domain::KeyPrivacy::default(),
    };
    db.store.create_key(key).await.unwrap().id
}

async fn preferences_default_to_everything_and_are_replaced(db: &TestDb) {
    let ann = user(db, "ann").await;
    let bob = user(db, "bob").await;
    let store = &db.store;
    assert_eq!(store.notification_preferences(ann).await.unwrap(), NotificationPreferences::default());
    assert!(NotificationPreferences::default().security);
    let chosen = NotificationPreferences {
        security: false,
        spending: true,
        key_expiry: false,
        channel_health: true,
        balance_alert: Some(Money::from_nanos(2_500_000_000)),
    };
    store.set_notification_preferences(ann, &chosen, at(1_000)).await.unwrap();
    assert_eq!(store.notification_preferences(ann).await.unwrap(), chosen);
    // Another user's choices are untouched.
    assert_eq!(store.notification_preferences(bob).await.unwrap(), NotificationPreferences::default());
    let again = NotificationPreferences { security: true, balance_alert: None, ..chosen };
    store.set_notification_preferences(ann, &again, at(2_000)).await.unwrap();
    assert_eq!(store.notification_preferences(ann).await.unwrap(), again);
    let missing = store.set_notification_preferences(UserId::generate(), &again, at(3_000)).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
}

async fn key_notices_are_claimed_once(db: &TestDb) {
    let ann = user(db, "ann").await;
    let first = key(db, ann, "h1").await;
    let second = key(db, ann, "h2").await;
    let store = &db.store;
    assert!(store.claim_key_notice(first, KeyNotice::ExpiresInAWeek, at(1_000)).await.unwrap());
    assert!(!store.claim_key_notice(first, KeyNotice::ExpiresInAWeek, at(2_000)).await.unwrap());
    assert!(store.claim_key_notice(first, KeyNotice::ExpiresTomorrow, at(3_000)).await.unwrap());
    assert!(store.claim_key_notice(first, KeyNotice::QuotaNearlyUsed, at(3_000)).await.unwrap());
    assert!(store.claim_key_notice(second, KeyNotice::ExpiresInAWeek, at(3_000)).await.unwrap());
    assert!(!store.claim_key_notice(second, KeyNotice::ExpiresInAWeek, at(4_000)).await.unwrap());
}

async fn balance_alerts_go_out_once_until_rearmed(db: &TestDb) {
    let ann = user(db, "ann").await;
    let bob = user(db, "bob").await;
    let store = &db.store;
    let five = Money::from_nanos(5_000_000_000);
    let alert = NotificationPreferences { balance_alert: Some(five), ..NotificationPreferences::default() };
    store.set_notification_preferences(ann, &alert, at(1_000)).await.unwrap();
    // Bob chose no threshold: not listed, and nothing to mark.
    store.set_notification_preferences(bob, &NotificationPreferences::default(), at(1_000)).await.unwrap();
    assert_eq!(store.balance_alerts().await.unwrap(), vec![BalanceAlert { user: ann, threshold: five, sent: false }]);
    assert!(!store.mark_balance_alert(bob, true).await.unwrap());
    assert!(store.mark_balance_alert(ann, true).await.unwrap());
    assert!(!store.mark_balance_alert(ann, true).await.unwrap(), "a second instance does not send it again");
    assert!(store.balance_alerts().await.unwrap()[0].sent);
    assert!(store.mark_balance_alert(ann, false).await.unwrap(), "re-armed once the balance is back up");
    assert!(store.mark_balance_alert(ann, true).await.unwrap());
    // Saving the choices again re-arms it too.
    store.set_notification_preferences(ann, &alert, at(2_000)).await.unwrap();
    assert!(!store.balance_alerts().await.unwrap()[0].sent);
}

async fn erasure_deletes_preferences_and_reminders(db: &TestDb) {
    let ann = user(db, "ann").await;
    let ann_key = key(db, ann, "h1").await;
    let store = &db.store;
    let chosen = NotificationPreferences { security: false, ..NotificationPreferences::default() };
    store.set_notification_preferences(ann, &chosen, at(1_000)).await.unwrap();
    assert!(store.claim_key_notice(ann_key, KeyNotice::ExpiresInAWeek, at(1_000)).await.unwrap());
    store.erase_user(ann).await.unwrap();
    // Back to defaults: the row is gone.
    assert_eq!(store.notification_preferences(ann).await.unwrap(), NotificationPreferences::default());
    assert!(store.balance_alerts().await.unwrap().is_empty());
}

//! A user's own data: export everything Veil holds, erase the account.

use crate::helpers::*;
use serde_json::Value;
use veil_store::CallRecordFilter;

#[tokio::test]
async fn export_holds_the_account_keys_and_records_but_no_secret() {
    let (app, _upstream, key) = app_with_upstream().await;
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    // Let the batched record writer flush.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let client = reqwest::Client::new();
    let response = client.get(app.url("/api/me/export")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let export: Value = response.json().await.unwrap();
    assert_eq!(export["account"]["name"], "alice");
    assert_eq!(export["keys"].as_array().unwrap().len(), 1);
    assert!(key.starts_with(export["keys"][0]["prefix"].as_str().unwrap()));
    assert_eq!(export["call_records"][0]["path"], "/v1/chat/completions");
    assert!(export["ledger"].is_array() && export["daily_usage"].is_array());
    assert!(export["audit"].as_array().unwrap().iter().any(|a| a["action"] == "user.export"));
    let text = export.to_string();
    assert!(!text.contains(&key), "the export contains the key secret");
    assert!(!text.contains(&key[12..]), "the export contains part of the key secret");

    let unauthenticated = client.get(app.url("/api/me/export")).send().await.unwrap();
    assert_eq!(error_code(unauthenticated, 401).await, "invalid_api_key");
}

#[tokio::test]
async fn erasing_the_account_stops_its_keys_at_once_and_keeps_only_anonymous_totals() {
    let (app, _upstream, key) = app_with_upstream().await;
    let (bob, bob_key) = app.user_with_key("bob").await;
    for _ in 0..3 {
        assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    assert_eq!(post(&app, "/v1/chat/completions", &bob_key, chat_body("hi")).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let alice = app.store.user_by_name(&"alice".parse().unwrap()).await.unwrap().unwrap();

    let client = reqwest::Client::new();
    let erased: Value = client.delete(app.url("/api/me")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(erased["erased"], true);
    assert_eq!(erased["keys_deleted"], 1);
    assert_eq!(erased["records_anonymised"], 3);
    // At once: no refresh interval to wait for.
    let refused = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(error_code(refused, 401).await, "invalid_api_key");
    assert_eq!(post(&app, "/v1/chat/completions", &bob_key, chat_body("hi")).await.status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let store = &app.store;
    let records =
        store.list_call_records(&CallRecordFilter { user_id: None, limit: 100, ..Default::default() }).await.unwrap();
    assert!(records.iter().all(|r| r.record.user_id != Some(alice.id)), "a record still names the erased user");
    assert!(records.iter().all(|r| r.record.user_id == Some(bob.id)));
    assert!(store.user_by_id(alice.id).await.unwrap().is_none());
    let anonymous: u64 =
        store.daily_usage(None).await.unwrap().iter().filter(|d| d.user_id.is_none()).map(|d| d.calls).sum();
    assert_eq!(anonymous, 3, "the erased user's calls must survive as anonymous aggregates");
    let left = store
        .list_call_records(&CallRecordFilter { user_id: Some(alice.id), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert!(left.is_empty());
    let audit = store.list_audit(Some(alice.id), 100).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "user.erase"));
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
}

#[tokio::test]
async fn the_retention_purge_keeps_recent_records_and_folds_old_ones_into_anonymous_day_totals() {
    let (app, _upstream, key) = app_with_upstream().await;
    for _ in 0..2 {
        assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let store = &app.store;
    let recent =
        store.list_call_records(&CallRecordFilter { user_id: None, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(recent.len(), 2);
    // Age one record past a 30-day retention by re-inserting a copy dated 40 days ago.
    let mut old = recent[0].record.clone();
    old.request_id = veil_domain::RequestId::parse("old-call").unwrap();
    old.time = veil_domain::Timestamp::now().plus_millis(-40 * 86_400_000);
    store.insert_call_records(&[old.clone()], &[]).await.unwrap();

    let purged = veil_server::account::purge(store.as_ref(), veil_server::account::retention_cutoff(30)).await.unwrap();
    assert_eq!(purged, 1);
    let left =
        store.list_call_records(&CallRecordFilter { user_id: None, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(left.len(), 2, "recent records must stay");
    assert!(left.iter().all(|r| r.record.request_id.as_str() != "old-call"));
    let days = store.daily_usage(None).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].calls, 1);
    assert_eq!(days[0].input_tokens, old.usage.input_tokens);
    assert_eq!(days[0].day, old.time.to_rfc3339()[..10]);
}

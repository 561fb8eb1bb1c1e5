//! The relay on PostgreSQL: the same calls, recorded in the same shape, as on SQLite.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::postgres::TestDatabase;
use veil_testkit::spawn_app;

#[tokio::test]
async fn relayed_calls_are_recorded_on_postgres() {
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    let config = format!("[database]\nurl = \"{}\"\n{}", database.url, one_channel(&upstream));
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("pat").await;

    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    upstream.push(Reply::stream(vec!["a ", "b"], Duration::from_millis(10)));
    let mut streamed = chat_body("stream");
    streamed["stream"] = json!(true);
    let text = post(&app, "/v1/chat/completions", &key, streamed).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));

    let records = stop_and_read_records(app).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.record.status == 200 && r.record.usage.output_tokens > 0));
    assert!(records.iter().any(|r| r.record.stream));
    assert!(records.iter().all(|r| r.user_name.as_ref().is_some_and(|n| n.as_str() == "pat")));
    drop(database);
}

//! The conformance harness every store suite shares: a fresh database per test on each
//! backend, and `conformance!` to instantiate each check as `sqlite::NAME` and
//! `postgres::NAME`. PostgreSQL is skipped when unreachable, unless
//! `VEIL_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use veil_store::Store;

pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// What `veil_store::connect` takes, for tests that open a second connection.
    #[allow(dead_code)] // not every suite opens a second connection
    pub url: String,
    /// Removes the database when the test ends, passed or not.
    pub _cleanup: Box<dyn Send + Sync>,
}

pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    // A nested, missing directory: connect must create it.
    let url = format!("sqlite://{}/nested/veil.db", dir.path().display());
    let store = veil_store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    TestDb { store, url, _cleanup: Box::new(dir) }
}

pub async fn postgres_db() -> Option<TestDb> {
    let database = veil_testkit::postgres::TestDatabase::create().await?;
    let url = database.url.clone();
    let store = veil_store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    Some(TestDb { store, url, _cleanup: Box::new(database) })
}

/// Instantiates each check for both backends: `sqlite::NAME` and `postgres::NAME`. The
/// suite must have `sqlite_db` and `postgres_db` in scope (`use common::*`).
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let db = super::sqlite_db().await;
                    super::$check(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(db) = super::postgres_db().await else { return };
                    super::$check(&db).await;
                }
            )*
        }
    };
}
pub(crate) use conformance;

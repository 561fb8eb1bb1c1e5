//! A fresh PostgreSQL database per test, dropped when the guard goes (passed or not).
//!
//! The server is `VEIL_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
//! When it is unreachable the caller gets `None` and should skip, unless
//! `VEIL_REQUIRE_SERVICES=1` (as in CI), where that is a failure.

use sqlx::Connection;

pub fn postgres_admin_url() -> String {
    std::env::var("VEIL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database (the path) replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let prefix = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{database}?{query}"),
        None => format!("{prefix}/{database}"),
    }
}

/// A throw-away database; dropped (with its connections) when this value is.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `veil_test_<uuid>`; `None` (with a note) when PostgreSQL is unreachable
    /// and not required.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = postgres_admin_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(error) => {
                // The URL is not printed: it may carry a password.
                if std::env::var("VEIL_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                    panic!("PostgreSQL is required (VEIL_REQUIRE_SERVICES=1) but unreachable: {error}");
                }
                eprintln!("skipping: PostgreSQL is unreachable ({error})");
                return None;
            }
        };
        let name = format!("veil_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { url, admin_url, name })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop cannot await, and the test's runtime may be unwinding: use a private one.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_get_the_test_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(with_database("postgres://u:p@h", "t1"), "postgres://u:p@h/t1");
        assert_eq!(with_database("postgresql://h:1/db?sslmode=disable", "t1"), "postgresql://h:1/t1?sslmode=disable");
    }
}

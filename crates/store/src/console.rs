//! Web console accounts in the store: sessions (kept only as a hash of their token, with no
//! client address), the sealed TOTP secret of an account, its recovery codes (hashes,
//! single use), and its links to OpenID Connect identities (issuer and subject only). Both backends are here, side by side, so their SQL stays in step; the
//! `Store` implementations delegate to them. Erasing a user deletes all of it (cascade).

use crate::codec::{self, Columns};
use crate::error::StoreError;
use veil_domain::{Timestamp, User, UserId};

/// A signed-in (or half signed-in) console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the cookie's token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Between a correct password and the second factor: such a session opens nothing else.
    pub second_factor_pending: bool,
}

/// An account's TOTP secret, sealed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTotp {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// False while enrolling; true once sign-in requires it.
    pub enabled: bool,
    /// The last time step whose code was accepted.
    pub last_step: i64,
}

/// An account's link to an OpenID Connect identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    pub issuer: String,
    pub subject: String,
    pub created_at: Timestamp,
}

fn identity(row: &impl Columns) -> Result<IdentityLink, StoreError> {
    Ok(IdentityLink {
        issuer: row.text("issuer")?,
        subject: row.text("subject")?,
        created_at: Timestamp::from_unix_millis(row.int("created_at")?),
    })
}

fn session(row: &impl Columns) -> Result<ConsoleSession, StoreError> {
    Ok(ConsoleSession {
        token_hash: row.text("token_hash")?,
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        created_at: Timestamp::from_unix_millis(row.int("created_at")?),
        expires_at: Timestamp::from_unix_millis(row.int("expires_at")?),
        last_seen_at: Timestamp::from_unix_millis(row.int("last_seen_at")?),
        second_factor_pending: row.flag("second_factor_pending")?,
    })
}

fn totp(row: &impl Columns) -> Result<StoredTotp, StoreError> {
    Ok(StoredTotp {
        nonce: row.bytes("nonce")?,
        ciphertext: row.bytes("ciphertext")?,
        enabled: row.flag("enabled")?,
        last_step: row.int("last_step")?,
    })
}

// Column lists as macros: sqlx takes only `&'static str` queries, which `concat!` builds.
macro_rules! session_columns {
    () => {
        "token_hash, user_id, created_at, expires_at, last_seen_at, second_factor_pending"
    };
}
macro_rules! user_columns {
    () => {
        "id, name, email, role, group_name, password_hash, disabled, created_at"
    };
}

pub(crate) mod sqlite {
    use super::*;
    use sqlx::SqlitePool;

    fn id(user: UserId) -> String {
        user.as_uuid().hyphenated().to_string()
    }

    pub async fn user_by_email(pool: &SqlitePool, email: &str) -> Result<Option<User>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(email) = lower(?) ORDER BY created_at LIMIT 1"
        );
        let row = sqlx::query(sql).bind(email).fetch_optional(pool).await?;
        row.as_ref().map(codec::user).transpose()
    }

    pub async fn set_password_hash(pool: &SqlitePool, user: UserId, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id(user))
            .execute(pool)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub async fn create_session(pool: &SqlitePool, s: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, created_at, expires_at, last_seen_at, \
             second_factor_pending) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.token_hash)
        .bind(id(s.user_id))
        .bind(s.created_at.unix_millis())
        .bind(s.expires_at.unix_millis())
        .bind(s.last_seen_at.unix_millis())
        .bind(s.second_factor_pending)
        .execute(pool)
        .await
        .map_err(|e| codec::translate(e, || "console session".into(), || format!("user {}", s.user_id)))?;
        Ok(())
    }

    pub async fn session(pool: &SqlitePool, hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>, StoreError> {
        let sql =
            concat!("SELECT ", session_columns!(), " FROM console_sessions WHERE token_hash = ? AND expires_at > ?");
        let row = sqlx::query(sql).bind(hash).bind(now.unix_millis()).fetch_optional(pool).await?;
        row.as_ref().map(super::session).transpose()
    }

    pub async fn touch_session(
        pool: &SqlitePool,
        hash: &str,
        seen: Timestamp,
        expires_at: Timestamp,
        second_factor_pending: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE console_sessions SET last_seen_at = ?, expires_at = ?, second_factor_pending = ? \
             WHERE token_hash = ?",
        )
        .bind(seen.unix_millis())
        .bind(expires_at.unix_millis())
        .bind(second_factor_pending)
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn delete_session(pool: &SqlitePool, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE token_hash = ?")
            .bind(hash)
            .execute(pool)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub async fn delete_sessions(pool: &SqlitePool, user: UserId, except: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM console_sessions WHERE user_id = ? AND token_hash <> ?")
            .bind(id(user))
            .bind(except.unwrap_or(""))
            .execute(pool)
            .await?
            .rows_affected())
    }

    pub async fn list_sessions(pool: &SqlitePool, user: UserId) -> Result<Vec<ConsoleSession>, StoreError> {
        let sql =
            concat!("SELECT ", session_columns!(), " FROM console_sessions WHERE user_id = ? ORDER BY created_at DESC");
        sqlx::query(sql).bind(id(user)).fetch_all(pool).await?.iter().map(super::session).collect()
    }

    pub async fn purge_sessions(pool: &SqlitePool, now: Timestamp) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?")
            .bind(now.unix_millis())
            .execute(pool)
            .await?
            .rows_affected())
    }

    pub async fn totp(pool: &SqlitePool, user: UserId) -> Result<Option<StoredTotp>, StoreError> {
        let row = sqlx::query("SELECT nonce, ciphertext, enabled, last_step FROM console_totp WHERE user_id = ?")
            .bind(id(user))
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(super::totp).transpose()
    }

    pub async fn begin_totp(
        pool: &SqlitePool,
        user: UserId,
        nonce: &[u8],
        ciphertext: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        // An enabled secret is never replaced this way: it must be turned off first.
        let done = sqlx::query(
            "INSERT INTO console_totp (user_id, nonce, ciphertext, enabled, last_step, updated_at) \
             VALUES (?, ?, ?, 0, 0, ?) \
             ON CONFLICT (user_id) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                updated_at = excluded.updated_at WHERE console_totp.enabled = 0",
        )
        .bind(id(user))
        .bind(nonce)
        .bind(ciphertext)
        .bind(at.unix_millis())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn enable_totp(
        pool: &SqlitePool,
        user: UserId,
        step: i64,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE console_totp SET enabled = 1, last_step = ?, updated_at = ? WHERE user_id = ? AND enabled = 0",
        )
        .bind(step)
        .bind(at.unix_millis())
        .bind(id(user))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM console_recovery_codes WHERE user_id = ?").bind(id(user)).execute(&mut *tx).await?;
        for hash in recovery_hashes {
            sqlx::query("INSERT INTO console_recovery_codes (user_id, code_hash, used_at) VALUES (?, ?, NULL)")
                .bind(id(user))
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn accept_totp_step(pool: &SqlitePool, user: UserId, step: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE console_totp SET last_step = ? WHERE user_id = ? AND enabled = 1 AND last_step < ?")
                .bind(step)
                .bind(id(user))
                .bind(step)
                .execute(pool)
                .await?
                .rows_affected();
        Ok(done > 0)
    }

    pub async fn use_recovery_code(
        pool: &SqlitePool,
        user: UserId,
        hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE console_recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
        )
        .bind(at.unix_millis())
        .bind(id(user))
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn unused_recovery_codes(pool: &SqlitePool, user: UserId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM console_recovery_codes WHERE user_id = ? AND used_at IS NULL")
            .bind(id(user))
            .fetch_one(pool)
            .await?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    pub async fn clear_totp(pool: &SqlitePool, user: UserId) -> Result<bool, StoreError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM console_recovery_codes WHERE user_id = ?").bind(id(user)).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM console_totp WHERE user_id = ?")
            .bind(id(user))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    pub async fn identity_user(pool: &SqlitePool, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query("SELECT user_id FROM console_identities WHERE issuer = ? AND subject = ?")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(|row| Ok(UserId::from_uuid(row.uuid("user_id")?))).transpose()
    }

    pub async fn link_identity(
        pool: &SqlitePool,
        issuer: &str,
        subject: &str,
        user: UserId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO console_identities (issuer, subject, user_id, created_at) VALUES (?, ?, ?, ?)")
            .bind(issuer)
            .bind(subject)
            .bind(id(user))
            .bind(at.unix_millis())
            .execute(pool)
            .await
            .map_err(|e| codec::translate(e, || "identity link".into(), || format!("user {user}")))?;
        Ok(())
    }

    pub async fn identities(pool: &SqlitePool, user: UserId) -> Result<Vec<IdentityLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT issuer, subject, created_at FROM console_identities WHERE user_id = ? ORDER BY created_at",
        )
        .bind(id(user))
        .fetch_all(pool)
        .await?;
        rows.iter().map(super::identity).collect()
    }
}

pub(crate) mod postgres {
    use super::*;
    use sqlx::PgPool;

    pub async fn user_by_email(pool: &PgPool, email: &str) -> Result<Option<User>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 1"
        );
        let row = sqlx::query(sql).bind(email).fetch_optional(pool).await?;
        row.as_ref().map(codec::user).transpose()
    }

    pub async fn set_password_hash(pool: &PgPool, user: UserId, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user.as_uuid())
            .execute(pool)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub async fn create_session(pool: &PgPool, s: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, created_at, expires_at, last_seen_at, \
             second_factor_pending) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.token_hash)
        .bind(s.user_id.as_uuid())
        .bind(s.created_at.unix_millis())
        .bind(s.expires_at.unix_millis())
        .bind(s.last_seen_at.unix_millis())
        .bind(s.second_factor_pending)
        .execute(pool)
        .await
        .map_err(|e| codec::translate(e, || "console session".into(), || format!("user {}", s.user_id)))?;
        Ok(())
    }

    pub async fn session(pool: &PgPool, hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>, StoreError> {
        let sql =
            concat!("SELECT ", session_columns!(), " FROM console_sessions WHERE token_hash = $1 AND expires_at > $2");
        let row = sqlx::query(sql).bind(hash).bind(now.unix_millis()).fetch_optional(pool).await?;
        row.as_ref().map(super::session).transpose()
    }

    pub async fn touch_session(
        pool: &PgPool,
        hash: &str,
        seen: Timestamp,
        expires_at: Timestamp,
        second_factor_pending: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $1, expires_at = $2, second_factor_pending = $3 \
             WHERE token_hash = $4",
        )
        .bind(seen.unix_millis())
        .bind(expires_at.unix_millis())
        .bind(second_factor_pending)
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn delete_session(pool: &PgPool, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(hash)
            .execute(pool)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub async fn delete_sessions(pool: &PgPool, user: UserId, except: Option<&str>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM console_sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user.as_uuid())
            .bind(except.unwrap_or(""))
            .execute(pool)
            .await?
            .rows_affected())
    }

    pub async fn list_sessions(pool: &PgPool, user: UserId) -> Result<Vec<ConsoleSession>, StoreError> {
        let sql = concat!(
            "SELECT ",
            session_columns!(),
            " FROM console_sessions WHERE user_id = $1 ORDER BY created_at DESC"
        );
        sqlx::query(sql).bind(user.as_uuid()).fetch_all(pool).await?.iter().map(super::session).collect()
    }

    pub async fn purge_sessions(pool: &PgPool, now: Timestamp) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now.unix_millis())
            .execute(pool)
            .await?
            .rows_affected())
    }

    pub async fn totp(pool: &PgPool, user: UserId) -> Result<Option<StoredTotp>, StoreError> {
        let row = sqlx::query("SELECT nonce, ciphertext, enabled, last_step FROM console_totp WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(super::totp).transpose()
    }

    pub async fn begin_totp(
        pool: &PgPool,
        user: UserId,
        nonce: &[u8],
        ciphertext: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO console_totp (user_id, nonce, ciphertext, enabled, last_step, updated_at) \
             VALUES ($1, $2, $3, FALSE, 0, $4) \
             ON CONFLICT (user_id) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                updated_at = excluded.updated_at WHERE NOT console_totp.enabled",
        )
        .bind(user.as_uuid())
        .bind(nonce)
        .bind(ciphertext)
        .bind(at.unix_millis())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn enable_totp(
        pool: &PgPool,
        user: UserId,
        step: i64,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = pool.begin().await?;
        let done = sqlx::query(
            "UPDATE console_totp SET enabled = TRUE, last_step = $1, updated_at = $2 \
             WHERE user_id = $3 AND NOT enabled",
        )
        .bind(step)
        .bind(at.unix_millis())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM console_recovery_codes WHERE user_id = $1")
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
        for hash in recovery_hashes {
            sqlx::query("INSERT INTO console_recovery_codes (user_id, code_hash, used_at) VALUES ($1, $2, NULL)")
                .bind(user.as_uuid())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn accept_totp_step(pool: &PgPool, user: UserId, step: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE console_totp SET last_step = $1 WHERE user_id = $2 AND enabled AND last_step < $1")
                .bind(step)
                .bind(user.as_uuid())
                .execute(pool)
                .await?
                .rows_affected();
        Ok(done > 0)
    }

    pub async fn use_recovery_code(pool: &PgPool, user: UserId, hash: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE console_recovery_codes SET used_at = $1 \
             WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(at.unix_millis())
        .bind(user.as_uuid())
        .bind(hash)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn unused_recovery_codes(pool: &PgPool, user: UserId) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM console_recovery_codes WHERE user_id = $1 AND used_at IS NULL")
                .bind(user.as_uuid())
                .fetch_one(pool)
                .await?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    pub async fn clear_totp(pool: &PgPool, user: UserId) -> Result<bool, StoreError> {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM console_recovery_codes WHERE user_id = $1")
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM console_totp WHERE user_id = $1")
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    pub async fn identity_user(pool: &PgPool, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query("SELECT user_id FROM console_identities WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(|row| Ok(UserId::from_uuid(row.uuid("user_id")?))).transpose()
    }

    pub async fn link_identity(
        pool: &PgPool,
        issuer: &str,
        subject: &str,
        user: UserId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO console_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(issuer)
            .bind(subject)
            .bind(user.as_uuid())
            .bind(at.unix_millis())
            .execute(pool)
            .await
            .map_err(|e| codec::translate(e, || "identity link".into(), || format!("user {user}")))?;
        Ok(())
    }

    pub async fn identities(pool: &PgPool, user: UserId) -> Result<Vec<IdentityLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT issuer, subject, created_at FROM console_identities WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(user.as_uuid())
        .fetch_all(pool)
        .await?;
        rows.iter().map(super::identity).collect()
    }
}

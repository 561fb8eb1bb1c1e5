//! Notification choices in the store: which categories each user receives (and the balance
//! below which a "balance low" alert goes out, and whether it went out), and which key
//! notices (expiry reminders, quota nearly used) went out, so that each is sent once even
//! when the job runs twice or on two instances. Both backends side by side; a user without
//! a row receives every category. Erasure deletes both (cascade).

use crate::codec::Columns;
use crate::error::StoreError;
use veil_domain::{KeyId, Money, Timestamp, UserId};

/// What one user wants to be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationPreferences {
    /// New sign-in, two-factor changed, password changed, key suspended.
    pub security: bool,
    /// Balance low, key quota nearly used.
    pub spending: bool,
    /// Reminders 7 days and 1 day before a key expires.
    pub key_expiry: bool,
    /// Channel disabled (admins only).
    pub channel_health: bool,
    /// Below this balance a "balance low" alert goes out; `None`: never.
    pub balance_alert: Option<Money>,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        Self { security: true, spending: true, key_expiry: true, channel_health: true, balance_alert: None }
    }
}

/// A notice about a key that goes out once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNotice {
    /// 7 days before the key expires.
    ExpiresInAWeek,
    /// 1 day before.
    ExpiresTomorrow,
    /// 80 % of the key's quota is used.
    QuotaNearlyUsed,
}

impl KeyNotice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExpiresInAWeek => "expiry_7d",
            Self::ExpiresTomorrow => "expiry_1d",
            Self::QuotaNearlyUsed => "quota_80",
        }
    }
}

/// A user who asked to be warned below a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceAlert {
    pub user: UserId,
    pub threshold: Money,
    /// The alert went out and the balance has not been back above the threshold since.
    pub sent: bool,
}

fn balance_alert(row: &impl Columns) -> Result<BalanceAlert, StoreError> {
    Ok(BalanceAlert {
        user: UserId::from_uuid(row.uuid("user_id")?),
        threshold: Money::from_nanos(row.int("balance_alert")?),
        sent: row.flag("balance_alert_sent")?,
    })
}

fn preferences(row: &impl Columns) -> Result<NotificationPreferences, StoreError> {
    Ok(NotificationPreferences {
        security: row.flag("security")?,
        spending: row.flag("spending")?,
        key_expiry: row.flag("key_expiry")?,
        channel_health: row.flag("channel_health")?,
        balance_alert: row.opt_int("balance_alert")?.map(Money::from_nanos),
    })
}

// A macro: sqlx takes only `&'static str` queries, which `concat!` builds.
macro_rules! select_preferences {
    () => {
        "SELECT security, spending, key_expiry, channel_health, balance_alert FROM notification_preferences"
    };
}

pub(crate) mod sqlite {
    use super::*;
    use sqlx::SqlitePool;

    fn id(uuid: uuid::Uuid) -> String {
        uuid.hyphenated().to_string()
    }

    pub async fn get(pool: &SqlitePool, user: UserId) -> Result<NotificationPreferences, StoreError> {
        let sql = concat!(select_preferences!(), " WHERE user_id = ?");
        let row = sqlx::query(sql).bind(id(user.as_uuid())).fetch_optional(pool).await?;
        Ok(row.as_ref().map(super::preferences).transpose()?.unwrap_or_default())
    }

    pub async fn set(
        pool: &SqlitePool,
        user: UserId,
        p: &NotificationPreferences,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, security, spending, key_expiry, channel_health, \
             balance_alert, balance_alert_sent, updated_at) VALUES (?, ?, ?, ?, ?, ?, FALSE, ?) ON CONFLICT (user_id) DO UPDATE SET \
             security = excluded.security, spending = excluded.spending, key_expiry = excluded.key_expiry, \
             channel_health = excluded.channel_health, balance_alert = excluded.balance_alert, \
             balance_alert_sent = FALSE, updated_at = excluded.updated_at",
        )
        .bind(id(user.as_uuid()))
        .bind(p.security)
        .bind(p.spending)
        .bind(p.key_expiry)
        .bind(p.channel_health)
        .bind(p.balance_alert.map(Money::nanos))
        .bind(at.unix_millis())
        .execute(pool)
        .await
        .map_err(|e| crate::codec::translate(e, || "notification preferences".into(), || format!("user {user}")))?;
        Ok(())
    }

    pub async fn claim_notice(
        pool: &SqlitePool,
        key: KeyId,
        notice: KeyNotice,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO key_notices (key_id, notice, sent_at) VALUES (?, ?, ?) \
             ON CONFLICT (key_id, notice) DO NOTHING",
        )
        .bind(id(key.as_uuid()))
        .bind(notice.as_str())
        .bind(at.unix_millis())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn balance_alerts(pool: &SqlitePool) -> Result<Vec<BalanceAlert>, StoreError> {
        sqlx::query(
            "SELECT user_id, balance_alert, balance_alert_sent FROM notification_preferences \
             WHERE balance_alert IS NOT NULL ORDER BY user_id",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(super::balance_alert)
        .collect()
    }

    pub async fn mark_balance_alert(pool: &SqlitePool, user: UserId, sent: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE notification_preferences SET balance_alert_sent = ? WHERE user_id = ? AND balance_alert IS NOT NULL \
             AND balance_alert_sent <> ?",
        )
        .bind(sent)
        .bind(id(user.as_uuid()))
        .bind(sent)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }
}

pub(crate) mod postgres {
    use super::*;
    use sqlx::PgPool;

    pub async fn get(pool: &PgPool, user: UserId) -> Result<NotificationPreferences, StoreError> {
        let sql = concat!(select_preferences!(), " WHERE user_id = $1");
        let row = sqlx::query(sql).bind(user.as_uuid()).fetch_optional(pool).await?;
        Ok(row.as_ref().map(super::preferences).transpose()?.unwrap_or_default())
    }

    pub async fn set(
        pool: &PgPool,
        user: UserId,
        p: &NotificationPreferences,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, security, spending, key_expiry, channel_health, \
             balance_alert, balance_alert_sent, updated_at) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7) ON CONFLICT (user_id) DO UPDATE SET \
             security = excluded.security, spending = excluded.spending, key_expiry = excluded.key_expiry, \
             channel_health = excluded.channel_health, balance_alert = excluded.balance_alert, \
             balance_alert_sent = FALSE, updated_at = excluded.updated_at",
        )
        .bind(user.as_uuid())
        .bind(p.security)
        .bind(p.spending)
        .bind(p.key_expiry)
        .bind(p.channel_health)
        .bind(p.balance_alert.map(Money::nanos))
        .bind(at.unix_millis())
        .execute(pool)
        .await
        .map_err(|e| crate::codec::translate(e, || "notification preferences".into(), || format!("user {user}")))?;
        Ok(())
    }

    pub async fn claim_notice(pool: &PgPool, key: KeyId, notice: KeyNotice, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO key_notices (key_id, notice, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, notice) DO NOTHING",
        )
        .bind(key.as_uuid())
        .bind(notice.as_str())
        .bind(at.unix_millis())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    pub async fn balance_alerts(pool: &PgPool) -> Result<Vec<BalanceAlert>, StoreError> {
        sqlx::query(
            "SELECT user_id, balance_alert, balance_alert_sent FROM notification_preferences \
             WHERE balance_alert IS NOT NULL ORDER BY user_id",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(super::balance_alert)
        .collect()
    }

    pub async fn mark_balance_alert(pool: &PgPool, user: UserId, sent: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE notification_preferences SET balance_alert_sent = $1 WHERE user_id = $2 AND balance_alert IS NOT NULL \
             AND balance_alert_sent <> $1",
        )
        .bind(sent)
        .bind(user.as_uuid())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }
}

//! The PostgreSQL backend, for several instances sharing one database: ids are native
//! `uuid`, names sort bytewise (`COLLATE "C"`) so listings match SQLite, and every admin
//! write bumps the revision inside its own transaction.

use crate::audit::{AuditRow, ChainWalk, GENESIS_HASH};
use crate::codec::{self, CallRecordParams, ChannelParams, Columns, GroupParams, KeyParams, LedgerParams, ModelParams};
use crate::{
    AccountTotals, ApiChannelOutcome, ApiChannelWrite, AuditEntry, AuditVerification, CallRecordFilter, DailyUsage,
    ErasureReport, KeyTotals, LedgerCredit, NewAuditEntry, NewCapture, SealedCredential, Store, StoreError,
    StoredCallRecord, StoredCapture, UserSummary, WrappedSecret,
};
use crate::{BalanceAlert, ConsoleSession, IdentityLink, KeyNotice, NotificationPreferences, StoredTotp};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;
use veil_domain::{
    ApiKey, CallRecord, Channel, ChannelName, Group, GroupName, KeyId, LedgerEntry, Model, ModelName, Money, NewApiKey,
    NewUser, Timestamp, User, UserId, UserName,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Transaction-scoped advisory lock keys (`pg_advisory_xact_lock`). Appending to the audit
/// log takes `AUDIT_LOCK` before reading the chain's head, so appends from every instance
/// queue. Purge batches take `USAGE_LOCK` shared and an erasure takes it exclusively: an
/// erasure then sees every committed purge and no purge folds the account's records or
/// aggregates while it is being erased.
const AUDIT_LOCK: i64 = 0x7665_696c_6175_6474; // "veilaudt"
const USAGE_LOCK: i64 = 0x7665_696c_7573_6167; // "veilusag"
/// Taken by `insert_wrapped_secret_if_absent`, so the first secret of a purpose is written once.
const SECRETS_LOCK: i64 = 0x7665_696c_7365_6372; // "veilsecr"

/// One batch of the retention purge: deletes up to `$2` call records older than `$1`
/// (unix ms) that come after `($3, $4)` in `(time, id)` order, folds them into
/// `daily_usage`, and returns how many went and the last one's `(time, id)`.
///
/// At volume it stays cheap: the batch is an ordered range scan of the `(time, id)` index
/// (`call_records_time_id`, migration 0014) that stops after `$2` entries, never a table
/// scan or a sort (the conformance suite checks the plan). One statement, so the rows added
/// up are the rows this transaction deleted. SKIP LOCKED leaves rows another purge holds to
/// it. Groups are upserted in key order so concurrent purges lock aggregate rows in the
/// same order (no deadlock). Records of accounts that no longer exist are added up as
/// anonymous.
pub const PURGE_CALL_RECORDS: &str = "WITH batch AS ( \
        SELECT id, time FROM call_records WHERE time < $1 AND (time, id) > ($3, $4) \
        ORDER BY time, id LIMIT $2 \
        FOR UPDATE SKIP LOCKED), \
     gone AS ( \
        DELETE FROM call_records c USING batch WHERE c.id = batch.id \
        RETURNING c.user_id, c.model, c.time, c.input_tokens, c.cached_tokens, \
            c.output_tokens, c.cost), \
     folded AS ( \
        INSERT INTO daily_usage (user_id, model, day, calls, input_tokens, \
            cached_tokens, output_tokens, cost_nanos) \
        SELECT u.id, g.model, \
            to_char(DATE '1970-01-01' + floor(g.time / 86400000.0)::INTEGER, 'YYYY-MM-DD') \
                AS day, \
            COUNT(*), SUM(g.input_tokens)::BIGINT, SUM(g.cached_tokens)::BIGINT, \
            SUM(g.output_tokens)::BIGINT, SUM(g.cost)::BIGINT \
        FROM gone g LEFT JOIN users u ON u.id = g.user_id \
        GROUP BY u.id, g.model, day \
        ORDER BY COALESCE(u.id, '00000000-0000-0000-0000-000000000000'::UUID), \
            COALESCE(g.model, ''), day \
        ON CONFLICT ((COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::UUID)), \
            (COALESCE(model, '')), day) DO UPDATE SET \
            calls = daily_usage.calls + EXCLUDED.calls, \
            input_tokens = daily_usage.input_tokens + EXCLUDED.input_tokens, \
            cached_tokens = daily_usage.cached_tokens + EXCLUDED.cached_tokens, \
            output_tokens = daily_usage.output_tokens + EXCLUDED.output_tokens, \
            cost_nanos = daily_usage.cost_nanos + EXCLUDED.cost_nanos), \
     last AS (SELECT time, id FROM batch ORDER BY time DESC, id DESC LIMIT 1) \
     SELECT (SELECT COUNT(*) FROM gone) AS deleted, \
        (SELECT time FROM last) AS last_time, (SELECT id FROM last) AS last_id";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Runs one `DELETE` taking a single bound list, bumping the revision if it removed
    /// anything: the shape of every "retire what the config no longer declares" write.
    async fn delete_bumping(&self, sql: &'static str, bound: Vec<String>) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query(sql).bind(bound).execute(&mut *tx).await?.rows_affected();
        if deleted > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Runs one `UPDATE` of a key binding an instant (first) and the key id (second),
    /// bumping the revision if the key exists; returns whether it does.
    async fn update_key_bumping(
        &self,
        sql: &'static str,
        at: Option<Timestamp>,
        key: KeyId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(sql)
            .bind(at.map(Timestamp::unix_millis))
            .bind(key.as_uuid())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(updated > 0)
    }

    /// Connects to the database a `postgres://` URL names; it must exist already.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new().max_connections(max_connections.max(1)).connect(url).await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

impl Columns for PgRow {
    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &'static str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &'static str) -> Result<bool, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn uuid(&self, column: &'static str) -> Result<Uuid, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_uuid(&self, column: &'static str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// Bumps the revision under the row's lock (held to commit), so revisions commit in order.
async fn bump_revision(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let row =
        sqlx::query("UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision").fetch_one(conn).await?;
    row.int("revision")
}

/// Appends a ledger row written outside the call path, stamped with the revision it bumps
/// (see [`Store::append_ledger`]).
async fn insert_credit(conn: &mut PgConnection, entry: &LedgerEntry) -> Result<i64, StoreError> {
    let revision = bump_revision(&mut *conn).await?;
    let p = LedgerParams::new(entry);
    sqlx::query(
        "INSERT INTO ledger (user_id, key_id, kind, amount, time, request_id, note, revision) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(p.user_id)
    .bind(p.key_id)
    .bind(p.kind)
    .bind(p.amount)
    .bind(p.time)
    .bind(p.request_id)
    .bind(p.note)
    .bind(revision)
    .execute(conn)
    .await
    .map_err(|error| codec::translate(error, || "ledger entry".to_owned(), || format!("user {}", entry.user_id)))?;
    Ok(revision)
}

fn texts<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Inserts or replaces a channel by name; how many rows changed (0: it was stored as is).
async fn upsert_channel_row(conn: &mut PgConnection, channel: &Channel) -> Result<u64, StoreError> {
    let p = ChannelParams::new(channel);
    let changed = sqlx::query(
        "INSERT INTO channels (name, kind, base_url, api_key_env, models, model_mapping, \
            priority, weight, allowed_groups, retention_days, training, region, human_review, \
            operator, connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, \
            total_timeout_ms, rpm, max_concurrent, tls_verify, probe_interval_ms, enabled, managed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
            $18, $19, $20, $21, $22, $23, $24) \
         ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, \
            base_url = EXCLUDED.base_url, api_key_env = EXCLUDED.api_key_env, \
            models = EXCLUDED.models, model_mapping = EXCLUDED.model_mapping, \
            priority = EXCLUDED.priority, weight = EXCLUDED.weight, \
            allowed_groups = EXCLUDED.allowed_groups, \
            retention_days = EXCLUDED.retention_days, training = EXCLUDED.training, \
            region = EXCLUDED.region, human_review = EXCLUDED.human_review, \
            operator = EXCLUDED.operator, connect_timeout_ms = EXCLUDED.connect_timeout_ms, \
            first_byte_timeout_ms = EXCLUDED.first_byte_timeout_ms, \
            idle_timeout_ms = EXCLUDED.idle_timeout_ms, \
            total_timeout_ms = EXCLUDED.total_timeout_ms, rpm = EXCLUDED.rpm, \
            max_concurrent = EXCLUDED.max_concurrent, tls_verify = EXCLUDED.tls_verify, \
            probe_interval_ms = EXCLUDED.probe_interval_ms, enabled = EXCLUDED.enabled, \
            managed = EXCLUDED.managed \
         WHERE (channels.kind, channels.base_url, channels.api_key_env, channels.models, \
                channels.model_mapping, channels.priority, channels.weight, \
                channels.allowed_groups, channels.retention_days, channels.training, \
                channels.region, channels.human_review, channels.operator, \
                channels.connect_timeout_ms, channels.first_byte_timeout_ms, \
                channels.idle_timeout_ms, channels.total_timeout_ms, channels.rpm, \
                channels.max_concurrent, channels.tls_verify, channels.probe_interval_ms, \
                channels.enabled, channels.managed) \
            IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.base_url, EXCLUDED.api_key_env, \
                EXCLUDED.models, EXCLUDED.model_mapping, EXCLUDED.priority, EXCLUDED.weight, \
                EXCLUDED.allowed_groups, EXCLUDED.retention_days, EXCLUDED.training, \
                EXCLUDED.region, EXCLUDED.human_review, EXCLUDED.operator, \
                EXCLUDED.connect_timeout_ms, EXCLUDED.first_byte_timeout_ms, \
                EXCLUDED.idle_timeout_ms, EXCLUDED.total_timeout_ms, EXCLUDED.rpm, \
                EXCLUDED.max_concurrent, EXCLUDED.tls_verify, EXCLUDED.probe_interval_ms, \
                EXCLUDED.enabled, EXCLUDED.managed)",
    )
    .bind(p.name)
    .bind(p.kind)
    .bind(p.base_url)
    .bind(p.api_key_env)
    .bind(p.models)
    .bind(p.model_mapping)
    .bind(p.priority)
    .bind(p.weight)
    .bind(p.allowed_groups)
    .bind(p.retention_days)
    .bind(p.training)
    .bind(p.region)
    .bind(p.human_review)
    .bind(p.operator)
    .bind(p.connect_timeout_ms)
    .bind(p.first_byte_timeout_ms)
    .bind(p.idle_timeout_ms)
    .bind(p.total_timeout_ms)
    .bind(p.rpm)
    .bind(p.max_concurrent)
    .bind(p.tls_verify)
    .bind(p.probe_interval_ms)
    .bind(p.enabled)
    .bind(p.managed)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed)
}

/// Stores a channel's sealed credential, replacing the one it had.
async fn store_credential_row(conn: &mut PgConnection, sealed: &SealedCredential) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO channel_credentials (channel, nonce, ciphertext) VALUES ($1, $2, $3) \
         ON CONFLICT (channel) DO UPDATE SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext",
    )
    .bind(sealed.channel.as_str())
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a channel of that name exists, and if so whether the config file manages it.
async fn channel_managed(conn: &mut PgConnection, name: &ChannelName) -> Result<Option<bool>, StoreError> {
    let row =
        sqlx::query("SELECT managed FROM channels WHERE name = $1").bind(name.as_str()).fetch_optional(conn).await?;
    row.map(|row| row.flag("managed")).transpose()
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx holds a PostgreSQL advisory lock while it migrates, so concurrent starts queue.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM meta WHERE id = 1").fetch_one(&self.pool).await?;
        row.int("revision")
    }

    async fn upsert_group(&self, group: &Group) -> Result<(), StoreError> {
        let p = GroupParams::new(group);
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "INSERT INTO groups (name, multiplier, max_retention_days, allow_training, regions, \
                firewall, rpm, tpm, max_concurrent, daily_spend, monthly_spend, deny_keywords, \
                deny_patterns, managed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (name) DO UPDATE SET multiplier = EXCLUDED.multiplier, \
                max_retention_days = EXCLUDED.max_retention_days, \
                allow_training = EXCLUDED.allow_training, regions = EXCLUDED.regions, \
                firewall = EXCLUDED.firewall, rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, \
                max_concurrent = EXCLUDED.max_concurrent, daily_spend = EXCLUDED.daily_spend, \
                monthly_spend = EXCLUDED.monthly_spend, deny_keywords = EXCLUDED.deny_keywords, \
                deny_patterns = EXCLUDED.deny_patterns, managed = EXCLUDED.managed \
             WHERE (groups.multiplier, groups.max_retention_days, groups.allow_training, \
                    groups.regions, groups.firewall, groups.rpm, groups.tpm, \
                    groups.max_concurrent, groups.daily_spend, groups.monthly_spend, \
                    groups.deny_keywords, groups.deny_patterns, groups.managed) \
                IS DISTINCT FROM (EXCLUDED.multiplier, EXCLUDED.max_retention_days, \
                    EXCLUDED.allow_training, EXCLUDED.regions, EXCLUDED.firewall, EXCLUDED.rpm, \
                    EXCLUDED.tpm, EXCLUDED.max_concurrent, EXCLUDED.daily_spend, \
                    EXCLUDED.monthly_spend, EXCLUDED.deny_keywords, EXCLUDED.deny_patterns, \
                    EXCLUDED.managed)",
        )
        .bind(p.name)
        .bind(p.multiplier)
        .bind(p.max_retention_days)
        .bind(p.allow_training)
        .bind(p.regions)
        .bind(p.firewall)
        .bind(p.rpm)
        .bind(p.tpm)
        .bind(p.max_concurrent)
        .bind(p.daily_spend)
        .bind(p.monthly_spend)
        .bind(p.deny_keywords)
        .bind(p.deny_patterns)
        .bind(p.managed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        sqlx::query(
            "SELECT name, multiplier, max_retention_days, allow_training, regions, firewall, rpm, \
                tpm, max_concurrent, daily_spend, monthly_spend, deny_keywords, deny_patterns, \
                managed \
             FROM groups ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(codec::group)
        .collect()
    }

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let id = UserId::generate();
        let created_at = Timestamp::now();
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO users (id, name, email, role, group_name, password_hash, disabled, \
                created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7)",
        )
        .bind(id.as_uuid())
        .bind(user.name.as_str())
        .bind(user.email.as_deref())
        .bind(user.role.as_str())
        .bind(user.group.as_str())
        .bind(user.password_hash.as_deref())
        .bind(created_at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            codec::translate(error, || format!("user {}", user.name), || format!("group {}", user.group))
        })?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(User {
            id,
            name: user.name,
            email: user.email,
            role: user.role,
            group: user.group,
            password_hash: user.password_hash,
            disabled: false,
            created_at,
        })
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, email, role, group_name, password_hash, disabled, created_at \
             FROM users WHERE name = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(codec::user).transpose()
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, email, role, group_name, password_hash, disabled, created_at \
             FROM users WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(codec::user).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        // SUM over BIGINT is NUMERIC in PostgreSQL; the cast fails loudly rather than wrap.
        let rows = sqlx::query(
            "SELECT u.id, u.name, u.email, u.role, u.group_name, u.password_hash, u.disabled, \
                u.created_at, \
                COALESCE((SELECT SUM(l.amount) FROM ledger l WHERE l.user_id = u.id AND l.kind <> 'hold'), 0)::BIGINT \
                    AS balance \
             FROM users u ORDER BY u.name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(UserSummary { user: codec::user(row)?, balance: Money::from_nanos(row.int("balance")?) }))
            .collect()
    }

    async fn update_user(&self, user: UserId, change: &crate::UserChange) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE users SET role = COALESCE($1, role), group_name = COALESCE($2, group_name), disabled = COALESCE($3, disabled) WHERE id = $4")
            .bind(change.role.map(veil_domain::Role::as_str))
            .bind(change.group.as_ref().map(|group| group.as_str().to_owned()))
            .bind(change.disabled)
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(|error| {
                codec::translate(
                    error,
                    || "user".to_owned(),
                    || format!("group {}", change.group.as_ref().map_or("", |group| group.as_str())),
                )
            })?
            .rows_affected()
            > 0;
        if done {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn append_ledger(&self, entry: &LedgerEntry) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let revision = insert_credit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(revision)
    }

    async fn balance(&self, user: UserId) -> Result<Money, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT AS balance FROM ledger WHERE user_id = $1 AND kind <> 'hold'",
        )
        .bind(user.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        Ok(Money::from_nanos(row.int("balance")?))
    }

    async fn ledger_credits_since(&self, after: i64) -> Result<Vec<LedgerCredit>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, key_id, kind, amount, time, request_id, note, revision FROM ledger \
             WHERE revision > $1 AND user_id IS NOT NULL ORDER BY revision, id",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(LedgerCredit { revision: row.int("revision")?, entry: codec::ledger_entry(row)? }))
            .collect()
    }

    async fn account_totals(
        &self,
        user: UserId,
        day_start: Timestamp,
        month_start: Timestamp,
    ) -> Result<AccountTotals, StoreError> {
        // One statement: one snapshot of the ledger and the revision together.
        let row = sqlx::query(
            "SELECT \
                COALESCE((SELECT SUM(amount) FROM ledger WHERE user_id = $1 AND kind <> 'hold'), 0)::BIGINT \
                    AS balance, \
                COALESCE((SELECT -SUM(amount) FROM ledger \
                    WHERE user_id = $1 AND kind = 'charge' AND time >= $2), 0)::BIGINT AS spent_day, \
                COALESCE((SELECT -SUM(amount) FROM ledger \
                    WHERE user_id = $1 AND kind = 'charge' AND time >= $3), 0)::BIGINT AS spent_month, \
                (SELECT revision FROM meta WHERE id = 1) AS revision",
        )
        .bind(user.as_uuid())
        .bind(day_start.unix_millis())
        .bind(month_start.unix_millis())
        .fetch_one(&self.pool)
        .await?;
        codec::account_totals(&row)
    }

    async fn key_totals(
        &self,
        key: KeyId,
        day_start: Timestamp,
        month_start: Timestamp,
    ) -> Result<KeyTotals, StoreError> {
        let row = sqlx::query(
            "SELECT \
                COALESCE(-SUM(amount), 0)::BIGINT AS spent, \
                COALESCE(-SUM(CASE WHEN time >= $2 THEN amount ELSE 0 END), 0)::BIGINT AS spent_day, \
                COALESCE(-SUM(CASE WHEN time >= $3 THEN amount ELSE 0 END), 0)::BIGINT AS spent_month \
             FROM ledger WHERE key_id = $1 AND kind = 'charge'",
        )
        .bind(key.as_uuid())
        .bind(day_start.unix_millis())
        .bind(month_start.unix_millis())
        .fetch_one(&self.pool)
        .await?;
        codec::key_totals(&row)
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let id = KeyId::generate();
        let created_at = Timestamp::now();
        let p = KeyParams::new(&key);
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, hash, models, expires_at, quota, \
                rpm, tpm, max_concurrent, ip_allow, allow_training, privacy, revoked_at, created_at, \
                daily_spend, monthly_spend) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $15, $16, $17)",
        )
        .bind(id.as_uuid())
        .bind(key.user_id.as_uuid())
        .bind(p.name)
        .bind(p.prefix)
        .bind(p.hash)
        .bind(p.models)
        .bind(p.expires_at)
        .bind(p.quota)
        .bind(p.rpm)
        .bind(p.tpm)
        .bind(p.max_concurrent)
        .bind(p.ip_allow)
        .bind(p.allow_training)
        .bind(p.privacy)
        .bind(created_at.unix_millis())
        .bind(p.daily_spend)
        .bind(p.monthly_spend)
        .execute(&mut *tx)
        .await
        .map_err(|error| codec::translate(error, || "api key hash".to_owned(), || format!("user {}", key.user_id)))?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(ApiKey {
            id,
            user_id: key.user_id,
            name: key.name,
            prefix: key.prefix,
            hash: key.hash,
            models: key.models,
            expires_at: key.expires_at,
            quota: key.quota,
            limits: key.limits,
            daily_spend: key.daily_spend,
            monthly_spend: key.monthly_spend,
            ip_allow: key.ip_allow,
            allow_training: key.allow_training,
            privacy: key.privacy,
            revoked_at: None,
            suspended_at: None,
            created_at,
        })
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, name, prefix, hash, models, expires_at, quota, rpm, tpm, \
                max_concurrent, ip_allow, allow_training, privacy, revoked_at, suspended_at, created_at, \
                daily_spend, monthly_spend \
             FROM api_keys WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(codec::key).transpose()
    }

    async fn list_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>, StoreError> {
        let rows = match user {
            None => {
                sqlx::query(
                    "SELECT id, user_id, name, prefix, hash, models, expires_at, quota, rpm, tpm, \
                        max_concurrent, ip_allow, allow_training, privacy, revoked_at, suspended_at, created_at, \
                        daily_spend, monthly_spend \
                     FROM api_keys ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?
            }
            Some(user) => {
                sqlx::query(
                    "SELECT id, user_id, name, prefix, hash, models, expires_at, quota, rpm, tpm, \
                        max_concurrent, ip_allow, allow_training, privacy, revoked_at, suspended_at, created_at, \
                        daily_spend, monthly_spend \
                     FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
                )
                .bind(user.as_uuid())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(codec::key).collect()
    }

    async fn revoke_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at.unix_millis())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let exists = if revoked > 0 {
            bump_revision(&mut tx).await?;
            true
        } else {
            sqlx::query("SELECT 1 FROM api_keys WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
        };
        tx.commit().await?;
        Ok(exists)
    }

    async fn set_channel_credential(
        &self,
        channel: &ChannelName,
        sealed: Option<SealedCredential>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let exists = sqlx::query("SELECT 1 FROM channels WHERE name = $1")
            .bind(channel.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            tx.commit().await?;
            return Ok(false);
        }
        match sealed {
            Some(sealed) => store_credential_row(&mut tx, &sealed).await?,
            None => {
                sqlx::query("DELETE FROM channel_credentials WHERE channel = $1")
                    .bind(channel.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn channel_credentials(&self) -> Result<Vec<SealedCredential>, StoreError> {
        let rows = sqlx::query("SELECT channel, nonce, ciphertext FROM channel_credentials ORDER BY channel")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("channel")?;
                Ok(SealedCredential {
                    channel: ChannelName::parse(&name)
                        .map_err(|_| StoreError::Corrupt("channel_credentials.channel".into()))?,
                    nonce: row.bytes("nonce")?,
                    ciphertext: row.bytes("ciphertext")?,
                })
            })
            .collect()
    }

    async fn set_key_capture(&self, key: KeyId, until: Option<Timestamp>) -> Result<bool, StoreError> {
        self.update_key_bumping("UPDATE api_keys SET capture_until = $1 WHERE id = $2", until, key).await
    }

    async fn key_capture(&self, key: KeyId) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query("SELECT capture_until FROM api_keys WHERE id = $1")
            .bind(key.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.opt_int("capture_until")?.map(Timestamp::from_unix_millis),
            None => None,
        })
    }

    async fn insert_capture(&self, capture: &NewCapture) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO debug_captures (key_id, user_id, request_id, time, expires_at, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(capture.key_id.as_uuid())
        .bind(capture.user_id.as_uuid())
        .bind(&capture.request_id)
        .bind(capture.time.unix_millis())
        .bind(capture.expires_at.unix_millis())
        .bind(&capture.nonce)
        .bind(&capture.ciphertext)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            codec::translate(
                error,
                || "debug capture".to_owned(),
                || format!("key {} of user {}", capture.key_id, capture.user_id),
            )
        })?;
        Ok(())
    }

    async fn list_captures(&self, user: UserId, now: Timestamp) -> Result<Vec<StoredCapture>, StoreError> {
        sqlx::query(
            "SELECT id, key_id, user_id, request_id, time, expires_at, nonce, ciphertext \
             FROM debug_captures WHERE user_id = $1 AND expires_at > $2 \
             ORDER BY time DESC, id DESC",
        )
        .bind(user.as_uuid())
        .bind(now.unix_millis())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(codec::capture)
        .collect()
    }

    async fn purge_expired_captures(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM debug_captures WHERE expires_at <= $1")
            .bind(now.unix_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }

    async fn upsert_channel(&self, channel: &Channel) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let changed = upsert_channel_row(&mut tx, channel).await?;
        if changed > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError> {
        sqlx::query(
            "SELECT name, kind, base_url, api_key_env, models, model_mapping, priority, weight, \
                allowed_groups, retention_days, training, region, human_review, operator, \
                connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, total_timeout_ms, \
                rpm, max_concurrent, tls_verify, probe_interval_ms, enabled, managed \
             FROM channels ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(codec::channel)
        .collect()
    }

    async fn retire_managed_channels(&self, keep: &[ChannelName]) -> Result<u64, StoreError> {
        self.delete_bumping("DELETE FROM channels WHERE managed AND name <> ALL($1::TEXT[])", texts(keep)).await
    }

    async fn write_api_channel(
        &self,
        channel: &Channel,
        credential: Option<SealedCredential>,
        write: ApiChannelWrite,
    ) -> Result<ApiChannelOutcome, StoreError> {
        let mut tx = self.write().await?;
        // Bumping first takes the revision row's lock: concurrent writers queue here, so what
        // is checked below still holds at commit. A refusal rolls the bump back.
        bump_revision(&mut tx).await?;
        let refusal = write.refusal(channel_managed(&mut tx, &channel.name).await?);
        if let Some(refusal) = refusal {
            tx.rollback().await?;
            return Ok(refusal);
        }
        upsert_channel_row(&mut tx, channel).await?;
        if let Some(sealed) = credential {
            store_credential_row(&mut tx, &sealed).await?;
        }
        tx.commit().await?;
        Ok(ApiChannelOutcome::Done)
    }

    async fn delete_api_channel(&self, name: &ChannelName) -> Result<ApiChannelOutcome, StoreError> {
        let mut tx = self.write().await?;
        bump_revision(&mut tx).await?;
        let refusal = ApiChannelOutcome::delete_refusal(channel_managed(&mut tx, name).await?);
        if let Some(refusal) = refusal {
            tx.rollback().await?;
            return Ok(refusal);
        }
        // The credential and the channel_states row go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM channels WHERE name = $1").bind(name.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ApiChannelOutcome::Done)
    }

    async fn upsert_model(&self, model: &Model) -> Result<(), StoreError> {
        let p = ModelParams::new(model);
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "INSERT INTO models (name, billing, input_price, cached_input_price, cache_write_price, \
                output_price, image_price, second_price, max_output_tokens, managed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name) DO UPDATE SET billing = EXCLUDED.billing, \
                input_price = EXCLUDED.input_price, cached_input_price = EXCLUDED.cached_input_price, \
                cache_write_price = EXCLUDED.cache_write_price, output_price = EXCLUDED.output_price, \
                image_price = EXCLUDED.image_price, second_price = EXCLUDED.second_price, \
                max_output_tokens = EXCLUDED.max_output_tokens, managed = EXCLUDED.managed \
             WHERE (models.billing, models.input_price, models.cached_input_price, \
                    models.cache_write_price, models.output_price, models.image_price, \
                    models.second_price, models.max_output_tokens, models.managed) \
                IS DISTINCT FROM (EXCLUDED.billing, EXCLUDED.input_price, EXCLUDED.cached_input_price, \
                    EXCLUDED.cache_write_price, EXCLUDED.output_price, EXCLUDED.image_price, \
                    EXCLUDED.second_price, EXCLUDED.max_output_tokens, EXCLUDED.managed)",
        )
        .bind(p.name)
        .bind(p.billing)
        .bind(p.input_price)
        .bind(p.cached_input_price)
        .bind(p.cache_write_price)
        .bind(p.output_price)
        .bind(p.image_price)
        .bind(p.second_price)
        .bind(p.max_output_tokens)
        .bind(p.managed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        sqlx::query(
            "SELECT name, billing, input_price, cached_input_price, cache_write_price, output_price, \
                image_price, second_price, max_output_tokens, managed \
             FROM models ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(codec::model)
        .collect()
    }

    async fn retire_managed_models(&self, keep: &[ModelName]) -> Result<u64, StoreError> {
        self.delete_bumping("DELETE FROM models WHERE managed AND name <> ALL($1::TEXT[])", texts(keep)).await
    }

    async fn retire_managed_groups(&self, keep: &[GroupName]) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query(
            "DELETE FROM groups \
             WHERE managed AND name <> 'default' AND name <> ALL($1::TEXT[]) \
               AND NOT EXISTS (SELECT 1 FROM users WHERE users.group_name = groups.name)",
        )
        .bind(texts(keep))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn insert_call_records(&self, records: &[CallRecord], ledger: &[LedgerEntry]) -> Result<(), StoreError> {
        if records.is_empty() && ledger.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for chunk in crate::codec::statement_chunks(records) {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO call_records (request_id, time, user_id, key_id, group_name, model, \
                    upstream_model, channel, path, stream, input_tokens, cached_tokens, \
                    cache_write_tokens, output_tokens, reasoning_tokens, images, media_ms, cost, \
                    multiplier, status, error_code, latency_ms, ttft_ms, client_ip, user_agent, \
                    redactions, rule_id, policy_class, estimated, channels_tried) ",
            );
            insert.push_values(chunk, |mut row, record| {
                let p = CallRecordParams::new(record);
                row.push_bind(p.request_id)
                    .push_bind(p.time)
                    .push_bind(p.user_id)
                    .push_bind(p.key_id)
                    .push_bind(p.group_name)
                    .push_bind(p.model)
                    .push_bind(p.upstream_model)
                    .push_bind(p.channel)
                    .push_bind(p.path)
                    .push_bind(p.stream)
                    .push_bind(p.input_tokens)
                    .push_bind(p.cached_tokens)
                    .push_bind(p.cache_write_tokens)
                    .push_bind(p.output_tokens)
                    .push_bind(p.reasoning_tokens)
                    .push_bind(p.images)
                    .push_bind(p.media_ms)
                    .push_bind(p.cost)
                    .push_bind(p.multiplier)
                    .push_bind(p.status)
                    .push_bind(p.error_code)
                    .push_bind(p.latency_ms)
                    .push_bind(p.ttft_ms)
                    .push_bind(p.client_ip)
                    .push_bind(p.user_agent)
                    .push_bind(p.redactions)
                    .push_bind(p.rule_id)
                    .push_bind(p.policy_class)
                    .push_bind(p.estimated)
                    .push_bind(p.channels_tried);
            });
            insert.build().execute(&mut *tx).await?;
        }
        for chunk in crate::codec::statement_chunks(ledger) {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO ledger (user_id, key_id, kind, amount, time, request_id, note) ",
            );
            insert.push_values(chunk, |mut row, entry| {
                let p = LedgerParams::new(entry);
                // The account may have been erased while the call ran: keep the movement, unowned.
                row.push("(SELECT id FROM users WHERE id = ")
                    .push_bind_unseparated(p.user_id)
                    .push_unseparated(")")
                    .push_bind(p.key_id)
                    .push_bind(p.kind)
                    .push_bind(p.amount)
                    .push_bind(p.time)
                    .push_bind(p.request_id)
                    .push_bind(p.note);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_call_records(&self, filter: &CallRecordFilter) -> Result<Vec<StoredCallRecord>, StoreError> {
        let limit = i64::from(if filter.limit == 0 { 100 } else { filter.limit });
        // Only the filters asked for go into the statement (rather than `? IS NULL OR …`),
        // so each shape keeps its own index plan.
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT c.request_id, c.time, c.user_id, c.key_id, c.group_name, c.model, \
                c.upstream_model, c.channel, c.path, c.stream, c.input_tokens, \
                c.cached_tokens, c.cache_write_tokens, c.output_tokens, c.reasoning_tokens, \
                c.images, c.media_ms, c.cost, c.multiplier, c.status, \
                c.error_code, c.latency_ms, c.ttft_ms, c.client_ip, c.user_agent, \
                c.redactions, c.rule_id, c.policy_class, c.estimated, c.channels_tried, \
                u.name AS user_name \
             FROM call_records c LEFT JOIN users u ON u.id = c.user_id WHERE 1 = 1",
        );
        if let Some(user) = filter.user_id {
            query.push(" AND c.user_id = ").push_bind(user.as_uuid());
        }
        if let Some(key) = filter.key_id {
            query.push(" AND c.key_id = ").push_bind(key.as_uuid());
        }
        if let Some(model) = &filter.model {
            query.push(" AND c.model = ").push_bind(model.as_str().to_owned());
        }
        if let Some(from) = filter.from {
            query.push(" AND c.time >= ").push_bind(from.unix_millis());
        }
        if let Some(to) = filter.to {
            query.push(" AND c.time < ").push_bind(to.unix_millis());
        }
        query
            .push(" ORDER BY c.time DESC, c.request_id COLLATE \"C\" DESC, c.id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(codec::call_record).collect()
    }

    async fn wrapped_secrets(&self, purpose: &str) -> Result<Vec<WrappedSecret>, StoreError> {
        let rows = sqlx::query(
            "SELECT purpose, master_key_id, nonce, ciphertext FROM secrets WHERE purpose = $1 ORDER BY master_key_id",
        )
        .bind(purpose)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(codec::secret).collect()
    }

    async fn list_wrapped_secrets(&self) -> Result<Vec<WrappedSecret>, StoreError> {
        let rows = sqlx::query(
            "SELECT purpose, master_key_id, nonce, ciphertext FROM secrets ORDER BY purpose, master_key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(codec::secret).collect()
    }

    async fn insert_wrapped_secret_if_absent(&self, secret: &WrappedSecret) -> Result<WrappedSecret, StoreError> {
        // Copies under different master keys do not conflict on the key, so inserts of a
        // first secret queue on SECRETS_LOCK: look, then insert.
        let mut tx = self.write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SECRETS_LOCK).execute(&mut *tx).await?;
        let existing = sqlx::query(
            "SELECT purpose, master_key_id, nonce, ciphertext FROM secrets WHERE purpose = $1 \
             ORDER BY master_key_id = $2 DESC, master_key_id LIMIT 1",
        )
        .bind(&secret.purpose)
        .bind(&secret.master_key_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return codec::secret(&row);
        }
        sqlx::query("INSERT INTO secrets (purpose, master_key_id, nonce, ciphertext) VALUES ($1, $2, $3, $4)")
            .bind(&secret.purpose)
            .bind(&secret.master_key_id)
            .bind(&secret.nonce)
            .bind(&secret.ciphertext)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(secret.clone())
    }

    async fn add_wrapped_copy(&self, secret: &WrappedSecret) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let others: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE purpose = $1")
            .bind(&secret.purpose)
            .fetch_one(&mut *tx)
            .await?;
        if others == 0 {
            return Err(StoreError::NotFound(format!("secret {}", secret.purpose)));
        }
        let inserted = sqlx::query(
            "INSERT INTO secrets (purpose, master_key_id, nonce, ciphertext) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (purpose, master_key_id) DO NOTHING",
        )
        .bind(&secret.purpose)
        .bind(&secret.master_key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    async fn retire_wrapped_copies(&self, master_key_id: &str) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM secrets WHERE master_key_id = $1 AND EXISTS \
             (SELECT 1 FROM secrets AS other WHERE other.purpose = secrets.purpose \
             AND other.master_key_id <> secrets.master_key_id)",
        )
        .bind(master_key_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    async fn purge_call_records(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError> {
        let batch = codec::purge_batch(batch);
        let mut total = 0;
        // Where the previous batch ended: each batch starts after it, so no batch walks the
        // index entries of rows already deleted (dead until VACUUM) again.
        let mut after: (i64, i64) = (i64::MIN, i64::MIN);
        loop {
            let mut tx = self.write().await?;
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(USAGE_LOCK).execute(&mut *tx).await?;
            let row = sqlx::query(PURGE_CALL_RECORDS)
                .bind(before.unix_millis())
                .bind(i64::from(batch))
                .bind(after.0)
                .bind(after.1)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            let deleted = u64::try_from(row.int("deleted")?).map_err(|_| codec::corrupt("deleted"))?;
            total += deleted;
            // Fewer than a batch: the rest (if any) is locked by another purge, which deletes it.
            if deleted < u64::from(batch) {
                return Ok(total);
            }
            match (row.opt_int("last_time")?, row.opt_int("last_id")?) {
                (Some(time), Some(id)) => after = (time, id),
                _ => return Ok(total),
            }
        }
    }

    async fn daily_usage(&self, user: Option<UserId>) -> Result<Vec<DailyUsage>, StoreError> {
        let rows = match user {
            None => {
                sqlx::query(
                    "SELECT user_id, model, day, calls, input_tokens, cached_tokens, output_tokens, \
                        cost_nanos \
                     FROM daily_usage \
                     ORDER BY day COLLATE \"C\", model COLLATE \"C\" NULLS FIRST, user_id NULLS FIRST",
                )
                .fetch_all(&self.pool)
                .await?
            }
            Some(user) => {
                sqlx::query(
                    "SELECT user_id, model, day, calls, input_tokens, cached_tokens, output_tokens, \
                        cost_nanos \
                     FROM daily_usage WHERE user_id = $1 \
                     ORDER BY day COLLATE \"C\", model COLLATE \"C\" NULLS FIRST",
                )
                .bind(user.as_uuid())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(codec::daily_usage).collect()
    }

    async fn list_ledger(&self, user: UserId) -> Result<Vec<LedgerEntry>, StoreError> {
        sqlx::query(
            "SELECT user_id, key_id, kind, amount, time, request_id, note FROM ledger \
             WHERE user_id = $1 ORDER BY time, id",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(codec::ledger_entry)
        .collect()
    }

    async fn erase_user(&self, user: UserId) -> Result<ErasureReport, StoreError> {
        let id = user.as_uuid();
        let mut tx = self.write().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(USAGE_LOCK).execute(&mut *tx).await?;
        // Locking the row makes a concurrent ledger append or key creation for this user
        // wait, then fail on the foreign key once the row is gone.
        if sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("user {user}")));
        }
        // The account's call records become anonymous aggregates: one statement, so a record
        // a server inserts meanwhile is either added up and deleted, or neither (a call still
        // in flight; the retention purge folds it in as anonymous later).
        let row = sqlx::query(
            "WITH gone AS ( \
                DELETE FROM call_records WHERE user_id = $1 \
                RETURNING model, time, input_tokens, cached_tokens, output_tokens, cost), \
             folded AS ( \
                INSERT INTO daily_usage (user_id, model, day, calls, input_tokens, cached_tokens, \
                    output_tokens, cost_nanos) \
                SELECT NULL::UUID, model, \
                    to_char(DATE '1970-01-01' + floor(time / 86400000.0)::INTEGER, 'YYYY-MM-DD') AS day, \
                    COUNT(*), SUM(input_tokens)::BIGINT, SUM(cached_tokens)::BIGINT, \
                    SUM(output_tokens)::BIGINT, SUM(cost)::BIGINT \
                FROM gone GROUP BY model, day ORDER BY COALESCE(model, ''), day \
                ON CONFLICT ((COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::UUID)), \
                    (COALESCE(model, '')), day) DO UPDATE SET \
                    calls = daily_usage.calls + EXCLUDED.calls, \
                    input_tokens = daily_usage.input_tokens + EXCLUDED.input_tokens, \
                    cached_tokens = daily_usage.cached_tokens + EXCLUDED.cached_tokens, \
                    output_tokens = daily_usage.output_tokens + EXCLUDED.output_tokens, \
                    cost_nanos = daily_usage.cost_nanos + EXCLUDED.cost_nanos) \
             SELECT COUNT(*) AS records FROM gone",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let records_anonymised = u64::try_from(row.int("records")?).map_err(|_| codec::corrupt("records"))?;
        // …and so do its existing aggregates, merged into the anonymous ones.
        sqlx::query(
            "WITH moved AS ( \
                DELETE FROM daily_usage WHERE user_id = $1 \
                RETURNING model, day, calls, input_tokens, cached_tokens, output_tokens, cost_nanos) \
             INSERT INTO daily_usage (user_id, model, day, calls, input_tokens, cached_tokens, \
                output_tokens, cost_nanos) \
             SELECT NULL::UUID, model, day, calls, input_tokens, cached_tokens, output_tokens, cost_nanos \
             FROM moved ORDER BY COALESCE(model, ''), day \
             ON CONFLICT ((COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::UUID)), \
                (COALESCE(model, '')), day) DO UPDATE SET \
                calls = daily_usage.calls + EXCLUDED.calls, \
                input_tokens = daily_usage.input_tokens + EXCLUDED.input_tokens, \
                cached_tokens = daily_usage.cached_tokens + EXCLUDED.cached_tokens, \
                output_tokens = daily_usage.output_tokens + EXCLUDED.output_tokens, \
                cost_nanos = daily_usage.cost_nanos + EXCLUDED.cost_nanos",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let keys_deleted =
            sqlx::query("DELETE FROM api_keys WHERE user_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        sqlx::query("UPDATE ledger SET user_id = NULL, key_id = NULL WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(ErasureReport { keys_deleted, records_anonymised })
    }

    async fn append_audit(&self, entry: &NewAuditEntry, at: Timestamp) -> Result<AuditEntry, StoreError> {
        let mut tx = self.write().await?;
        // Taken before reading the head, so every instance's appends queue; under READ
        // COMMITTED the read below then sees the previous holder's committed row.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK).execute(&mut *tx).await?;
        let last =
            sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
        let (seq, prev_hash) = match last {
            Some(row) => (row.int("seq")? + 1, row.text("hash")?),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let row = AuditRow::seal(entry, seq, at, prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, time, actor, action, subject_user, target, details, \
                prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.seq)
        .bind(row.time.unix_millis())
        .bind(&row.actor)
        .bind(&row.action)
        .bind(row.subject_user)
        .bind(row.target.as_deref())
        .bind(&row.details)
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into_entry_with(entry.details.clone()))
    }

    async fn list_audit(&self, subject_user: Option<UserId>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = codec::list_limit(limit);
        let rows = match subject_user {
            None => {
                sqlx::query(
                    "SELECT seq, time, actor, action, subject_user, target, details, prev_hash, hash \
                     FROM audit_log ORDER BY seq DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(user) => {
                sqlx::query(
                    "SELECT seq, time, actor, action, subject_user, target, details, prev_hash, hash \
                     FROM audit_log WHERE subject_user = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(user.as_uuid())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(|row| codec::audit_row(row)?.into_entry()).collect()
    }

    async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut walk = ChainWalk::new();
        loop {
            let page = sqlx::query(
                "SELECT seq, time, actor, action, subject_user, target, details, prev_hash, hash \
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(walk.last_seq)
            .bind(i64::from(codec::AUDIT_PAGE))
            .fetch_all(&self.pool)
            .await?;
            for row in &page {
                walk.visit(row.int("seq")?, codec::audit_row(row))?;
            }
            if page.len() < usize::from(codec::AUDIT_PAGE) {
                return Ok(walk.finish());
            }
        }
    }

    // Redemption codes

    async fn create_redemption_codes(&self, codes: &[crate::NewRedemptionCode]) -> Result<(), StoreError> {
        if codes.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for chunk in codes.chunks(crate::redemption::CODES_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO redemption_codes (hash, prefix, amount, created_at, expires_at) ",
            );
            insert.push_values(chunk, |mut row, code| {
                row.push_bind(code.hash.as_str())
                    .push_bind(code.prefix.as_str())
                    .push_bind(code.amount.nanos())
                    .push_bind(code.created_at.unix_millis())
                    .push_bind(code.expires_at.map(Timestamp::unix_millis));
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|error| codec::translate(error, || "redemption code hash".to_owned(), String::new))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_code(&self, hash: &str, user: UserId, at: Timestamp) -> Result<crate::Redemption, StoreError> {
        let mut tx = self.write().await?;
        // The row lock makes a concurrent redemption of the same code wait; under READ
        // COMMITTED it then re-checks the WHERE clause against the committed row, finds it
        // spent and updates nothing. Exactly one transaction gets the row back.
        let spent = sqlx::query(
            "UPDATE redemption_codes SET redeemed_at = $1, redeemed_by = $2 \
             WHERE hash = $3 AND redeemed_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
             RETURNING prefix, amount",
        )
        .bind(at.unix_millis())
        .bind(user.as_uuid())
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|error| codec::translate(error, || "redemption".to_owned(), || format!("user {user}")))?;
        let Some(spent) = spent else {
            return Ok(crate::Redemption::NotRedeemable);
        };
        let prefix = spent.text("prefix")?;
        let amount = Money::from_nanos(spent.int("amount")?);
        let revision = insert_credit(&mut tx, &crate::redemption::topup(user, amount, &prefix, at)).await?;
        tx.commit().await?;
        Ok(crate::Redemption::Credited { amount, prefix, revision })
    }

    async fn list_redemption_codes(&self, limit: u32) -> Result<Vec<crate::StoredRedemptionCode>, StoreError> {
        sqlx::query(
            "SELECT c.id, c.prefix, c.amount, c.created_at, c.expires_at, c.redeemed_at, c.redeemed_by, \
                u.name AS redeemed_by_name \
             FROM redemption_codes c LEFT JOIN users u ON u.id = c.redeemed_by \
             ORDER BY c.created_at DESC, c.id DESC LIMIT $1",
        )
        .bind(codec::list_limit(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(crate::redemption::stored)
        .collect()
    }

    // Reports

    async fn usage_by_day(
        &self,
        user: UserId,
        key: Option<KeyId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<crate::UsageDay>, StoreError> {
        // One statement each: one snapshot, so a purge committing meanwhile is seen wholly
        // before or wholly after. Days are computed as the purge computes them.
        let rows = match key {
            Some(key) => {
                sqlx::query(
                    "SELECT * FROM ( \
                        SELECT to_char(DATE '1970-01-01' + floor(time / 86400000.0)::INTEGER, 'YYYY-MM-DD') \
                                AS day, \
                            model, COUNT(*) AS calls, SUM(input_tokens)::BIGINT AS input_tokens, \
                            SUM(cached_tokens)::BIGINT AS cached_tokens, \
                            SUM(output_tokens)::BIGINT AS output_tokens, SUM(cost)::BIGINT AS cost \
                        FROM call_records WHERE user_id = $1 AND key_id = $2 AND time >= $3 AND time < $4 \
                        GROUP BY day, model) AS by_key \
                     ORDER BY day COLLATE \"C\", model COLLATE \"C\" NULLS FIRST",
                )
                .bind(user.as_uuid())
                .bind(key.as_uuid())
                .bind(from.unix_millis())
                .bind(to.unix_millis())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT day, model, SUM(calls)::BIGINT AS calls, SUM(input_tokens)::BIGINT AS input_tokens, \
                        SUM(cached_tokens)::BIGINT AS cached_tokens, \
                        SUM(output_tokens)::BIGINT AS output_tokens, SUM(cost)::BIGINT AS cost \
                     FROM ( \
                        SELECT to_char(DATE '1970-01-01' + floor(time / 86400000.0)::INTEGER, 'YYYY-MM-DD') \
                                AS day, \
                            model, COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, \
                            SUM(cached_tokens) AS cached_tokens, SUM(output_tokens) AS output_tokens, \
                            SUM(cost) AS cost \
                        FROM call_records WHERE user_id = $1 AND time >= $2 AND time < $3 \
                        GROUP BY day, model \
                        UNION ALL \
                        SELECT day, model, calls, input_tokens, cached_tokens, output_tokens, cost_nanos \
                        FROM daily_usage WHERE user_id = $1 AND day >= $4 AND day < $5) AS combined \
                     GROUP BY day, model \
                     ORDER BY day COLLATE \"C\", model COLLATE \"C\" NULLS FIRST",
                )
                .bind(user.as_uuid())
                .bind(from.unix_millis())
                .bind(to.unix_millis())
                .bind(crate::reports::day_bound(from))
                .bind(crate::reports::day_bound(to))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(crate::reports::usage_day).collect()
    }

    async fn monthly_bills(&self, user: UserId) -> Result<Vec<crate::MonthlyBill>, StoreError> {
        // Every non-hold ledger row lands in exactly one of charged, credited, debited.
        let rows = sqlx::query(
            "SELECT month, SUM(charged)::BIGINT AS charged, SUM(credited)::BIGINT AS credited, \
                SUM(debited)::BIGINT AS debited, SUM(calls)::BIGINT AS calls \
             FROM ( \
                SELECT to_char(DATE '1970-01-01' + floor(time / 86400000.0)::INTEGER, 'YYYY-MM') AS month, \
                    -SUM(CASE WHEN kind = 'charge' THEN amount ELSE 0 END) AS charged, \
                    SUM(CASE WHEN kind <> 'charge' AND amount > 0 THEN amount ELSE 0 END) AS credited, \
                    -SUM(CASE WHEN kind <> 'charge' AND amount < 0 THEN amount ELSE 0 END) AS debited, \
                    0::NUMERIC AS calls \
                FROM ledger WHERE user_id = $1 AND kind <> 'hold' GROUP BY month \
                UNION ALL \
                SELECT to_char(DATE '1970-01-01' + floor(time / 86400000.0)::INTEGER, 'YYYY-MM') AS month, \
                    0, 0, 0, COUNT(*) \
                FROM call_records WHERE user_id = $1 GROUP BY month \
                UNION ALL \
                SELECT substr(day, 1, 7) AS month, 0, 0, 0, SUM(calls) \
                FROM daily_usage WHERE user_id = $1 GROUP BY month) AS bills \
             GROUP BY month ORDER BY month COLLATE \"C\" DESC",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::reports::monthly_bill).collect()
    }

    async fn charges_between(
        &self,
        user: UserId,
        key: Option<KeyId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Money, StoreError> {
        let row = match key {
            Some(key) => {
                sqlx::query(
                    "SELECT COALESCE(-SUM(amount), 0)::BIGINT AS charged FROM ledger \
                     WHERE key_id = $1 AND user_id = $2 AND kind = 'charge' AND time >= $3 AND time < $4",
                )
                .bind(key.as_uuid())
                .bind(user.as_uuid())
                .bind(from.unix_millis())
                .bind(to.unix_millis())
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT COALESCE(-SUM(amount), 0)::BIGINT AS charged FROM ledger \
                     WHERE user_id = $1 AND kind = 'charge' AND time >= $2 AND time < $3",
                )
                .bind(user.as_uuid())
                .bind(from.unix_millis())
                .bind(to.unix_millis())
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(Money::from_nanos(row.int("charged")?))
    }

    // Risk control

    async fn set_key_suspended(&self, key: KeyId, at: Option<Timestamp>) -> Result<bool, StoreError> {
        // Suspending again keeps the first time: when it began is what the owner is told.
        self.update_key_bumping(
            "UPDATE api_keys SET suspended_at = CASE WHEN $1::BIGINT IS NULL THEN NULL \
             ELSE COALESCE(suspended_at, $1) END WHERE id = $2",
            at,
            key,
        )
        .await
    }

    // --- generated media

    async fn put_media(&self, media: &crate::NewMedia) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO media (id, user_id, content_type, created_at, expires_at, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(media.id)
        .bind(media.user_id.as_uuid())
        .bind(&media.content_type)
        .bind(media.created_at.unix_millis())
        .bind(media.expires_at.unix_millis())
        .bind(&media.nonce)
        .bind(&media.ciphertext)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            codec::translate(error, || format!("media {}", media.id), || format!("user {}", media.user_id))
        })?;
        Ok(())
    }

    async fn media(&self, id: Uuid) -> Result<Option<crate::StoredMedia>, StoreError> {
        sqlx::query(
            "SELECT id, user_id, content_type, created_at, expires_at, nonce, ciphertext FROM media WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(crate::media::stored)
        .transpose()
    }

    async fn purge_expired_media(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM media WHERE expires_at <= $1")
            .bind(now.unix_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }

    // --- video jobs

    async fn insert_video_job(&self, job: &crate::VideoJob, ledger: &[LedgerEntry]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO video_jobs (id, user_id, key_id, request_id, channel, upstream_id, model, \
             seconds, size, status, progress, error_code, charged, created_at, updated_at, completed_at, next_poll_at, deadline, media_id, media_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
            .bind(&job.id)
            .bind(job.user_id.as_uuid())
            .bind(job.key_id.as_uuid())
            .bind(&job.request_id)
            .bind(job.channel.as_str())
            .bind(&job.upstream_id)
            .bind(job.model.as_str())
            .bind(i64::from(job.seconds))
            .bind(&job.size)
            .bind(job.status.as_str())
            .bind(i64::from(job.progress))
            .bind(job.error_code.as_deref())
            .bind(job.charged.nanos())
            .bind(job.created_at.unix_millis())
            .bind(job.updated_at.unix_millis())
            .bind(job.completed_at.map(Timestamp::unix_millis))
            .bind(job.next_poll_at.unix_millis())
            .bind(job.deadline.unix_millis())
            .bind(job.media_id)
            .bind(job.media_expires_at.map(Timestamp::unix_millis))
            .execute(&mut *tx)
            .await
            .map_err(|error| codec::translate(error, || format!("video job {}", job.id), || format!("user {}", job.user_id)))?;
        for entry in ledger {
            let p = LedgerParams::new(entry);
            sqlx::query(
                "INSERT INTO ledger (user_id, key_id, kind, amount, time, request_id, note) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(p.user_id)
            .bind(p.key_id)
            .bind(p.kind)
            .bind(p.amount)
            .bind(p.time)
            .bind(p.request_id)
            .bind(p.note)
            .execute(&mut *tx)
            .await
            .map_err(|error| codec::translate(error, || "ledger entry".to_owned(), || format!("user {}", entry.user_id)))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn video_job(&self, id: &str) -> Result<Option<crate::VideoJob>, StoreError> {
        sqlx::query(
            "SELECT id, user_id, key_id, request_id, channel, upstream_id, model, \
             seconds, size, status, progress, error_code, charged, created_at, updated_at, completed_at, next_poll_at, deadline, media_id, media_expires_at FROM video_jobs WHERE id = $1",
        )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(crate::videos::job)
            .transpose()
    }

    async fn unfinished_video_jobs(&self) -> Result<Vec<crate::VideoJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, key_id, request_id, channel, upstream_id, model, \
             seconds, size, status, progress, error_code, charged, created_at, updated_at, completed_at, next_poll_at, deadline, media_id, media_expires_at FROM video_jobs \
             WHERE status IN ('queued', 'in_progress') ORDER BY next_poll_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::videos::job).collect()
    }

    async fn update_video_progress(
        &self,
        id: &str,
        status: crate::VideoStatus,
        progress: u8,
        next_poll_at: Timestamp,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE video_jobs SET status = $1, progress = $2, next_poll_at = $3, updated_at = $4 \
             WHERE id = $5 AND status IN ('queued', 'in_progress')",
        )
        .bind(status.as_str())
        .bind(i64::from(progress))
        .bind(next_poll_at.unix_millis())
        .bind(at.unix_millis())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    async fn finish_video_job(
        &self,
        id: &str,
        finish: &crate::VideoFinish,
        refund: Option<&LedgerEntry>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        // The status guard is the exactly-once: whoever moves the job out of an unfinished
        // state also writes its refund, in the same transaction.
        let updated = sqlx::query(
            "UPDATE video_jobs SET status = $1, progress = $2, error_code = $3, charged = $4, \
                completed_at = $5, updated_at = $5, media_id = $7, media_expires_at = $8 \
             WHERE id = $6 AND status IN ('queued', 'in_progress')",
        )
        .bind(finish.status.as_str())
        .bind(i64::from(finish.progress))
        .bind(finish.error_code.as_deref())
        .bind(finish.charged.nanos())
        .bind(finish.at.unix_millis())
        .bind(id)
        .bind(finish.media_id)
        .bind(finish.media_expires_at.map(Timestamp::unix_millis))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        if let Some(refund) = refund {
            insert_credit(&mut tx, refund).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    // --- channel health

    async fn disable_channel(
        &self,
        channel: &ChannelName,
        reason: crate::DisabledReason,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        // The first disabling wins: a second reason (another instance, an admin) keeps it.
        let changed = sqlx::query(
            "INSERT INTO channel_states (channel, disabled_reason, disabled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (channel) DO UPDATE SET disabled_reason = excluded.disabled_reason, \
                disabled_at = excluded.disabled_at \
             WHERE channel_states.disabled_reason IS NULL",
        )
        .bind(channel.as_str())
        .bind(reason.as_str())
        .bind(at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(|error| codec::translate(error, || format!("channel {channel}"), || format!("channel {channel}")))?
        .rows_affected()
            > 0;
        if changed {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn enable_channel(&self, channel: &ChannelName) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE channel_states SET disabled_reason = NULL, disabled_at = NULL \
             WHERE channel = $1 AND disabled_reason IS NOT NULL",
        )
        .bind(channel.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            bump_revision(&mut tx).await?;
        } else {
            let exists = sqlx::query("SELECT 1 FROM channels WHERE name = $1")
                .bind(channel.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("channel {channel}")));
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn save_channel_health(&self, snapshots: &[crate::ChannelHealthSnapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for snapshot in snapshots {
            // A channel retired meanwhile is skipped rather than failing the batch; an older
            // snapshot (another instance's, delayed) never replaces a newer one.
            sqlx::query(
                "INSERT INTO channel_states (channel, health_state, calls_in_window, failures_in_window, \
                    latency_p50_ms, latency_p95_ms, cooling_until, health_updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM channels WHERE name = $1) \
                 ON CONFLICT (channel) DO UPDATE SET health_state = excluded.health_state, \
                    calls_in_window = excluded.calls_in_window, failures_in_window = excluded.failures_in_window, \
                    latency_p50_ms = excluded.latency_p50_ms, latency_p95_ms = excluded.latency_p95_ms, \
                    cooling_until = excluded.cooling_until, health_updated_at = excluded.health_updated_at \
                 WHERE channel_states.health_updated_at IS NULL \
                    OR channel_states.health_updated_at <= excluded.health_updated_at",
            )
            .bind(snapshot.channel.as_str())
            .bind(snapshot.state.as_str())
            .bind(i64::from(snapshot.calls))
            .bind(i64::from(snapshot.failures))
            .bind(snapshot.latency_p50_ms.map(i64::from))
            .bind(snapshot.latency_p95_ms.map(i64::from))
            .bind(snapshot.cooling_until.map(Timestamp::unix_millis))
            .bind(snapshot.updated_at.unix_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn channel_states(&self) -> Result<Vec<crate::ChannelState>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, disabled_reason, disabled_at, health_state, calls_in_window, failures_in_window, \
                latency_p50_ms, latency_p95_ms, cooling_until, health_updated_at \
             FROM channel_states ORDER BY channel COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::channel_states::state).collect()
    }

    // Web console accounts: the SQL lives in `console.rs`.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        crate::console::postgres::user_by_email(&self.pool, email).await
    }
    async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError> {
        crate::console::postgres::set_password_hash(&self.pool, user, hash).await
    }
    async fn create_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        crate::console::postgres::create_session(&self.pool, session).await
    }
    async fn console_session(&self, token_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>, StoreError> {
        crate::console::postgres::session(&self.pool, token_hash, now).await
    }
    async fn touch_console_session(
        &self,
        token_hash: &str,
        seen: Timestamp,
        expires_at: Timestamp,
        second_factor_pending: bool,
    ) -> Result<bool, StoreError> {
        crate::console::postgres::touch_session(&self.pool, token_hash, seen, expires_at, second_factor_pending).await
    }
    async fn delete_console_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        crate::console::postgres::delete_session(&self.pool, token_hash).await
    }
    async fn delete_console_sessions(&self, user: UserId, except: Option<&str>) -> Result<u64, StoreError> {
        crate::console::postgres::delete_sessions(&self.pool, user, except).await
    }
    async fn list_console_sessions(&self, user: UserId) -> Result<Vec<ConsoleSession>, StoreError> {
        crate::console::postgres::list_sessions(&self.pool, user).await
    }
    async fn purge_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        crate::console::postgres::purge_sessions(&self.pool, now).await
    }
    async fn console_totp(&self, user: UserId) -> Result<Option<StoredTotp>, StoreError> {
        crate::console::postgres::totp(&self.pool, user).await
    }
    async fn begin_console_totp(
        &self,
        user: UserId,
        nonce: &[u8],
        ciphertext: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        crate::console::postgres::begin_totp(&self.pool, user, nonce, ciphertext, at).await
    }
    async fn enable_console_totp(
        &self,
        user: UserId,
        step: i64,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        crate::console::postgres::enable_totp(&self.pool, user, step, recovery_hashes, at).await
    }
    async fn accept_console_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        crate::console::postgres::accept_totp_step(&self.pool, user, step).await
    }
    async fn use_console_recovery_code(
        &self,
        user: UserId,
        code_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        crate::console::postgres::use_recovery_code(&self.pool, user, code_hash, at).await
    }
    async fn unused_console_recovery_codes(&self, user: UserId) -> Result<u64, StoreError> {
        crate::console::postgres::unused_recovery_codes(&self.pool, user).await
    }
    async fn clear_console_totp(&self, user: UserId) -> Result<bool, StoreError> {
        crate::console::postgres::clear_totp(&self.pool, user).await
    }
    async fn console_identity_user(&self, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError> {
        crate::console::postgres::identity_user(&self.pool, issuer, subject).await
    }
    async fn link_console_identity(
        &self,
        issuer: &str,
        subject: &str,
        user: UserId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        crate::console::postgres::link_identity(&self.pool, issuer, subject, user, at).await
    }
    async fn console_identities(&self, user: UserId) -> Result<Vec<IdentityLink>, StoreError> {
        crate::console::postgres::identities(&self.pool, user).await
    }
    async fn notification_preferences(&self, user: UserId) -> Result<NotificationPreferences, StoreError> {
        crate::notifications::postgres::get(&self.pool, user).await
    }
    async fn set_notification_preferences(
        &self,
        user: UserId,
        preferences: &NotificationPreferences,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        crate::notifications::postgres::set(&self.pool, user, preferences, at).await
    }
    async fn claim_key_notice(&self, key: KeyId, notice: KeyNotice, at: Timestamp) -> Result<bool, StoreError> {
        crate::notifications::postgres::claim_notice(&self.pool, key, notice, at).await
    }
    async fn balance_alerts(&self) -> Result<Vec<BalanceAlert>, StoreError> {
        crate::notifications::postgres::balance_alerts(&self.pool).await
    }
    async fn mark_balance_alert(&self, user: UserId, sent: bool) -> Result<bool, StoreError> {
        crate::notifications::postgres::mark_balance_alert(&self.pool, user, sent).await
    }
}

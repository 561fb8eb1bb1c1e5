//! Column encodings shared by both backends: how each domain value is laid out in a row
//! (integer units, enum labels, JSON lists), the known route paths, and decoding that turns
//! any unparseable stored value into [`StoreError::Corrupt`] naming the column, never the
//! value. The SQL stays per backend; only these conversions are shared.

use crate::audit::AuditRow;
use crate::{AccountTotals, DailyUsage, KeyTotals, StoreError, StoredCallRecord, StoredCapture, WrappedSecret};
use serde_json::Value;
use sqlx::error::ErrorKind;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;
use uuid::Uuid;
use veil_domain::{
    ApiKey, CallRecord, Channel, ChannelKind, ChannelLimits, ChannelName, DataPolicy, ErrorCode, FirewallMode, Group,
    GroupName, KeyId, KeyLimits, LedgerEntry, LedgerKind, Model, ModelName, Money, Multiplier, PolicyClass, Price,
    Pricing, PrivacyRequirement, RequestId, Retention, Role, Timeouts, Timestamp, TokenUsage, User, UserId, UserName,
};

/// Route templates a call record's `path` can hold. The column is text, the domain field a
/// `&'static str`, so reading maps back through this table; anything else reads as `other`.
/// The server's route table should be a subset of this list (a test there can check it).
pub const ROUTE_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/images/generations",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/moderations",
    "/v1/images/edits",
    "/v1/videos",
    "/v1beta/models/{model}:generateContent",
    "/v1beta/models/{model}:streamGenerateContent",
    "other",
];

/// A listing's row limit: 0 means 100.
pub(crate) fn list_limit(limit: u32) -> i64 {
    i64::from(if limit == 0 { 100 } else { limit })
}

/// Call records per purge transaction: 0 means 1000.
pub(crate) fn purge_batch(batch: u32) -> u32 {
    if batch == 0 { 1_000 } else { batch }
}

/// Audit rows read per query while verifying the chain.
pub(crate) const AUDIT_PAGE: u16 = 1_000;

pub(crate) fn route_path(raw: &str) -> &'static str {
    ROUTE_PATHS.iter().copied().find(|known| *known == raw).unwrap_or("other")
}

/// Typed access to one result row by selected column name; each backend implements it
/// for its row type (they differ only in how ids are stored).
pub(crate) trait Columns {
    fn text(&self, column: &'static str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &'static str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError>;
    fn flag(&self, column: &'static str) -> Result<bool, StoreError>;
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError>;
    fn uuid(&self, column: &'static str) -> Result<Uuid, StoreError>;
    fn opt_uuid(&self, column: &'static str) -> Result<Option<Uuid>, StoreError>;
}

pub(crate) fn corrupt(column: &str) -> StoreError {
    StoreError::Corrupt(column.to_owned())
}

/// Turns a constraint violation into what it means to the caller: a unique violation is a
/// `Conflict` and a foreign-key violation a `NotFound`, labelled by the caller.
pub(crate) fn translate(
    error: sqlx::Error,
    conflict: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> StoreError {
    match error.as_database_error().map(|database| database.kind()) {
        Some(ErrorKind::UniqueViolation) => StoreError::Conflict(conflict()),
        Some(ErrorKind::ForeignKeyViolation) => StoreError::NotFound(missing()),
        _ => StoreError::Database(error),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding: domain value → column value. Infallible; out-of-range integers saturate
// (no real token count or duration reaches i64::MAX).

pub(crate) fn json_list<T: Display>(items: &[T]) -> String {
    Value::Array(items.iter().map(|item| Value::String(item.to_string())).collect()).to_string()
}

fn json_map(map: &BTreeMap<ModelName, ModelName>) -> String {
    let object =
        map.iter().map(|(public, upstream)| (public.to_string(), Value::String(upstream.to_string()))).collect();
    Value::Object(object).to_string()
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn limits(limits: &KeyLimits) -> [Option<i64>; 3] {
    [limits.rpm, limits.tpm, limits.max_concurrent].map(|limit| limit.map(i64::from))
}

/// A group as column values, in schema order.
pub(crate) struct GroupParams<'a> {
    pub name: &'a str,
    pub multiplier: i64,
    pub max_retention_days: Option<i64>,
    pub allow_training: bool,
    pub regions: Option<String>,
    pub firewall: &'static str,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub daily_spend: Option<i64>,
    pub monthly_spend: Option<i64>,
    pub deny_keywords: String,
    pub deny_patterns: String,
    pub managed: bool,
}

impl<'a> GroupParams<'a> {
    pub fn new(group: &'a Group) -> Self {
        let [rpm, tpm, max_concurrent] = limits(&group.limits);
        Self {
            name: group.name.as_str(),
            multiplier: group.multiplier.millionths(),
            max_retention_days: group.privacy.max_retention_days.map(i64::from),
            allow_training: group.privacy.allow_training,
            regions: group.privacy.regions.as_deref().map(json_list),
            firewall: group.privacy.firewall.as_str(),
            rpm,
            tpm,
            max_concurrent,
            daily_spend: group.daily_spend.map(Money::nanos),
            monthly_spend: group.monthly_spend.map(Money::nanos),
            deny_keywords: json_list(&group.deny_keywords),
            deny_patterns: json_list(&group.deny_patterns),
            managed: group.managed,
        }
    }
}

/// A new key's column values (id, user and timestamps are bound by the backend).
pub(crate) struct KeyParams<'a> {
    pub name: Option<&'a str>,
    pub prefix: &'a str,
    pub hash: &'a str,
    pub models: Option<String>,
    pub expires_at: Option<i64>,
    pub quota: Option<i64>,
    pub daily_spend: Option<i64>,
    pub monthly_spend: Option<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub ip_allow: String,
    pub allow_training: bool,
    pub privacy: Option<String>,
}

impl<'a> KeyParams<'a> {
    pub fn new(key: &'a veil_domain::NewApiKey) -> Self {
        let [rpm, tpm, max_concurrent] = limits(&key.limits);
        Self {
            name: key.name.as_deref(),
            prefix: &key.prefix,
            hash: &key.hash,
            models: key.models.as_deref().map(json_list),
            expires_at: key.expires_at.map(Timestamp::unix_millis),
            quota: key.quota.map(Money::nanos),
            daily_spend: key.daily_spend.map(Money::nanos),
            monthly_spend: key.monthly_spend.map(Money::nanos),
            rpm,
            tpm,
            max_concurrent,
            ip_allow: json_list(&key.ip_allow),
            allow_training: key.allow_training,
            privacy: (!key.privacy.is_empty()).then(|| serde_json::to_string(&key.privacy).unwrap_or_default()),
        }
    }
}

/// A channel as column values, in schema order.
pub(crate) struct ChannelParams<'a> {
    pub name: &'a str,
    pub kind: &'static str,
    pub base_url: &'a str,
    pub api_key_env: Option<&'a str>,
    pub models: String,
    pub model_mapping: String,
    pub priority: i64,
    pub weight: i64,
    pub allowed_groups: Option<String>,
    pub retention_days: Option<i64>,
    pub training: bool,
    pub region: Option<&'a str>,
    pub human_review: bool,
    pub operator: &'a str,
    pub connect_timeout_ms: i64,
    pub first_byte_timeout_ms: i64,
    pub idle_timeout_ms: i64,
    pub total_timeout_ms: i64,
    pub rpm: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub tls_verify: bool,
    pub probe_interval_ms: Option<i64>,
    pub enabled: bool,
    pub managed: bool,
}

impl<'a> ChannelParams<'a> {
    pub fn new(channel: &'a Channel) -> Self {
        let policy = &channel.policy;
        Self {
            name: channel.name.as_str(),
            kind: channel.kind.as_str(),
            base_url: &channel.base_url,
            api_key_env: channel.api_key_env.as_deref(),
            models: json_list(&channel.models),
            model_mapping: json_map(&channel.model_mapping),
            priority: i64::from(channel.priority),
            weight: i64::from(channel.weight),
            allowed_groups: channel.groups.as_deref().map(json_list),
            retention_days: match policy.retention {
                Retention::None => None,
                Retention::Days(days) => Some(i64::from(days)),
            },
            training: policy.training,
            region: policy.region.as_deref(),
            human_review: policy.human_review,
            operator: &policy.operator,
            connect_timeout_ms: millis(channel.timeouts.connect),
            first_byte_timeout_ms: millis(channel.timeouts.first_byte),
            idle_timeout_ms: millis(channel.timeouts.idle),
            total_timeout_ms: millis(channel.timeouts.total),
            rpm: channel.limits.rpm.map(i64::from),
            max_concurrent: channel.limits.max_concurrent.map(i64::from),
            tls_verify: channel.tls_verify,
            probe_interval_ms: channel.probe_interval.map(millis),
            enabled: channel.enabled,
            managed: channel.managed,
        }
    }
}

/// Row counts of the multi-row INSERTs that write call records and ledger rows. A batch
/// is cut into pieces of these sizes so that each table has only four statement texts,
/// parsed once per connection and reused from sqlx's statement cache; a statement sized
/// to each batch would be parsed anew for almost every batch (at thousands of calls per
/// second that parsing was a large share of the writer's CPU).
/// The largest, 64 rows × 30 columns, stays far under every backend's limit on bind
/// parameters (SQLite 32766, PostgreSQL 65535).
const ROWS_PER_STATEMENT: [usize; 4] = [64, 16, 4, 1];

/// `rows` in the pieces [`ROWS_PER_STATEMENT`] allows, largest first.
pub(crate) fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = ROWS_PER_STATEMENT.into_iter().find(|size| *size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// A call record as column values, in schema order.
pub(crate) struct CallRecordParams<'a> {
    pub request_id: &'a str,
    pub time: i64,
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub group_name: Option<&'a str>,
    pub model: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub path: &'static str,
    pub stream: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub images: i64,
    pub media_ms: i64,
    pub cost: i64,
    pub multiplier: i64,
    pub status: i64,
    pub error_code: Option<&'static str>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub client_ip: &'a str,
    pub user_agent: &'a str,
    pub redactions: i64,
    pub rule_id: Option<&'a str>,
    pub policy_class: Option<&'static str>,
    pub estimated: bool,
    pub channels_tried: String,
}

impl<'a> CallRecordParams<'a> {
    pub fn new(record: &'a CallRecord) -> Self {
        Self {
            request_id: record.request_id.as_str(),
            time: record.time.unix_millis(),
            user_id: record.user_id.map(|id| id.as_uuid()),
            key_id: record.key_id.map(|id| id.as_uuid()),
            group_name: record.group.as_ref().map(GroupName::as_str),
            model: record.model.as_ref().map(ModelName::as_str),
            upstream_model: record.upstream_model.as_ref().map(ModelName::as_str),
            channel: record.channel.as_ref().map(ChannelName::as_str),
            // Store only what can be read back; an unknown path is "other" either way.
            path: route_path(record.path),
            stream: record.stream,
            input_tokens: saturating_i64(record.usage.input_tokens),
            cached_tokens: saturating_i64(record.usage.cached_tokens),
            cache_write_tokens: saturating_i64(record.usage.cache_write_tokens),
            output_tokens: saturating_i64(record.usage.output_tokens),
            reasoning_tokens: saturating_i64(record.usage.reasoning_tokens),
            images: saturating_i64(record.usage.images),
            media_ms: saturating_i64(record.usage.media_ms),
            cost: record.cost.nanos(),
            multiplier: record.multiplier.millionths(),
            status: i64::from(record.status),
            error_code: record.error_code.map(ErrorCode::as_str),
            latency_ms: i64::from(record.latency_ms),
            ttft_ms: record.ttft_ms.map(i64::from),
            client_ip: &record.client_ip,
            user_agent: &record.user_agent,
            redactions: i64::from(record.redactions),
            rule_id: record.rule_id.as_deref(),
            policy_class: record.policy_class.map(PolicyClass::as_str),
            estimated: record.estimated,
            channels_tried: json_list(&record.channels_tried),
        }
    }
}

/// A model as column values, in schema order.
pub(crate) struct ModelParams<'a> {
    pub name: &'a str,
    pub billing: &'static str,
    pub input_price: i64,
    pub cached_input_price: i64,
    pub cache_write_price: i64,
    pub output_price: i64,
    pub image_price: i64,
    pub second_price: i64,
    pub max_output_tokens: Option<i64>,
    pub managed: bool,
}

impl<'a> ModelParams<'a> {
    pub fn new(model: &'a Model) -> Self {
        let (billing, price) = match model.pricing {
            Pricing::Priced(price) => ("priced", price),
            Pricing::Free => ("free", Price::default()),
            Pricing::Unpriced => ("unpriced", Price::default()),
        };
        Self {
            name: model.name.as_str(),
            billing,
            input_price: price.input.nanos(),
            cached_input_price: price.cached_input.nanos(),
            cache_write_price: price.cache_write.nanos(),
            output_price: price.output.nanos(),
            image_price: price.per_image.nanos(),
            second_price: price.per_second.nanos(),
            max_output_tokens: model.max_output_tokens.map(i64::from),
            managed: model.managed,
        }
    }
}

/// A ledger entry's column values (the revision is bound by the backend).
pub(crate) struct LedgerParams {
    pub user_id: Uuid,
    pub key_id: Option<Uuid>,
    pub kind: &'static str,
    pub amount: i64,
    pub time: i64,
    pub request_id: Option<String>,
    pub note: Option<String>,
}

impl LedgerParams {
    pub fn new(entry: &LedgerEntry) -> Self {
        Self {
            user_id: entry.user_id.as_uuid(),
            key_id: entry.key_id.map(|id| id.as_uuid()),
            kind: entry.kind.as_str(),
            amount: entry.amount.nanos(),
            time: entry.time.unix_millis(),
            request_id: entry.request_id.clone(),
            note: entry.note.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding: row → domain value. Every parse failure names the column only.

fn parsed<T, E>(raw: &str, column: &'static str, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, StoreError> {
    parse(raw).map_err(|_| corrupt(column))
}

fn label<T>(raw: &str, column: &'static str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(raw).ok_or_else(|| corrupt(column))
}

fn list<T, E>(raw: &str, column: &'static str, parse: impl Fn(&str) -> Result<T, E>) -> Result<Vec<T>, StoreError> {
    let items: Vec<String> = serde_json::from_str(raw).map_err(|_| corrupt(column))?;
    items.iter().map(|item| parsed(item, column, &parse)).collect()
}

/// List items that are free-form operator text (regions, deny rules).
fn plain(raw: &str) -> Result<String, Infallible> {
    Ok(raw.to_owned())
}

fn opt_list<T, E>(
    raw: Option<String>,
    column: &'static str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<Vec<T>>, StoreError> {
    raw.map(|raw| list(&raw, column, parse)).transpose()
}

fn narrow<T: TryFrom<i64>>(value: i64, column: &'static str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(column))
}

fn opt_narrow<T: TryFrom<i64>>(value: Option<i64>, column: &'static str) -> Result<Option<T>, StoreError> {
    value.map(|value| narrow(value, column)).transpose()
}

fn duration_ms(value: i64, column: &'static str) -> Result<Duration, StoreError> {
    narrow::<u64>(value, column).map(Duration::from_millis)
}

fn limits_from(row: &impl Columns) -> Result<KeyLimits, StoreError> {
    Ok(KeyLimits {
        rpm: opt_narrow(row.opt_int("rpm")?, "rpm")?,
        tpm: opt_narrow(row.opt_int("tpm")?, "tpm")?,
        max_concurrent: opt_narrow(row.opt_int("max_concurrent")?, "max_concurrent")?,
    })
}

/// Qualifies a `Corrupt` column name with its table, so the message points at one place.
pub(crate) fn in_table<T>(table: &str, decode: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    decode().map_err(|error| match error {
        StoreError::Corrupt(column) => StoreError::Corrupt(format!("{table}.{column}")),
        other => other,
    })
}

pub(crate) fn group(row: &impl Columns) -> Result<Group, StoreError> {
    in_table("groups", || {
        Ok(Group {
            name: parsed(&row.text("name")?, "name", GroupName::parse)?,
            multiplier: Multiplier::from_millionths(row.int("multiplier")?),
            privacy: PrivacyRequirement {
                max_retention_days: opt_narrow(row.opt_int("max_retention_days")?, "max_retention_days")?,
                allow_training: row.flag("allow_training")?,
                regions: opt_list(row.opt_text("regions")?, "regions", plain)?,
                firewall: label(&row.text("firewall")?, "firewall", FirewallMode::parse)?,
            },
            limits: limits_from(row)?,
            daily_spend: row.opt_int("daily_spend")?.map(Money::from_nanos),
            monthly_spend: row.opt_int("monthly_spend")?.map(Money::from_nanos),
            deny_keywords: list(&row.text("deny_keywords")?, "deny_keywords", plain)?,
            deny_patterns: list(&row.text("deny_patterns")?, "deny_patterns", plain)?,
            managed: row.flag("managed")?,
        })
    })
}

pub(crate) fn user(row: &impl Columns) -> Result<User, StoreError> {
    in_table("users", || {
        Ok(User {
            id: UserId::from_uuid(row.uuid("id")?),
            name: parsed(&row.text("name")?, "name", UserName::parse)?,
            email: row.opt_text("email")?,
            role: label(&row.text("role")?, "role", Role::parse)?,
            group: parsed(&row.text("group_name")?, "group_name", GroupName::parse)?,
            password_hash: row.opt_text("password_hash")?,
            disabled: row.flag("disabled")?,
            created_at: Timestamp::from_unix_millis(row.int("created_at")?),
        })
    })
}

pub(crate) fn key(row: &impl Columns) -> Result<ApiKey, StoreError> {
    in_table("api_keys", || {
        Ok(ApiKey {
            id: KeyId::from_uuid(row.uuid("id")?),
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            name: row.opt_text("name")?,
            prefix: row.text("prefix")?,
            hash: row.text("hash")?,
            models: opt_list(row.opt_text("models")?, "models", ModelName::parse)?,
            expires_at: row.opt_int("expires_at")?.map(Timestamp::from_unix_millis),
            quota: row.opt_int("quota")?.map(Money::from_nanos),
            limits: limits_from(row)?,
            daily_spend: row.opt_int("daily_spend")?.map(Money::from_nanos),
            monthly_spend: row.opt_int("monthly_spend")?.map(Money::from_nanos),
            ip_allow: list(&row.text("ip_allow")?, "ip_allow", str::parse)?,
            allow_training: row.flag("allow_training")?,
            privacy: match row.opt_text("privacy")? {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("api_keys.privacy".into()))?
                }
                None => veil_domain::KeyPrivacy::default(),
            },
            revoked_at: row.opt_int("revoked_at")?.map(Timestamp::from_unix_millis),
            suspended_at: row.opt_int("suspended_at")?.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.int("created_at")?),
        })
    })
}

fn model_mapping(raw: &str) -> Result<BTreeMap<ModelName, ModelName>, StoreError> {
    const COLUMN: &str = "model_mapping";
    let object: BTreeMap<String, String> = serde_json::from_str(raw).map_err(|_| corrupt(COLUMN))?;
    object
        .iter()
        .map(|(public, upstream)| {
            Ok((parsed(public, COLUMN, ModelName::parse)?, parsed(upstream, COLUMN, ModelName::parse)?))
        })
        .collect()
}

pub(crate) fn channel(row: &impl Columns) -> Result<Channel, StoreError> {
    in_table("channels", || {
        Ok(Channel {
            name: parsed(&row.text("name")?, "name", ChannelName::parse)?,
            kind: label(&row.text("kind")?, "kind", ChannelKind::parse)?,
            base_url: row.text("base_url")?,
            api_key_env: row.opt_text("api_key_env")?,
            models: list(&row.text("models")?, "models", ModelName::parse)?,
            model_mapping: model_mapping(&row.text("model_mapping")?)?,
            priority: narrow(row.int("priority")?, "priority")?,
            weight: narrow(row.int("weight")?, "weight")?,
            groups: opt_list(row.opt_text("allowed_groups")?, "allowed_groups", GroupName::parse)?,
            policy: DataPolicy {
                retention: match opt_narrow(row.opt_int("retention_days")?, "retention_days")? {
                    None => Retention::None,
                    Some(days) => Retention::Days(days),
                },
                training: row.flag("training")?,
                region: row.opt_text("region")?,
                human_review: row.flag("human_review")?,
                operator: row.text("operator")?,
            },
            timeouts: Timeouts {
                connect: duration_ms(row.int("connect_timeout_ms")?, "connect_timeout_ms")?,
                first_byte: duration_ms(row.int("first_byte_timeout_ms")?, "first_byte_timeout_ms")?,
                idle: duration_ms(row.int("idle_timeout_ms")?, "idle_timeout_ms")?,
                total: duration_ms(row.int("total_timeout_ms")?, "total_timeout_ms")?,
            },
            limits: ChannelLimits {
                rpm: opt_narrow(row.opt_int("rpm")?, "rpm")?,
                max_concurrent: opt_narrow(row.opt_int("max_concurrent")?, "max_concurrent")?,
            },
            tls_verify: row.flag("tls_verify")?,
            probe_interval: row
                .opt_int("probe_interval_ms")?
                .map(|ms| duration_ms(ms, "probe_interval_ms"))
                .transpose()?,
            enabled: row.flag("enabled")?,
            managed: row.flag("managed")?,
        })
    })
}

pub(crate) fn model(row: &impl Columns) -> Result<Model, StoreError> {
    in_table("models", || {
        Ok(Model {
            name: parsed(&row.text("name")?, "name", ModelName::parse)?,
            pricing: match row.text("billing")?.as_str() {
                "priced" => Pricing::Priced(Price {
                    input: Money::from_nanos(row.int("input_price")?),
                    cached_input: Money::from_nanos(row.int("cached_input_price")?),
                    cache_write: Money::from_nanos(row.int("cache_write_price")?),
                    output: Money::from_nanos(row.int("output_price")?),
                    per_image: Money::from_nanos(row.int("image_price")?),
                    per_second: Money::from_nanos(row.int("second_price")?),
                }),
                "free" => Pricing::Free,
                "unpriced" => Pricing::Unpriced,
                _ => return Err(corrupt("billing")),
            },
            max_output_tokens: opt_narrow(row.opt_int("max_output_tokens")?, "max_output_tokens")?,
            managed: row.flag("managed")?,
        })
    })
}

fn opt_name<T, E>(
    raw: Option<String>,
    column: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, StoreError> {
    raw.map(|raw| parsed(&raw, column, parse)).transpose()
}

/// Reads a call-record row; `user_name` comes from the joined account, if any.
pub(crate) fn call_record(row: &impl Columns) -> Result<StoredCallRecord, StoreError> {
    in_table("call_records", || {
        let record = CallRecord {
            request_id: parsed(&row.text("request_id")?, "request_id", RequestId::parse)?,
            time: Timestamp::from_unix_millis(row.int("time")?),
            user_id: row.opt_uuid("user_id")?.map(UserId::from_uuid),
            key_id: row.opt_uuid("key_id")?.map(KeyId::from_uuid),
            group: opt_name(row.opt_text("group_name")?, "group_name", GroupName::parse)?,
            model: opt_name(row.opt_text("model")?, "model", ModelName::parse)?,
            upstream_model: opt_name(row.opt_text("upstream_model")?, "upstream_model", ModelName::parse)?,
            channel: opt_name(row.opt_text("channel")?, "channel", ChannelName::parse)?,
            path: route_path(&row.text("path")?),
            stream: row.flag("stream")?,
            usage: TokenUsage {
                input_tokens: narrow(row.int("input_tokens")?, "input_tokens")?,
                cached_tokens: narrow(row.int("cached_tokens")?, "cached_tokens")?,
                cache_write_tokens: narrow(row.int("cache_write_tokens")?, "cache_write_tokens")?,
                output_tokens: narrow(row.int("output_tokens")?, "output_tokens")?,
                reasoning_tokens: narrow(row.int("reasoning_tokens")?, "reasoning_tokens")?,
                images: narrow(row.int("images")?, "images")?,
                media_ms: narrow(row.int("media_ms")?, "media_ms")?,
            },
            cost: Money::from_nanos(row.int("cost")?),
            multiplier: Multiplier::from_millionths(row.int("multiplier")?),
            status: narrow(row.int("status")?, "status")?,
            error_code: row
                .opt_text("error_code")?
                .map(|raw| label(&raw, "error_code", ErrorCode::parse))
                .transpose()?,
            latency_ms: narrow(row.int("latency_ms")?, "latency_ms")?,
            ttft_ms: opt_narrow(row.opt_int("ttft_ms")?, "ttft_ms")?,
            client_ip: row.text("client_ip")?,
            user_agent: row.text("user_agent")?,
            redactions: narrow(row.int("redactions")?, "redactions")?,
            rule_id: row.opt_text("rule_id")?,
            policy_class: row
                .opt_text("policy_class")?
                .map(|raw| label(&raw, "policy_class", PolicyClass::parse))
                .transpose()?,
            estimated: row.flag("estimated")?,
            channels_tried: list(&row.text("channels_tried")?, "channels_tried", ChannelName::parse)?,
        };
        let user_name = opt_name(row.opt_text("user_name")?, "user_name", UserName::parse)?;
        Ok(StoredCallRecord { record, user_name })
    })
}

/// Reads the `balance`, `spent_day`, `spent_month` and `revision` columns of
/// [`crate::Store::account_totals`]'s query.
pub(crate) fn account_totals(row: &impl Columns) -> Result<AccountTotals, StoreError> {
    Ok(AccountTotals {
        balance: Money::from_nanos(row.int("balance")?),
        spent_since_day: Money::from_nanos(row.int("spent_day")?),
        spent_since_month: Money::from_nanos(row.int("spent_month")?),
        revision: row.int("revision")?,
    })
}

/// Reads the `spent`, `spent_day` and `spent_month` columns of
/// [`crate::Store::key_totals`]'s query.
pub(crate) fn key_totals(row: &impl Columns) -> Result<KeyTotals, StoreError> {
    Ok(KeyTotals {
        spent: Money::from_nanos(row.int("spent")?),
        spent_since_day: Money::from_nanos(row.int("spent_day")?),
        spent_since_month: Money::from_nanos(row.int("spent_month")?),
    })
}

pub(crate) fn ledger_entry(row: &impl Columns) -> Result<LedgerEntry, StoreError> {
    in_table("ledger", || {
        Ok(LedgerEntry {
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            key_id: row.opt_uuid("key_id")?.map(KeyId::from_uuid),
            kind: label(&row.text("kind")?, "kind", LedgerKind::parse)?,
            amount: Money::from_nanos(row.int("amount")?),
            time: Timestamp::from_unix_millis(row.int("time")?),
            request_id: row.opt_text("request_id")?,
            note: row.opt_text("note")?,
        })
    })
}

pub(crate) fn daily_usage(row: &impl Columns) -> Result<DailyUsage, StoreError> {
    in_table("daily_usage", || {
        Ok(DailyUsage {
            user_id: row.opt_uuid("user_id")?.map(UserId::from_uuid),
            model: opt_name(row.opt_text("model")?, "model", ModelName::parse)?,
            day: row.text("day")?,
            calls: narrow(row.int("calls")?, "calls")?,
            input_tokens: narrow(row.int("input_tokens")?, "input_tokens")?,
            cached_tokens: narrow(row.int("cached_tokens")?, "cached_tokens")?,
            output_tokens: narrow(row.int("output_tokens")?, "output_tokens")?,
            cost: Money::from_nanos(row.int("cost_nanos")?),
        })
    })
}

/// Reads an audit row with `details` still as its stored (hashed) text.
pub(crate) fn audit_row(row: &impl Columns) -> Result<AuditRow, StoreError> {
    in_table("audit_log", || {
        Ok(AuditRow {
            seq: row.int("seq")?,
            time: Timestamp::from_unix_millis(row.int("time")?),
            actor: row.text("actor")?,
            action: row.text("action")?,
            subject_user: row.opt_uuid("subject_user")?,
            target: row.opt_text("target")?,
            details: row.text("details")?,
            prev_hash: row.text("prev_hash")?,
            hash: row.text("hash")?,
        })
    })
}

pub(crate) fn secret(row: &impl Columns) -> Result<WrappedSecret, StoreError> {
    Ok(WrappedSecret {
        purpose: row.text("purpose")?,
        master_key_id: row.text("master_key_id")?,
        nonce: row.bytes("nonce")?,
        ciphertext: row.bytes("ciphertext")?,
    })
}

pub(crate) fn capture(row: &impl Columns) -> Result<StoredCapture, StoreError> {
    in_table("debug_captures", || {
        Ok(StoredCapture {
            id: row.int("id")?,
            key_id: KeyId::from_uuid(row.uuid("key_id")?),
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            request_id: row.text("request_id")?,
            time: Timestamp::from_unix_millis(row.int("time")?),
            expires_at: Timestamp::from_unix_millis(row.int("expires_at")?),
            nonce: row.bytes("nonce")?,
            ciphertext: row.bytes("ciphertext")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_read_as_other() {
        assert_eq!(route_path("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(route_path("/v1/chat/completions?x=1"), "other");
        assert_eq!(route_path(""), "other");
    }

    #[test]
    fn lists_round_trip_and_reject_bad_items() {
        let names = vec![ModelName::parse("a/b:c").unwrap(), ModelName::parse("d").unwrap()];
        let raw = json_list(&names);
        assert_eq!(list(&raw, "models", ModelName::parse).unwrap(), names);
        let error = list(r#"["bad name"]"#, "models", ModelName::parse).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(ref c) if c == "models"));
        assert!(list("not json", "models", ModelName::parse).is_err());
    }

    #[test]
    fn corrupt_names_the_table_and_column_only() {
        let error = in_table("users", || label("superuser", "role", Role::parse)).unwrap_err();
        assert_eq!(error.to_string(), "stored data is invalid: users.role");
    }

    #[test]
    fn batches_are_cut_into_the_few_statement_sizes() {
        let rows: Vec<u32> = (0..150).collect();
        let sizes: Vec<usize> = statement_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [64, 64, 16, 4, 1, 1]);
        let joined: Vec<u32> = statement_chunks(&rows).flatten().copied().collect();
        assert_eq!(joined, rows);
        assert_eq!(statement_chunks::<u32>(&[]).count(), 0);
    }
}

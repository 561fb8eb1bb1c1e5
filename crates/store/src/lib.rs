//! Durable state behind one interface: SQLite (embedded, the default) and PostgreSQL.
//!
//! [`Store`] is the only way the rest of Veil touches the database. Both backends run
//! their own migrations and pass the same conformance suite (`tests/conformance.rs`).
//! Every write that changes what a running server caches (users, keys, groups, channels,
//! models, balances) bumps a single revision counter in the same transaction, so servers
//! can notice changes made by `veil admin` with one cheap poll.
//!
//! Privacy duties live here too (DESIGN §3.6, §3.7, §3.9): the hash-chained audit log, the
//! retention purge that folds old call records into per-day aggregates, and export and
//! erasure of an account. No table has a column that could hold request or response content,
//! except the encrypted, expiring debug captures an operator opens per key (DESIGN §3.1
//! exception (a)) and generated media kept for its signed URL (exception (b)): the store only
//! ever sees their nonce and ciphertext.

mod audit;
mod channel_states;
mod codec;
mod console;
mod error;
mod media;
mod notifications;
mod postgres;
mod redemption;
mod reports;
mod sqlite;
mod videos;

pub use audit::{AuditEntry, AuditVerification, GENESIS_HASH, NewAuditEntry, canonical_json, entry_hash};
pub use channel_states::{ChannelHealthSnapshot, ChannelState, DisabledReason};
pub use codec::ROUTE_PATHS;
pub use console::{ConsoleSession, IdentityLink, StoredTotp};
pub use error::StoreError;
pub use media::{NewMedia, StoredMedia};
pub use notifications::{BalanceAlert, KeyNotice, NotificationPreferences};
pub use postgres::{PURGE_CALL_RECORDS as POSTGRES_PURGE_CALL_RECORDS, PostgresStore};
pub use redemption::{NewRedemptionCode, Redemption, StoredRedemptionCode};
pub use reports::{MonthlyBill, UsageDay};
pub use sqlite::SqliteStore;
pub use veil_domain::HealthState;
pub use videos::{VideoFinish, VideoJob, VideoStatus};

use async_trait::async_trait;
use std::sync::Arc;
use veil_domain::{
    ApiKey, CallRecord, Channel, ChannelName, Group, GroupName, KeyId, LedgerEntry, Model, ModelName, Money, NewApiKey,
    NewUser, Timestamp, User, UserId, UserName,
};

/// A call record as read back, with the account name resolved for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCallRecord {
    pub record: CallRecord,
    /// `None` once the account was erased or when the call was unauthenticated.
    pub user_name: Option<UserName>,
}

/// Which call records to read, newest first. Every filter set must match; `None` and 0
/// mean "no filter" (the derived default reads the newest 100 of everyone's records).
#[derive(Debug, Clone, Default)]
pub struct CallRecordFilter {
    pub user_id: Option<UserId>,
    /// Only calls made with this key.
    pub key_id: Option<KeyId>,
    /// Only calls for this (public) model.
    pub model: Option<veil_domain::ModelName>,
    /// Only calls at or after this instant.
    pub from: Option<Timestamp>,
    /// Only calls before this instant (exclusive).
    pub to: Option<Timestamp>,
    /// At most this many; 0 means 100.
    pub limit: u32,
    /// Skip this many of the matching records first (paging through a listing).
    pub offset: u32,
}

/// A channel credential as stored: sealed, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCredential {
    pub channel: ChannelName,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// How the management API writes a channel of its own (`managed = false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiChannelWrite {
    /// A new channel: an existing name is refused.
    Create,
    /// The whole channel, replaced: a missing or config-managed channel is refused.
    Replace,
}

/// What came of a management-API change to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiChannelOutcome {
    Done,
    /// Creating: a channel of that name exists already.
    Exists,
    /// Replacing or deleting: no such channel.
    Missing,
    /// Replacing or deleting: the config file declares this channel; it is changed there.
    Managed,
}

impl ApiChannelWrite {
    /// Why this write may not happen to a channel whose `managed` flag is `existing`
    /// (`None`: no such channel); `None` when it may. Shared by both backends.
    pub(crate) fn refusal(self, existing: Option<bool>) -> Option<ApiChannelOutcome> {
        match (self, existing) {
            (Self::Create, Some(_)) => Some(ApiChannelOutcome::Exists),
            (Self::Replace, None) => Some(ApiChannelOutcome::Missing),
            (Self::Replace, Some(true)) => Some(ApiChannelOutcome::Managed),
            (Self::Create, None) | (Self::Replace, Some(false)) => None,
        }
    }
}

impl ApiChannelOutcome {
    /// Why a channel whose `managed` flag is `existing` may not be deleted through the API.
    pub(crate) fn delete_refusal(existing: Option<bool>) -> Option<Self> {
        match existing {
            None => Some(Self::Missing),
            Some(true) => Some(Self::Managed),
            Some(false) => None,
        }
    }
}

/// What [`Store::update_user`] changes; `None` keeps the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<veil_domain::Role>,
    pub group: Option<veil_domain::GroupName>,
    pub disabled: Option<bool>,
}

/// A user with the balance derived from their ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user: User,
    pub balance: Money,
}

/// An account's money, read in one consistent snapshot together with the store revision
/// it reflects: credits stamped with a later revision are not in it yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountTotals {
    /// The sum of every money-moving ledger row (holds excluded).
    pub balance: Money,
    /// Charges made at or after the day and month starts asked for (positive).
    pub spent_since_day: Money,
    pub spent_since_month: Money,
    pub revision: i64,
}

/// What one key has been charged: in all, and since the day and month starts asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTotals {
    pub spent: Money,
    pub spent_since_day: Money,
    pub spent_since_month: Money,
}

/// A ledger row written outside the call path, with the revision it was stamped with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCredit {
    pub revision: i64,
    pub entry: LedgerEntry,
}

/// A key-encryption-wrapped secret the installation keeps (e.g. the key-hash key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedSecret {
    pub purpose: String,
    /// Which master key wrapped it (so rotation can find what to re-wrap).
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// One (user, model, UTC day) of call records folded away by the retention purge or by an
/// erasure. No key, IP, User-Agent or request id: only what accounting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    /// `None`: anonymous (unauthenticated calls and erased accounts).
    pub user_id: Option<UserId>,
    /// `None`: calls that named no valid model.
    pub model: Option<ModelName>,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub cost: Money,
}

/// What [`Store::erase_user`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub keys_deleted: u64,
    /// Call records folded into anonymous daily aggregates and deleted.
    pub records_anonymised: u64,
}

/// An encrypted debug capture of one call, to be stored (DESIGN §3.1 exception (a)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCapture {
    pub key_id: KeyId,
    pub user_id: UserId,
    pub request_id: String,
    pub time: Timestamp,
    /// Listings skip it from this instant on; the purge deletes it.
    pub expires_at: Timestamp,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A debug capture as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCapture {
    /// Assigned by the database, increasing in insertion order.
    pub id: i64,
    pub key_id: KeyId,
    pub user_id: UserId,
    pub request_id: String,
    pub time: Timestamp,
    pub expires_at: Timestamp,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations; safe to call on every start and from several
    /// processes at once. A fresh database already has the `default` group.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// The change counter (see the crate docs). Never decreases.
    async fn revision(&self) -> Result<i64, StoreError>;

    // Groups
    /// Inserts or replaces by name; bumps the revision only when something changed.
    async fn upsert_group(&self, group: &Group) -> Result<(), StoreError>;
    async fn list_groups(&self) -> Result<Vec<Group>, StoreError>;

    // Users and their ledger
    /// Fails with [`StoreError::Conflict`] when the name is taken and with
    /// [`StoreError::NotFound`] when the group does not exist.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Ordered by name (bytewise), each with the sum of its ledger.
    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError>;
    /// Changes an account's role, group and whether it is disabled (each `None` field is
    /// kept). Bumps the revision, so cached keys of the account are looked up again: a
    /// disabled account's keys and console sessions stop working at once. False when there
    /// is no such user; `NotFound` when the group does not exist.
    async fn update_user(&self, user: UserId, change: &UserChange) -> Result<bool, StoreError>;
    /// Appends a money movement made outside the call path (a top-up, an adjustment, a
    /// redemption): bumps the revision and stamps the row with it, so running servers find
    /// it with [`Store::ledger_credits_since`]. Returns that revision. Fails with
    /// [`StoreError::NotFound`] when the user does not exist.
    async fn append_ledger(&self, entry: &LedgerEntry) -> Result<i64, StoreError>;
    /// The sum of the user's money-moving ledger rows (holds excluded).
    async fn balance(&self, user: UserId) -> Result<Money, StoreError>;
    /// Rows stamped by [`Store::append_ledger`] with a revision above `after`, in revision
    /// order, skipping rows whose account was erased. Revisions are assigned under the
    /// revision row's lock, so they commit in order and a reader never skips one.
    async fn ledger_credits_since(&self, after: i64) -> Result<Vec<LedgerCredit>, StoreError>;
    /// The user's balance and charges since `day_start` and `month_start`, with the store
    /// revision, in one snapshot.
    async fn account_totals(
        &self,
        user: UserId,
        day_start: Timestamp,
        month_start: Timestamp,
    ) -> Result<AccountTotals, StoreError>;
    /// What the key was charged in all and since `day_start` and `month_start`.
    async fn key_totals(
        &self,
        key: KeyId,
        day_start: Timestamp,
        month_start: Timestamp,
    ) -> Result<KeyTotals, StoreError>;

    // API keys
    /// Fails with [`StoreError::Conflict`] when the hash is taken and with
    /// [`StoreError::NotFound`] when the user does not exist.
    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError>;
    /// Looks a key up by the keyed hash of its secret, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// In creation order; `Some(user)` keeps only that user's keys.
    async fn list_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>, StoreError>;
    /// Returns `false` when no such key exists; revoking twice keeps the first time.
    async fn revoke_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError>;

    /// Stores (or with `None` removes) a channel's sealed credential. `false` when no such
    /// channel exists. Bumps the revision: servers rebuild their providers.
    async fn set_channel_credential(
        &self,
        channel: &ChannelName,
        sealed: Option<SealedCredential>,
    ) -> Result<bool, StoreError>;
    /// Every stored sealed credential.
    async fn channel_credentials(&self) -> Result<Vec<SealedCredential>, StoreError>;

    // Debug capture (DESIGN §3.1 exception (a))
    /// Sets a key's capture window: calls with it are captured until `until`; `None` turns
    /// capture off. Returns `false` when no such key exists; otherwise bumps the revision
    /// (servers cache keys).
    async fn set_key_capture(&self, key: KeyId, until: Option<Timestamp>) -> Result<bool, StoreError>;
    /// The key's capture window as last set (it may lie in the past); `None` when off or when
    /// no such key exists.
    async fn key_capture(&self, key: KeyId) -> Result<Option<Timestamp>, StoreError>;
    /// Stores one capture. Does not bump the revision. Fails with [`StoreError::NotFound`]
    /// when the key or the user does not exist (e.g. erased meanwhile).
    async fn insert_capture(&self, capture: &NewCapture) -> Result<(), StoreError>;
    /// The user's captures not yet expired at `now` (`expires_at > now`), newest first (time,
    /// then id, descending).
    async fn list_captures(&self, user: UserId, now: Timestamp) -> Result<Vec<StoredCapture>, StoreError>;
    /// Deletes every capture expired at `now` (`expires_at <= now`); returns how many. Does
    /// not bump the revision. Captures also go when their key or user is deleted.
    async fn purge_expired_captures(&self, now: Timestamp) -> Result<u64, StoreError>;

    // Channels and models
    /// Inserts or replaces by name; bumps the revision only when something changed.
    async fn upsert_channel(&self, channel: &Channel) -> Result<(), StoreError>;
    async fn list_channels(&self) -> Result<Vec<Channel>, StoreError>;
    /// Deletes config-managed channels whose names are not in `keep`.
    async fn retire_managed_channels(&self, keep: &[ChannelName]) -> Result<u64, StoreError>;
    /// Creates or replaces a channel of the management API (the caller passes it with
    /// `managed = false`) and, when given, its sealed credential, in one transaction; without
    /// one a replaced channel keeps the credential it had. Refusals ([`ApiChannelOutcome`])
    /// write nothing; a write bumps the revision.
    async fn write_api_channel(
        &self,
        channel: &Channel,
        credential: Option<SealedCredential>,
        write: ApiChannelWrite,
    ) -> Result<ApiChannelOutcome, StoreError>;
    /// Deletes a channel that is not config-managed, with its credential and state; bumps
    /// the revision. A managed or missing channel is refused and nothing changes.
    async fn delete_api_channel(&self, name: &ChannelName) -> Result<ApiChannelOutcome, StoreError>;
    /// Inserts or replaces by name; bumps the revision only when something changed.
    async fn upsert_model(&self, model: &Model) -> Result<(), StoreError>;
    async fn list_models(&self) -> Result<Vec<Model>, StoreError>;
    async fn retire_managed_models(&self, keep: &[ModelName]) -> Result<u64, StoreError>;
    /// Deletes config-managed groups whose names are not in `keep`, except `default` and
    /// groups users still belong to.
    async fn retire_managed_groups(&self, keep: &[GroupName]) -> Result<u64, StoreError>;

    // Call records
    /// Inserts a batch of call records and the ledger rows that settle them (holds and
    /// charges) in one transaction, so a call's record and its money land together or not
    /// at all. Does not bump the revision. A ledger row whose account was erased meanwhile
    /// is kept without its user (the money still moved).
    async fn insert_call_records(&self, records: &[CallRecord], ledger: &[LedgerEntry]) -> Result<(), StoreError>;
    /// Newest first (time, then request id, descending); `limit` 0 means 100.
    async fn list_call_records(&self, filter: &CallRecordFilter) -> Result<Vec<StoredCallRecord>, StoreError>;

    // Retention (DESIGN §3.6)
    /// Folds call records older than `before` into [`DailyUsage`] rows (summing into existing
    /// ones) and deletes them, up to `batch` records per transaction (0 means 1000), until
    /// none are left; returns how many were deleted. The rows a transaction adds up are
    /// exactly the rows it deletes, so processes running it at once never count a record
    /// twice. Records whose account no longer exists are folded in as anonymous. Does not
    /// bump the revision.
    async fn purge_call_records(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError>;
    /// Ordered by day, then model (no model first, then bytewise), then user (anonymous
    /// first); `Some(user)` keeps only that user's rows, `None` returns every row.
    async fn daily_usage(&self, user: Option<UserId>) -> Result<Vec<DailyUsage>, StoreError>;

    // Export and erasure (DESIGN §3.7)
    /// The user's ledger, oldest first (time, then insertion order).
    async fn list_ledger(&self, user: UserId) -> Result<Vec<LedgerEntry>, StoreError>;
    /// Erases an account in one transaction: its call records and daily aggregates become
    /// anonymous daily aggregates (totals unchanged), its keys, debug captures and generated media are
    /// deleted, its ledger rows lose their user (balances of others and overall sums
    /// unchanged), and the user row is deleted. Audit entries about the user stay (the log
    /// is append-only). Bumps the revision, so running servers drop the user's keys at once.
    /// A record of a call still in flight may land afterwards; the next purge folds it in as
    /// anonymous. Fails with [`StoreError::NotFound`] for an unknown user.
    async fn erase_user(&self, user: UserId) -> Result<ErasureReport, StoreError>;

    // Audit log (DESIGN §3.9)
    /// Appends an entry at `at`, chained to the last one (`seq` = last + 1, `prev_hash` = its
    /// hash), serialized against concurrent appends from any process. Does not bump the
    /// revision.
    async fn append_audit(&self, entry: &NewAuditEntry, at: Timestamp) -> Result<AuditEntry, StoreError>;
    /// Newest first; `Some(user)` keeps entries whose `subject_user` is that user (what an
    /// export includes). `limit` 0 means 100.
    async fn list_audit(&self, subject_user: Option<UserId>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// Walks the whole chain in `seq` order and reports the first break, if any.
    async fn verify_audit(&self) -> Result<AuditVerification, StoreError>;

    // Installation secrets: one wrapped copy per (purpose, master key); every copy of a
    // purpose wraps the same plaintext (a master-key rotation adds copies, then retires the
    // old key's).
    /// Every copy of `purpose`, ordered by master key id.
    async fn wrapped_secrets(&self, purpose: &str) -> Result<Vec<WrappedSecret>, StoreError>;
    /// Every copy of every purpose, ordered by purpose and master key id.
    async fn list_wrapped_secrets(&self) -> Result<Vec<WrappedSecret>, StoreError>;
    /// Inserts unless a copy exists for the purpose already (under any master key), so
    /// processes starting at once agree on a single secret. Returns a kept copy: the one
    /// under `secret`'s master key if there is one, else the one with the lowest key id.
    async fn insert_wrapped_secret_if_absent(&self, secret: &WrappedSecret) -> Result<WrappedSecret, StoreError>;
    /// Adds a copy of an existing purpose wrapped by another master key; `false` when that
    /// master key has a copy of the purpose already (kept as is). The caller guarantees it
    /// wraps the same plaintext as the other copies.
    async fn add_wrapped_copy(&self, secret: &WrappedSecret) -> Result<bool, StoreError>;
    /// Deletes the copies `master_key_id` wrapped, except a purpose's last copy (which is
    /// never deleted); returns how many were deleted.
    async fn retire_wrapped_copies(&self, master_key_id: &str) -> Result<u64, StoreError>;

    // Redemption codes
    /// Stores a batch of codes in one transaction: all of them or none. Fails with
    /// [`StoreError::Conflict`] when a hash is taken. Does not bump the revision (servers
    /// cache no codes).
    async fn create_redemption_codes(&self, codes: &[NewRedemptionCode]) -> Result<(), StoreError>;
    /// Spends the code with this keyed hash for `user` at `at`, in one transaction: marks it
    /// redeemed by the user and appends a `topup` ledger row of its amount (note
    /// "redemption code <prefix>"), stamped like [`Store::append_ledger`] with the revision it
    /// bumps. Only a code not redeemed yet and not expired at `at` (`expires_at > at`) is
    /// spent; concurrent calls for one code, from any process, credit it exactly once.
    /// Anything else is [`Redemption::NotRedeemable`], changing nothing. Fails with
    /// [`StoreError::NotFound`] when the user does not exist (the code stays unspent).
    async fn redeem_code(&self, hash: &str, user: UserId, at: Timestamp) -> Result<Redemption, StoreError>;
    /// Newest first (creation time, then id, descending), with the redeemer's name resolved;
    /// `limit` 0 means 100.
    async fn list_redemption_codes(&self, limit: u32) -> Result<Vec<StoredRedemptionCode>, StoreError>;

    // Reports (usage and bills: read-only, off the request path)
    /// The user's usage per UTC day and model over `[from, to)`, ordered by day, then model
    /// (no model first, then bytewise). Pass UTC midnights: call records count by their
    /// time, and the per-day aggregates the retention purge folded away (see
    /// [`Store::purge_call_records`]) count when their day's midnight lies in `[from, to)`,
    /// so totals survive the purge and a day the purge cut in two is summed from both.
    /// With `Some(key)` only that key's calls count, and only from call records still
    /// kept: the aggregates have no key, so a key's usage older than the retention period
    /// is gone (by design, DESIGN §3.6). Calls of every status count, at their cost.
    async fn usage_by_day(
        &self,
        user: UserId,
        key: Option<KeyId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageDay>, StoreError>;
    /// The user's bills: one per UTC calendar month with ledger rows or calls, newest
    /// first. Built from the whole ledger (never purged), so `credited - debited - charged`
    /// summed over every month is the balance; `calls` counts call records and purged
    /// aggregates alike.
    async fn monthly_bills(&self, user: UserId) -> Result<Vec<MonthlyBill>, StoreError>;
    /// What the user was charged over `[from, to)`, as a positive amount (charge rows are
    /// negative); `Some(key)` counts only that key's charges.
    async fn charges_between(
        &self,
        user: UserId,
        key: Option<KeyId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Money, StoreError>;

    // Risk control
    /// Suspends a key from `Some(at)` (suspending a suspended key keeps the first time) or,
    /// with `None`, lifts its suspension. Returns `false` when no such key exists; otherwise
    /// bumps the revision, so running servers drop the cached key and refuse (or accept) it
    /// within one refresh interval.
    async fn set_key_suspended(&self, key: KeyId, at: Option<Timestamp>) -> Result<bool, StoreError>;

    // --- generated media (DESIGN §3.1 exception (b))
    /// Stores one sealed blob. Does not bump the revision. Fails with
    /// [`StoreError::NotFound`] when the user does not exist (e.g. erased meanwhile) and
    /// [`StoreError::Conflict`] when the id is taken. Erasing the user deletes it.
    async fn put_media(&self, media: &NewMedia) -> Result<(), StoreError>;
    /// The blob with this id, expired or not (the caller compares `expires_at`); `None`
    /// once purged or erased.
    async fn media(&self, id: uuid::Uuid) -> Result<Option<StoredMedia>, StoreError>;
    /// Deletes every blob expired at `now` (`expires_at <= now`); returns how many. Does not
    /// bump the revision.
    async fn purge_expired_media(&self, now: Timestamp) -> Result<u64, StoreError>;

    // --- video jobs (asynchronous video generation; metadata only, never the prompt)
    /// Stores a new job together with the ledger rows that settle its submission (its hold
    /// and its charge, unstamped like a call's settlement: the server already applied them
    /// to its cached balance), in one transaction. Fails with [`StoreError::Conflict`] when
    /// the id is taken and [`StoreError::NotFound`] when the user does not exist.
    async fn insert_video_job(&self, job: &VideoJob, ledger: &[LedgerEntry]) -> Result<(), StoreError>;
    /// The job with this id (any owner: the caller checks ownership).
    async fn video_job(&self, id: &str) -> Result<Option<VideoJob>, StoreError>;
    /// Every job not yet `completed` or `failed`, by `next_poll_at` (what a restarting
    /// server resumes polling).
    async fn unfinished_video_jobs(&self) -> Result<Vec<VideoJob>, StoreError>;
    /// Records a poll of an unfinished job: its status (`queued` or `in_progress`),
    /// progress and next poll time. `false` when the job is gone or already final (left as it is).
    async fn update_video_progress(
        &self,
        id: &str,
        status: VideoStatus,
        progress: u8,
        next_poll_at: Timestamp,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Moves an unfinished job to its final state and, in the same transaction, appends
    /// `refund` (stamped like [`Store::append_ledger`], so running servers apply it to
    /// their cached balances). Only the first call for a job does anything and returns
    /// `true`; any later one (another instance, a restart) changes nothing and returns
    /// `false`, so a job is adjusted or refunded exactly once.
    async fn finish_video_job(
        &self,
        id: &str,
        finish: &VideoFinish,
        refund: Option<&LedgerEntry>,
    ) -> Result<bool, StoreError>;

    // --- channel health (routing: durable disabling, and the latest health snapshot)
    /// Disables a channel for `reason` at `at`, unless it is disabled already (the first
    /// reason and time are kept). Returns whether this call disabled it; only then is the
    /// revision bumped (servers drop the channel from routing), so of several instances
    /// seeing the same rejection exactly one is told `true`. Fails with
    /// [`StoreError::NotFound`] when no such channel exists.
    async fn disable_channel(
        &self,
        channel: &ChannelName,
        reason: DisabledReason,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Lifts a channel's disabling (of any reason). Returns whether it was disabled; only
    /// then is the revision bumped. Fails with [`StoreError::NotFound`] when no such
    /// channel exists. `channels.enabled` (the config's own switch) is not touched.
    async fn enable_channel(&self, channel: &ChannelName) -> Result<bool, StoreError>;
    /// Stores each snapshot as its channel's latest, unless a newer one (by `updated_at`)
    /// is stored already. Snapshots of channels that no longer exist are skipped. Does not
    /// bump the revision.
    async fn save_channel_health(&self, snapshots: &[ChannelHealthSnapshot]) -> Result<(), StoreError>;
    /// Every channel with a stored state (disabled, or with a health snapshot), by name.
    async fn channel_states(&self) -> Result<Vec<ChannelState>, StoreError>;

    // Web console accounts (see `console.rs`).
    /// The account with this e-mail address (compared case-insensitively; the oldest if several).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Replaces an account's password hash (a PHC string). False when there is no such user.
    async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError>;
    /// Stores a new console session (only the hash of its token).
    async fn create_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError>;
    /// The unexpired session with this token hash.
    async fn console_session(&self, token_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>, StoreError>;
    /// Records activity on a session, moves its expiry and sets whether it still waits for the second factor.
    async fn touch_console_session(
        &self,
        token_hash: &str,
        seen: Timestamp,
        expires_at: Timestamp,
        second_factor_pending: bool,
    ) -> Result<bool, StoreError>;
    /// Ends one session (sign-out).
    async fn delete_console_session(&self, token_hash: &str) -> Result<bool, StoreError>;
    /// Ends every session of an account except the one with token hash `except`.
    async fn delete_console_sessions(&self, user: UserId, except: Option<&str>) -> Result<u64, StoreError>;
    /// An account's sessions, newest first (for its owner and the export; no tokens).
    async fn list_console_sessions(&self, user: UserId) -> Result<Vec<ConsoleSession>, StoreError>;
    /// Deletes sessions that expired at or before `now`.
    async fn purge_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// An account's sealed TOTP secret, enrolling or enabled.
    async fn console_totp(&self, user: UserId) -> Result<Option<StoredTotp>, StoreError>;
    /// Stores a new, not yet enabled TOTP secret. False (nothing changed) when one is enabled already.
    async fn begin_console_totp(
        &self,
        user: UserId,
        nonce: &[u8],
        ciphertext: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Enables the enrolling secret (its first accepted step is `step`) and replaces the recovery codes, in one transaction. False when there was none enrolling.
    async fn enable_console_totp(
        &self,
        user: UserId,
        step: i64,
        recovery_hashes: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Accepts a code's time step if it is later than the last one accepted: a code works once.
    async fn accept_console_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError>;
    /// Spends an unused recovery code; false if there is no such unused code.
    async fn use_console_recovery_code(&self, user: UserId, code_hash: &str, at: Timestamp)
    -> Result<bool, StoreError>;
    /// How many of an account's recovery codes are unused.
    async fn unused_console_recovery_codes(&self, user: UserId) -> Result<u64, StoreError>;
    /// Turns two-factor sign-in off: deletes the secret and recovery codes.
    async fn clear_console_totp(&self, user: UserId) -> Result<bool, StoreError>;
    /// The account linked to an OpenID Connect identity (issuer and subject).
    async fn console_identity_user(&self, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError>;
    /// Links an OpenID Connect identity to an account. [`StoreError::Conflict`] when the
    /// identity is linked already; [`StoreError::NotFound`]-like failures when the user is gone.
    async fn link_console_identity(
        &self,
        issuer: &str,
        subject: &str,
        user: UserId,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// An account's linked identities, oldest first (for its owner and the export).
    async fn console_identities(&self, user: UserId) -> Result<Vec<IdentityLink>, StoreError>;

    // Notifications (see `notifications.rs`).
    /// A user's choices; every category and no balance alert when the user never chose.
    async fn notification_preferences(&self, user: UserId) -> Result<NotificationPreferences, StoreError>;
    /// Replaces a user's choices. [`StoreError::NotFound`] when the user does not exist.
    async fn set_notification_preferences(
        &self,
        user: UserId,
        preferences: &NotificationPreferences,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Records that `notice` about a key goes out now; false when it already went out (or
    /// another instance claimed it first), so each is sent once.
    async fn claim_key_notice(&self, key: KeyId, notice: KeyNotice, at: Timestamp) -> Result<bool, StoreError>;
    /// Every user who set a balance alert, with whether it went out.
    async fn balance_alerts(&self) -> Result<Vec<BalanceAlert>, StoreError>;
    /// Sets whether the user's balance alert went out; false when it already was so (or the
    /// user set no alert), so only one of several racing instances sends it.
    async fn mark_balance_alert(&self, user: UserId, sent: bool) -> Result<bool, StoreError>;
}

/// Opens the store a `database.url` names: `sqlite://…` or `postgres://…`.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, max_connections).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

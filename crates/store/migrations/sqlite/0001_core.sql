-- Veil core schema, SQLite flavour. Same logical schema as migrations/postgres/0001_core.sql.
-- Conventions: ids are UUIDv7 as lowercase hyphenated TEXT; instants are Unix milliseconds;
-- money is integer nano-units; multipliers are integer millionths; booleans are 0/1;
-- lists and maps are JSON text; enums are their stable labels. No column can hold request
-- or response content.

-- One row: the change counter servers poll to notice admin writes.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
) STRICT;
INSERT INTO meta (id, revision) VALUES (1, 0);

CREATE TABLE groups (
    name TEXT PRIMARY KEY NOT NULL,
    multiplier INTEGER NOT NULL,
    max_retention_days INTEGER,
    allow_training INTEGER NOT NULL,
    regions TEXT,                      -- JSON array; NULL: any region
    firewall TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    max_concurrent INTEGER,
    daily_spend INTEGER,
    monthly_spend INTEGER,
    deny_keywords TEXT NOT NULL,       -- JSON array
    deny_patterns TEXT NOT NULL,       -- JSON array
    managed INTEGER NOT NULL
) STRICT;

-- Every installation has `default`, also without a config file (Group::builtin_default).
INSERT INTO groups (name, multiplier, max_retention_days, allow_training, regions, firewall,
                    rpm, tpm, max_concurrent, daily_spend, monthly_spend,
                    deny_keywords, deny_patterns, managed)
VALUES ('default', 1000000, NULL, 0, NULL, 'identity', NULL, NULL, NULL, NULL, NULL, '[]', '[]', 0);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    email TEXT,
    role TEXT NOT NULL,
    group_name TEXT NOT NULL REFERENCES groups (name),
    password_hash TEXT,
    disabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX users_group_name ON users (group_name);

-- Append-only. No ON DELETE action: erasing an account must decide about its ledger.
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    time INTEGER NOT NULL,
    request_id TEXT,
    note TEXT
) STRICT;
CREATE INDEX ledger_user_id ON ledger (user_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL,
    models TEXT,                       -- JSON array; NULL: whatever the group allows
    expires_at INTEGER,
    quota INTEGER,
    rpm INTEGER,
    tpm INTEGER,
    max_concurrent INTEGER,
    ip_allow TEXT NOT NULL,            -- JSON array of CIDRs; empty: any address
    allow_training INTEGER NOT NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
CREATE INDEX api_keys_user_id ON api_keys (user_id, created_at);

CREATE TABLE channels (
    name TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    base_url TEXT NOT NULL,
    api_key_env TEXT,
    models TEXT NOT NULL,              -- JSON array
    model_mapping TEXT NOT NULL,       -- JSON object, public name -> upstream name
    priority INTEGER NOT NULL,
    weight INTEGER NOT NULL,
    allowed_groups TEXT,               -- JSON array; NULL: every group
    retention_days INTEGER,            -- NULL: retention none
    training INTEGER NOT NULL,
    region TEXT,
    human_review INTEGER NOT NULL,
    operator TEXT NOT NULL,
    connect_timeout_ms INTEGER NOT NULL,
    first_byte_timeout_ms INTEGER NOT NULL,
    idle_timeout_ms INTEGER NOT NULL,
    total_timeout_ms INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    managed INTEGER NOT NULL
) STRICT;

CREATE TABLE models (
    name TEXT PRIMARY KEY NOT NULL,
    input_price INTEGER NOT NULL,      -- nano-units per million tokens
    cached_input_price INTEGER NOT NULL,
    output_price INTEGER NOT NULL,
    managed INTEGER NOT NULL
) STRICT;

-- Metadata only (DESIGN §3.5). request_id is not unique: clients may reuse x-request-id, and
-- one reused id must not make a whole batch fail. user_id has no foreign key so records
-- outlive (anonymised) accounts and a batch never fails on a concurrent erasure.
CREATE TABLE call_records (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    user_id TEXT,
    key_id TEXT,
    group_name TEXT,
    model TEXT,
    upstream_model TEXT,
    channel TEXT,
    path TEXT NOT NULL,
    stream INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    multiplier INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    client_ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    redactions INTEGER NOT NULL,
    rule_id TEXT,
    policy_class TEXT,
    estimated INTEGER NOT NULL,
    channels_tried TEXT NOT NULL       -- JSON array
) STRICT;
CREATE INDEX call_records_time ON call_records (time);
CREATE INDEX call_records_user_time ON call_records (user_id, time);

-- Installation secrets wrapped by the master key, one per purpose.
CREATE TABLE secrets (
    purpose TEXT PRIMARY KEY NOT NULL,
    master_key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
) STRICT;

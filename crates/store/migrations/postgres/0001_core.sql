-- Veil core schema, PostgreSQL flavour. Same logical schema as migrations/sqlite/0001_core.sql.
-- Conventions: ids are UUIDv7 (uuid); instants are Unix milliseconds (BIGINT); money is
-- BIGINT nano-units; multipliers are BIGINT millionths; lists and maps are JSON text (read
-- the same way on both backends); enums are their stable labels. No column can hold request
-- or response content.

-- One row: the change counter servers poll to notice admin writes.
CREATE TABLE meta (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO meta (id, revision) VALUES (1, 0);

CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    multiplier BIGINT NOT NULL,
    max_retention_days BIGINT,
    allow_training BOOLEAN NOT NULL,
    regions TEXT,                      -- JSON array; NULL: any region
    firewall TEXT NOT NULL,
    rpm BIGINT,
    tpm BIGINT,
    max_concurrent BIGINT,
    daily_spend BIGINT,
    monthly_spend BIGINT,
    deny_keywords TEXT NOT NULL,       -- JSON array
    deny_patterns TEXT NOT NULL,       -- JSON array
    managed BOOLEAN NOT NULL
);

-- Every installation has `default`, also without a config file (Group::builtin_default).
INSERT INTO groups (name, multiplier, max_retention_days, allow_training, regions, firewall,
                    rpm, tpm, max_concurrent, daily_spend, monthly_spend,
                    deny_keywords, deny_patterns, managed)
VALUES ('default', 1000000, NULL, FALSE, NULL, 'identity', NULL, NULL, NULL, NULL, NULL,
        '[]', '[]', FALSE);

CREATE TABLE users (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    email TEXT,
    role TEXT NOT NULL,
    group_name TEXT NOT NULL REFERENCES groups (name),
    password_hash TEXT,
    disabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX users_group_name ON users (group_name);

-- Append-only. No ON DELETE action: erasing an account must decide about its ledger.
CREATE TABLE ledger (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    time BIGINT NOT NULL,
    request_id TEXT,
    note TEXT
);
CREATE INDEX ledger_user_id ON ledger (user_id);

CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL,
    models TEXT,                       -- JSON array; NULL: whatever the group allows
    expires_at BIGINT,
    quota BIGINT,
    rpm BIGINT,
    tpm BIGINT,
    max_concurrent BIGINT,
    ip_allow TEXT NOT NULL,            -- JSON array of CIDRs; empty: any address
    allow_training BOOLEAN NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
CREATE INDEX api_keys_user_id ON api_keys (user_id, created_at);

CREATE TABLE channels (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    base_url TEXT NOT NULL,
    api_key_env TEXT,
    models TEXT NOT NULL,              -- JSON array
    model_mapping TEXT NOT NULL,       -- JSON object, public name -> upstream name
    priority BIGINT NOT NULL,
    weight BIGINT NOT NULL,
    allowed_groups TEXT,               -- JSON array; NULL: every group
    retention_days BIGINT,             -- NULL: retention none
    training BOOLEAN NOT NULL,
    region TEXT,
    human_review BOOLEAN NOT NULL,
    operator TEXT NOT NULL,
    connect_timeout_ms BIGINT NOT NULL,
    first_byte_timeout_ms BIGINT NOT NULL,
    idle_timeout_ms BIGINT NOT NULL,
    total_timeout_ms BIGINT NOT NULL,
    enabled BOOLEAN NOT NULL,
    managed BOOLEAN NOT NULL
);

CREATE TABLE models (
    name TEXT PRIMARY KEY,
    input_price BIGINT NOT NULL,       -- nano-units per million tokens
    cached_input_price BIGINT NOT NULL,
    output_price BIGINT NOT NULL,
    managed BOOLEAN NOT NULL
);

-- Metadata only (DESIGN §3.5). request_id is not unique: clients may reuse x-request-id, and
-- one reused id must not make a whole batch fail. user_id has no foreign key so records
-- outlive (anonymised) accounts and a batch never fails on a concurrent erasure.
CREATE TABLE call_records (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL,
    time BIGINT NOT NULL,
    user_id UUID,
    key_id UUID,
    group_name TEXT,
    model TEXT,
    upstream_model TEXT,
    channel TEXT,
    path TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    multiplier BIGINT NOT NULL,
    status BIGINT NOT NULL,
    error_code TEXT,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    client_ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    redactions BIGINT NOT NULL,
    rule_id TEXT,
    policy_class TEXT,
    estimated BOOLEAN NOT NULL,
    channels_tried TEXT NOT NULL       -- JSON array
);
CREATE INDEX call_records_time ON call_records (time);
CREATE INDEX call_records_user_time ON call_records (user_id, time);

-- Installation secrets wrapped by the master key, one per purpose.
CREATE TABLE secrets (
    purpose TEXT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL
);

-- Web console accounts (DESIGN §2, §3.8), PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0015_console.sql. Sessions keep only a SHA-256 of their token and no
-- client address; TOTP secrets are sealed by the server (nonce and ciphertext); recovery
-- codes are kept as hashes. Erasing a user deletes all three (ON DELETE CASCADE).

CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    -- TRUE between a correct password and the second factor: such a session opens nothing else.
    second_factor_pending BOOLEAN NOT NULL
);
CREATE INDEX console_sessions_user_id ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

CREATE TABLE console_totp (
    user_id UUID PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    -- FALSE while enrolling (the user has not yet confirmed a code), TRUE once required at sign-in.
    enabled BOOLEAN NOT NULL,
    -- The last time step whose code was accepted: a code works only once.
    last_step BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE console_recovery_codes (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

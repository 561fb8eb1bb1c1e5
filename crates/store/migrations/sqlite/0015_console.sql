-- Web console accounts (DESIGN §2, §3.8), SQLite flavour. Same logical schema as
-- migrations/postgres/0015_console.sql. Sessions keep only a SHA-256 of their token and no
-- client address; TOTP secrets are sealed by the server (nonce and ciphertext); recovery
-- codes are kept as hashes. Erasing a user deletes all three (ON DELETE CASCADE).

CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- 1 between a correct password and the second factor: such a session opens nothing else.
    second_factor_pending INTEGER NOT NULL
) STRICT;
CREATE INDEX console_sessions_user_id ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

CREATE TABLE console_totp (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    -- 0 while enrolling (the user has not yet confirmed a code), 1 once required at sign-in.
    enabled INTEGER NOT NULL,
    -- The last time step whose code was accepted: a code works only once.
    last_step INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE console_recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user_id, code_hash)
) STRICT;

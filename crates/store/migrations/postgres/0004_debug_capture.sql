-- Debug capture (DESIGN §3.1 exception (a)), PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0004_debug_capture.sql. The one place request and response content may
-- be kept: only while an operator has opened a key's capture window, only encrypted (nonce and
-- ciphertext; the plaintext never reaches the database), and only until expires_at.

-- NULL: capture off. Otherwise calls with the key are captured until this instant.
ALTER TABLE api_keys ADD COLUMN capture_until BIGINT;

-- Deleting a key or its user (erasure) deletes its captures.
CREATE TABLE debug_captures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id UUID NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request_id TEXT NOT NULL,
    time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL
);
CREATE INDEX debug_captures_user_time ON debug_captures (user_id, time);
CREATE INDEX debug_captures_expires_at ON debug_captures (expires_at);
-- Lets the cascade from api_keys find a key's captures without a scan.
CREATE INDEX debug_captures_key_id ON debug_captures (key_id);

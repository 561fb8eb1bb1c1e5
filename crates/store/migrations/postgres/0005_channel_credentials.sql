-- Channel credentials stored through the management API: sealed (XChaCha20-Poly1305
-- under an installation key, the channel name as associated data). The plaintext never
-- reaches this table. Paired with the same migration for SQLite.
CREATE TABLE channel_credentials (
    channel TEXT PRIMARY KEY REFERENCES channels (name) ON DELETE CASCADE,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL
);

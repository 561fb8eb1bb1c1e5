-- Generated media (DESIGN §3.1 exception (b)), SQLite flavour. Same logical schema as
-- migrations/postgres/0010_media.sql. Bytes an upstream generated (images, audio, video),
-- kept only sealed (nonce and ciphertext; the plaintext never reaches the database) and only
-- until expires_at, when the scheduled purge deletes them. Erasing the user deletes them too.
CREATE TABLE media (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
) STRICT;
CREATE INDEX media_expires_at ON media (expires_at);
-- Lets the cascade from users find a user's media without a scan.
CREATE INDEX media_user_id ON media (user_id);

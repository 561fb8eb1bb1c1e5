-- Generated media (DESIGN §3.1 exception (b)), PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0010_media.sql. Bytes an upstream generated (images, audio, video),
-- kept only sealed (nonce and ciphertext; the plaintext never reaches the database) and only
-- until expires_at, when the scheduled purge deletes them. Erasing the user deletes them too.
CREATE TABLE media (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL
);
CREATE INDEX media_expires_at ON media (expires_at);
-- Lets the cascade from users find a user's media without a scan.
CREATE INDEX media_user_id ON media (user_id);

-- Accounts linked to an OpenID Connect provider (console sign-in), SQLite flavour. Same
-- logical schema as migrations/postgres/0017_console_identities.sql. A link is the provider's
-- issuer and its stable subject id for the person; no tokens are kept. Erasing the user
-- deletes the link (ON DELETE CASCADE).

CREATE TABLE console_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT;
CREATE INDEX console_identities_user_id ON console_identities (user_id);

-- Accounts linked to an OpenID Connect provider (console sign-in), PostgreSQL flavour. Same
-- logical schema as migrations/sqlite/0017_console_identities.sql. A link is the provider's
-- issuer and its stable subject id for the person; no tokens are kept. Erasing the user
-- deletes the link (ON DELETE CASCADE).

CREATE TABLE console_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX console_identities_user_id ON console_identities (user_id);

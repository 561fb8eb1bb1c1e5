-- Veil privacy schema, PostgreSQL flavour. Same logical schema as migrations/sqlite/0002_privacy.sql.
-- The audit log (DESIGN §3.9), per-day usage aggregates that outlive purged and erased call
-- records (§3.6, §3.7), and a ledger that outlives erased accounts. No column can hold request
-- or response content.

-- Append-only and hash-chained: each row's hash covers the previous row's hash and this row's
-- canonical text (src/audit.rs). seq is assigned by the writer (last + 1) under an advisory
-- lock, never by a sequence, so a gap always means a deleted row. subject_user has no foreign
-- key: the log outlives erased accounts. details is TEXT, not jsonb: it is hashed as stored.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_user UUID,
    target TEXT,
    details TEXT NOT NULL,             -- canonical JSON (compact, sorted keys)
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_subject_user ON audit_log (subject_user, seq);

-- Call records folded away by the retention purge or an erasure, one row per (user, model,
-- UTC day). user_id NULL: anonymous (unauthenticated calls, erased accounts); model NULL: the
-- call named no valid model. Deliberately no key, IP, User-Agent or request id.
CREATE TABLE daily_usage (
    user_id UUID,
    model TEXT,
    day TEXT NOT NULL,                 -- YYYY-MM-DD, UTC
    calls BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL
);
-- NULL counts as one value (model names are never empty; no account has the nil UUID). An
-- expression index rather than NULLS NOT DISTINCT, which needs PostgreSQL 15. Upserts name
-- this expression list.
CREATE UNIQUE INDEX daily_usage_key ON daily_usage (
    (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::UUID)), (COALESCE(model, '')), day
);
CREATE INDEX daily_usage_user_id ON daily_usage (user_id, day);

-- Ledger rows outlive an erased account with user_id NULL, so sums stay exact.
ALTER TABLE ledger ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE ledger DROP CONSTRAINT ledger_user_id_fkey;
ALTER TABLE ledger ADD CONSTRAINT ledger_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL;
DROP INDEX ledger_user_id;
CREATE INDEX ledger_user_id ON ledger (user_id, time);

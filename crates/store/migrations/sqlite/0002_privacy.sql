-- Veil privacy schema, SQLite flavour. Same logical schema as migrations/postgres/0002_privacy.sql.
-- The audit log (DESIGN §3.9), per-day usage aggregates that outlive purged and erased call
-- records (§3.6, §3.7), and a ledger that outlives erased accounts. No column can hold request
-- or response content.

-- Append-only and hash-chained: each row's hash covers the previous row's hash and this row's
-- canonical text (src/audit.rs). seq is assigned by the writer (last + 1) inside the write
-- lock, never by the database, so a gap always means a deleted row. subject_user has no
-- foreign key: the log outlives erased accounts. target is an id or name, never content.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_user TEXT,
    target TEXT,
    details TEXT NOT NULL,             -- canonical JSON (compact, sorted keys), hashed as stored
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_subject_user ON audit_log (subject_user, seq);

-- Call records folded away by the retention purge or an erasure, one row per (user, model,
-- UTC day). user_id NULL: anonymous (unauthenticated calls, erased accounts); model NULL: the
-- call named no valid model. Deliberately no key, IP, User-Agent or request id.
CREATE TABLE daily_usage (
    user_id TEXT,
    model TEXT,
    day TEXT NOT NULL,                 -- YYYY-MM-DD, UTC
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL
) STRICT;
-- NULL counts as one value (model names are never empty). Upserts name this expression list.
CREATE UNIQUE INDEX daily_usage_key ON daily_usage (COALESCE(user_id, ''), COALESCE(model, ''), day);
CREATE INDEX daily_usage_user_id ON daily_usage (user_id, day);

-- Ledger rows outlive an erased account with user_id NULL, so sums stay exact. SQLite cannot
-- alter a column or a foreign key: rebuild the table (ids kept; nothing references it).
CREATE TABLE ledger_new (
    id INTEGER PRIMARY KEY,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    time INTEGER NOT NULL,
    request_id TEXT,
    note TEXT
) STRICT;
INSERT INTO ledger_new (id, user_id, kind, amount, time, request_id, note)
    SELECT id, user_id, kind, amount, time, request_id, note FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_user_id ON ledger (user_id, time);

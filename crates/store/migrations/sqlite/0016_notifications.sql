-- Notifications (issue 9 point 5), SQLite flavour. Same logical schema as
-- migrations/postgres/0016_notifications.sql. A user without a row receives every category
-- and no balance alert. Key notices sent (expiry reminders, quota nearly used) are
-- remembered by (key, notice) so that each goes out once even when several instances or
-- runs race. Erasure cascades.

CREATE TABLE notification_preferences (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    security INTEGER NOT NULL,
    spending INTEGER NOT NULL,
    key_expiry INTEGER NOT NULL,
    channel_health INTEGER NOT NULL,
    -- Money in nanos: below it a "balance low" alert goes out; NULL: none.
    balance_alert INTEGER,
    -- Set once the alert went out; cleared when the balance is back above the threshold.
    balance_alert_sent INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
-- The sweep reads only the users who set a threshold.
CREATE INDEX notification_preferences_balance_alert ON notification_preferences (user_id)
    WHERE balance_alert IS NOT NULL;

CREATE TABLE key_notices (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- 'expiry_7d', 'expiry_1d', 'quota_80'.
    notice TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, notice)
) STRICT;

-- Notifications (issue 9 point 5), PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0016_notifications.sql. A user without a row receives every category
-- and no balance alert. Key notices sent (expiry reminders, quota nearly used) are
-- remembered by (key, notice) so that each goes out once even when several instances or
-- runs race. Erasure cascades.

CREATE TABLE notification_preferences (
    user_id UUID PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    security BOOLEAN NOT NULL,
    spending BOOLEAN NOT NULL,
    key_expiry BOOLEAN NOT NULL,
    channel_health BOOLEAN NOT NULL,
    -- Money in nanos: below it a "balance low" alert goes out; NULL: none.
    balance_alert BIGINT,
    -- Set once the alert went out; cleared when the balance is back above the threshold.
    balance_alert_sent BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
-- The sweep reads only the users who set a threshold.
CREATE INDEX notification_preferences_balance_alert ON notification_preferences (user_id)
    WHERE balance_alert IS NOT NULL;

CREATE TABLE key_notices (
    key_id UUID NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- 'expiry_7d', 'expiry_1d', 'quota_80'.
    notice TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, notice)
);

-- Channel states, SQLite flavour (same logical schema as migrations/postgres/0013_channel_health.sql).
-- Disabling lives here, not in channels.enabled, which the config file's seed rewrites at every
-- start: disabled_reason is 'credential_rejected' (the upstream refused the channel's credential)
-- or 'admin', NULL when the channel is not disabled. The health_* columns hold the latest
-- snapshot a server reported (for `veil admin`, which runs without a server); metadata only.
CREATE TABLE channel_states (
    channel TEXT PRIMARY KEY NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    disabled_reason TEXT CHECK (disabled_reason IN ('credential_rejected', 'admin')),
    disabled_at INTEGER,
    health_state TEXT CHECK (health_state IN ('healthy', 'cooling_down', 'half_open', 'disabled')),
    calls_in_window INTEGER,
    failures_in_window INTEGER,
    latency_p50_ms INTEGER,
    latency_p95_ms INTEGER,
    cooling_until INTEGER,
    health_updated_at INTEGER
) STRICT;

-- Channel states, PostgreSQL flavour (same logical schema as migrations/sqlite/0013_channel_health.sql).
-- Disabling lives here, not in channels.enabled, which the config file's seed rewrites at every
-- start: disabled_reason is 'credential_rejected' (the upstream refused the channel's credential)
-- or 'admin', NULL when the channel is not disabled. The health_* columns hold the latest
-- snapshot a server reported (for `veil admin`, which runs without a server); metadata only.
CREATE TABLE channel_states (
    channel TEXT PRIMARY KEY REFERENCES channels (name) ON DELETE CASCADE,
    disabled_reason TEXT CHECK (disabled_reason IN ('credential_rejected', 'admin')),
    disabled_at BIGINT,
    health_state TEXT CHECK (health_state IN ('healthy', 'cooling_down', 'half_open', 'disabled')),
    calls_in_window BIGINT,
    failures_in_window BIGINT,
    latency_p50_ms BIGINT,
    latency_p95_ms BIGINT,
    cooling_until BIGINT,
    health_updated_at BIGINT
);

-- Per-channel transport and health settings, PostgreSQL flavour (same logical schema as
-- migrations/sqlite/0012_channel_transport.sql). tls_verify = false is an explicit opt-out
-- for the operator's own endpoints; probe_interval_ms NULL means no scheduled probes.
ALTER TABLE channels ADD COLUMN tls_verify BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE channels ADD COLUMN probe_interval_ms BIGINT;

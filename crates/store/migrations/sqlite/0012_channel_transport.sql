-- Per-channel transport and health settings, SQLite flavour (same logical schema as
-- migrations/postgres/0012_channel_transport.sql). tls_verify = 0 is an explicit opt-out
-- for the operator's own endpoints; probe_interval_ms NULL means no scheduled probes.
ALTER TABLE channels ADD COLUMN tls_verify INTEGER NOT NULL DEFAULT 1;
ALTER TABLE channels ADD COLUMN probe_interval_ms INTEGER;

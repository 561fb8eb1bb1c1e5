-- Master-key rotation (DESIGN §3.8): an installation secret may be held in one wrapped copy per
-- master key, so instances still running with the old key and those restarted with the new one
-- both find theirs. Every copy of a purpose wraps the same plaintext. Existing rows are kept.
ALTER TABLE secrets DROP CONSTRAINT secrets_pkey;
ALTER TABLE secrets ADD PRIMARY KEY (purpose, master_key_id);

-- Master-key rotation (DESIGN §3.8): an installation secret may be held in one wrapped copy per
-- master key, so instances still running with the old key and those restarted with the new one
-- both find theirs. Every copy of a purpose wraps the same plaintext. Existing rows are kept.
CREATE TABLE secrets_copies (
    purpose TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (purpose, master_key_id)
) STRICT;
INSERT INTO secrets_copies (purpose, master_key_id, nonce, ciphertext)
    SELECT purpose, master_key_id, nonce, ciphertext FROM secrets;
DROP TABLE secrets;
ALTER TABLE secrets_copies RENAME TO secrets;

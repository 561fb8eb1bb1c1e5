-- Call records at volume (issue 8), PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0014_call_records_volume.sql.
--
-- The retention purge takes its batches in (time, id) order starting after the previous
-- batch's last row: with this index each batch is an ordered range scan that stops after
-- the batch size, with no table scan and no sort. It replaces the index on time alone
-- (every query that used that one can use this one). A B-tree rather than BRIN: BRIN is
-- smaller for append-only time data but cannot return rows in order, so every batch
-- would read and sort all rows older than the cut-off; an append-only B-tree only ever
-- grows at its right edge.
--
-- On a large existing table, create the index beforehand without blocking writes:
--   CREATE INDEX CONCURRENTLY call_records_time_id ON call_records (time, id);
-- and this migration then only drops the old index.
CREATE INDEX IF NOT EXISTS call_records_time_id ON call_records (time, id);
DROP INDEX IF EXISTS call_records_time;

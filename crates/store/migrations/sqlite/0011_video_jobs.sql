-- Asynchronous video jobs (OpenAI's Videos API), SQLite flavour. Same logical schema as
-- migrations/postgres/0011_video_jobs.sql. Metadata only: there is no column for the prompt,
-- and error_code holds Veil's own stable code, never an upstream message (which may echo the
-- prompt). charged is what the submission charged (nano-units), kept so the completion
-- adjustment and the failure refund are computed from the job alone, exactly once (each is
-- guarded by the status transition out of queued/in_progress). Erasing the user deletes them.
CREATE TABLE video_jobs (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    upstream_id TEXT NOT NULL,
    model TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    size TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL,
    error_code TEXT,
    charged INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    next_poll_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    -- The finished video kept sealed in the media vault (media.id; no foreign key: the purge
    -- deletes expired media on its own), and when it expires. NULL when nothing was kept
    -- (a self-hosted channel, or keeping failed): the content is then streamed from the upstream.
    media_id TEXT,
    media_expires_at INTEGER
) STRICT;
-- The poller loads unfinished jobs on start.
CREATE INDEX video_jobs_status ON video_jobs (status);
CREATE INDEX video_jobs_user_id ON video_jobs (user_id);

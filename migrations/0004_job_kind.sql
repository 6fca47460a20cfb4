-- Every kind of work is a job (docs: ARCHITECTURE §6): a file upload, a live WebSocket session, a
-- Wyoming voice command. The kind says which front door it came through; everything else about the
-- job (durability, resume, retention, the archive) is the same for all of them.

ALTER TABLE jobs
    ADD COLUMN kind text NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'live', 'wyoming'));

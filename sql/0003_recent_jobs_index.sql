-- 0003: the status page and /api/jobs list the most recent jobs of everyone.
CREATE INDEX generations_recent_idx ON generations (created_at DESC, id);

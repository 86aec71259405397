-- 0005: each requester's queued jobs in dispatch order, so `queue_position` (asked at every
-- enqueue and by /queue) counts the jobs ahead of one job without ordering the whole queue.
CREATE INDEX generations_queued_requester_idx ON generations (requester_id, created_at, id)
    WHERE status = 'queued' AND NOT cancel_requested;

-- 0006: the per-user flood limit of the bot (commands and button presses), one token bucket per
-- user shared by every bot process. A hit is one upsert (core/db/rate_limits.py): it refills the
-- bucket by the time elapsed on the database clock, takes a token when there is one and records
-- the verdict, under the row's lock. A row idle long enough to be full again carries no
-- information; the scheduler deletes it. No index on `at`: the table holds only the users of
-- the last minutes, and without one every hit can be a HOT update.
-- UNLOGGED: a hit writes no WAL and its commit waits for no disk flush (0.3 ms instead of 0.7 ms
-- per hit, measured). The price is harmless: after a crash of PostgreSQL (and on a promoted
-- replica) the table is empty, i.e. every bucket starts full again.
CREATE UNLOGGED TABLE rate_buckets (
    user_id       bigint           PRIMARY KEY,
    tokens        double precision NOT NULL,  -- left after the last hit
    at            timestamptz      NOT NULL,  -- the last hit (clock_timestamp())
    warned        boolean          NOT NULL,  -- this flood was told "slow down" already
    last_allowed  boolean          NOT NULL,  -- the verdict of the last hit
    last_warn     boolean          NOT NULL   -- ... and whether it is the one warning
);

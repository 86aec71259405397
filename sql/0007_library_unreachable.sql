-- 0007: why an output waits to be filed. `library_unreachable` is true while its last filing
-- attempt could not reach Jellyfin at all (refused connection, timeout, 5xx). The scheduler
-- asks Jellyfin whether it is back at each library tick while such outputs wait, and when it
-- is, makes them due at once instead of after their backoff (up to hours after a long
-- outage). Outputs waiting for Jellyfin to index them, or refused by it, keep their backoff.
ALTER TABLE outputs ADD COLUMN library_unreachable boolean NOT NULL DEFAULT false;

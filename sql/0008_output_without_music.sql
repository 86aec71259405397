-- 0008: a video of a job with a soundtrack that was sent without it, because the soundtrack
-- could not be had any more when the video was made (core.music.service.MissingReason:
-- 'gone', 'source_off', 'download_failed', 'unusable'). NULL for every other output. The
-- result's caption says so, and why, in place of the song's credit.
ALTER TABLE outputs ADD COLUMN without_music text;

-- 0002: a video job may carry a soundtrack (an iTunes preview, a file from MUSIC_DIR, or an
-- audio file the user sent), mixed into the delivered video and credited in its caption.
ALTER TABLE generations
    ADD COLUMN soundtrack jsonb
        CHECK (soundtrack IS NULL OR (soundtrack ? 'source' AND soundtrack ? 'title'));
ALTER TABLE generations
    ADD CONSTRAINT generations_soundtrack_video CHECK (soundtrack IS NULL OR kind = 'video');

-- 0009: groups upgraded to supergroups (Telegram gives the chat a new id). One row per old id,
-- written by the first of the upgrade's signals (the service messages `migrate_to_chat_id` in
-- the old group and `migrate_from_chat_id` in the supergroup, or a delivery refused with
-- ChatMigrated); only that one copies the group's settings (core/db/people.py,
-- `migrate_chat`). The access check allows a supergroup upgraded from a chat listed in
-- ALLOWED_CHAT_IDS by this table. No foreign keys: either chat may never have been seen.
CREATE TABLE chat_migrations (
    from_chat_id    bigint PRIMARY KEY,
    to_chat_id      bigint NOT NULL CHECK (to_chat_id <> from_chat_id),
    migrated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_migrations_to_idx ON chat_migrations (to_chat_id);

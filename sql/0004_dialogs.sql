-- 0004: unfinished dialogs of the bot (a character being created or edited, a scene's character
-- picker, a music chooser, the "what happens in the scene?" and "send your own audio" waits),
-- shared by every bot process so that any of them continues any dialog, also after a restart.
-- State and notice are `json`, not `jsonb`: they carry user text as typed, and jsonb cannot
-- hold a \u0000; nothing queries inside them.
CREATE TABLE dialogs (
    chat_id     bigint      NOT NULL,
    kind        text        NOT NULL CHECK (char_length(kind) BETWEEN 1 AND 40),
    key         bigint      NOT NULL,                   -- the user id, or the message id
    user_id     bigint      NOT NULL,                   -- whose dialog it is
    state       json        NOT NULL,
    attachment  bytea,                                  -- e.g. the draft's reference photo
    notice      json,                                   -- what to tell the user when it expires
    version     bigint      NOT NULL DEFAULT 1,         -- +1 on every change (compare-and-set)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (chat_id, kind, key)
);
CREATE INDEX dialogs_expires_idx ON dialogs (expires_at);

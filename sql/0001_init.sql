-- 0001: the whole data model: people and chats, characters, generations (the job queue's source
-- of truth), their event history, outputs, backends and worker liveness.

CREATE TABLE users (
    id              bigint PRIMARY KEY,                 -- Telegram user id
    username        text,
    first_name      text NOT NULL DEFAULT '',
    last_name       text,
    language_code   text,
    role            text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin', 'banned')),
    daily_quota     integer CHECK (daily_quota >= 0),  -- NULL: the DAILY_QUOTA setting
    quota_used      integer NOT NULL DEFAULT 0 CHECK (quota_used >= 0),
    quota_day       date NOT NULL DEFAULT CURRENT_DATE,
    last_served_at  timestamptz,                        -- when a job of theirs last started
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chats (
    id              bigint PRIMARY KEY,                 -- Telegram chat id
    type            text NOT NULL CHECK (type IN ('private', 'group', 'supergroup', 'channel')),
    title           text,
    is_forum        boolean NOT NULL DEFAULT false,
    style_preset    text NOT NULL DEFAULT 'anime' CHECK (char_length(style_preset) BETWEEN 1 AND 40),
    aspect_ratio    text NOT NULL DEFAULT '1:1' CHECK (aspect_ratio ~ '^[0-9]{1,2}:[0-9]{1,2}$'),
    video_seconds   integer NOT NULL DEFAULT 3 CHECK (video_seconds BETWEEN 1 AND 30),
    send_original   boolean NOT NULL DEFAULT false,
    language        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE characters (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        bigint NOT NULL REFERENCES users (id),
    chat_id         bigint REFERENCES chats (id),       -- chat it was created in (scope); NULL = any
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    appearance      text NOT NULL CHECK (char_length(appearance) BETWEEN 1 AND 2000),
    personality     text NOT NULL DEFAULT '' CHECK (char_length(personality) <= 1000),
    style           text NOT NULL DEFAULT 'anime' CHECK (char_length(style) BETWEEN 1 AND 40),
    negative_prompt text NOT NULL DEFAULT '' CHECK (char_length(negative_prompt) <= 1000),
    base_seed       bigint NOT NULL CHECK (base_seed >= 0),
    lora_name       text CHECK (char_length(lora_name) <= 255),
    lora_strength   real NOT NULL DEFAULT 0.8 CHECK (lora_strength BETWEEN -4 AND 4),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE UNIQUE INDEX characters_owner_name_key
    ON characters (owner_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX characters_owner_idx ON characters (owner_id, created_at) WHERE deleted_at IS NULL;

CREATE TABLE character_references (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    character_id    uuid NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    file_path       text NOT NULL,
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    width           integer NOT NULL CHECK (width > 0),
    height          integer NOT NULL CHECK (height > 0),
    telegram_file_id text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX character_references_character_idx ON character_references (character_id, created_at);

CREATE TABLE generations (
    id                  uuid PRIMARY KEY,               -- also the ComfyUI prompt_id
    requester_id        bigint NOT NULL REFERENCES users (id),
    chat_id             bigint NOT NULL REFERENCES chats (id),
    thread_id           bigint,                          -- forum topic (message_thread_id)
    request_message_id  bigint,
    progress_message_id bigint,
    result_message_id   bigint,                          -- recorded before the job is done
    delivery_error      text,                            -- why it could not be sent (e.g. blocked)
    kind                text NOT NULL CHECK (kind IN ('image', 'video')),
    operation           text NOT NULL DEFAULT 'generate'
                        CHECK (operation IN ('generate', 'reroll', 'variation', 'upscale',
                                             'animate', 'sheet')),
    parent_id           uuid REFERENCES generations (id),
    prompt_typed        text NOT NULL CHECK (char_length(prompt_typed) <= 4000),
    prompt_positive     text NOT NULL DEFAULT '',
    prompt_negative     text NOT NULL DEFAULT '',
    character_ids       uuid[] NOT NULL DEFAULT '{}',
    workflow            text NOT NULL,
    params              jsonb NOT NULL DEFAULT '{}'::jsonb,
    seed                bigint CHECK (seed >= 0),
    backend             text,
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'submitted', 'running', 'postprocessing',
                                          'delivering', 'done', 'failed', 'cancelled')),
    progress            real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    error               text,
    cancel_requested    boolean NOT NULL DEFAULT false,
    lease_owner         integer,                         -- workers.key of the process holding it
    created_at          timestamptz NOT NULL DEFAULT now(),   -- queued at
    submitted_at        timestamptz,
    running_at          timestamptz,
    postprocessing_at   timestamptz,
    delivering_at       timestamptz,
    finished_at         timestamptz,                     -- done, failed or cancelled
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IN ('done', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL),
    CHECK (status <> 'done' OR result_message_id IS NOT NULL OR delivery_error IS NOT NULL)
);
CREATE INDEX generations_queued_idx ON generations (created_at, id) WHERE status = 'queued';
CREATE INDEX generations_active_idx ON generations (status, backend)
    WHERE status IN ('submitted', 'running', 'postprocessing', 'delivering');
CREATE INDEX generations_requester_idx ON generations (requester_id, created_at DESC);
CREATE INDEX generations_chat_idx ON generations (chat_id, created_at DESC);
CREATE INDEX generations_parent_idx ON generations (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE generation_events (
    id              bigserial PRIMARY KEY,
    generation_id   uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    from_status     text,
    to_status       text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX generation_events_generation_idx ON generation_events (generation_id, id);

CREATE TABLE outputs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    generation_id       uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    position            integer NOT NULL CHECK (position >= 0),
    kind                text NOT NULL CHECK (kind IN ('image', 'video')),
    file_path           text NOT NULL,                  -- the kept original
    delivery_path       text,                           -- Telegram-ready derivative
    thumbnail_path      text,
    mime                text NOT NULL,
    size_bytes          bigint NOT NULL CHECK (size_bytes >= 0),
    sha256              text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    width               integer CHECK (width > 0),
    height              integer CHECK (height > 0),
    duration_s          real CHECK (duration_s >= 0),
    comfy_node          text,
    comfy_filename      text,
    telegram_file_id    text,
    telegram_message_id bigint,
    library_path        text,
    jellyfin_item_id    text,
    jellyfin_link       text,
    library_status      text NOT NULL DEFAULT 'pending'
                        CHECK (library_status IN ('pending', 'filed', 'linked', 'failed', 'off')),
    library_attempts    integer NOT NULL DEFAULT 0,
    library_next_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (generation_id, position)
);
CREATE INDEX outputs_library_pending_idx ON outputs (library_next_at)
    WHERE library_status IN ('pending', 'filed');

-- Each running process holds a session advisory lock (classid 4242, objid = key) while alive,
-- so others can tell a dead process's jobs from a live one's at once.
CREATE SEQUENCE workers_key_seq AS integer CYCLE;
CREATE TABLE workers (
    key             integer PRIMARY KEY,
    role            text NOT NULL CHECK (role IN ('run', 'worker')),
    hostname        text NOT NULL,
    pid             integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE backends (
    url             text PRIMARY KEY,
    healthy         boolean NOT NULL DEFAULT false,
    version         text,
    last_error      text,
    missing_workflows text[] NOT NULL DEFAULT '{}',
    checked_at      timestamptz
);

-- Dispatch order of queued jobs, fair across requesters: every requester's n-th queued job
-- (turn n) comes before anyone's (n+1)-th; within a turn, the requester served longest ago
-- (served_at: their last dispatch, NULL = never) first, then the oldest. Ordering a turn by
-- age alone degrades to FIFO when jobs are dispatched one at a time.
-- Sort: ORDER BY turn, served_at NULLS FIRST, created_at, id.
CREATE VIEW queue_order AS
SELECT g.id, g.requester_id, g.workflow, g.created_at,
       row_number() OVER (PARTITION BY g.requester_id ORDER BY g.created_at, g.id) AS turn,
       u.last_served_at AS served_at
FROM generations g JOIN users u ON u.id = g.requester_id
WHERE g.status = 'queued' AND NOT g.cancel_requested;

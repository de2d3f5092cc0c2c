-- Conversations between agents and users, and negotiations: conversations whose
-- messages move a state machine (see stores/postgres/conversations.py). Messages
-- are embedded in the background, like knowledge items (0004).

CREATE TABLE conversations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    kind             text NOT NULL CHECK (kind IN ('chat', 'negotiation')),
    -- Null for a chat; a negotiation starts `open`.
    state            text CHECK (state IN ('open', 'thesis', 'antithesis', 'synthesis',
                                           'resolved', 'abandoned')),
    resolution       text CHECK (length(resolution) <= 20000),
    resolved_at      timestamptz,
    created_by       uuid,  -- like audit_log.actor_id: kept after the user is gone
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz,
    version          integer NOT NULL DEFAULT 1,
    CONSTRAINT conversations_state_of_kind CHECK ((kind = 'negotiation') = (state IS NOT NULL))
);
CREATE INDEX conversations_created_at ON conversations (created_at, id);

-- Exactly one of agent_id and user_id. A participant's role decides which
-- negotiation moves it may make.
CREATE TABLE conversation_participants (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    agent_id        uuid REFERENCES agents (id) ON DELETE CASCADE,
    user_id         uuid REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL
                    CHECK (role IN ('member', 'proposer', 'opponent', 'mediator')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_participants_one_kind CHECK ((agent_id IS NULL) <> (user_id IS NULL))
);
CREATE UNIQUE INDEX conversation_participants_agent
    ON conversation_participants (conversation_id, agent_id) WHERE agent_id IS NOT NULL;
CREATE UNIQUE INDEX conversation_participants_user
    ON conversation_participants (conversation_id, user_id) WHERE user_id IS NOT NULL;
-- "The conversations I take part in": by user, and by the agent a session is bound to.
CREATE INDEX conversation_participants_by_user ON conversation_participants (user_id)
    WHERE user_id IS NOT NULL;
CREATE INDEX conversation_participants_by_agent ON conversation_participants (agent_id)
    WHERE agent_id IS NOT NULL;

-- The tasks a negotiation is about; its resolution is linked to them in the graph.
CREATE TABLE conversation_tasks (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    task_id         uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (conversation_id, task_id)
);
CREATE INDEX conversation_tasks_task ON conversation_tasks (task_id);

CREATE TABLE messages (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id   uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author_agent_id   uuid REFERENCES agents (id) ON DELETE SET NULL,
    author_user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    -- `message`, or the negotiation move it made.
    kind              text NOT NULL CHECK (kind IN ('message', 'thesis', 'antithesis',
                                                    'synthesis', 'resolution', 'abandonment')),
    content           text NOT NULL CHECK (length(content) BETWEEN 1 AND 20000),
    reply_to_id       uuid REFERENCES messages (id) ON DELETE SET NULL,
    metadata          jsonb NOT NULL DEFAULT '{}' CHECK (pg_column_size(metadata) <= 16384),
    embedding         vector(384),
    embedding_pending boolean NOT NULL DEFAULT true,
    search_text       tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Pages of a conversation, either direction, and its last message.
CREATE INDEX messages_conversation ON messages (conversation_id, created_at, id);
CREATE INDEX messages_embedding ON messages
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX messages_search_text ON messages USING gin (search_text);
CREATE INDEX messages_pending ON messages (id) WHERE embedding_pending;
CREATE INDEX messages_reply_to ON messages (reply_to_id) WHERE reply_to_id IS NOT NULL;

-- A database moved to another embedding dimension (`polygraph reembed`) before this
-- migration gets message vectors of that dimension too.
DO $$
DECLARE
    dimension integer;
BEGIN
    SELECT atttypmod INTO dimension FROM pg_attribute
    WHERE attrelid = 'knowledge_items'::regclass AND attname = 'embedding';
    IF dimension IS NOT NULL AND dimension > 0 AND dimension <> 384 THEN
        DROP INDEX messages_embedding;
        EXECUTE format('ALTER TABLE messages ALTER COLUMN embedding TYPE vector(%s)', dimension);
        CREATE INDEX messages_embedding ON messages
            USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
    END IF;
END
$$;

-- Knowledge items and agent memories, searchable by meaning (pgvector, HNSW,
-- cosine) and by words (tsvector, GIN). Embeddings are computed on write; a row
-- whose embedding could not be computed keeps `embedding_pending` and is filled
-- in later, so a failing embedder never loses a write.

-- Which model made the stored vectors, and how long they are. One row; a gateway
-- configured for another model or dimension refuses to start until
-- `polygraph reembed` has recomputed them.
CREATE TABLE embedding_space (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model       text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    dimension   integer NOT NULL CHECK (dimension BETWEEN 1 AND 4000),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title             text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    content           text NOT NULL DEFAULT '' CHECK (length(content) <= 100000),
    source            text NOT NULL DEFAULT '' CHECK (length(source) <= 500),
    tags              text[] NOT NULL DEFAULT '{}',
    agent_id          uuid REFERENCES agents (id) ON DELETE SET NULL,
    embedding         vector(384),
    embedding_pending boolean NOT NULL DEFAULT true,
    -- Titles weigh more than bodies in keyword ranking.
    search_text       tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', content), 'B')
    ) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer NOT NULL DEFAULT 1
);
CREATE INDEX knowledge_items_embedding ON knowledge_items
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX knowledge_items_search_text ON knowledge_items USING gin (search_text);
CREATE INDEX knowledge_items_tags ON knowledge_items USING gin (tags);
CREATE INDEX knowledge_items_agent_id ON knowledge_items (agent_id);
CREATE INDEX knowledge_items_source ON knowledge_items (source);
CREATE INDEX knowledge_items_created_at ON knowledge_items (created_at, id);
CREATE INDEX knowledge_items_pending ON knowledge_items (id) WHERE embedding_pending;

-- The knowledge graph's source of truth; Neo4j gets it through the outbox.
CREATE TABLE knowledge_relations (
    source_id  uuid NOT NULL REFERENCES knowledge_items (id) ON DELETE CASCADE,
    target_id  uuid NOT NULL REFERENCES knowledge_items (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (type IN ('RELATES_TO', 'SUPPORTS', 'CONTRADICTS')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, target_id, type),
    CONSTRAINT knowledge_relations_not_self CHECK (source_id <> target_id)
);
CREATE INDEX knowledge_relations_target ON knowledge_relations (target_id);

CREATE TABLE agent_memories (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id          uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    content           text NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    kind              text NOT NULL CHECK (kind IN ('episodic', 'semantic', 'procedural')),
    importance        real NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0 AND 1),
    context           jsonb NOT NULL DEFAULT '{}' CHECK (pg_column_size(context) <= 65536),
    embedding         vector(384),
    embedding_pending boolean NOT NULL DEFAULT true,
    search_text       tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_memories_embedding ON agent_memories
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX agent_memories_search_text ON agent_memories USING gin (search_text);
CREATE INDEX agent_memories_agent_id ON agent_memories (agent_id, created_at);
CREATE INDEX agent_memories_pending ON agent_memories (id) WHERE embedding_pending;

-- Tasks found by meaning and by words, as knowledge items are (0004): an embedding of
-- the title and description, filled in the background after the task is written (so
-- creating a task never waits for the embedder), and a full-text index.
-- And the worktree an agent checks the task's repository out into.

ALTER TABLE tasks ADD COLUMN worktree_path text
    CHECK (length(worktree_path) BETWEEN 1 AND 1000);

ALTER TABLE tasks ADD COLUMN embedding_pending boolean NOT NULL DEFAULT true;
-- Titles weigh more than descriptions in keyword ranking.
ALTER TABLE tasks ADD COLUMN search_text tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', title), 'A')
    || setweight(to_tsvector('english', description), 'B')
) STORED;

-- The same dimension as the other vectors: `polygraph reembed` may have moved the
-- embedding space away from 0004's 384 before this runs.
DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE tasks ADD COLUMN embedding vector(%s)',
        (SELECT atttypmod FROM pg_attribute
         WHERE attrelid = 'knowledge_items'::regclass AND attname = 'embedding')
    );
END
$$;

CREATE INDEX tasks_embedding ON tasks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX tasks_search_text ON tasks USING gin (search_text);
CREATE INDEX tasks_pending ON tasks (id) WHERE embedding_pending;

-- A new title or description makes the vector stale, whoever writes it (a client's
-- update, a seed, a restore): the old vector serves searches until the filler
-- replaces it.
CREATE FUNCTION tasks_text_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedding_pending := true;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_text_changed BEFORE UPDATE OF title, description ON tasks
    FOR EACH ROW
    WHEN (OLD.title IS DISTINCT FROM NEW.title OR OLD.description IS DISTINCT FROM NEW.description)
    EXECUTE FUNCTION tasks_text_changed();

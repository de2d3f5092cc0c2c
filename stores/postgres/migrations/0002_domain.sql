-- The agent-platform domain. PostgreSQL is the source of truth for everything,
-- relationships included; Neo4j is a projection fed through `outbox`.

CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 320),
    display_name text NOT NULL DEFAULT '',
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'agent', 'viewer')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once; only a SHA-256 of the secret is kept. The secret is 256
-- random bits, so a fast hash is enough (no password-style stretching needed).
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE agents (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    role         text NOT NULL DEFAULT 'worker' CHECK (length(role) BETWEEN 1 AND 50),
    status       text NOT NULL DEFAULT 'idle'
                 CHECK (status IN ('idle', 'active', 'busy', 'offline', 'error')),
    capabilities text[] NOT NULL DEFAULT '{}',
    tags         text[] NOT NULL DEFAULT '{}',
    notes        text NOT NULL DEFAULT '',
    metadata     jsonb NOT NULL DEFAULT '{}' CHECK (pg_column_size(metadata) <= 65536),
    parent_id    uuid REFERENCES agents (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      integer NOT NULL DEFAULT 1,
    CONSTRAINT agents_not_own_parent CHECK (parent_id IS DISTINCT FROM id)
);
-- Sort keys end in id so keyset pagination has a total order; filtered lists
-- (by status) walk the same index in page order instead of sorting.
CREATE INDEX agents_status ON agents (status, created_at, id);
CREATE INDEX agents_role ON agents (role);
CREATE INDEX agents_created_at ON agents (created_at, id);
CREATE INDEX agents_parent_id ON agents (parent_id);
CREATE INDEX agents_tags ON agents USING gin (tags);
CREATE INDEX agents_capabilities ON agents USING gin (capabilities);
CREATE INDEX agents_metadata ON agents USING gin (metadata jsonb_path_ops);

-- Agent-to-agent relationships; PARENT_OF comes from agents.parent_id.
CREATE TABLE agent_relationships (
    source_id  uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_id  uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (type IN ('COLLABORATES_WITH', 'DELEGATES_TO')),
    weight     double precision NOT NULL DEFAULT 1.0 CHECK (weight >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, target_id, type),
    CONSTRAINT agent_relationships_not_self CHECK (source_id <> target_id)
);
CREATE INDEX agent_relationships_target ON agent_relationships (target_id, type);

CREATE TABLE tasks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description   text NOT NULL DEFAULT '',
    repository    text,
    type          text NOT NULL DEFAULT 'generic',
    payload       jsonb NOT NULL DEFAULT '{}' CHECK (pg_column_size(payload) <= 262144),
    priority      smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'assigned', 'in_progress', 'completed',
                                    'failed', 'cancelled')),
    assignee_id   uuid REFERENCES agents (id) ON DELETE SET NULL,
    creator_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    workflow_id   uuid,
    deadline      timestamptz,
    started_at    timestamptz,
    completed_at  timestamptz,
    result        jsonb,
    error_message text,
    retry_count   integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries   integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 100),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       integer NOT NULL DEFAULT 1
);
CREATE INDEX tasks_status ON tasks (status, priority, created_at, id);
CREATE INDEX tasks_priority ON tasks (priority, created_at, id);
CREATE INDEX tasks_created_at ON tasks (created_at, id);
-- Tasks without a deadline sort last.
CREATE INDEX tasks_deadline ON tasks ((coalesce(deadline, 'infinity'::timestamptz)), id);
-- Agent.tasks pages: newest first per assignee.
CREATE INDEX tasks_assignee_created ON tasks (assignee_id, created_at DESC, id DESC);
CREATE INDEX tasks_payload ON tasks USING gin (payload jsonb_path_ops);

CREATE TABLE task_dependencies (
    task_id       uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, depends_on_id),
    CONSTRAINT task_dependencies_not_self CHECK (task_id <> depends_on_id)
);
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_id);

-- Event sourcing: every change to a task appends one event whose version equals
-- the task row's new version; the row is the projection of its events.
CREATE TABLE task_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id    uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    actor_id   uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, version)
);

CREATE TABLE workflows (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    definition  jsonb NOT NULL CHECK (pg_column_size(definition) <= 262144),
    status      text NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'active', 'paused', 'completed', 'archived')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);
CREATE INDEX workflows_status ON workflows (status, created_at, id);
CREATE INDEX workflows_created_at ON workflows (created_at, id);
CREATE INDEX workflows_name ON workflows (name, id);
ALTER TABLE tasks ADD CONSTRAINT tasks_workflow_id_fkey
    FOREIGN KEY (workflow_id) REFERENCES workflows (id) ON DELETE SET NULL;

CREATE TABLE achievements (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id   uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
    points     integer NOT NULL CHECK (points BETWEEN -1000000 AND 1000000),
    awarded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX achievements_agent ON achievements (agent_id, awarded_at DESC);
CREATE INDEX achievements_awarded_at ON achievements (awarded_at);

CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id       uuid,
    action         text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text,
    old_value      jsonb,
    new_value      jsonb,
    request_id     text,
    client_address inet,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_actor ON audit_log (actor_id, created_at DESC, id DESC);
CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, created_at DESC, id DESC);
CREATE INDEX audit_log_created_at ON audit_log (created_at DESC, id DESC);

-- Changes waiting to be projected into Neo4j (see stores/graph/projector.py).
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE processed_at IS NULL;

-- A retried mutation with the same key returns the first answer instead of writing twice.
CREATE TABLE idempotency_keys (
    principal_id uuid NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    operation    text NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, key)
);

-- Which users may act as which agents. A session bound to an agent (`login` with
-- `agentId`) needs a grant, and every write it makes for that agent checks it
-- again, so revoking a grant takes effect at once. Operators and admins manage them.
CREATE TABLE agent_grants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id   uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    granted_by uuid,  -- like audit_log.actor_id: kept after the user is gone
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_grants_user_agent UNIQUE (user_id, agent_id)
);
-- Listing by agent; by user, the unique constraint's index serves (user_id first).
CREATE INDEX agent_grants_agent ON agent_grants (agent_id, created_at, id);
CREATE INDEX agent_grants_created_at ON agent_grants (created_at, id);

-- Work distribution: agents pull ready tasks (stores/postgres/task_claims.py).
-- A claim holds a task for a lease; `fencing_token` grows with every claim of the
-- task, so a holder whose lease lapsed and was claimed again is told apart.
ALTER TABLE tasks
    ADD COLUMN required_capabilities text[] NOT NULL DEFAULT '{}',
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN fencing_token bigint NOT NULL DEFAULT 0 CHECK (fencing_token >= 0);

-- The claim walks this in order and skips rows other claimers hold locked.
CREATE INDEX tasks_claimable ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
-- The lease sweep: leases that lapse first.
CREATE INDEX tasks_lease_expires_at ON tasks (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
-- Claimers that name a repository walk only its pending tasks.
CREATE INDEX tasks_claimable_repository ON tasks (repository, priority DESC, created_at, id)
    WHERE status = 'pending';

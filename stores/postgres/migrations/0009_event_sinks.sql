-- Event sinks: HTTP endpoints that receive task and agent events, read from the audit
-- log (stores/postgres/event_sinks.py, workers/event_sinks.py).

-- The transaction that wrote each row. Identity ids are handed out before commit, so
-- rows commit out of id order and a cursor over ids alone can pass a row that commits
-- late. A cursor over (xid, id) that reads only below the oldest transaction still
-- running cannot: every row it has not read yet sorts after it. The default is stable,
-- so existing rows take the migration's own xid without a table rewrite.
ALTER TABLE audit_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_log_xid ON audit_log (xid, id);

CREATE TABLE event_sinks (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url               text NOT NULL CHECK (length(url) BETWEEN 10 AND 2048),
    -- Patterns such as task.* or agent.update (resource type, dot, action or *).
    events            text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 20),
    description       text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- Kept as is: it signs every delivery. Shown once, at creation.
    secret            text NOT NULL,
    paused            boolean NOT NULL DEFAULT false,
    -- The last audit row looked at, in (xid, id) order.
    cursor_xid        xid8 NOT NULL,
    cursor_id         bigint NOT NULL DEFAULT 0,
    delivered         bigint NOT NULL DEFAULT 0,
    retried           bigint NOT NULL DEFAULT 0,
    dropped           bigint NOT NULL DEFAULT 0,
    last_delivered_at timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Events matched to a sink and not yet delivered (or given up on). A row being
-- delivered has `next_attempt_at` pushed past the attempt's end, so a replica that
-- dies mid-attempt leaves it to be tried again.
CREATE TABLE event_deliveries (
    sink_id         uuid NOT NULL REFERENCES event_sinks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink_id, event_id)
);
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_at);

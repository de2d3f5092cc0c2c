-- The registry of metric names. Points themselves live in the metrics store
-- (stores/metrics), which may be another server; names and their units are
-- reference data and belong with the source of truth.
CREATE TABLE metric_names (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.]{0,62}$'),
    unit        text NOT NULL DEFAULT '' CHECK (length(unit) <= 32),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

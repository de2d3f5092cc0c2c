-- Trusted documents: the operations a client was built with, registered from its
-- manifest by `polygraph documents push`. Durable configuration, like users and keys:
-- in trusted-documents mode nothing else runs, so they must outlive a Redis flush.
CREATE TABLE trusted_documents (
    -- As the manifest names it: a hash (Relay, GraphQL Codegen, Apollo) or any id.
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    -- SHA-256 of the body, hex: what automatic persisted queries send.
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    body        text NOT NULL,
    client_name text NOT NULL DEFAULT '' CHECK (length(client_name) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX trusted_documents_sha256 ON trusted_documents (sha256);

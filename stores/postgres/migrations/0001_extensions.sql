-- pgvector for embeddings. (gen_random_uuid() is built into PostgreSQL 13+.)
CREATE EXTENSION IF NOT EXISTS vector;

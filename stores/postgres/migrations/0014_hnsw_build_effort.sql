-- HNSW indexes link each new row through a candidate list of 128 (ef_construction),
-- not 64. On the search bench's corpus (templated text: tight clusters of
-- near-duplicates, which HNSW links poorly) 64 gave recall@10 of 0.957-0.973 with
-- up to 9 of 200 queries below 0.8; 128 gave 0.9935 with one (bench/profile_notes.md,
-- "Search recall"). An insert costs about 0.25 ms more at 100,000 rows.
-- Only the option changes here, without a rebuild: rows written from now on are
-- linked with the larger list, and `polygraph reembed --all` rebuilds an index whole.
ALTER INDEX knowledge_items_embedding SET (ef_construction = 128);
ALTER INDEX agent_memories_embedding SET (ef_construction = 128);
ALTER INDEX tasks_embedding SET (ef_construction = 128);
ALTER INDEX messages_embedding SET (ef_construction = 128);

// Workflow steps are keyed by workflow id + step id: step ids are only unique per workflow.
CREATE CONSTRAINT step_key IF NOT EXISTS FOR (s:Step) REQUIRE s.key IS UNIQUE;
// A deletion leaves a tombstone so that an older event applied after it
// (projectors share the outbox and may apply out of order) cannot resurrect
// what was deleted. Pruned once no older event can still arrive.
CREATE CONSTRAINT tombstone_key IF NOT EXISTS FOR (t:Tombstone) REQUIRE t.key IS UNIQUE;
CREATE INDEX tombstone_subject IF NOT EXISTS FOR (t:Tombstone) ON (t.subject);
CREATE INDEX tombstone_outbox_id IF NOT EXISTS FOR (t:Tombstone) ON (t.outbox_id);

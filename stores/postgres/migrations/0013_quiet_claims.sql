-- A pending task is never cached (stores/cache/entities.py: a task in the queue is about
-- to be claimed), so a change to one has nothing to invalidate and sends no notice. A
-- claim changes a pending task: without a notice its transaction skips the commit-time
-- queue lock every notifying transaction takes, which serialised 20 claimers.
CREATE FUNCTION notify_task_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('polygraph_entity_changed', 'tasks:*');
        RETURN NULL;
    END IF;
    FOR ids IN
        SELECT string_agg(id::text, ',')
        FROM (SELECT id, (row_number() OVER () - 1) / 150 AS chunk
              FROM changed_rows WHERE status <> 'pending') AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('polygraph_entity_changed', 'tasks:' || ids);
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER tasks_updated ON tasks;
DROP TRIGGER tasks_deleted ON tasks;
DROP TRIGGER tasks_truncated ON tasks;
CREATE TRIGGER tasks_updated AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_task_changed();
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_task_changed();
CREATE TRIGGER tasks_truncated AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_task_changed();

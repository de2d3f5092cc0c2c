-- Every change to a cached entity announces itself, whoever makes it (a mutation, a
-- worker, a bulk import, psql): replicas drop what they cached of it. One NOTIFY per
-- statement and 150 ids (a payload holds at most 8000 bytes); delivered on commit only.
CREATE FUNCTION notify_entity_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('polygraph_entity_changed', TG_TABLE_NAME || ':*');
        RETURN NULL;
    END IF;
    FOR ids IN
        SELECT string_agg(id::text, ',')
        FROM (SELECT id, (row_number() OVER () - 1) / 150 AS chunk FROM changed_rows) AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('polygraph_entity_changed', TG_TABLE_NAME || ':' || ids);
    END LOOP;
    RETURN NULL;
END
$$;

-- A trigger with a transition table serves one event, hence two per table.
CREATE TRIGGER agents_updated AFTER UPDATE ON agents
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER agents_deleted AFTER DELETE ON agents
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER agents_truncated AFTER TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();

CREATE TRIGGER tasks_updated AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER tasks_truncated AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();

CREATE TRIGGER workflows_updated AFTER UPDATE ON workflows
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER workflows_deleted AFTER DELETE ON workflows
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER workflows_truncated AFTER TRUNCATE ON workflows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();

CREATE TRIGGER users_updated AFTER UPDATE ON users
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER users_deleted AFTER DELETE ON users
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();
CREATE TRIGGER users_truncated AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_entity_changed();

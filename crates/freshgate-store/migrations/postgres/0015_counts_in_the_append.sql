-- Version 15: the statements that insert events and deliveries count them themselves (the
-- append's `APPEND`, `add_deliveries`), and the insert triggers of migrations 5 and 12 go. A
-- statement trigger with a transition table copied every inserted row, its raw body included,
-- into a tuple store, then ran a PL/pgSQL function per table per append (the deliveries' one even
-- for an append with no delivery): 7-16 % more events/s on the ingest bench without them (issue
-- 15). Updates and deletes (settling, reopening, the prune and its cascade) keep their triggers.
DROP TRIGGER events_ingest_minute ON events;
DROP TRIGGER events_count_insert ON events;
DROP TRIGGER deliveries_count_insert ON deliveries;
DROP FUNCTION freshgate_count_ingest();
DROP FUNCTION freshgate_count_deliveries_inserted();
-- Only the delete trigger calls this one now.
CREATE OR REPLACE FUNCTION freshgate_count_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    removed BIGINT;
BEGIN
    SELECT count(*) INTO removed FROM old_rows;
    IF removed <> 0 THEN
        INSERT INTO event_counts AS c (shard, count) VALUES (pg_backend_pid() % 16, -removed)
        ON CONFLICT (shard) DO UPDATE SET count = c.count + excluded.count;
    END IF;
    RETURN NULL;
END;
$$;

-- Version 12: the console's backlog per destination and kind, and `queue stats`, read from
-- counters and index ranges instead of counting every delivery (same model as
-- migrations/sqlite 0012).
--
-- Each delivery carries its event's call type, so the pending index can answer "how many
-- pending, and the oldest" per (destination, kind) as a range.
ALTER TABLE deliveries ADD COLUMN event_type TEXT NOT NULL DEFAULT '';
UPDATE deliveries d SET event_type = e.event_type FROM events e WHERE e.id = d.event_id;
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (destination, event_type, event_id)
    WHERE status = 'pending';

-- Deliveries per (destination, kind, status) and events stored, kept by statement triggers so
-- that every path (insert, settle, reopen, prune and its cascade) moves them. Several nodes
-- write at once: like ingest_minutes, each connection adds to its own shard row, so concurrent
-- transactions never wait on one counter row; readers sum the shards.
CREATE TABLE delivery_counts (
    destination TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    shard       INT    NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (destination, event_type, status, shard)
);
INSERT INTO delivery_counts (destination, event_type, status, shard, count)
SELECT destination, event_type, status, 0, count(*) FROM deliveries GROUP BY 1, 2, 3;

CREATE TABLE event_counts (
    shard INT    NOT NULL PRIMARY KEY,
    count BIGINT NOT NULL
);
INSERT INTO event_counts (shard, count) SELECT 0, count(*) FROM events;

CREATE FUNCTION freshgate_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_counts AS c (destination, event_type, status, shard, count)
    SELECT destination, event_type, status, pg_backend_pid() % 16, sum(delta) FROM (
        SELECT n.destination, n.event_type, n.status, count(*) AS delta
        FROM new_rows n GROUP BY 1, 2, 3
        UNION ALL
        SELECT o.destination, o.event_type, o.status, -count(*)
        FROM old_rows o GROUP BY 1, 2, 3
    ) moves
    GROUP BY 1, 2, 3
    HAVING sum(delta) <> 0
    ON CONFLICT (destination, event_type, status, shard)
        DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;
-- Transition tables are per event, so each event has its own function; the empty side is a
-- zero-row relation of the same shape.
CREATE FUNCTION freshgate_count_deliveries_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_counts AS c (destination, event_type, status, shard, count)
    SELECT destination, event_type, status, pg_backend_pid() % 16, count(*)
    FROM new_rows GROUP BY 1, 2, 3
    ON CONFLICT (destination, event_type, status, shard)
        DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;
CREATE FUNCTION freshgate_count_deliveries_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_counts AS c (destination, event_type, status, shard, count)
    SELECT destination, event_type, status, pg_backend_pid() % 16, -count(*)
    FROM old_rows GROUP BY 1, 2, 3
    ON CONFLICT (destination, event_type, status, shard)
        DO UPDATE SET count = c.count + excluded.count;
    RETURN NULL;
END;
$$;
CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_deliveries_inserted();
CREATE TRIGGER deliveries_count_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_deliveries();
CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_deliveries_deleted();

CREATE FUNCTION freshgate_count_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO moved FROM new_rows;
    ELSE
        SELECT -count(*) INTO moved FROM old_rows;
    END IF;
    IF moved <> 0 THEN
        INSERT INTO event_counts AS c (shard, count) VALUES (pg_backend_pid() % 16, moved)
        ON CONFLICT (shard) DO UPDATE SET count = c.count + excluded.count;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_count_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_events();
CREATE TRIGGER events_count_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_events();

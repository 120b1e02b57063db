-- Schema version 12: the console's backlog per destination and kind, and `queue stats`, read
-- from counters and index ranges instead of counting every delivery.
--
-- Each delivery carries its event's call type, so the pending index can answer "how many
-- pending, and the oldest" per (destination, kind) as a range.
ALTER TABLE deliveries ADD COLUMN event_type TEXT NOT NULL DEFAULT '';
UPDATE deliveries
SET event_type = coalesce((SELECT e.event_type FROM events e WHERE e.id = deliveries.event_id), '');
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (destination, event_type, event_id)
    WHERE status = 'pending';

-- Deliveries per (destination, kind, status) and events stored. Inserts are counted by the
-- writer, summed per append (`CounterMoves` in src/sqlite/writer.rs): a row trigger costs about
-- 8 µs per inserted row, a sixth of the writer's time per event. Every other path that moves a
-- delivery (settle, reopen, prune and the cascade from a pruned event) is counted by the
-- triggers below; no other code maintains them.
CREATE TABLE delivery_counts (
    destination TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (destination, event_type, status)
) WITHOUT ROWID;
INSERT INTO delivery_counts (destination, event_type, status, count)
SELECT destination, event_type, status, count(*) FROM deliveries GROUP BY 1, 2, 3;

CREATE TABLE event_counts (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT INTO event_counts (id, count) SELECT 1, count(*) FROM events;

CREATE TRIGGER delivery_counts_update AFTER UPDATE OF status ON deliveries
WHEN OLD.status <> NEW.status BEGIN
    UPDATE delivery_counts SET count = count - 1
    WHERE destination = OLD.destination AND event_type = OLD.event_type AND status = OLD.status;
    INSERT INTO delivery_counts (destination, event_type, status, count)
    VALUES (NEW.destination, NEW.event_type, NEW.status, 1)
    ON CONFLICT (destination, event_type, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET count = count - 1
    WHERE destination = OLD.destination AND event_type = OLD.event_type AND status = OLD.status;
END;
-- The per-minute ingest count of migration 0006 moves to the writer for the same reason.
DROP TRIGGER events_ingest_minute;
CREATE TRIGGER event_counts_delete AFTER DELETE ON events BEGIN
    UPDATE event_counts SET count = count - 1 WHERE id = 1;
END;

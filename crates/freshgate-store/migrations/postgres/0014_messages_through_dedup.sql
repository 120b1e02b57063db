-- Version 14: events are found by messageId through the dedup table, and the events' own
-- messageId index goes. Every event stored has a dedup entry for its (source, messageId) received
-- at the same time, or, when the messageId was accepted again after the window (which renews the
-- entry), an entry in `dedup_renewed` with its receive time; the event is then an index range of
-- `events_received_id` at that time. Inserting into the hash index was ~9 % of PostgreSQL's work
-- per event (issue 15's profiles); lookups by messageId (traces, the listing's search, the prune)
-- are rare and now read a few more index entries.

-- Lookups give the messageId alone: it leads the key. ON CONFLICT (source, message_id) infers the
-- key from the set of its columns, so the append is unchanged.
ALTER TABLE dedup DROP CONSTRAINT dedup_pkey;
ALTER TABLE dedup ADD PRIMARY KEY (message_id, source);

-- The receive times that a renewal replaced, while an event received then is stored.
CREATE TABLE dedup_renewed (
    message_id     TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (message_id, source, received_at_ms)
);
INSERT INTO dedup_renewed (message_id, source, received_at_ms)
SELECT DISTINCT e.message_id, e.source, e.received_at_ms FROM events e
WHERE NOT EXISTS (
    SELECT 1 FROM dedup d
    WHERE d.message_id = e.message_id AND d.source = e.source
      AND d.received_at_ms = e.received_at_ms);

-- A row trigger on update only: the append's inserts do not run it, and an update is a renewal.
CREATE FUNCTION freshgate_keep_renewed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dedup_renewed (message_id, source, received_at_ms)
    VALUES (OLD.message_id, OLD.source, OLD.received_at_ms)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END;
$$;
CREATE TRIGGER dedup_keep_renewed BEFORE UPDATE ON dedup
    FOR EACH ROW WHEN (OLD.received_at_ms <> NEW.received_at_ms)
    EXECUTE FUNCTION freshgate_keep_renewed();

-- Every (messageId, source, receive time) under which events may be stored.
CREATE VIEW message_times AS
    SELECT message_id, source, received_at_ms FROM dedup
    UNION ALL
    SELECT message_id, source, received_at_ms FROM dedup_renewed;

DROP INDEX events_message_id;

-- Schema version 2: one random-key index per event instead of two.
--
-- Version 1 kept `dedup (source, message_id)` for deduplication and `events (message_id)` for
-- traces: two B-trees keyed by random UUIDs, each of which dirties about one 4 KiB page per
-- event in every group commit. `messages` serves both: one row per stored event (a repeat of a
-- messageId past the dedup window is a new event and a new row), looked up by messageId for
-- traces and by (messageId, source) for dedup, where only a row received within the window
-- makes a duplicate. A row stays while its event is stored or its window is open, whichever is
-- longer; event_id 0 marks an entry whose event was pruned before this migration.
CREATE TABLE messages (
    message_id     TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    event_id       INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, source, event_id)
) WITHOUT ROWID;
CREATE INDEX messages_received_at ON messages (received_at_ms);

INSERT INTO messages (message_id, source, event_id, received_at_ms)
SELECT message_id, source, id, received_at_ms FROM events;
INSERT OR IGNORE INTO messages (message_id, source, event_id, received_at_ms)
SELECT d.message_id, d.source, 0, d.received_at_ms FROM dedup d
WHERE NOT EXISTS (
    SELECT 1 FROM events e WHERE e.source = d.source AND e.message_id = d.message_id);

DROP TABLE dedup;
DROP INDEX events_message_id;

-- Schema version 13: the two indexes an append writes at random places keyed by the hour of
-- receipt first, so that ingest writes land in the current hour's part of each, whatever the
-- store holds (issue 15).
--
-- `messages`: keyed by messageId first, every event's entry landed on a random leaf of one B-tree as large
-- as the dedup window, so the pages an append dirtied (and a checkpoint copied back) were spread
-- over the whole index: with 10 M events stored, ingest ran at 62 % of its rate on an empty
-- store, and at 101 % with this table emptied (issue 15). With the hour first, inserts land in
-- the current hour's part of the tree only. Dedup finds older hours through the writer's
-- in-memory filters (`src/sqlite/dedup.rs`); traces probe each stored hour. The prune keeps
-- walking the receive-time index, in the order it prunes events (walking the key instead, hour
-- by hour, rescanned the rows of events not yet pruned in every chunk).
CREATE TABLE messages_by_hour (
    hour           INTEGER NOT NULL,
    message_id     TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    event_id       INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (hour, message_id, source, event_id)
) WITHOUT ROWID;
INSERT INTO messages_by_hour (hour, message_id, source, event_id, received_at_ms)
SELECT received_at_ms / 3600000, message_id, source, event_id, received_at_ms FROM messages;
DROP TABLE messages;
ALTER TABLE messages_by_hour RENAME TO messages;
CREATE INDEX messages_received_at ON messages (received_at_ms);

-- `events_contact`: keyed by contact first, each contact's newest entry was a leaf of its own
-- somewhere in an index as large as the store (10 M stored: 23,569 events/s without this index
-- against 15,739 with it, same build). The listing of a contact's events walks the stored hours
-- newest first, one index range each (`src/sqlite/queries.rs`).
DROP INDEX events_contact;
CREATE INDEX events_contact ON events (received_at_ms / 3600000, contact_key, id);

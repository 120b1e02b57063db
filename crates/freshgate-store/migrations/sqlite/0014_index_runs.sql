-- Schema version 14: the two random-key indexes an append wrote per event (`messages` by
-- messageId, `events_contact` by contact) are written as sorted runs instead (issue 15).
--
-- A B-tree takes a random insert for up to a page write once the range it lands in is larger
-- than a commit: keyed by the hour of receipt first (0013), each event still dirtied a leaf of
-- the current hour in each index, 0.35-0.45 WAL frames of 4 KiB per event per index, five
-- sixths of ingest's capacity on the bench machine. Now the writer keeps the entries of the
-- events above a watermark in memory (the tail; `src/sqlite/runs.rs`), and writes them as one
-- run per hour of receipt, sorted, a chunk per group commit: every chunk appends to the end of
-- a new key range. The tail is derived from `events` (the ids above the watermark), so a
-- crash loses nothing.
--
-- `index_runs`: one row per run. `state` is 'writing' while its chunks are being written
-- (readers and dedup ignore it) and 'live' once the watermark has moved past its events, in the
-- same transaction. A run covers the events of one hour of receipt between its first and last
-- event id.
CREATE TABLE index_runs (
    run            INTEGER PRIMARY KEY,
    hour           INTEGER NOT NULL,
    first_event_id INTEGER NOT NULL,
    last_event_id  INTEGER NOT NULL,
    state          TEXT    NOT NULL
);
CREATE INDEX index_runs_hour ON index_runs (hour, first_event_id);

-- Events with ids up to this one are in live runs; those above are the tail.
CREATE TABLE index_watermark (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    event_id INTEGER NOT NULL
);
INSERT INTO index_watermark (id, event_id) VALUES (1, coalesce((SELECT max(id) FROM events), 0));

-- What is stored becomes one live run per hour of receipt (every stored event has its entry in
-- `messages`, which outlives it while its dedup window is open).
INSERT INTO index_runs (hour, first_event_id, last_event_id, state)
SELECT hour, min(event_id), max(event_id), 'live' FROM messages GROUP BY hour ORDER BY hour;
-- (Hours with events but no `messages` rows are not expected; they get a run all the same.)
INSERT INTO index_runs (hour, first_event_id, last_event_id, state)
SELECT received_at_ms / 3600000, min(id), max(id), 'live' FROM events
WHERE received_at_ms / 3600000 NOT IN (SELECT hour FROM index_runs)
GROUP BY received_at_ms / 3600000;

CREATE TABLE messages_by_run (
    run            INTEGER NOT NULL,
    message_id     TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    event_id       INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (run, message_id, source, event_id)
) WITHOUT ROWID;
INSERT INTO messages_by_run (run, message_id, source, event_id, received_at_ms)
SELECT r.run, m.message_id, m.source, m.event_id, m.received_at_ms
FROM messages m JOIN index_runs r ON r.hour = m.hour
ORDER BY r.run, m.message_id, m.source, m.event_id;
DROP TABLE messages;
ALTER TABLE messages_by_run RENAME TO messages;
-- No receive-time index any more: the prune deletes a run's entries in key order.

-- A contact's events, by run: the listing of a contact's events walks the live runs of each
-- hour newest first, and the tail.
CREATE TABLE contact_events (
    run         INTEGER NOT NULL,
    contact_key TEXT    NOT NULL,
    event_id    INTEGER NOT NULL,
    PRIMARY KEY (run, contact_key, event_id)
) WITHOUT ROWID;
INSERT INTO contact_events (run, contact_key, event_id)
SELECT r.run, e.contact_key, e.id
FROM events e JOIN index_runs r ON r.hour = e.received_at_ms / 3600000
ORDER BY r.run, e.contact_key, e.id;
DROP INDEX events_contact;

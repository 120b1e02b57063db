-- The console's time-range search walks a receive-time range newest first and pages with a
-- keyset cursor on (received_at_ms, id): one index range serves the range, the order and the
-- cursor. It replaces the single-column index, whose other users (prune and replay by receive
-- time) it serves as well. (SQLite needs no counterpart: its `events_received_at` index already
-- ends in the rowid, which is `id`.)
CREATE INDEX events_received_id ON events (received_at_ms, id);
DROP INDEX events_received_at;

-- Schema version 9: marketing list memberships (Engage audiences) handed from a contact's
-- delivery to the list flusher, which sends them in batches. One row per (list, contact): the
-- newest event's membership; `pending` until sent (`done`) or given up (`dead`, with `error`).
CREATE TABLE list_memberships (
    destination TEXT    NOT NULL,
    list_name   TEXT    NOT NULL,
    contact_key TEXT    NOT NULL,
    action      TEXT    NOT NULL CHECK (action IN ('add', 'remove')),
    ts_ms       INTEGER NOT NULL,
    contact_id  INTEGER,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    next_at_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    first_at_ms INTEGER NOT NULL,
    error       TEXT,
    -- The delivery of the event this version came from: the list call joins its trace.
    delivery_id INTEGER,
    PRIMARY KEY (destination, list_name, contact_key)
) WITHOUT ROWID;
CREATE INDEX list_memberships_due ON list_memberships (destination, state, next_at_ms);

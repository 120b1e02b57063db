-- freshgate queue of record, SQLite schema version 1.
-- All times are Unix milliseconds. Statuses: pending, delivered, skipped, dead.

CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    source         TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    contact_key    TEXT    NOT NULL,
    timestamp_ms   INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    raw            BLOB    NOT NULL
);
-- event traces look events up by messageId; prune and replay by receive time.
CREATE INDEX events_message_id ON events (message_id);
CREATE INDEX events_received_at ON events (received_at_ms);

CREATE TABLE dedup (
    source         TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, message_id)
) WITHOUT ROWID;
CREATE INDEX dedup_received_at ON dedup (received_at_ms);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    event_id         INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    destination      TEXT    NOT NULL,
    contact_key      TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'skipped', 'dead')),
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    finished_ms      INTEGER
);
-- per-contact FIFO: the pending deliveries of one key in event order.
CREATE INDEX deliveries_fifo ON deliveries (destination, contact_key, status, event_id);
CREATE INDEX deliveries_event ON deliveries (event_id);
-- dead-letter listing, newest first, without scanning every delivered row.
CREATE INDEX deliveries_dead ON deliveries (finished_ms) WHERE status = 'dead';

CREATE TABLE contact_keys (
    destination     TEXT    NOT NULL,
    contact_key     TEXT    NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_token     TEXT,
    lease_until_ms  INTEGER,
    pending         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, contact_key)
) WITHOUT ROWID;
CREATE INDEX contact_keys_due ON contact_keys (destination, next_attempt_ms);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    at_ms         INTEGER NOT NULL,
    request_line  TEXT    NOT NULL,
    request_body  TEXT,
    status        INTEGER,
    response_body TEXT,
    outcome       TEXT    NOT NULL
);

CREATE TABLE attempt_deliveries (
    attempt_id  INTEGER NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (attempt_id, delivery_id)
) WITHOUT ROWID;
CREATE INDEX attempt_deliveries_delivery ON attempt_deliveries (delivery_id);

CREATE TABLE rejected (
    id             INTEGER PRIMARY KEY,
    source         TEXT,
    raw            BLOB    NOT NULL,
    reason         TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL
);

CREATE TABLE shadows (
    destination TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (destination, contact_key)
) WITHOUT ROWID;

-- API calls per account, bucketed per second (bucket_ms = floor(at_ms / 1000) * 1000) so that
-- both the hourly and the one-minute windows are summed accurately.
CREATE TABLE quota_ledger (
    account   TEXT    NOT NULL,
    bucket_ms INTEGER NOT NULL,
    calls     INTEGER NOT NULL,
    PRIMARY KEY (account, bucket_ms)
) WITHOUT ROWID;

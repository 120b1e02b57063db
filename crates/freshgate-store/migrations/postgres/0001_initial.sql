-- freshgate queue of record, PostgreSQL schema version 1 (same model as migrations/sqlite).
-- All times are Unix milliseconds (BIGINT). Statuses: pending, delivered, skipped, dead.
-- Every integer is BIGINT so that the backend decodes one Rust type (i64) everywhere.

CREATE TABLE events (
    id             BIGSERIAL PRIMARY KEY,
    source         TEXT   NOT NULL,
    message_id     TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    contact_key    TEXT   NOT NULL,
    timestamp_ms   BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    raw            BYTEA  NOT NULL
);
-- event traces look events up by messageId; prune and replay by receive time.
CREATE INDEX events_message_id ON events (message_id);
CREATE INDEX events_received_at ON events (received_at_ms);

-- The messageId dedup index: one entry per (source, messageId), renewed past the window.
CREATE TABLE dedup (
    source         TEXT   NOT NULL,
    message_id     TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (source, message_id)
);
CREATE INDEX dedup_received_at ON dedup (received_at_ms);

CREATE TABLE deliveries (
    id               BIGSERIAL PRIMARY KEY,
    event_id         BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    destination      TEXT   NOT NULL,
    contact_key      TEXT   NOT NULL,
    status           TEXT   NOT NULL CHECK (status IN ('pending', 'delivered', 'skipped', 'dead')),
    reason           TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    first_attempt_ms BIGINT,
    finished_ms      BIGINT
);
-- per-contact FIFO: the pending deliveries of one key in event order.
CREATE INDEX deliveries_fifo ON deliveries (destination, contact_key, status, event_id);
-- traces, and the cascade when an event is pruned.
CREATE INDEX deliveries_event ON deliveries (event_id);
-- dead-letter listing, newest first, without scanning every delivered row.
CREATE INDEX deliveries_dead ON deliveries (finished_ms) WHERE status = 'dead';

-- One row per (destination, contact key) with pending work: the unit a node leases.
CREATE TABLE contact_keys (
    destination     TEXT   NOT NULL,
    contact_key     TEXT   NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_token     TEXT,
    lease_until_ms  BIGINT,
    pending         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, contact_key)
);
CREATE INDEX contact_keys_due ON contact_keys (destination, next_attempt_ms) WHERE pending > 0;

CREATE TABLE attempts (
    id            BIGSERIAL PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    request_line  TEXT   NOT NULL,
    request_body  TEXT,
    status        BIGINT,
    response_body TEXT,
    outcome       TEXT   NOT NULL
);

CREATE TABLE attempt_deliveries (
    attempt_id  BIGINT NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (attempt_id, delivery_id)
);
CREATE INDEX attempt_deliveries_delivery ON attempt_deliveries (delivery_id);

CREATE TABLE rejected (
    id             BIGSERIAL PRIMARY KEY,
    source         TEXT,
    raw            BYTEA  NOT NULL,
    reason         TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL
);
CREATE INDEX rejected_received_at ON rejected (received_at_ms);

CREATE TABLE shadows (
    destination TEXT  NOT NULL,
    contact_key TEXT  NOT NULL,
    body        BYTEA NOT NULL,
    PRIMARY KEY (destination, contact_key)
);

-- API calls per account, bucketed per second (bucket_ms = floor(at_ms / 1000) * 1000) so that
-- both the hourly and the one-minute windows are summed accurately. Shared by every node.
CREATE TABLE quota_ledger (
    account   TEXT   NOT NULL,
    bucket_ms BIGINT NOT NULL,
    calls     BIGINT NOT NULL,
    PRIMARY KEY (account, bucket_ms)
);

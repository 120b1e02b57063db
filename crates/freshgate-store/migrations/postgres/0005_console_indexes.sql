-- Console and CLI listings as index range scans (same model as migrations/sqlite 0006).

-- Events of one contact, newest first (`events list --user`, the console's search).
CREATE INDEX events_contact ON events (contact_key, id);

-- The email in an identify's traits, lower-cased; NULL when the raw bytes are not JSON. Declared
-- immutable so it can key an index: it reads nothing but its argument.
CREATE FUNCTION freshgate_identify_email(raw BYTEA) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN lower(convert_from(raw, 'UTF8')::jsonb -> 'traits' ->> 'email');
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
CREATE INDEX events_identify_email ON events (freshgate_identify_email(raw), id)
    WHERE event_type = 'identify';

-- The oldest pending delivery of a destination without counting every delivery.
CREATE INDEX deliveries_pending ON deliveries (destination, event_id) WHERE status = 'pending';

-- Events received per minute for the console's 24-hour ingest chart. Several nodes insert at
-- once: each connection adds to its own shard row, so concurrent appends never wait on one row.
CREATE TABLE ingest_minutes (
    minute_ms BIGINT NOT NULL,
    shard     INT    NOT NULL,
    events    BIGINT NOT NULL,
    PRIMARY KEY (minute_ms, shard)
);
INSERT INTO ingest_minutes (minute_ms, shard, events)
SELECT (received_at_ms / 60000) * 60000, 0, count(*) FROM events GROUP BY 1;
CREATE FUNCTION freshgate_count_ingest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ingest_minutes (minute_ms, shard, events)
    SELECT (received_at_ms / 60000) * 60000, pg_backend_pid() % 16, count(*)
    FROM inserted GROUP BY 1
    ON CONFLICT (minute_ms, shard) DO UPDATE SET events = ingest_minutes.events + excluded.events;
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_ingest_minute AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION freshgate_count_ingest();

-- A destination paused because Freshworks refused its API key (401/403).
CREATE TABLE destination_pauses (
    destination TEXT   NOT NULL PRIMARY KEY,
    reason      TEXT   NOT NULL,
    since_ms    BIGINT NOT NULL,
    until_ms    BIGINT NOT NULL
);

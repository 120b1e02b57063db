-- Console and CLI listings as index range scans (no table scans over a large store).
--
-- Events of one contact, newest first (`events list --user`, the console's search).
CREATE INDEX events_contact ON events (contact_key, id);
-- Identify events by the email in their traits, lower-cased (`events list --email`): the
-- contacts an email belongs to. Only identifies carry the traits that are mapped.
CREATE INDEX events_identify_email ON events (
    lower(json_extract(CAST(raw AS TEXT), '$.traits.email')), id
) WHERE event_type = 'identify' AND json_valid(CAST(raw AS TEXT));
-- The oldest pending delivery of a destination without counting every delivery.
CREATE INDEX deliveries_pending ON deliveries (destination, event_id) WHERE status = 'pending';

-- Events received per minute, kept by a trigger so the console's 24-hour ingest chart reads
-- 1,440 rows instead of counting a day of events. Pruning events does not change the history.
CREATE TABLE ingest_minutes (
    minute_ms INTEGER NOT NULL PRIMARY KEY,
    events    INTEGER NOT NULL
);
INSERT INTO ingest_minutes (minute_ms, events)
SELECT (received_at_ms / 60000) * 60000, count(*) FROM events GROUP BY 1;
CREATE TRIGGER events_ingest_minute AFTER INSERT ON events
BEGIN
    INSERT INTO ingest_minutes (minute_ms, events)
    VALUES ((new.received_at_ms / 60000) * 60000, 1)
    ON CONFLICT (minute_ms) DO UPDATE SET events = events + 1;
END;

-- A destination paused because Freshworks refused its API key (401/403): why and until when
-- the next probe, so that `queue stats` in another process and the console can show it.
CREATE TABLE destination_pauses (
    destination TEXT    NOT NULL PRIMARY KEY,
    reason      TEXT    NOT NULL,
    since_ms    INTEGER NOT NULL,
    until_ms    INTEGER NOT NULL
) WITHOUT ROWID;

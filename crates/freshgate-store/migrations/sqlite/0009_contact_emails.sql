-- The emails each contact was identified with, for `events list --email` and the console's
-- search: one row per (email, contact) pair, written by the append with INSERT OR IGNORE.
--
-- It replaces the `events_identify_email` expression index, which added an entry at a random
-- place of a B-tree for every identify (about half a WAL page per event in the ingest bench)
-- and parsed every identify's JSON twice inside the writer. A pair is written once: the
-- identifies that follow find it and dirty nothing.
CREATE TABLE contact_emails (
    email       TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    PRIMARY KEY (email, contact_key)
) WITHOUT ROWID;
INSERT OR IGNORE INTO contact_emails (email, contact_key)
SELECT lower(json_extract(CAST(raw AS TEXT), '$.traits.email')), contact_key FROM events
WHERE event_type = 'identify' AND json_valid(CAST(raw AS TEXT))
  AND json_type(CAST(raw AS TEXT), '$.traits.email') = 'text'
  AND json_extract(CAST(raw AS TEXT), '$.traits.email') <> '';
DROP INDEX events_identify_email;

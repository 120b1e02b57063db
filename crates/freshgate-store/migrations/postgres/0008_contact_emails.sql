-- The emails each contact was identified with (same model as migrations/sqlite 0007): one row
-- per (email, contact) pair, written by the append. It replaces the `events_identify_email`
-- expression index, whose PL/pgSQL function parsed every identify inside an exception block
-- (a subtransaction per row) and added an entry at a random place of a B-tree per identify.
CREATE TABLE contact_emails (
    email       TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    PRIMARY KEY (email, contact_key)
);
INSERT INTO contact_emails (email, contact_key)
SELECT DISTINCT freshgate_identify_email(raw), contact_key FROM events
WHERE event_type = 'identify' AND freshgate_identify_email(raw) IS NOT NULL
  AND freshgate_identify_email(raw) <> ''
ON CONFLICT DO NOTHING;
DROP INDEX events_identify_email;
DROP FUNCTION freshgate_identify_email(BYTEA);

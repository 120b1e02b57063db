-- The stable code of why a delivery was skipped or dead-lettered (same model as migrations/sqlite
-- 0007): the dead-letter filter selects on it instead of searching text.
ALTER TABLE deliveries ADD COLUMN reason_code TEXT;
CREATE INDEX deliveries_dead_reason ON deliveries (destination, reason_code) WHERE status = 'dead';

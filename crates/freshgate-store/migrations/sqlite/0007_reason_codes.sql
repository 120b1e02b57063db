-- The stable code of why a delivery was skipped or dead-lettered (freshgate_core::reason), kept
-- beside the words in `reason`: the dead-letter filter selects on it instead of searching text.
-- Rows settled before this migration have none.
ALTER TABLE deliveries ADD COLUMN reason_code TEXT;
CREATE INDEX deliveries_dead_reason ON deliveries (destination, reason_code) WHERE status = 'dead';

-- The history of each delivery (same model as migrations/sqlite 0007): when a replay (or a
-- dead-letter replay) puts a finished delivery back to pending, the outcome it had is appended
-- here first, so nothing that happened is overwritten. The delivery row keeps only the latest
-- state; its history rows go with it when its event is pruned.
CREATE TABLE delivery_history (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  BIGINT  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    destination  TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('delivered', 'skipped', 'dead')),
    reason       TEXT,
    attempts     BIGINT  NOT NULL,
    finished_ms  BIGINT,
    reopened_ms  BIGINT  NOT NULL,
    reopened_by  TEXT    NOT NULL CHECK (reopened_by IN ('replay', 'dead_letter_replay'))
);
CREATE INDEX delivery_history_delivery ON delivery_history (delivery_id, id);

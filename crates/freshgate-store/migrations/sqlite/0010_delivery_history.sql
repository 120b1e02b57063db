-- The history of each delivery: when a replay (or a dead-letter replay) puts a finished delivery
-- back to pending, the outcome it had is appended here first, so nothing that happened is
-- overwritten. The delivery row keeps only the latest state; its history rows go with it when
-- its event is pruned. Statuses and causes are the stable names of the code's enums.
CREATE TABLE delivery_history (
    id           INTEGER PRIMARY KEY,
    delivery_id  INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    destination  TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('delivered', 'skipped', 'dead')),
    reason       TEXT,
    attempts     INTEGER NOT NULL,
    finished_ms  INTEGER,
    reopened_ms  INTEGER NOT NULL,
    reopened_by  TEXT    NOT NULL CHECK (reopened_by IN ('replay', 'dead_letter_replay'))
);
CREATE INDEX delivery_history_delivery ON delivery_history (delivery_id, id);

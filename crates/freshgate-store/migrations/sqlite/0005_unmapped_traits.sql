-- Trait keys that matched no Freshworks field, per destination (bounded by the store): kept here
-- rather than as a metric label, which every client-sent key would multiply.
CREATE TABLE unmapped_traits (
    destination   TEXT    NOT NULL,
    trait_key     TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (destination, trait_key)
) WITHOUT ROWID;
CREATE INDEX unmapped_traits_last_seen ON unmapped_traits (destination, last_seen_ms);

-- Rejected inputs are pruned by age.
CREATE INDEX rejected_received_at ON rejected (received_at_ms);

-- Trait keys that matched no Freshworks field, per destination (bounded by the store): kept here
-- rather than as a metric label, which every client-sent key would multiply.
CREATE TABLE unmapped_traits (
    destination   TEXT   NOT NULL,
    trait_key     TEXT   NOT NULL,
    count         BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (destination, trait_key)
);
CREATE INDEX unmapped_traits_last_seen ON unmapped_traits (destination, last_seen_ms);

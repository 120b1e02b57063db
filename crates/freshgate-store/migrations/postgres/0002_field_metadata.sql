-- The account's contact field metadata as last fetched, shared by every node, so that neither a
-- restart nor another node spends an API call of the account's hourly quota to learn it again.
CREATE TABLE field_metadata (
    account       TEXT   NOT NULL PRIMARY KEY,
    fetched_at_ms BIGINT NOT NULL,
    body          BYTEA  NOT NULL
);

-- Schema version 3: the account's contact field metadata as last fetched, so that a restart
-- (or a crash loop) does not spend an API call of the account's hourly quota to learn it again.
CREATE TABLE field_metadata (
    account       TEXT    NOT NULL PRIMARY KEY,
    fetched_at_ms INTEGER NOT NULL,
    body          BLOB    NOT NULL
) WITHOUT ROWID;

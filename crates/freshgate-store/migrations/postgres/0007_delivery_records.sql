-- Version 6: what delivering tracks, groups and audiences needs to remember.
-- The Freshworks contact id of each contact key, from upsert responses and bulk job results.
CREATE TABLE contact_ids (
    destination TEXT    NOT NULL,
    contact_key TEXT    NOT NULL,
    contact_id  BIGINT NOT NULL,
    PRIMARY KEY (destination, contact_key)
);

-- What was last written to each sales account (opaque JSON, like `shadows` for contacts),
-- keyed by `group:<groupId>` or `company:<key>`.
CREATE TABLE account_shadows (
    destination TEXT NOT NULL,
    account_key TEXT NOT NULL,
    body        BYTEA NOT NULL,
    PRIMARY KEY (destination, account_key)
);

-- Marketing list ids by name. A row without `list_id` is a claim: one node is creating the
-- list until `claim_until_ms`, the others wait instead of creating it twice.
CREATE TABLE marketing_lists (
    destination    TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    list_id        BIGINT,
    claim_owner    TEXT,
    claim_until_ms BIGINT,
    PRIMARY KEY (destination, name)
);

-- A sales activity is recorded as intended before its call and as created after it, so a
-- crash between the call and the settlement never creates it twice.
CREATE TABLE activity_intents (
    destination    TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('intended', 'created')),
    activity_id    BIGINT,
    intended_at_ms BIGINT NOT NULL,
    PRIMARY KEY (destination, message_id)
);
CREATE INDEX activity_intents_by_age ON activity_intents (intended_at_ms);

-- Field metadata of entities other than contacts (sales accounts), per account and entity.
CREATE TABLE entity_field_metadata (
    account       TEXT    NOT NULL,
    entity        TEXT    NOT NULL,
    fetched_at_ms BIGINT NOT NULL,
    body          BYTEA    NOT NULL,
    PRIMARY KEY (account, entity)
);

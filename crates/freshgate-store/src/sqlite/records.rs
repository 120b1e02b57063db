//! SQLite side of the delivery records (contact ids, account shadows, marketing list ids and
//! claims, activity intents, entity field metadata): the writes run on the writer thread as one
//! [`RecordOp`] each (one savepoint, so each is atomic), the reads on the reader pool.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{ActivityIntent, FieldMetadata, ListClaim, StoreError};

/// One write of the delivery records.
#[derive(Debug)]
pub(crate) enum RecordOp {
    PutEntityFields {
        account: String,
        entity: String,
        metadata: FieldMetadata,
    },
    PutContactIds {
        destination: String,
        ids: Vec<(String, i64)>,
    },
    PutAccountShadow {
        destination: String,
        account_key: String,
        body: Vec<u8>,
    },
    ClaimList {
        destination: String,
        name: String,
        owner: String,
        now_ms: i64,
        claim_ms: i64,
    },
    PutListId {
        destination: String,
        name: String,
        list_id: i64,
    },
    IntendActivity {
        destination: String,
        message_id: String,
        now_ms: i64,
    },
    ActivityCreated {
        destination: String,
        message_id: String,
        activity_id: i64,
    },
    ClearActivityIntent {
        destination: String,
        message_id: String,
    },
    PruneActivityIntents {
        before_ms: i64,
    },
}

/// What a [`RecordOp`] answers.
#[derive(Debug)]
pub(crate) enum RecordReply {
    Done,
    Claim(ListClaim),
    ListId(i64),
    Intent(Option<ActivityIntent>),
    Count(u64),
}

pub(crate) fn apply(conn: &Connection, op: &RecordOp) -> Result<RecordReply, StoreError> {
    match op {
        RecordOp::PutEntityFields {
            account,
            entity,
            metadata,
        } => {
            conn.prepare_cached(
                "INSERT INTO entity_field_metadata (account, entity, fetched_at_ms, body)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, entity) DO UPDATE
                 SET fetched_at_ms = excluded.fetched_at_ms, body = excluded.body
                 WHERE excluded.fetched_at_ms >= entity_field_metadata.fetched_at_ms",
            )?
            .execute(params![
                account,
                entity,
                metadata.fetched_at_ms,
                metadata.body
            ])?;
            Ok(RecordReply::Done)
        }
        RecordOp::PutContactIds { destination, ids } => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO contact_ids (destination, contact_key, contact_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (destination, contact_key) DO UPDATE SET contact_id = excluded.contact_id",
            )?;
            for (key, id) in crate::records::last_per_key(ids.clone()) {
                stmt.execute(params![destination, key, id])?;
            }
            Ok(RecordReply::Done)
        }
        RecordOp::PutAccountShadow {
            destination,
            account_key,
            body,
        } => {
            conn.prepare_cached(
                "INSERT INTO account_shadows (destination, account_key, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (destination, account_key) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![destination, account_key, body])?;
            Ok(RecordReply::Done)
        }
        RecordOp::ClaimList {
            destination,
            name,
            owner,
            now_ms,
            claim_ms,
        } => {
            let until = now_ms.saturating_add(*claim_ms);
            conn.prepare_cached(
                "INSERT INTO marketing_lists (destination, name, claim_owner, claim_until_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (destination, name) DO UPDATE
                 SET claim_owner = excluded.claim_owner, claim_until_ms = excluded.claim_until_ms
                 WHERE marketing_lists.list_id IS NULL
                   AND (marketing_lists.claim_owner = excluded.claim_owner
                        OR coalesce(marketing_lists.claim_until_ms, 0) <= ?5)",
            )?
            .execute(params![destination, name, owner, until, now_ms])?;
            let (list_id, claim_owner, claim_until): (Option<i64>, Option<String>, Option<i64>) =
                conn.prepare_cached(
                    "SELECT list_id, claim_owner, claim_until_ms FROM marketing_lists
                     WHERE destination = ?1 AND name = ?2",
                )?
                .query_row(params![destination, name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            Ok(RecordReply::Claim(crate::records::claim_of(
                list_id,
                claim_owner.as_deref(),
                claim_until,
                owner,
            )))
        }
        RecordOp::PutListId {
            destination,
            name,
            list_id,
        } => {
            conn.prepare_cached(
                "INSERT INTO marketing_lists (destination, name, list_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (destination, name) DO UPDATE
                 SET list_id = excluded.list_id, claim_owner = NULL, claim_until_ms = NULL
                 WHERE marketing_lists.list_id IS NULL",
            )?
            .execute(params![destination, name, list_id])?;
            let id: i64 = conn
                .prepare_cached(
                    "SELECT list_id FROM marketing_lists WHERE destination = ?1 AND name = ?2",
                )?
                .query_row(params![destination, name], |r| r.get(0))?;
            Ok(RecordReply::ListId(id))
        }
        RecordOp::IntendActivity {
            destination,
            message_id,
            now_ms,
        } => {
            let before = intent(conn, destination, message_id)?;
            if before.is_none() {
                conn.prepare_cached(
                    "INSERT INTO activity_intents (destination, message_id, state, intended_at_ms)
                     VALUES (?1, ?2, 'intended', ?3)",
                )?
                .execute(params![destination, message_id, now_ms])?;
            }
            Ok(RecordReply::Intent(before))
        }
        RecordOp::ActivityCreated {
            destination,
            message_id,
            activity_id,
        } => {
            conn.prepare_cached(
                "INSERT INTO activity_intents
                     (destination, message_id, state, activity_id, intended_at_ms)
                 VALUES (?1, ?2, 'created', ?3, 0)
                 ON CONFLICT (destination, message_id) DO UPDATE
                 SET state = 'created', activity_id = excluded.activity_id",
            )?
            .execute(params![destination, message_id, activity_id])?;
            Ok(RecordReply::Done)
        }
        RecordOp::ClearActivityIntent {
            destination,
            message_id,
        } => {
            conn.prepare_cached(
                "DELETE FROM activity_intents
                 WHERE destination = ?1 AND message_id = ?2 AND state = 'intended'",
            )?
            .execute(params![destination, message_id])?;
            Ok(RecordReply::Done)
        }
        RecordOp::PruneActivityIntents { before_ms } => {
            let n = conn
                .prepare_cached("DELETE FROM activity_intents WHERE intended_at_ms < ?1")?
                .execute(params![before_ms])?;
            Ok(RecordReply::Count(u64::try_from(n).unwrap_or(u64::MAX)))
        }
    }
}

fn intent(
    conn: &Connection,
    destination: &str,
    message_id: &str,
) -> Result<Option<ActivityIntent>, StoreError> {
    let row: Option<(String, Option<i64>, i64)> = conn
        .prepare_cached(
            "SELECT state, activity_id, intended_at_ms FROM activity_intents
             WHERE destination = ?1 AND message_id = ?2",
        )?
        .query_row(params![destination, message_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(row.and_then(|(state, id, at)| ActivityIntent::from_row(&state, id, at)))
}

pub(crate) fn entity_field_metadata(
    conn: &Connection,
    account: &str,
    entity: &str,
) -> Result<Option<FieldMetadata>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT fetched_at_ms, body FROM entity_field_metadata WHERE account = ?1 AND entity = ?2",
        )?
        .query_row(params![account, entity], |r| {
            Ok(FieldMetadata {
                fetched_at_ms: r.get(0)?,
                body: r.get(1)?,
            })
        })
        .optional()?)
}

pub(crate) fn contact_ids(
    conn: &Connection,
    destination: &str,
    keys: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact_id FROM contact_ids WHERE destination = ?1 AND contact_key = ?2",
    )?;
    let mut out = Vec::new();
    for key in crate::records::sorted_unique(keys) {
        if let Some(id) = stmt
            .query_row(params![destination, key], |r| r.get::<_, i64>(0))
            .optional()?
        {
            out.push((key.clone(), id));
        }
    }
    Ok(out)
}

pub(crate) fn account_shadow(
    conn: &Connection,
    destination: &str,
    account_key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT body FROM account_shadows WHERE destination = ?1 AND account_key = ?2",
        )?
        .query_row(params![destination, account_key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn list_id(
    conn: &Connection,
    destination: &str,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT list_id FROM marketing_lists WHERE destination = ?1 AND name = ?2")?
        .query_row(params![destination, name], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

pub(crate) fn activity_intents(
    conn: &Connection,
    destination: &str,
    message_ids: &[String],
) -> Result<Vec<(String, ActivityIntent)>, StoreError> {
    let mut out = Vec::new();
    for id in crate::records::sorted_unique(message_ids) {
        if let Some(intent) = intent(conn, destination, id)? {
            out.push((id.clone(), intent));
        }
    }
    Ok(out)
}

//! PostgreSQL side of the delivery records (contact ids, account shadows, marketing list ids
//! and claims, activity intents, entity field metadata). Claims and intents are decided by a
//! unique key per row, so two nodes never both create a list or an activity.

use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row;
use sqlx_postgres::PgPool;

use crate::records::{claim_of, last_per_key};
use crate::{ActivityIntent, FieldMetadata, ListClaim, StoreError};

pub(crate) async fn entity_field_metadata(
    pool: &PgPool,
    account: &str,
    entity: &str,
) -> Result<Option<FieldMetadata>, StoreError> {
    let row = query(
        "SELECT fetched_at_ms, body FROM entity_field_metadata WHERE account = $1 AND entity = $2",
    )
    .bind(account)
    .bind(entity)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => Some(FieldMetadata {
            fetched_at_ms: r.try_get(0)?,
            body: r.try_get(1)?,
        }),
        None => None,
    })
}

pub(crate) async fn put_entity_field_metadata(
    pool: &PgPool,
    account: &str,
    entity: &str,
    metadata: FieldMetadata,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO entity_field_metadata (account, entity, fetched_at_ms, body)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (account, entity) DO UPDATE
         SET fetched_at_ms = excluded.fetched_at_ms, body = excluded.body
         WHERE excluded.fetched_at_ms >= entity_field_metadata.fetched_at_ms",
    )
    .bind(account)
    .bind(entity)
    .bind(metadata.fetched_at_ms)
    .bind(metadata.body)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn put_contact_ids(
    pool: &PgPool,
    destination: &str,
    ids: Vec<(String, i64)>,
) -> Result<(), StoreError> {
    let (keys, ids): (Vec<String>, Vec<i64>) = last_per_key(ids).into_iter().unzip();
    if keys.is_empty() {
        return Ok(());
    }
    query(
        "INSERT INTO contact_ids (destination, contact_key, contact_id)
         SELECT $1, k, i FROM unnest($2::text[], $3::int8[]) AS t(k, i)
         ON CONFLICT (destination, contact_key) DO UPDATE SET contact_id = excluded.contact_id",
    )
    .bind(destination)
    .bind(keys)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn contact_ids(
    pool: &PgPool,
    destination: &str,
    keys: Vec<String>,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = query(
        "SELECT contact_key, contact_id FROM contact_ids
         WHERE destination = $1 AND contact_key = ANY($2::text[])",
    )
    .bind(destination)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx_core::Error>>()?;
    // Byte order, as the SQLite backend answers (not the database collation's).
    out.sort();
    Ok(out)
}

pub(crate) async fn account_shadow(
    pool: &PgPool,
    destination: &str,
    account_key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        query_scalar(
            "SELECT body FROM account_shadows WHERE destination = $1 AND account_key = $2",
        )
        .bind(destination)
        .bind(account_key)
        .fetch_optional(pool)
        .await?,
    )
}

pub(crate) async fn put_account_shadow(
    pool: &PgPool,
    destination: &str,
    account_key: &str,
    body: Vec<u8>,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO account_shadows (destination, account_key, body) VALUES ($1, $2, $3)
         ON CONFLICT (destination, account_key) DO UPDATE SET body = excluded.body",
    )
    .bind(destination)
    .bind(account_key)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn list_id(
    pool: &PgPool,
    destination: &str,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    let id: Option<Option<i64>> =
        query_scalar("SELECT list_id FROM marketing_lists WHERE destination = $1 AND name = $2")
            .bind(destination)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(id.flatten())
}

pub(crate) async fn claim_list(
    pool: &PgPool,
    destination: &str,
    name: &str,
    owner: &str,
    now_ms: i64,
    claim_ms: i64,
) -> Result<ListClaim, StoreError> {
    // Two statements in one transaction: the upsert locks the row (or inserts it), and the
    // read, with a fresh snapshot under READ COMMITTED, sees whichever claim or id holds.
    let mut tx = pool.begin().await?;
    query(
        "INSERT INTO marketing_lists (destination, name, claim_owner, claim_until_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (destination, name) DO UPDATE
         SET claim_owner = excluded.claim_owner, claim_until_ms = excluded.claim_until_ms
         WHERE marketing_lists.list_id IS NULL
           AND (marketing_lists.claim_owner = excluded.claim_owner
                OR coalesce(marketing_lists.claim_until_ms, 0) <= $5)",
    )
    .bind(destination)
    .bind(name)
    .bind(owner)
    .bind(now_ms.saturating_add(claim_ms))
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let row = query(
        "SELECT list_id, claim_owner, claim_until_ms FROM marketing_lists
         WHERE destination = $1 AND name = $2",
    )
    .bind(destination)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let list_id: Option<i64> = row.try_get(0)?;
    let holder: Option<String> = row.try_get(1)?;
    let until: Option<i64> = row.try_get(2)?;
    tx.commit().await?;
    Ok(claim_of(list_id, holder.as_deref(), until, owner))
}

pub(crate) async fn put_list_id(
    pool: &PgPool,
    destination: &str,
    name: &str,
    list_id: i64,
) -> Result<i64, StoreError> {
    query(
        "INSERT INTO marketing_lists (destination, name, list_id) VALUES ($1, $2, $3)
         ON CONFLICT (destination, name) DO UPDATE
         SET list_id = excluded.list_id, claim_owner = NULL, claim_until_ms = NULL
         WHERE marketing_lists.list_id IS NULL",
    )
    .bind(destination)
    .bind(name)
    .bind(list_id)
    .execute(pool)
    .await?;
    let id: Option<i64> =
        query_scalar("SELECT list_id FROM marketing_lists WHERE destination = $1 AND name = $2")
            .bind(destination)
            .bind(name)
            .fetch_one(pool)
            .await?;
    id.ok_or_else(|| StoreError::Database(format!("list {name:?} has no id after recording one")))
}

async fn intent(
    pool: &PgPool,
    destination: &str,
    message_id: &str,
) -> Result<Option<ActivityIntent>, StoreError> {
    let row = query(
        "SELECT state, activity_id, intended_at_ms FROM activity_intents
         WHERE destination = $1 AND message_id = $2",
    )
    .bind(destination)
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(r) => {
            ActivityIntent::from_row(&r.try_get::<String, _>(0)?, r.try_get(1)?, r.try_get(2)?)
        }
        None => None,
    })
}

pub(crate) async fn intend_activity(
    pool: &PgPool,
    destination: &str,
    message_id: &str,
    now_ms: i64,
) -> Result<Option<ActivityIntent>, StoreError> {
    // ON CONFLICT DO NOTHING waits for a concurrent inserter, so a conflict means the other
    // intent is committed and the read below (a new snapshot) sees it.
    let inserted = query(
        "INSERT INTO activity_intents (destination, message_id, state, intended_at_ms)
         VALUES ($1, $2, 'intended', $3)
         ON CONFLICT (destination, message_id) DO NOTHING",
    )
    .bind(destination)
    .bind(message_id)
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    intent(pool, destination, message_id).await
}

pub(crate) async fn activity_created(
    pool: &PgPool,
    destination: &str,
    message_id: &str,
    activity_id: i64,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO activity_intents (destination, message_id, state, activity_id, intended_at_ms)
         VALUES ($1, $2, 'created', $3, 0)
         ON CONFLICT (destination, message_id) DO UPDATE
         SET state = 'created', activity_id = excluded.activity_id",
    )
    .bind(destination)
    .bind(message_id)
    .bind(activity_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn clear_activity_intent(
    pool: &PgPool,
    destination: &str,
    message_id: &str,
) -> Result<(), StoreError> {
    query(
        "DELETE FROM activity_intents
         WHERE destination = $1 AND message_id = $2 AND state = 'intended'",
    )
    .bind(destination)
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn activity_intents(
    pool: &PgPool,
    destination: &str,
    message_ids: Vec<String>,
) -> Result<Vec<(String, ActivityIntent)>, StoreError> {
    let rows = query(
        "SELECT message_id, state, activity_id, intended_at_ms FROM activity_intents
         WHERE destination = $1 AND message_id = ANY($2::text[])",
    )
    .bind(destination)
    .bind(message_ids)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let state: String = r.try_get(1)?;
        if let Some(intent) = ActivityIntent::from_row(&state, r.try_get(2)?, r.try_get(3)?) {
            out.push((r.try_get::<String, _>(0)?, intent));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub(crate) async fn prune_activity_intents(
    pool: &PgPool,
    before_ms: i64,
) -> Result<u64, StoreError> {
    Ok(
        query("DELETE FROM activity_intents WHERE intended_at_ms < $1")
            .bind(before_ms)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
